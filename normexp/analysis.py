"""Run folders into tidy tables: one row per run × step × metric, and one row per run.

Any set of run folders loads into the same two pandas frames, with the run's config flattened into columns
(``norm.name``, ``optim.lr``, ...), so seeds aggregate with one ``groupby``. Diverged and failed runs are kept and
marked by ``status``, never dropped silently.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from normexp.identity import flatten, folder_excluded_keys
from normexp.rundir import CONFIG_FILE, METRICS_LOG, METRICS_TABLE, read_metrics_log, read_summary
from normexp.tracking import STEP_AXES

RUN_COLUMNS = (
    "run_id",
    "status",
    "steps",
    "total_steps",
    "wall_time_s",
    "steps_per_s",
    "fused_members",
    "git_sha",
    "git_dirty",
)
"""Summary columns that describe how a run went, not what it computes (``fused_members``: the size of the fused
cell the run trained in, whose wall time its members share; empty for a run trained alone)."""


def _run_id(run_dir: Path) -> str:
    return "/".join(run_dir.parts[-3:])


def load_run(run_dir: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """One run's summary row (config columns, status, final metrics as ``final/<metric>``) and long metrics."""
    run_dir = Path(run_dir)
    config = flatten(yaml.safe_load((run_dir / CONFIG_FILE).read_text()) or {})
    summary = read_summary(run_dir) or {"status": "running"}
    row = {"run_id": _run_id(run_dir), **config}
    row |= {key: summary.get(key) for key in RUN_COLUMNS[1:]}
    row |= {f"final/{metric}": value for metric, value in (summary.get("final") or {}).items()}
    table = run_dir / METRICS_TABLE
    metrics = pd.read_parquet(table) if table.exists() else read_metrics_log(run_dir / METRICS_LOG)
    return row, metrics.assign(run_id=row["run_id"])


def load_runs(
    run_dirs: Iterable[Path], config_columns: Sequence[str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(runs, summary)`` for the run folders that exist among ``run_dirs``.

    ``runs`` is tidy: run_id, step, metric, value, plus ``config_columns`` (all config keys that vary between the
    runs, and ``seed``, when None). ``summary`` has one row per run with every config column.
    """
    rows, frames = [], []
    for run_dir in run_dirs:
        if (Path(run_dir) / CONFIG_FILE).exists():
            row, metrics = load_run(Path(run_dir))
            rows.append(row)
            frames.append(metrics)
    summary = pd.DataFrame(rows)
    if summary.empty:
        return pd.DataFrame(columns=["run_id", "step", "metric", "value"]), summary
    if config_columns is None:
        config_columns = varying_columns(summary)
    runs = pd.concat(frames, ignore_index=True).merge(summary[["run_id", *config_columns]], on="run_id")
    return runs[["run_id", *config_columns, "step", "metric", "value"]], summary


def wandb_frames(wandb_runs: Iterable[Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(runs, summary)`` in :func:`load_runs`'s layout from W&B runs, e.g. ``wandb.Api().runs("entity/project",
    filters={"group": "ioffe2015-fig1"})``: W&B holds each run's resolved config, its metrics by training step and
    the summary normexp wrote (status, final/*), so the same groupby and :func:`aggregate` apply."""
    rows, frames = [], []
    for run in wandb_runs:
        run_id = f"{run.group}/{run.config['scale_name']}/{run.name}"  # the folder's experiment/scale/name, as _run_id
        summary = dict(run.summary)
        rows.append(
            {"run_id": run_id, **flatten(dict(run.config)), "status": summary.get("status")}
            | {key: value for key, value in summary.items() if key.startswith("final/")}
        )
        history = run.history(pandas=True)
        metrics = [c for c in history.columns if not c.startswith("_") and c not in STEP_AXES]
        long = history.melt(id_vars="_step", value_vars=metrics, var_name="metric").dropna(subset=["value"])
        frames.append(long.rename(columns={"_step": "step"}).assign(run_id=run_id))
    summary = pd.DataFrame(rows)
    if summary.empty:
        return pd.DataFrame(columns=["run_id", "step", "metric", "value"]), summary
    columns = varying_columns(summary)
    runs = pd.concat(frames, ignore_index=True).merge(summary[["run_id", *columns]], on="run_id")
    return runs[["run_id", *columns, "step", "metric", "value"]], summary


def run_seconds(summary: pd.DataFrame) -> pd.Series:
    """Each run's share of training wall time: a fused cell's wall time (which each member's summary records)
    divided among its ``fused_members``, a run trained alone's as it is."""
    members = summary["fused_members"].fillna(1) if "fused_members" in summary else 1
    return summary["wall_time_s"] / members


def varying_columns(summary: pd.DataFrame) -> list[str]:
    """Config columns whose value differs between runs (the grid's axes), plus ``seed``. Keys that do not change what
    a run computes (the run folder's ``exclude_keys``: launcher, device, logger, threads, data.root, ...) are never
    an axis: a grid cell run partly under one launcher and partly under another is still one cell."""
    excluded = folder_excluded_keys()
    columns = [
        c
        for c in summary.columns
        if c not in RUN_COLUMNS
        and not c.startswith("final/")
        and not any(c == key or c.startswith(f"{key}.") for key in excluded)
        and summary[c].astype(str).nunique() > 1
    ]
    return sorted(set(columns) | ({"seed"} & set(summary.columns)))


def seed_stats(values: pd.Series) -> dict[str, float]:
    """n, median, IQR, min–max, mean ± std of one cell's values across seeds."""
    return {
        "n": int(values.count()),
        "median": values.median(),
        "q25": values.quantile(0.25),
        "q75": values.quantile(0.75),
        "min": values.min(),
        "max": values.max(),
        "mean": values.mean(),
        "std": values.std(),
    }


def aggregate(frame: pd.DataFrame, by: Sequence[str], value: str) -> pd.DataFrame:
    """Seeds aggregated per cell ``by``: one row per cell with :func:`seed_stats` of ``value``, and, when ``frame``
    has a ``status`` column (a summary frame), ``n_diverged`` and ``n_failed``: the cell's runs that ended so, which
    ``n`` counts only when they recorded a value."""
    rows = [
        {**dict(zip(by, key if isinstance(key, tuple) else (key,), strict=False)), **seed_stats(group[value])}
        | (status_counts(group["status"]) if "status" in group else {})
        for key, group in frame.groupby(list(by), sort=True, dropna=False)
    ]
    return pd.DataFrame(rows)


def status_counts(statuses: pd.Series) -> dict[str, int]:
    """How many of a cell's runs diverged and how many failed."""
    return {f"n_{status}": int((statuses == status).sum()) for status in ("diverged", "failed")}


def curves(runs: pd.DataFrame, metric: str, by: Sequence[str]) -> pd.DataFrame:
    """Per cell ``by`` and step, the seed statistics of ``metric`` (for median curves with IQR bands)."""
    selected = runs[runs["metric"] == metric]
    return aggregate(selected, [*by, "step"], "value")
