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


STEP_AXES = ("samples_seen", "epoch")
"""The x-axes a W&B run logs beside its metrics at every step (:meth:`WandbTracker.log`)."""

EXIT_CODES = {"completed": 0, "diverged": 1, "failed": 1, "interrupted": 130}
"""The exit code W&B records for a run's final status, so its UI shows failed and interrupted runs as such."""


class WandbTracker(Tracker):
    """One W&B run per training run: config = the resolved config, group = experiment, job type ``train``, tags =
    every claim that reads the experiment, the norm and the scale. Metrics are plotted against ``samples_seen``
    (optimizer steps × samples per step) and ``epoch``, so runs of different batch sizes share an axis; the
    console is captured (``output.log``) and the run's link printed.

    The W&B id derives from the project, experiment, scale, run folder name (the overrides and seed) and config hash
    (:func:`wandb_id`), never from where the folder lies: a resumed run continues the same W&B run, even moved to
    another machine or out_dir, two runs never share one, and a run restarted with a changed config is a new one.

    Mode ``auto`` is online when an API key is configured and offline otherwise; an online start that fails (no
    network, bad key, server error) falls back to offline, so the history is kept for
    ``wandb sync <run folder>/wandb/offline-run-*`` later.
    """

    def __init__(self, cfg: dict[str, Any], run_dir: Path) -> None:
        self._run = None
        train, data = cfg["train"], cfg["data"]
        self._samples_per_step = train["batch_size"] * train["accumulate"]
        self._train_size = data.get("train_size")
        self._run = _start(lambda mode: _init(cfg, run_dir, mode), cfg["logger"])
        self._guard(_define_metrics)

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Mirror ``metrics`` to W&B with their ``samples_seen`` and ``epoch``; on error warn and stop mirroring."""
        seen = step * self._samples_per_step
        axes = {"samples_seen": seen} | ({"epoch": seen / self._train_size} if self._train_size else {})
        self._guard(lambda run: run.log(metrics | axes, step=step))

    def finish(self, summary: dict[str, Any]) -> None:
        """Write the summary metrics and close the W&B run with the exit code of its status (:data:`EXIT_CODES`)."""
        code = EXIT_CODES.get(summary["status"], 1)
        if summary["status"] == "interrupted":
            self._guard(lambda run: run.mark_preempting())
        self._guard(lambda run: (run.summary.update(summary), run.finish(exit_code=code)))
        self._run = None

    def _guard(self, action: Any) -> None:
        if self._run is None:
            return
        try:
            action(self._run)
        except Exception as error:
            warnings.warn(f"W&B error ({type(error).__name__}: {error}); logging locally only.", stacklevel=2)
            self._run = None


def _start(init: Any, logger: dict[str, Any]) -> Any:
    """The W&B run ``init(mode)`` starts, online falling back to offline; None (after a warning) if neither
    starts. The run's link (or where its offline files are) is printed."""
    mode = _wandb_mode(logger["mode"])
    for attempt in (mode, "offline") if mode == "online" else (mode,):
        try:
            run = init(attempt)
        except Exception as error:
            then = "trying offline" if attempt == "online" else "logging to the run folder only"
            warnings.warn(f"W&B {attempt} start failed ({type(error).__name__}: {error}); {then}.", stacklevel=3)
            continue
        print(f"W&B run: {run.url or run.dir + ' (offline: normexp sync uploads it)'}", flush=True)
        return run
    return None


def _define_metrics(run: Any) -> None:
    """``samples_seen`` and ``epoch`` as x-axes of every training and test metric; best test accuracy and loss
    as their summaries."""
    for axis in STEP_AXES:
        run.define_metric(axis)
    for pattern in ("train/*", "test/*", "lr", "probe/*", "grad/*"):
        run.define_metric(pattern, step_metric="samples_seen")
    run.define_metric("test/acc", step_metric="samples_seen", summary="max")
    run.define_metric("test/loss", step_metric="samples_seen", summary="min")


def _settings(logger: dict[str, Any]) -> Any:
    import wandb

    return wandb.Settings(console="wrap", init_timeout=logger["init_timeout"])


def claim_tags(experiment: str) -> list[str]:
    """The ids of every claim that reads ``experiment`` (a claim may read several, an experiment feed several)."""
    from normexp import claims

    return sorted(claim.id for claim in claims.CLAIMS.values() if experiment in claim.experiments)


def _init(cfg: dict[str, Any], run_dir: Path, mode: str) -> Any:
    import wandb

    logger = cfg["logger"]
    tags = [*claim_tags(cfg["experiment_name"]), cfg["norm"].get("name"), cfg["scale_name"]]
    return wandb.init(
        project=logger["project"],
        entity=logger["entity"],
        mode=mode,
        dir=str(run_dir),
        id=wandb_id(cfg, Path(run_dir).name),
        name=Path(run_dir).name,
        group=cfg["experiment_name"],
        job_type="train",
        tags=[tag for tag in dict.fromkeys(tags) if tag],
        config=cfg,
        resume="allow",
        reinit="create_new",
        settings=_settings(logger),
    )


def wandb_id(cfg: dict[str, Any], run_name: str) -> str:
    """The W&B id of the run ``run_name`` (its folder's name) with resolved config ``cfg``."""
    parts = (cfg["logger"]["project"], cfg["experiment_name"], cfg["scale_name"], run_name, config_hash(cfg))
    return hashlib.sha1("/".join(parts).encode()).hexdigest()[:16]


def _wandb_mode(mode: str) -> str:
    """``auto``: ``WANDB_MODE`` when set, else online with an API key and offline without one."""
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    import wandb

    return "online" if os.environ.get("WANDB_API_KEY") or wandb.api.api_key else "offline"


def build(cfg: dict[str, Any], run_dir: Path) -> Tracker:
    """The tracker ``cfg['logger']['name']`` for the run in ``run_dir``; ``cfg`` is the resolved config."""
    return WandbTracker(cfg, run_dir) if cfg["logger"]["name"] == "wandb" else Tracker()


def log_claim(
    logger: dict[str, Any],
    claim: str,
    scale: str,
    figures: list[Path],
    verdict: dict[str, Any],
    results: Path,
    directory: Path,
) -> None:
    """One W&B run per reproduced claim and scale (job type ``figures``, a stable id, so a new ``reproduce`` adds to
    it; its files under ``directory``): its figures as images, its verdict as summary and table, and ``results``
    (``results/<claim>/<scale>/``) as a versioned Artifact it logs (W&B stores a new version only when the files
    changed; offline, W&B cannot ``use_artifact``, so the lineage is the figures run's output)."""
    if logger["name"] != "wandb":
        return
    try:
        import wandb

        def init(mode: str) -> Any:
            return wandb.init(
                project=logger["project"],
                entity=logger["entity"],
                mode=mode,
                id=hashlib.sha1(f"{logger['project']}/figures/{claim}/{scale}".encode()).hexdigest()[:16],
                group=claim,
                job_type="figures",
                name=f"{claim}-{scale}",
                dir=str(directory),
                tags=[claim, scale],
                config={"claim": claim, "scale_name": scale},
                resume="allow",
                reinit="create_new",
                settings=_settings(logger),
            )

        run = _start(init, logger)
        if run is None:
            return
        artifact = wandb.Artifact(f"{claim}-{scale}", type="results", metadata={"verdict": verdict["verdict"]})
        artifact.add_dir(str(results))
        run.log_artifact(artifact, aliases=["latest", scale])
        run.log({path.stem: wandb.Image(str(path)) for path in figures if path.suffix == ".png"})
        run.summary.update({"verdict": verdict["verdict"], "n_runs": verdict["n_runs"]})
        checks = [[c["name"], c["passed"], c["measured"]] for c in verdict["checks"]]
        run.log({"checks": wandb.Table(columns=["criterion", "passed", "measured"], data=checks)})
        run.finish(exit_code=0)
    except Exception as error:
        warnings.warn(f"W&B figure upload failed ({type(error).__name__}: {error}).", stacklevel=2)
