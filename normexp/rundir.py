"""The run folder: resolved config, append-only metrics, Parquet metrics and ``summary.json``.

A run folder is named by its overrides (see ``configs/config.yaml``), never by time, so relaunching a grid finds
the runs it already finished. Every file a reader consumes is written atomically (temporary file, fsync, rename).
"""

from __future__ import annotations

import json
import os
import platform
import re
import socket
import subprocess
import warnings
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
FINAL_STATUSES = ("completed", "diverged")
"""Statuses of a run that is over: relaunching its grid skips it. A ``failed`` run is retried from scratch and an
``interrupted`` one resumes from its checkpoint."""


def atomic_write(path: Path, write: Any, mode: str = "w") -> None:
    """Write ``path`` through ``write(file)`` into a temporary sibling, fsync it, then rename it into place."""
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    with open(partial, mode) as file:
        write(file)
        file.flush()
        os.fsync(file.fileno())
    partial.replace(path)


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


def is_finished(run_dir: Path) -> bool:
    """Whether the run in ``run_dir`` is over (completed or diverged) and need not run again."""
    summary = read_summary(run_dir)
    return summary is not None and summary.get("status") in FINAL_STATUSES


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
