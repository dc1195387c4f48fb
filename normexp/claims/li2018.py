"""Li et al. 2018 (arXiv 1712.09913), "Visualizing the loss landscape of neural nets": 1-D and 2-D loss surfaces
along filter-normalized random directions, and the linear interpolation between two solutions, for a net with and
without BN (experiment ``li2018-norm``) and a ResNet with and without skip connections (``li2018-skip``).

No pass criterion was pre-registered for these plots (docs/claims.md): the claim is a figure set (``criteria=None``),
and its verdict is "figures only".

``normexp reproduce`` computes the surfaces :func:`surface_jobs` names from the runs' final checkpoints
(:mod:`normexp.landscapes`) into ``surfaces/*.npz`` beside the figures: a stored surface is never recomputed, a
partial one is completed. The figures are drawn from the stored surfaces alone. The 1-D curves use
every seed, the 2-D contours the first seed, the interpolation goes from the first seed's solution to the
second's; all are evaluated on the first ``samples`` training images, in eval mode. Grid sizes, span, interpolation
range and ``samples`` are the runs' config, ``probes.surface`` (set per scale in the experiments' configs).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import matplotlib.colors
import numpy as np
import pandas as pd

from normexp import plotting
from normexp.claims import Claim, Results, register
from normexp.grids import Grid, SurfaceJob

NORM, MODEL, SKIP = "norm.name", "model.name", "model.skip"
INTERPOLATION_LABEL = "α: (1 − α)·θ₁ + α·θ₂"
"""Past the solutions an extrapolated running variance is clamped at 0 (:mod:`normexp.landscapes`): where it
is, BN divides by sqrt(ε) and the loss soars (the authors' code gives NaN there)."""


def net_label(row: pd.Series) -> str:
    """``ResNet`` / ``ResNet-noshort`` for the skip experiment, the norm's name otherwise."""
    if row.get(MODEL) == "li_resnet":
        return "ResNet" if str(row[SKIP]).lower() == "true" else "ResNet-noshort"
    return str(row[NORM])


def surface_jobs(summary: pd.DataFrame) -> list[SurfaceJob]:
    """Every surface the figures show, for the completed runs of ``summary`` (run folder: out_dir/run_id)."""
    completed = summary[summary["status"] == "completed"].sort_values("seed")
    cells: dict[str, list[tuple[int, Path]]] = {}
    for _, row in completed.iterrows():
        cells.setdefault(net_label(row), []).append((int(row["seed"]), Path(row["out_dir"]) / row["run_id"]))
    jobs = []
    for label, runs in cells.items():
        jobs += [SurfaceJob(label, "1d", f"{label}-seed{seed}-1d", (run,)) for seed, run in runs]
        (first, run), *others = runs
        jobs.append(SurfaceJob(label, "2d", f"{label}-seed{first}-2d", (run,)))
        if others:
            second, other = others[0]
            jobs.append(SurfaceJob(label, "interpolation", f"{label}-seed{first}-to-seed{second}", (run, other)))
    return jobs


def surfaces(results: Results, out: Path) -> dict[tuple[str, str], list[Grid]]:
    """Per (net label, kind), the surfaces stored in ``out``."""
    found: dict[tuple[str, str], list[Grid]] = {}
    for job in surface_jobs(results.summary):
        grid = job.stored(out)
        if grid is not None:
            found.setdefault((job.label, job.kind), []).append(grid)
    return found


def plot_curve(axes: tuple, grids: list[Grid], label: str, x_label: str) -> None:
    """Loss (``axes[0]``, log axis) and accuracy (``axes[1]``) along a line: the median over ``grids`` (seeds) with
    the min–max band."""
    x = grids[0].coords[:, 0]
    look = replace(plotting.style(label), marker="")
    for ax, metric in zip(axes, ("loss", "acc"), strict=True):
        values = np.stack([grid.values[metric] for grid in grids])
        ax.plot(x, np.median(values, axis=0), label=f"{label} (n={len(grids)})", **look.line())
        ax.fill_between(x, values.min(axis=0), values.max(axis=0), color=look.color, alpha=0.2, linewidth=0)
    axes[0].set(ylabel="training loss")
    plotting.log_axis(axes[0])
    axes[1].set(xlabel=x_label, ylabel="training accuracy", ylim=(0, 1))


def contour_levels(grids: list[Grid], count: int = 16) -> np.ndarray:
    """Log-spaced loss levels shared by every 2-D panel (from the lowest to the highest loss of all of them), so
    that the panels compare as Li et al.'s do."""
    losses = np.concatenate([grid.values["loss"] for grid in grids])
    return np.geomspace(np.nanmin(losses), np.nanmax(losses), count)


def plot_contour(ax: object, grid: Grid, label: str, levels: np.ndarray) -> object:
    """Li et al.'s 2-D contour plot of the loss at the shared ``levels``; returns the contour set (for a colorbar)."""
    points = round(np.sqrt(len(grid.coords)))
    x = grid.coords[:, 0].reshape(points, points)
    y = grid.coords[:, 1].reshape(points, points)
    z = grid.values["loss"].reshape(points, points)
    norm = matplotlib.colors.LogNorm(levels[0], levels[-1])
    lines = ax.contour(x, y, z, levels=levels, cmap="viridis", norm=norm, linewidths=0.8)
    ax.set(title=label, xlabel="α (direction 1)", aspect="equal", xticks=[-1, 0, 1], yticks=[-1, 0, 1])
    return lines


def landscape_plot(results: Results, out: Path) -> list[Path]:
    """``surfaces_1d``: 1-D curves (BN vs none; ResNet vs noshort) and the interpolations, loss above and accuracy
    below; ``surfaces_2d``: one contour plot per net, at shared levels with one colorbar."""
    found = surfaces(results, out)
    labels = sorted(dict.fromkeys(label for label, _ in found), key=lambda n: (n.startswith("ResNet"), n))
    fig, axes = plotting.figure(ncols=3, nrows=2, height=4.2, sharex="col")
    for label in labels:
        column = 1 if label.startswith("ResNet") else 0
        if (label, "1d") in found:
            plot_curve((axes[column], axes[3 + column]), found[label, "1d"], label, "α, filter-normalized direction")
        if (label, "interpolation") in found:
            plot_curve((axes[2], axes[5]), found[label, "interpolation"], label, INTERPOLATION_LABEL)
    titles = ("(a) 1-D surface: BN vs none", "(b) 1-D surface: skip connections", "(c) interpolation between seeds")
    for ax, title in zip(axes, titles, strict=False):
        ax.set_title(title)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    plotting.note(fig, "lines: median, bands: min–max over the n seeds in the legend (interpolation: one pair)")
    text = plotting.Caption(
        "Li et al. 2018, Fig. 1 and 5 (figures only): the training loss (top, log axis) and accuracy (bottom) along "
        "one filter-normalized random direction from each solution, (a) for the VGG with and without BN and (b) "
        "for the ResNet with and without shortcuts, and (c) along the line from the first seed's solution to the "
        "second's (BN running statistics interpolated too, variances clamped at 0 past the solutions). "
        "Evaluated on the first `probes.surface.samples` training images in eval mode.",
        cells=[NORM, SKIP],
        band="lines are the median over the seeds' surfaces, bands their min–max (n in the legend)",
    )
    paths = plotting.save(fig, out, "surfaces_1d", text, results.summary)
    contours = [(label, found[label, "2d"][0]) for label in labels if (label, "2d") in found]
    if contours:
        fig, axes = plotting.figure(ncols=len(contours), height=2.3, sharey=True)
        levels = contour_levels([grid for _, grid in contours])
        for ax, (label, grid) in zip(axes, contours, strict=True):
            lines = plot_contour(ax, grid, label, levels)
        axes[0].set_ylabel("β (direction 2)")
        bar = fig.colorbar(lines, ax=axes, label="training loss (shared levels)", shrink=0.9)
        bar.set_ticks(levels[::3], labels=[f"{level:.2g}" for level in levels[::3]])
        bar.minorticks_off()
        plotting.note(fig, "2-D loss surfaces of the first seed's solution, one set of contour levels for all panels")
        text = plotting.Caption(
            "Li et al. 2018, Fig. 1 and 5 (figures only): contour lines of the training loss on the plane of two "
            "filter-normalized random directions around the first seed's solution, per net, at log-spaced levels "
            "shared by all panels (the colour bar), so that the panels compare.",
            cells=[NORM, SKIP],
            band="one surface per net (the first seed); no band",
        )
        paths += plotting.save(fig, out, "surfaces_2d", text, results.summary)
    return paths


register(
    Claim(
        id="li2018-landscape",
        title="Loss-surface plots: BN vs none, ResNet vs ResNet-noshort (figures only)",
        paper="Li et al. 2018",
        paper_figure="Fig. 1, 5 (filter-normalized 1-D/2-D surfaces, interpolation)",
        criteria=None,
        plot=landscape_plot,
        experiments=("li2018-norm", "li2018-skip"),
        surfaces=surface_jobs,
    )
)
