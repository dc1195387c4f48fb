"""What the batch-size claims share: final accuracy per (norm, batch) cell, the error-vs-batch figure and the table.

Qiao et al. 2019 (``qiao2019-microbatch``) and Wu & He 2018 (``wu2018-batchsize``) are judged on one grid, the
experiment ``batchsize``: every run sees the same number of training images, with the lr scaled linearly with the
batch. A cell is a (norm, batch size) pair; its value is the final test accuracy (or error, 100 − accuracy) in
percentage points, summarized by the median over at least :data:`MIN_SEEDS` seeds. A diverged run counts as
accuracy −inf (error +inf): it ranks below every run that finished.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from normexp import plotting
from normexp.analysis import aggregate
from normexp.claims import InsufficientData, finished, median_range, seeded_cell

NORM = "norm.name"
BATCH = "train.batch_size"
NORM_BATCH = "train.norm_batch"
FINAL_ACC = "final/test/acc"
EXPERIMENT = "batchsize"


def final_accuracy(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per finished run: norm, batch, seed, status, wall time, ``acc`` and ``error`` in points (±inf if
    diverged). Runs whose norm batch is smaller than their batch (``train.norm_batch``) are not literal batches and
    are left out."""
    for column in (NORM, BATCH, "seed", "status", "wall_time_s", FINAL_ACC):
        if column not in summary:
            raise InsufficientData(f"no column {column!r} in the stored results")
    everything = pd.Series(True, index=summary.index)
    literal = (
        summary[NORM_BATCH].isna() | (summary[NORM_BATCH] == summary[BATCH]) if NORM_BATCH in summary else everything
    )
    runs = finished(summary[literal])
    acc = np.where(runs["status"] == "diverged", -math.inf, 100 * runs[FINAL_ACC].astype(float))
    return runs[[NORM, BATCH, "seed", "status", "wall_time_s"]].assign(acc=acc, error=100 - acc)


def cell(final: pd.DataFrame, norm: str, batch: int) -> pd.DataFrame:
    """The runs of one (norm, batch) cell; :class:`InsufficientData` with fewer than :data:`MIN_SEEDS` seeds."""
    return seeded_cell(final, (final[NORM] == norm) & (final[BATCH] == batch), f"{norm} at batch {batch}")


def median(final: pd.DataFrame, norm: str, batch: int, value: str = "acc") -> float:
    """The median over seeds of ``value`` (``acc`` or ``error``) in one cell."""
    return float(cell(final, norm, batch)[value].median())


def describe(final: pd.DataFrame, norm: str, batch: int, value: str = "acc") -> str:
    """``norm@batch median [min–max] (n=…)`` of ``value``, plus the number of diverged runs if any."""
    runs = cell(final, norm, batch)
    diverged = int((runs["status"] == "diverged").sum())
    return f"{norm}@{batch} {median_range(runs[value], 2)} (n={len(runs)}" + (
        f", {diverged} diverged)" if diverged else ")"
    )


def error_vs_batch(ax: object, final: pd.DataFrame, norms: Sequence[str], batches: Sequence[int] = ()) -> None:
    """Median test error against the batch size per norm, with the min–max over seeds as a band (finished runs),
    the batch decreasing from left to right as in Wu & He's Fig. 1 (log-2 axis); only ``batches`` when given."""
    finished = final[np.isfinite(final["error"])]
    if batches:
        finished = finished[finished[BATCH].isin(batches)]
    cells = aggregate(finished, [NORM, BATCH], "error")
    for norm in plotting.sorted_norms(set(norms) & set(cells[NORM])):
        plotting.band(ax, cells[cells[NORM] == norm], norm, norm, x=BATCH)
    shown = sorted(cells[BATCH].unique())
    ax.set_xscale("log", base=2)
    ax.set_xticks(shown, [str(b) for b in shown])
    ax.minorticks_off()
    ax.set_xlim(max(shown) * 1.25, min(shown) / 1.25)  # large batches left, as the paper
    ax.set(xlabel="batch size (images per step, sharing norm statistics)", ylabel="test error (%)")
    ax.legend(title="norm")


def batch_caption(what: str) -> plotting.Caption:
    """The caption of an error-against-batch figure; a cell is a (norm, batch) pair."""
    return plotting.Caption(what, cells=[NORM, BATCH])


def setting(summary: pd.DataFrame) -> str:
    """``model, data, N images per run`` of the stored runs (as far as the columns tell), for figure titles."""
    parts = [str(summary[column].iloc[0]) for column in ("model.name", "data.name") if column in summary]
    if "train.steps" in summary:
        parts.append(f"{int((summary['train.steps'] * summary[BATCH]).median())} images per run")
    return ", ".join(parts)


def table(final: pd.DataFrame, norms: Sequence[str], paper: dict[str, dict[int, float]] | None = None) -> str:
    """A Markdown table of test error per norm (rows) and batch (columns): ``median [min–max]`` over seeds, with
    the paper's numbers as extra rows; then the median wall time per run in seconds."""
    batches = sorted(final[BATCH].unique())
    header = "| norm | " + " | ".join(str(b) for b in batches) + " |\n|---|" + "---|" * len(batches) + "\n"
    errors, times = header, header
    for norm in plotting.sorted_norms(set(norms) & set(final[NORM])):
        errors += f"| {norm} | " + " | ".join(_error_entry(final, norm, b) for b in batches) + " |\n"
        times += f"| {norm} | " + " | ".join(_time_entry(final, norm, b) for b in batches) + " |\n"
    for label, row in (paper or {}).items():
        errors += f"| {label} | " + " | ".join(f"{row[b]:.1f}" if b in row else "" for b in batches) + " |\n"
    seeds = final.groupby([NORM, BATCH])["seed"].nunique()
    return (
        f"Test error (%), median [min–max] over {seeds.min()}–{seeds.max()} seeds per cell; "
        "columns: batch size.\n\n" + errors + "\nWall time per run (s), median over seeds.\n\n" + times
    )


def _error_entry(final: pd.DataFrame, norm: str, batch: int) -> str:
    runs = final[(final[NORM] == norm) & (final[BATCH] == batch)]
    return median_range(runs["error"], 1) if not runs.empty else ""


def _time_entry(final: pd.DataFrame, norm: str, batch: int) -> str:
    runs = final[(final[NORM] == norm) & (final[BATCH] == batch)]
    return f"{runs['wall_time_s'].median():.0f}" if not runs.empty else ""
