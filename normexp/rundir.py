"""The run folder: resolved config, append-only metrics, Parquet metrics and ``summary.json``.

A run folder is named by its overrides (see ``normexp/configs/config.yaml``), never by time, so relaunching a grid finds
the runs it already finished; its summary and checkpoint hold a hash of the resolved config
(:func:`normexp.identity.config_hash`), so a relaunch notices when the experiment's YAML changed under a run.
Every file a reader consumes is written atomically (temporary file, fsync, rename). While a run trains, its process
holds the folder's lock (:func:`run_lock`), so two launches of the same run never train into one folder.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import re
import socket
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

CONFIG_FILE = "config.yaml"
METRICS_LOG = "metrics.jsonl"
METRICS_TABLE = "metrics.parquet"
SUMMARY_FILE = "summary.json"
LOCK_FILE = ".lock"
FINAL_STATUSES = ("completed", "diverged")
"""Statuses of a run that is over: relaunching its grid skips it. Any other run trains again on relaunch: with
``resume: auto`` an ``interrupted`` or ``failed`` run continues from its last checkpoint (a failed one starts from
scratch when it failed before its first checkpoint); with ``resume: never`` every one starts from scratch."""
RUNNING_ELSEWHERE = "running elsewhere"
"""The state of a run whose folder another process holds locked (:func:`run_lock`): it is neither done nor failed."""


def atomic_write(path: Path, write: Any, mode: str = "w") -> None:
    """Write ``path`` through ``write(file)`` into a temporary sibling, fsync it, then rename it into place; on any
    error the temporary file is removed and ``path`` is left as it was."""
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with open(partial, mode) as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        partial.replace(path)
    except BaseException:  # KeyboardInterrupt too: a partial file is never left behind
        partial.unlink(missing_ok=True)
        raise


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Atomically write ``payload`` as indented JSON."""
    atomic_write(path, lambda f: json.dump(payload, f, indent=2, sort_keys=True, default=str))


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """The run's summary, or None when there is none or it is unreadable (then the run counts as unfinished)."""
    path = Path(run_dir) / SUMMARY_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as error:
        warnings.warn(f"ignoring unreadable {path} ({error}); the run counts as unfinished", stacklevel=2)
        return None


def is_over(summary: dict[str, Any] | None) -> bool:
    """Whether a run with ``summary`` is over: diverged, or completed all its steps (older versions recorded a run
    stopped by Ctrl-C as ``completed`` with fewer steps)."""
    if summary is None or summary.get("status") not in FINAL_STATUSES:
        return False
    return summary["status"] == "diverged" or summary.get("steps") == summary.get("total_steps")


def is_finished(run_dir: Path, config_hash: str | None = None) -> bool:
    """Whether the run in ``run_dir`` is over (:func:`is_over`) and need not run again; given the ``config_hash``
    of the config it would run now, a run made with another config is not finished (its hash unknown: it is)."""
    summary = read_summary(run_dir)
    stored = (summary or {}).get("config_hash")
    return is_over(summary) and (config_hash is None or stored in (None, config_hash))


@contextmanager
def run_lock(run_dir: Path) -> Iterator[bool]:
    """Hold an exclusive lock on ``run_dir`` for the block; yield False, without waiting, when another process holds
    it. A file system without locks (some cluster mounts) yields True after a warning: the run goes on unguarded."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK_FILE, "a") as handle:  # closing it releases the lock, whatever ends the block
        yield _try_lock(handle)


def _try_lock(handle: Any) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as error:
        warnings.warn(f"cannot lock {handle.name} ({error.strerror}); running without a lock", stacklevel=3)
    return True


def is_locked(run_dir: Path) -> bool:
    """Whether another process holds ``run_dir``'s lock, i.e. trains that run now."""
    if not (Path(run_dir) / LOCK_FILE).exists():
        return False
    with run_lock(Path(run_dir)) as acquired:
        return not acquired


SECRET_NAME = re.compile(r"api[_-]?key|token|secret|password|credential", re.IGNORECASE)
REDACTED = "***redacted***"


def redact(tree: Any) -> Any:
    """``tree`` with secrets replaced: values under secret-looking keys, and any value equal to a secret-looking
    environment variable (e.g. ``WANDB_API_KEY`` interpolated through ``${oc.env:...}``)."""
    secrets = {value for name, value in os.environ.items() if SECRET_NAME.search(name) and len(value) >= 8}

    def clean(node: Any, key: str = "") -> Any:
        if isinstance(node, dict):
            return {k: clean(v, str(k)) for k, v in node.items()}
        if isinstance(node, list):
            return [clean(v, key) for v in node]
        if SECRET_NAME.search(key) or (isinstance(node, str) and any(secret in node for secret in secrets)):
            return REDACTED
        return node

    return clean(tree)


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The run's config, resolved and without secrets: what the run folder and trackers store."""
    return redact(OmegaConf.to_container(cfg, resolve=True))


def save_config(run_dir: Path, cfg: DictConfig) -> None:
    """Store the resolved config (secrets redacted) in the run folder."""
    atomic_write(run_dir / CONFIG_FILE, lambda f: f.write(OmegaConf.to_yaml(resolved_config(cfg))))


class MetricsLog:
    """Metrics of one run: a JSON line per record while running, one Parquet table at the end.

    A record is ``{"step": s, "<metric>": value, ...}``; appended and flushed line by line, so a crash loses at
    most the line being written, and readers skip a truncated last line.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / METRICS_LOG
        self._file = open(self.path, "a")  # noqa: SIM115 - held open for the run, closed by close()

    def write(self, step: int, metrics: dict[str, float]) -> None:
        """Append one record."""
        self._file.write(json.dumps({"step": step, **metrics}) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Close the log and write ``metrics.parquet`` (long format: step, metric, value)."""
        self._file.close()
        table = read_metrics_log(self.path)
        atomic_write(self.path.with_name(METRICS_TABLE), lambda f: table.to_parquet(f, index=False), mode="wb")


def _records(path: Path) -> list[dict[str, Any]]:
    """The complete records of a metrics log; a truncated last line (a crash mid-write) is skipped."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def truncate_metrics_log(path: Path, last_step: int) -> None:
    """Keep only the records up to ``last_step`` (a resumed run re-records what came after its checkpoint)."""
    if path.exists():
        kept = [json.dumps(r) + "\n" for r in _records(path) if r["step"] <= last_step]
        atomic_write(path, lambda f: f.writelines(kept))


def read_metrics_log(path: Path) -> pd.DataFrame:
    """A metrics log in long format (step, metric, value), skipping a truncated last line."""
    records = _records(path) if Path(path).exists() else []
    if not records:
        return pd.DataFrame({"step": pd.Series(dtype="int64"), "metric": [], "value": pd.Series(dtype="float64")})
    wide = pd.DataFrame.from_records(records)
    long = wide.melt(id_vars="step", var_name="metric", value_name="value").dropna(subset=["value"])
    return long.astype({"step": "int64", "value": "float64"}).reset_index(drop=True)


@cache
def code_version() -> dict[str, Any]:
    """The git commit of the code that ran, and whether the work tree had uncommitted changes."""
    repo = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(
                ["git", *args], cwd=repo, capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_sha": git("rev-parse", "HEAD"), "git_dirty": bool(status) if status is not None else None}


def environment(device: torch.device) -> dict[str, Any]:
    """Library versions and the machine a run used."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "host": socket.gethostname(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        **code_version(),
    }
