"""Launching runs: ``normexp run`` is a Hydra app; its sweeper plans and validates a whole grid before any run.

:func:`hydra_app` hands ``normexp run``'s arguments to Hydra's own front door (``_run_hydra``, what ``@hydra.main``
calls), so every Hydra flag works in any position: ``-m``, ``--cfg``, ``--info``, ``--resolve``, ``-sc``,
``-cd/-cp/-cn``, ``--help``. A grid is expanded by Hydra's sweeper machinery (``glob()``, ``range()``, ``choice()``;
``hydra_plugins/normexp_sweeper``), which then calls :func:`run_grid`: every job's config is composed and validated
first, and the data a paper scale downloads is fetched once, so a bad knob stops the launch with one paragraph
before any work. A finished run (completed or diverged) is skipped on relaunch, unless the experiment's config
changed under it (then the launch stops and says so, see :func:`check_identity`); a run that fails records
``failed`` in its summary and the grid goes on; a run another process is training (its folder locked) is skipped
and reported as running elsewhere. With ``fuse=true`` each grid cell is one launcher job (:func:`train_cell_job`).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from hydra import version
from hydra._internal.utils import _run_hydra, get_args_parser
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from normexp.checkpoint import CHECKPOINT_FILE, stored_config_hash
from normexp.config import CONFIG_DIR, NormexpConfig, one_paragraph, register, validate
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

FUSED_CELL = "NORMEXP_FUSED_CELL"
"""The environment variable (set through ``hydra.job.env_set``) naming a fused cell job's member list."""


@dataclass(frozen=True)
class Job:
    """One planned run: its overrides, composed config (without the ``hydra`` node), run folder and config hash."""

    overrides: list[str]
    cfg: DictConfig
    run_dir: Path
    config_hash: str


_launched: list[Job] = []
"""The jobs of the launches since :func:`hydra_app` started: what it returns to the command line."""


def hydra_app(argv: list[str]) -> list[Job]:
    """Run ``normexp run ARGV`` as the Hydra app it is; return the jobs it planned (none for ``--cfg`` and the
    like). Hydra's errors (an unknown group option, a bad override) become a :class:`ConfigError`; Ctrl-C ends the
    process with status 130 and no traceback, once the run has said it was checkpointed and how to resume."""
    parser = get_args_parser()
    parser.prog = "normexp run"
    args = parser.parse_intermixed_args(argv)  # flags before, between or after the overrides
    version.setbase(None)  # as @hydra.main(version_base=None): this Hydra's defaults (no chdir into run folders)
    register()
    _launched.clear()
    try:
        with _as_hydra_process(argv):
            _run_hydra(args, parser, run_job, config_path=str(CONFIG_DIR), config_name="config")
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except _UserErrorInJob as stop:
        raise stop.error from None
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(one_paragraph(error).rstrip(".") + ".", fix=_hydra_fix(error)) from None
    except OSError as error:  # Hydra creates a single run's folder before its task starts
        raise ConfigError(f"cannot write to out_dir: {error.filename}: {error.strerror}.", fix=WRITABLE_FIX) from None
    return list(_launched)


def launch(overrides: list[str], multirun: bool) -> list[Job]:
    """``normexp run [-m] OVERRIDES`` from Python (``reproduce``, notebooks, scripts): plan, validate and run the
    grid (``multirun``) or the single run; return the jobs (their summaries are in their folders)."""
    return hydra_app((["-m"] if multirun else []) + list(overrides))


@contextmanager
def _as_hydra_process(argv: list[str]) -> Iterator[None]:
    """The process as Hydra expects it for the app's run: ``sys.argv`` naming ``normexp`` (shell completion installs
    itself for ``argv[0]``), and ``HYDRA_FULL_ERROR`` so Hydra raises errors rather than exiting with status 1
    (:func:`hydra_app` turns them into one paragraph and status 2). The root logger is restored afterwards (``--info``
    points it at the stdout of the moment), for callers that go on in the same process (``reproduce``, tests)."""
    saved_argv, saved_full_error = sys.argv, os.environ.get("HYDRA_FULL_ERROR")
    root = logging.getLogger()
    saved_logging = root.level, list(root.handlers)
    sys.argv = ["normexp", *argv]
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    finally:
        sys.argv = saved_argv
        root.setLevel(saved_logging[0])
        root.handlers[:] = saved_logging[1]
        if saved_full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved_full_error


def _hydra_fix(error: Exception) -> str:
    text = str(error)
    if "hydra/sweeper" in text:
        return (
            "install the sweeper's Hydra plugin (e.g. pip install hydra-optuna-sweeper for hydra/sweeper=optuna), "
            "or leave hydra/sweeper unset for the grid sweeper"
        )
    if "does not support sweep type" in text or "Can only enumerate" in text:
        return (
            "enumerate the values (optim.lr=0.1,0.3 or range(), choice(), glob()), or search a continuous "
            "interval() with an optimizing sweeper: pip install hydra-optuna-sweeper, then hydra/sweeper=optuna"
        )
    return "check the override spelling; `normexp list` shows names, `normexp run --help` the groups"


class _UserErrorInJob(BaseException):
    """Carries a single run's :class:`UserError` out of Hydra's job machinery, which would report an ``Exception``
    as a failed job (with a line of its own) before re-raising it."""

    def __init__(self, error: UserError) -> None:
        super().__init__(error.message)
        self.error = error


def run_grid(grid: list[list[str]], compose: Callable[[list[str]], DictConfig], launch: Callable[..., Any]) -> Any:
    """The sweeper's work once Hydra has expanded the grid into ``grid`` (each job's overrides): plan every job
    (``compose`` gives its config), then ``launch`` the pending ones, one launcher job per run or, with
    ``fuse=true``, per grid cell; return the launcher's results."""
    pending = _planned(plan(grid, compose))
    if not pending:
        return []
    batch = cell_jobs(pending) if pending[0].cfg.fuse else [job.overrides for job in pending]
    with SweepProgress(pending):
        return launch(batch, initial_job_idx=0)


def _planned(jobs: list[Job]) -> list[Job]:
    """Record ``jobs`` as launched, say how many are left to run, return those."""
    _launched.extend(jobs)
    pending = [job for job in jobs if not is_finished(job.run_dir, job.config_hash)]
    print(f"{len(jobs)} run(s), {len(jobs) - len(pending)} already finished, {len(pending)} to run", flush=True)
    return pending


def plan(grid: list[list[str]], compose: Callable[[list[str]], DictConfig]) -> list[Job]:
    """Compose and validate every job of ``grid``; raise :class:`ConfigError` naming the job that is wrong. The
    data a download provides is fetched here, once per dataset, so a missing one stops the grid before it starts."""
    jobs = []
    for overrides in grid:
        cfg = compose(overrides)
        try:
            validate(cfg)
        except UserError as error:
            where = f" (in the job {' '.join(overrides)})" if len(grid) > 1 else ""
            raise type(error)(error.problem + where, error.choices, error.fix) from None
        jobs.append(_job(overrides, cfg))
    _check_writable(jobs)
    _fetch_data(jobs)
    for job in jobs:
        check_identity(job)
    if jobs and jobs[0].cfg.fuse:
        from normexp.training import fused  # torch.func and the models: only when fusing

        for cell in cells(jobs):
            fused.check_fusable([job.cfg for job in cell])
    return jobs


def _job(overrides: list[str], cfg: DictConfig) -> Job:
    """The job of a composed ``cfg`` (with its ``hydra`` node): its run folder is the one Hydra will use."""
    HydraConfig.instance().set_config(cfg)
    hydra = cfg.hydra
    multirun = hydra.mode == RunMode.MULTIRUN
    run_dir = Path(hydra.sweep.dir) / str(hydra.sweep.subdir) if multirun else Path(hydra.run.dir)
    job_cfg = job_config(cfg)
    return Job(list(overrides), job_cfg, run_dir, config_hash(resolved_config(job_cfg)))


def _fetch_data(jobs: list[Job]) -> None:
    """Load each distinct dataset that ``data.download`` fetches once now (downloading it if needed): a paper scale
    whose data cannot be had fails here, once, with the data's own error, rather than in every run."""
    from normexp import data

    downloads = {repr(job.cfg.data): job.cfg.data for job in jobs if job.cfg.data.get("download")}
    for data_cfg in downloads.values():
        if not data_cfg.get("synthetic"):
            data.load(data_cfg)


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


def cell_jobs(jobs: list[Job]) -> list[list[str]]:
    """One launcher job per grid cell of ``jobs`` (``fuse=true``): the first member's overrides, plus
    ``hydra.job.env_set`` naming a file under ``out_dir`` that lists the cell's members for :func:`train_cell_job`,
    so each cell trains where the launcher puts it (a SLURM node, a joblib worker), not in the launching process."""
    batch = []
    for index, cell in enumerate(cells(jobs)):
        members = [
            {"cfg": job.cfg, "run_dir": str(job.run_dir.resolve()), "config_hash": job.config_hash} for job in cell
        ]
        path = Path(cell[0].cfg.out_dir).resolve() / ".fused_cells" / f"{os.getpid()}-{index}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(members), path)
        batch.append([*cell[0].overrides, f"++hydra.job.env_set.{FUSED_CELL}='{path}'"])
    return batch


def train_cell_job(members_file: Path) -> dict[str, str]:
    """Train the fused cell that ``members_file`` lists (:func:`cell_jobs`), holding its runs' locks; a cell that
    fails is recorded in its runs' summaries; a stop signal ends the job once the cell is checkpointed. Returns
    each run folder's status."""
    from normexp.training.loop import Interrupted
    from normexp.training.runner import train_cell

    schema = OmegaConf.structured(NormexpConfig)
    members = OmegaConf.load(members_file)
    cfgs = [OmegaConf.merge(schema, member.cfg) for member in members]
    run_dirs = [Path(member.run_dir) for member in members]
    with ExitStack() as locks:
        if not all([locks.enter_context(run_lock(run_dir)) for run_dir in run_dirs]):
            print(f"skip the cell of {run_dirs[0]} ({RUNNING_ELSEWHERE}: a run's folder is locked)")
            return dict.fromkeys(map(str, run_dirs), RUNNING_ELSEWHERE)
        _pin_gpu(cfgs[0])
        try:
            summaries = train_cell(cfgs, run_dirs, [member.config_hash for member in members])
        except Interrupted as preempted:
            hand_on(preempted, f"the cell of {run_dirs[0]}")
        except Exception as error:
            summaries = [record_failure(run_dir, error) for run_dir in run_dirs]
    return {str(run_dir): summary["status"] for run_dir, summary in zip(run_dirs, summaries, strict=True)}


WRITABLE_FIX = "set out_dir=PATH to a writable folder with free space"
MIN_FREE_BYTES = 200 * 2**20
"""Free space an output folder needs before a launch: checkpoints and metrics of a grid, with room to spare."""


def _check_writable(jobs: list[Job]) -> None:
    """Refuse an output folder that cannot be written or is (nearly) full before any run starts."""
    for out_dir in {Path(job.cfg.out_dir) for job in jobs}:
        fix = WRITABLE_FIX
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
    """Hydra's task function: train one run into its folder (or a fused cell: :func:`train_cell_job`), holding the
    folder's lock, unless it is finished or another process holds the lock. A single run (no ``-m``) is planned
    here first, as the sweeper plans a grid's runs, so a bad knob stops it before any work; otherwise never
    raises, except to stop the process on a stop signal."""
    hydra = HydraConfig.get()
    if os.environ.get(FUSED_CELL):
        return train_cell_job(Path(os.environ[FUSED_CELL]))
    if hydra.mode == RunMode.RUN:
        _plan_single_run(cfg, hydra)
    run_dir = Path(hydra.runtime.output_dir)
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


def _plan_single_run(cfg: DictConfig, hydra: DictConfig) -> None:
    full = cfg.copy()
    with open_dict(full):
        full.hydra = hydra
    try:
        _planned(plan([list(hydra.overrides.task)], lambda _: full))
    except UserError as error:
        _remove_empty(Path(hydra.runtime.output_dir), until=Path(cfg.out_dir))  # Hydra made it before the task
        raise _UserErrorInJob(error) from None


def _remove_empty(folder: Path, until: Path) -> None:
    """Remove ``folder`` and its parents up to ``until`` (kept) as long as they are empty."""
    for empty in [folder, *folder.parents]:
        if until not in empty.parents:
            return
        try:
            empty.rmdir()
        except OSError:
            return


def _train(cfg: DictConfig, run_dir: Path, identity: str) -> dict[str, Any]:
    """Train the run; a failure is recorded in its summary, a stop signal handed on once it is checkpointed."""
    from normexp.training.loop import Interrupted
    from normexp.training.runner import train

    _pin_gpu(cfg)
    try:
        return train(cfg, run_dir, identity)
    except Interrupted as preempted:
        hand_on(preempted, f"run {run_dir}")
    except Exception as error:
        return record_failure(run_dir, error)


def _pin_gpu(cfg: DictConfig) -> None:
    """Pin a parallel worker (joblib) to a GPU of its own; other launchers give each job its own devices."""
    pin_worker_gpu(cfg.gpus if cfg.launcher_name == "joblib" else 0)


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
