"""Experiment trackers besides the run folder, selected by ``logger.name``: ``none`` or ``wandb``.

The run folder is the source of truth; a tracker only mirrors it. A tracker never crashes a run: any W&B error
becomes a warning and the run goes on logging locally.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Any

from normexp.identity import config_hash


class Tracker:
    """The ``none`` tracker, and the interface of every tracker."""

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Record ``metrics`` at ``step``."""

    def finish(self, summary: dict[str, Any]) -> None:
        """Record the run's final ``summary`` and close."""


class WandbTracker(Tracker):
    """One W&B run per training run: config = the resolved config, group = experiment, job type = scale, tags =
    claim and norm.

    The W&B id derives from the project, experiment, scale, run folder name (the overrides and seed) and config hash
    (:func:`wandb_id`), never from where the folder lies: a resumed run continues the same W&B run, even moved to
    another machine or out_dir, two runs never share one, and a run restarted with a changed config is a new one.

    Mode ``auto`` is online when an API key is configured and offline otherwise; an online start that fails (no
    network, bad key, server error) falls back to offline, so the history is kept for
    ``wandb sync <run folder>/wandb/offline-run-*`` later.
    """

    def __init__(self, cfg: dict[str, Any], run_dir: Path) -> None:
        self._run = None
        logger = cfg["logger"]
        mode = _wandb_mode(logger["mode"])
        for attempt in (mode, "offline") if mode == "online" else (mode,):
            try:
                self._run = _init(cfg, run_dir, attempt)
                return
            except Exception as error:
                then = "trying offline" if attempt == "online" else "logging to the run folder only"
                warnings.warn(f"W&B {attempt} start failed ({type(error).__name__}: {error}); {then}.", stacklevel=2)

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Mirror ``metrics`` to W&B; on error warn and stop mirroring."""
        self._guard(lambda run: run.log(metrics, step=step))

    def finish(self, summary: dict[str, Any]) -> None:
        """Write the summary metrics and close the W&B run."""
        self._guard(lambda run: (run.summary.update(summary), run.finish()))
        self._run = None

    def _guard(self, action: Any) -> None:
        if self._run is None:
            return
        try:
            action(self._run)
        except Exception as error:
            warnings.warn(f"W&B error ({type(error).__name__}: {error}); logging locally only.", stacklevel=2)
            self._run = None


def _init(cfg: dict[str, Any], run_dir: Path, mode: str) -> Any:
    import wandb

    logger = cfg["logger"]
    return wandb.init(
        project=logger["project"],
        entity=logger["entity"],
        mode=mode,
        dir=str(run_dir),
        id=wandb_id(cfg, Path(run_dir).name),
        name=Path(run_dir).name,
        group=cfg["experiment_name"],
        job_type=cfg["scale_name"],
        tags=[tag for tag in (cfg.get("claim"), cfg["norm"].get("name")) if tag],
        config=cfg,
        resume="allow",
        reinit="create_new",
        settings=wandb.Settings(silent=True, console="off", init_timeout=logger["init_timeout"]),
    )


def wandb_id(cfg: dict[str, Any], run_name: str) -> str:
    """The W&B id of the run ``run_name`` (its folder's name) with resolved config ``cfg``."""
    parts = (cfg["logger"]["project"], cfg["experiment_name"], cfg["scale_name"], run_name, config_hash(cfg))
    return hashlib.sha1("/".join(parts).encode()).hexdigest()[:16]


def _wandb_mode(mode: str) -> str:
    if mode != "auto":
        return mode
    import wandb

    return "online" if os.environ.get("WANDB_API_KEY") or wandb.api.api_key else "offline"


def build(cfg: dict[str, Any], run_dir: Path) -> Tracker:
    """The tracker ``cfg['logger']['name']`` for the run in ``run_dir``; ``cfg`` is the resolved config."""
    return WandbTracker(cfg, run_dir) if cfg["logger"]["name"] == "wandb" else Tracker()


def log_claim(
    logger: dict[str, Any], claim: str, scale: str, figures: list[Path], verdict: dict[str, Any], directory: Path
) -> None:
    """One W&B run per reproduced claim (job type ``figures``, files under ``directory``) with its figures as
    images and its verdict."""
    if logger["name"] != "wandb":
        return
    try:
        import wandb

        run = wandb.init(
            project=logger["project"],
            entity=logger["entity"],
            mode=_wandb_mode(logger["mode"]),
            group=claim,
            job_type="figures",
            name=f"{claim}-{scale}",
            dir=str(directory),
            tags=[claim],
            reinit="create_new",
            settings=wandb.Settings(silent=True, console="off", init_timeout=logger["init_timeout"]),
        )
        run.log({path.stem: wandb.Image(str(path)) for path in figures if path.suffix == ".png"})
        run.summary.update({"verdict": verdict["verdict"], "n_runs": verdict["n_runs"]})
        checks = [[c["name"], c["passed"], c["measured"]] for c in verdict["checks"]]
        run.log({"checks": wandb.Table(columns=["criterion", "passed", "measured"], data=checks)})
        run.finish()
    except Exception as error:
        warnings.warn(f"W&B figure upload failed ({type(error).__name__}: {error}).", stacklevel=2)
