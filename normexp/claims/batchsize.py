"""What the batch-size claims share: final accuracy per (norm, batch) cell, the error-vs-batch figure and the table.

Qiao et al. 2019 (``qiao2019-microbatch``) and Wu & He 2018 (``wu2018-batchsize``) are judged on one grid, the
experiment ``batchsize``: every run sees the same number of training images, with the lr scaled linearly with the
batch. A cell is a (norm, batch size) pair; its value is the final test accuracy (or error, 100 − accuracy) in
percentage points, summarized by the median over at least :data:`MIN_SEEDS` seeds. A diverged run counts as
accuracy −inf (error +inf): it ranks below every run that finished.

Both claims test at a budget that trains the yardstick to convergence, by a rule fixed before the grid ran: the
grid's images per run (``train.images``) must be at least the smallest rung of the experiment ``batchsize-budget``'s
ladder at which BN at batch 64's median error moves less than :data:`CONVERGED` point when the images double
(:func:`budget_check`). Below it every criterion is reported as measured but "not testable at this scale"
(:func:`at_budget`): a large batch that is still learning is no yardstick for a small one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from normexp import plotting
from normexp.analysis import aggregate, run_seconds
from normexp.claims import Check, InsufficientData, finished, median_range, seeded_cell

NORM = "norm.name"
BATCH = "train.batch_size"
NORM_BATCH = "train.norm_batch"
FINAL_ACC = "final/test/acc"
IMAGES = "train.images"
EXPERIMENT = "batchsize"
BUDGET_EXPERIMENT = "batchsize-budget"
YARDSTICK = ("bn", 64)
"""The large-batch cell both claims compare against, whose convergence sets the budget."""
CONVERGED = 0.5
"""Points of error by which the yardstick may move when its images double, at a converged budget."""


def experiment_runs(summary: pd.DataFrame, experiment: str) -> pd.DataFrame:
    """The runs of one experiment (all of them when the table has no ``experiment_name`` column)."""
    return summary[summary["experiment_name"] == experiment] if "experiment_name" in summary else summary


def final_accuracy(summary: pd.DataFrame, experiment: str = EXPERIMENT) -> pd.DataFrame:
    """One row per finished run of ``experiment``: norm, batch, seed, status, wall time, images per run (where
    stored), ``acc`` and ``error`` in points (±inf if diverged). Runs whose norm batch is smaller than their batch
    (``train.norm_batch``) are not literal batches and are left out."""
    for column in (NORM, BATCH, "seed", "status", "wall_time_s", FINAL_ACC):
        if column not in summary:
            raise InsufficientData(f"no column {column!r} in the stored results")
    summary = experiment_runs(summary, experiment)
    everything = pd.Series(True, index=summary.index)
    literal = (
        summary[NORM_BATCH].isna() | (summary[NORM_BATCH] == summary[BATCH]) if NORM_BATCH in summary else everything
    )
    runs = finished(summary[literal])
    acc = np.where(runs["status"] == "diverged", -math.inf, 100 * runs[FINAL_ACC].astype(float))
    columns = [NORM, BATCH, "seed", "status", "wall_time_s", *([IMAGES] if IMAGES in runs else [])]
    return runs[columns].assign(acc=acc, error=100 - acc)


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


def budget_check(summary: pd.DataFrame) -> Check:
    """Whether the grid's images per run reach the convergence rung of the yardstick's ladder: True if so, None (not
    testable at this scale, with the cost of the grid at that rung) if not or if the ladder never converges."""
    ladder = experiment_runs(summary, BUDGET_EXPERIMENT)
    grid = experiment_runs(summary, EXPERIMENT)
    if ladder.empty or IMAGES not in ladder or IMAGES not in grid:
        raise InsufficientData(f"no runs of {BUDGET_EXPERIMENT}'s ladder, or no {IMAGES} in the stored results")
    errors = final_accuracy(ladder, BUDGET_EXPERIMENT)
    norm, batch = YARDSTICK
    rungs = sorted(int(n) for n in errors[IMAGES].unique())
    error = {n: median(errors[errors[IMAGES] == n], norm, batch, "error") for n in rungs}
    moves = {n: abs(error[2 * n] - error[n]) for n in rungs if 2 * n in error}
    converged = min((n for n, move in moves.items() if move < CONVERGED), default=None)
    images = int(grid[IMAGES].median())
    ladder_text = "; ".join(f"{n}: {error[n]:.2f}" for n in rungs)
    measured = f"{norm.upper()}@{batch} median error by images per run: {ladder_text}. "
    name = (
        f"budget: the grid's images per run train {norm.upper()}@{batch} to convergence (its error moves "
        f"< {CONVERGED:g} point when its images double)"
    )
    if converged is None:
        return Check(
            name,
            None,
            measured + f"No rung converges; the ladder's largest ({rungs[-1]}) would cost "
            f"{grid_hours(grid, rungs[-1]):.1f} h of one core for the grid.",
        )
    passed = images >= converged
    return Check(
        name,
        True if passed else None,
        measured + f"Converged at {converged} (moves {moves[converged]:.2f} to {2 * converged}); the grid runs "
        f"{images}"
        + ("." if passed else f"; at {converged} it would cost {grid_hours(grid, converged):.1f} h of one core."),
        margin=(images - converged) / converged if passed else None,
    )


def budget_plot(summary: pd.DataFrame, out: Path) -> list[Path]:
    """The yardstick's ladder: BN@64's test error against the images per run (median, min–max over seeds), each
    doubling's move in points written beside it, and the grid's images per run marked; nothing without a ladder."""
    ladder = experiment_runs(summary, BUDGET_EXPERIMENT)
    if ladder.empty or IMAGES not in ladder:
        return []
    errors = final_accuracy(ladder, BUDGET_EXPERIMENT)
    cells = aggregate(errors[np.isfinite(errors["error"])], [IMAGES], "error")
    norm, batch = YARDSTICK
    fig, (ax,) = plotting.figure(width="column", height=2.6)
    plotting.band(ax, cells, f"{norm.upper()}@{batch}", norm, x=IMAGES)
    images, error = cells[IMAGES].to_numpy(float), cells["median"].to_numpy()
    for i in range(len(images) - 1):  # each doubling's move, at the segment's middle (log axis)
        middle = (np.sqrt(images[i] * images[i + 1]), (error[i] + error[i + 1]) / 2)
        move = f"{error[i + 1] - error[i]:+.2f}"
        ax.annotate(move, middle, textcoords="offset points", xytext=(3, 3), fontsize=7)
    grid = experiment_runs(summary, EXPERIMENT)
    if IMAGES in grid and not grid.empty:
        ax.axvline(int(grid[IMAGES].median()), color="grey", linestyle=":", label="the grid's images per run")
    ax.set_xscale("log", base=2)
    ax.set_xticks(images, [f"{int(n) // 1024}k" for n in images])
    ax.minorticks_off()
    ax.set(xlabel="training images per run", ylabel="test error (%)")
    ax.set_title(f"budget ladder: converged once\na doubling moves < {CONVERGED:g} point")
    ax.legend()
    plotting.note(fig, plotting.band_note(errors.groupby(IMAGES).size()))
    text = plotting.Caption(
        f"The budget rule of both batch-size claims: {norm.upper()} at batch {batch}, the yardstick, trained at "
        f"each rung of the ladder (experiment {BUDGET_EXPERIMENT}, the grid's recipe); the number beside each "
        f"segment is the error's fall in points when the images double. The grid's budget is the first rung whose "
        f"doubling moves less than {CONVERGED:g} point; the dotted line marks the images per run the grid used.",
        cells=[IMAGES],
    )
    return plotting.save(fig, out, "budget", text, ladder)


def grid_hours(grid: pd.DataFrame, images: int) -> float:
    """The stored grid's core hours scaled to ``images`` per run (a run's time is linear in its images; a fused
    cell's time is shared by its members)."""
    return float((run_seconds(grid) * images / grid[IMAGES]).sum()) / 3600


def at_budget(summary: pd.DataFrame, checks: list[Check]) -> list[Check]:
    """The budget check, then ``checks``: as measured when the budget converges, else not testable at this scale."""
    budget = budget_check(summary)
    if budget.passed:
        return [budget, *checks]
    return [
        budget,
        *(replace(check, passed=None, measured=check.measured + " (yardstick not converged)") for check in checks),
    ]


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
        f"Test error (%), median [min–max] over {plotting.count(seeds)} seeds per cell; "
        "columns: batch size.\n\n" + errors + "\nWall time per run (s), median over seeds.\n\n" + times
    )


def _error_entry(final: pd.DataFrame, norm: str, batch: int) -> str:
    runs = final[(final[NORM] == norm) & (final[BATCH] == batch)]
    return median_range(runs["error"], 1) if not runs.empty else ""


def _time_entry(final: pd.DataFrame, norm: str, batch: int) -> str:
    runs = final[(final[NORM] == norm) & (final[BATCH] == batch)]
    return f"{runs['wall_time_s'].median():.0f}" if not runs.empty else ""
