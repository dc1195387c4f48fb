"""A run's lifecycle: from composed configs to run folders (start, resume, train, status, summary).

:func:`train` trains one run, :func:`train_cell` the members of a fused cell together; both go through
:func:`train_runs`: each run folder gets its config, the runs are assembled (:mod:`normexp.training.assemble`),
resumed from their checkpoints with ``resume: auto``, trained by the loop schedule (:mod:`normexp.training.loop`)
and end with a ``summary.json``. A relaunched run continues from its checkpoint and ends bit-identical (on CPU) to a
run that was never interrupted. A run stopped by a stop signal is checkpointed and recorded ``interrupted``; one
stopped any other way (Ctrl-C twice, ``sys.exit``) is recorded ``interrupted`` too and resumes from its last
periodic checkpoint.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from normexp import checkpoint
from normexp.identity import config_hash
from normexp.rundir import (
    METRICS_LOG,
    SUMMARY_FILE,
    environment,
    resolved_config,
    save_config,
    truncate_metrics_log,
    write_json,
)
from normexp.training.assemble import assemble
from normexp.training.fused import FusedRuns
from normexp.training.loop import Interrupted, Loop, Record, SingleRun, Stepper


def train(cfg: DictConfig, run_dir: Path, identity: str | None = None) -> dict[str, Any]:
    """Train the run described by ``cfg`` into ``run_dir`` and return its summary (also in ``summary.json``);
    ``identity`` is its config hash when the caller has computed it."""
    return train_runs([cfg], [run_dir], lambda: SingleRun(assemble(cfg)), None if identity is None else [identity])[0]


def train_cell(
    cfgs: Sequence[DictConfig], run_dirs: Sequence[Path], identities: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Train one fused cell's runs together into their folders, as :func:`train` would each (same records at the
    same steps, summary with ``fused_members``; the cell's wall time is every member's); return their summaries."""
    return train_runs(cfgs, run_dirs, lambda: FusedRuns(cfgs), identities, fused_members=len(cfgs))


def train_runs(
    cfgs: Sequence[DictConfig],
    run_dirs: Sequence[Path],
    build: Callable[[], Stepper],
    identities: Sequence[str] | None = None,
    **extra: Any,
) -> list[dict[str, Any]]:
    """Train the runs ``cfgs`` into ``run_dirs`` with the stepper ``build()`` makes; return their summaries
    (``extra`` adds summary fields). ``identities`` are the runs' config hashes (computed here when not given).
    A failure marks every run ``failed`` and propagates; a stop signal raises
    :class:`~normexp.training.loop.Interrupted` once every run is checkpointed and recorded ``interrupted``."""
    for cfg, run_dir in zip(cfgs, run_dirs, strict=True):
        start(cfg, run_dir)
    stepper = build()
    loop = Loop(stepper, [Record(cfg.train.target_acc) for cfg in cfgs])
    saved = [Path(run_dir) / checkpoint.CHECKPOINT_FILE for run_dir in run_dirs]
    hashes = list(identities or [config_hash(resolved_config(cfg)) for cfg in cfgs])
    resume(loop, cfgs[0].resume, saved, run_dirs)
    for record, cfg, run_dir in zip(loop.records, cfgs, run_dirs, strict=True):
        record.open(cfg, run_dir)

    def save() -> None:
        for member, (path, identity) in enumerate(zip(saved, hashes, strict=True)):
            checkpoint.save(path, loop.member_checkpoint(member) | {"config_hash": identity})

    failure, interrupted = None, None
    try:
        with checkpoint.preemption_flag() as preempted:
            loop.run(save, preempted)
    except Interrupted as why:
        failure, interrupted = ("interrupted", str(why)), why
    except Exception as why:
        failure = ("failed", f"{type(why).__name__}: {why}")
        raise
    except BaseException as why:  # KeyboardInterrupt (Ctrl-C twice), SystemExit: mid-step, so no checkpoint now
        failure = ("interrupted", f"{type(why).__name__} at step {loop.step}; resumes from the last checkpoint")
        raise
    finally:
        summaries = [
            finish(cfg, run_dir, loop, member, failure or loop.status(member), hashes[member], **extra)
            for member, (cfg, run_dir) in enumerate(zip(cfgs, run_dirs, strict=True))
        ]
    if interrupted is not None:
        raise interrupted
    for cfg, path in zip(cfgs, saved, strict=True):
        if not cfg.train.keep_checkpoint:  # an ended run never resumes; only a landscape or a user would read it
            path.unlink(missing_ok=True)
    return summaries


def start(cfg: DictConfig, run_dir: Path) -> None:
    """Create ``run_dir`` with the run's config (``config.yaml``); remove the summary of an earlier attempt, which
    no longer describes the run (a running run has none)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / SUMMARY_FILE).unlink(missing_ok=True)
    save_config(run_dir, cfg)


def resume(loop: Loop, mode: str, saved: list[Path], run_dirs: Sequence[Path]) -> None:
    """With ``resume: auto``, continue from every run's checkpoint when each has one, all at the same step (a kill
    between two members' saves leaves them apart); otherwise start afresh: a stale checkpoint must not outlive the
    restart (a kill before the first save would resume from it), nor a metrics log."""
    if mode == "auto" and all(path.exists() for path in saved):
        states = [checkpoint.load(path, loop.stepper.device) for path in saved]
        if len({state["step"] for state in states}) == 1:
            loop.load_member_checkpoints(states)
            for run_dir in run_dirs:
                truncate_metrics_log(Path(run_dir) / METRICS_LOG, loop.step)
                print(f"run {run_dir} resumes from its checkpoint at step {loop.step}", file=sys.stderr)
            return
    for path, run_dir in zip(saved, run_dirs, strict=True):
        (Path(run_dir) / METRICS_LOG).unlink(missing_ok=True)
        path.unlink(missing_ok=True)


def finish(
    cfg: DictConfig,
    run_dir: Path,
    loop: Loop,
    member: int,
    status: tuple[str, str | None],
    identity: str,
    **extra: Any,
) -> dict[str, Any]:
    """Close run ``member``'s records and write its ``summary.json`` (``extra`` adds fields); return the summary."""
    record = loop.records[member]
    if record.log is not None:
        record.log.close()
    steps, elapsed = loop.steps(member), loop.elapsed
    summary = {
        "status": status[0],
        "error": status[1],
        "run_name": run_dir.name,
        "experiment": cfg.experiment_name,
        "claim": cfg.claim,
        "scale": cfg.scale_name,
        "seed": cfg.seed,
        "steps": steps,
        "total_steps": cfg.train.steps,
        "wall_time_s": elapsed,
        "steps_per_s": loop.trained_steps / elapsed if elapsed > 0 else None,
        "final": record.last_metrics,
        "best": record.best,
        "steps_to_target": record.steps_to_target,
        "config_hash": identity,
        **extra,
        **environment(loop.stepper.device),
    }
    write_json(run_dir / SUMMARY_FILE, summary)
    record.tracker.finish(tracker_summary(summary))
    return summary


def tracker_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary metrics a tracker shows per run: status, diverged, steps, final/*, best/*, steps to target."""
    flat = {f"final/{k}": v for k, v in summary["final"].items()} | {f"best/{k}": v for k, v in summary["best"].items()}
    keys = ("status", "steps", "steps_to_target", "wall_time_s", "steps_per_s")
    return {key: summary[key] for key in keys} | {"diverged": summary["status"] == "diverged"} | flat
