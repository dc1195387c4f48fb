"""Launching runs: plan and validate every job of a grid first, run them through Hydra, report what happened.

``normexp run`` (one run) and ``normexp run -m`` (a grid) both go through :func:`launch`. Every job's config is
composed and validated before any work starts; a finished run (completed or diverged) is skipped on relaunch,
unless the experiment's config changed under it (then the launch stops and says so, see :func:`check_identity`);
a run that fails records ``failed`` in its summary and the grid goes on; a run another process is training (its
folder locked) is skipped and reported as running elsewhere.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
import traceback
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import hydra
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from normexp.checkpoint import CHECKPOINT_FILE, stored_config_hash
from normexp.config import CONFIG_DIR, compose_config, expand_grid, register, validate
from normexp.devices import pin_worker_gpu
from normexp.errors import ConfigError, UserError
from normexp.identity import config_hash
from normexp.rundir import (
    FINAL_STATUSES,
    RUNNING_ELSEWHERE,
    SUMMARY_FILE,
    is_finished,
    is_locked,
    is_over,
    read_summary,
    resolved_config,
    run_lock,
    write_json,
)


@dataclass(frozen=True)
class Job:
    """One planned run: its overrides, composed config, run folder and config hash (what it computes)."""

    overrides: list[str]
    cfg: DictConfig
    run_dir: Path
    config_hash: str


def plan(overrides: list[str], multirun: bool) -> list[Job]:
    """Compose and validate every job; raise :class:`ConfigError` naming the job that is wrong."""
    jobs = []
    for job_overrides in expand_grid(overrides) if multirun else [overrides]:
        cfg = compose_config(job_overrides, return_hydra_config=True)
        try:
            validate(cfg)
        except UserError as error:
            where = f" (in the job {' '.join(job_overrides)})" if multirun else ""
            raise type(error)(error.problem + where, error.choices, error.fix) from None
        jobs.append(Job(job_overrides, cfg, _run_dir(cfg, multirun), config_hash(resolved_config(job_config(cfg)))))
    _check_writable(jobs)
    for job in jobs:
        check_identity(job)
    if multirun and jobs and jobs[0].cfg.fuse:
        from normexp.training import fused  # torch.func and the models: only when fusing

        for cell in cells(jobs):
            fused.check_fusable([job_config(job.cfg) for job in cell])
    return jobs


def check_identity(job: Job) -> None:
    """Refuse to skip or resume a run made with another config than ``job``'s (the experiment's YAML changed since):
    a finished run compares its summary's config hash, an unfinished one its checkpoint's; an unknown hash (runs
    from before hashes were stored) passes. With ``resume=never`` nothing is refused: such a run starts again."""
    if job.cfg.resume == "never":
        return
    summary, saved = read_summary(job.run_dir), job.run_dir / CHECKPOINT_FILE
    if is_over(summary):
        stored, what = summary.get("config_hash"), f"finished ({summary['status']})"
    elif saved.exists():
        stored, what = stored_config_hash(saved), "checkpointed"
    else:
        return
    if stored not in (None, job.config_hash):
        raise ConfigError(
            f"the run folder {job.run_dir} holds a {what} run of another config than this launch's (config hash "
            f"{stored}, now {job.config_hash}): the experiment's or scale's YAML changed since it ran, and a run "
            "folder is named by the command-line overrides only.",
            fix="delete the folder, or add resume=never to start it again with the new config",
        )


def job_config(cfg: DictConfig) -> DictConfig:
    """A planned job's config as Hydra hands it to the run: without the ``hydra`` node."""
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return cfg


def cells(jobs: list[Job]) -> list[list[Job]]:
    """``jobs`` grouped into grid cells, runs that differ only in seed and lr (``fused.MEMBER_KEYS``)."""
    from normexp.training import fused

    grouped: dict[str, list[Job]] = {}
    for job in jobs:
        grouped.setdefault(fused.cell_key(job_config(job.cfg)), []).append(job)
    return list(grouped.values())


def train_cells(jobs: list[Job]) -> None:
    """Train ``jobs`` cell by cell, each cell's runs together (``fuse=true``); a cell that fails is recorded in its
    runs' summaries and the next one goes on; a stop signal stops the sweep once the cell is checkpointed."""
    from normexp.training.loop import Interrupted
    from normexp.training.runner import train_cell

    for cell in cells(jobs):
        with ExitStack() as locks:
            if not all([locks.enter_context(run_lock(job.run_dir)) for job in cell]):
                print(f"skip the cell of {cell[0].run_dir} ({RUNNING_ELSEWHERE}: a run's folder is locked)")
                continue
            try:
                train_cell(
                    [job_config(job.cfg) for job in cell],
                    [job.run_dir for job in cell],
                    [job.config_hash for job in cell],
                )
            except Interrupted as preempted:
                hand_on(preempted, f"the cell of {cell[0].run_dir}")
            except Exception as error:
                for job in cell:
                    record_failure(job.run_dir, error)


def _run_dir(cfg: DictConfig, multirun: bool) -> Path:
    """The run folder Hydra will use for ``cfg`` (its ``hydra.run.dir`` or ``sweep.dir/subdir``)."""
    HydraConfig.instance().set_config(cfg)
    if multirun:
        return Path(cfg.hydra.sweep.dir) / str(cfg.hydra.sweep.subdir)
    return Path(cfg.hydra.run.dir)


MIN_FREE_BYTES = 200 * 2**20
"""Free space an output folder needs before a launch: checkpoints and metrics of a grid, with room to spare."""


def _check_writable(jobs: list[Job]) -> None:
    """Refuse an output folder that cannot be written or is (nearly) full before any run starts."""
    for out_dir in {Path(job.cfg.out_dir) for job in jobs}:
        fix = "set out_dir=PATH to a writable folder with free space"
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            probe = out_dir / ".normexp-write-test"
            probe.write_text("ok")
            probe.unlink()
            free = shutil.disk_usage(out_dir).free
        except OSError as error:
            raise ConfigError(f"cannot write to out_dir={out_dir}: {error.strerror}.", fix=fix) from None
        if free < MIN_FREE_BYTES:
            raise ConfigError(f"out_dir={out_dir} has only {free / 2**20:.0f} MiB free.", fix=fix)


def run_job(cfg: DictConfig) -> dict[str, Any]:
    """Hydra's task function: train one run into its folder, holding the folder's lock, unless it is finished or
    another process holds the lock; never raise, except to stop the process on a stop signal."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    with run_lock(run_dir) as acquired:
        if not acquired:
            print(f"skip {run_dir} ({RUNNING_ELSEWHERE}: another process holds its lock)")
            return {"status": RUNNING_ELSEWHERE}
        identity = config_hash(resolved_config(cfg))
        if is_finished(run_dir, identity):
            summary = read_summary(run_dir)
            print(f"skip {run_dir} (already {summary['status']})")
            return summary
        return _train(cfg, run_dir, identity)


def _train(cfg: DictConfig, run_dir: Path, identity: str) -> dict[str, Any]:
    """Train the run; a failure is recorded in its summary, a stop signal handed on once it is checkpointed."""
    from normexp.training.loop import Interrupted
    from normexp.training.runner import train

    pin_worker_gpu(cfg.gpus if cfg.launcher_name == "joblib" else 0)
    try:
        return train(cfg, run_dir, identity)
    except Interrupted as preempted:
        hand_on(preempted, f"run {run_dir}")
    except Exception as error:
        return record_failure(run_dir, error)


def hand_on(interrupted: Any, what: str) -> NoReturn:
    """Say that ``what`` was interrupted and checkpointed, then hand the stop signal on (default: stop; submitit's
    USR2: requeue) and end the process."""
    print(f"{what} interrupted and checkpointed; relaunch the same command to resume", file=sys.stderr)
    sys.stderr.flush()
    try:
        interrupted.preemption.forward()
    except KeyboardInterrupt:  # Ctrl-C's default handler: stop with its status, without a traceback
        raise SystemExit(130) from None
    raise SystemExit(1) from None


def record_failure(run_dir: Path, error: Exception) -> dict[str, Any]:
    """Mark the run ``failed`` in its summary (with the error and traceback), say so on stderr; return the summary."""
    summary = read_summary(run_dir) or {}
    message = error.message if isinstance(error, UserError) else f"{type(error).__name__}: {error}"
    summary |= {"status": "failed", "error": message, "traceback": traceback.format_exc()}
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / SUMMARY_FILE, summary)
    print(f"run {run_dir} failed: {message}", file=sys.stderr)
    return summary


def _hydra_entry(cfg: DictConfig) -> None:
    run_job(cfg)


def call_hydra(args: list[str]) -> None:
    """Run the Hydra app with command-line ``args`` (overrides and Hydra flags). Ctrl-C ends the process with
    status 130 and no traceback: the run has said that it was checkpointed and how to resume."""
    register()
    GlobalHydra.instance().clear()
    app = hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base=None)(_hydra_entry)
    argv = sys.argv
    sys.argv = ["normexp", *args]
    try:
        app()
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    finally:
        sys.argv = argv
        GlobalHydra.instance().clear()


def launch(overrides: list[str], multirun: bool) -> list[Job]:
    """Plan, validate and run ``overrides``; return the jobs (their summaries are in their folders)."""
    jobs = plan(overrides, multirun)
    pending = [job for job in jobs if not is_finished(job.run_dir, job.config_hash)]
    print(f"{len(jobs)} run(s), {len(jobs) - len(pending)} already finished, {len(pending)} to run")
    if pending:
        with SweepProgress(pending) if multirun else nullcontext():
            if multirun and pending[0].cfg.fuse:
                train_cells(pending)
            else:
                call_hydra((["--multirun"] if multirun else []) + overrides)
    return jobs


class SweepProgress(threading.Thread):
    """A sweep-level progress line (done, running, failed, ETA), printed whenever it changes, whatever the launcher:
    it watches the runs' folders rather than the launcher."""

    def __init__(self, jobs: list[Job], every_s: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.jobs, self.every_s, self._stop_event = jobs, every_s, threading.Event()
        self._t0, self._last = time.monotonic(), ""

    def __enter__(self) -> SweepProgress:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop_event.set()
        self.join()
        self.report()

    def run(self) -> None:
        while not self._stop_event.wait(self.every_s):
            self.report()

    def report(self) -> None:
        """Print the line if a run started or ended since the last time."""
        states = [self._state(job.run_dir) for job in self.jobs]
        done = sum(s in FINAL_STATUSES for s in states)
        failed, running = states.count("failed"), states.count("running")
        elapsed = time.monotonic() - self._t0
        remaining = len(states) - done - failed
        eta = f", ETA {_duration(elapsed / (done + failed) * remaining)}" if done + failed and remaining else ""
        counts = f"[sweep] {done + failed}/{len(states)} done ({failed} failed), {running} running"
        if counts != self._last:  # a new line when a run starts or ends, not every time the ETA ticks
            print(counts + eta, file=sys.stderr, flush=True)
            self._last = counts

    @staticmethod
    def _state(run_dir: Path) -> str:
        summary = read_summary(run_dir)
        if summary is not None:
            return summary["status"]
        return "running" if (run_dir / "metrics.jsonl").exists() else "pending"


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def report(jobs: list[Job]) -> int:
    """Print one line per status and the failed runs; return the exit status (1 if any run failed; a run that
    another process is training is neither done nor failed)."""
    statuses: dict[str, list[Job]] = {}
    for job in jobs:
        status = RUNNING_ELSEWHERE if is_locked(job.run_dir) else (read_summary(job.run_dir) or {}).get("status")
        statuses.setdefault(status or "missing", []).append(job)
    print("runs: " + ", ".join(f"{len(v)} {k}" for k, v in sorted(statuses.items())))
    failed = statuses.get("failed", []) + statuses.get("missing", [])
    for job in failed:
        error = (read_summary(job.run_dir) or {}).get("error", "no summary written")
        print(f"  failed: {job.run_dir}: {error}", file=sys.stderr)
    return 1 if failed else 0
