"""Li et al. 2018 (arXiv 1712.09913), "Visualizing the loss landscape of neural nets": 1-D and 2-D loss surfaces
along filter-normalized random directions, and the linear interpolation between two solutions, for a net with and
without BN (experiment ``li2018-norm``) and a ResNet with and without skip connections (``li2018-skip``).

No pass criterion was pre-registered for these plots (docs/claims.md): the claim is a figure set (``criteria=None``),
and its verdict is "figures only".

Drawing the figures evaluates the surfaces from the runs' final checkpoints (:mod:`normexp.probes.surface`) into
``surfaces/*.npz`` beside the figures: a stored surface is never recomputed, a partial one is completed, and
without the run folders (a fresh clone) the figures are redrawn from the stored surfaces alone. The 1-D curves use
every seed, the 2-D contours the first seed, the interpolation goes from the first seed's solution to the
second's; all are evaluated on the first ``samples`` training images, in eval mode. Grid sizes, span, interpolation
range and ``samples`` are the runs' config, ``probes.surface`` (set per scale in the experiments' configs).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from normexp import plotting
from normexp.checkpoint import CHECKPOINT_FILE
from normexp.claims import Claim, Results, register
from normexp.probes.surface import Grid, run_surface, surface_settings

NORM, MODEL, SKIP = "norm.name", "model.name", "model.skip"
SURFACES = "surfaces"
INTERPOLATION_LABEL = "α: (1 − α)·θ₁ + α·θ₂ (running stats, var ≥ 0)"
"""Past the solutions an extrapolated running variance is clamped at 0 (:mod:`normexp.probes.surface`): where it
is, BN divides by sqrt(ε) and the loss soars (the authors' code gives NaN there)."""


def net_label(row: pd.Series) -> str:
    """``ResNet`` / ``ResNet-noshort`` for the skip experiment, the norm's name otherwise."""
    if row.get(MODEL) == "li_resnet":
        return "ResNet" if str(row[SKIP]).lower() == "true" else "ResNet-noshort"
    return str(row[NORM])


@dataclass(frozen=True)
class SurfaceJob:
    """One stored surface: ``kind`` (1d, 2d or interpolation) of the runs ``runs`` (two for an interpolation)."""

    label: str
    kind: str
    name: str
    runs: tuple[Path, ...]

    def grid(self, folder: Path) -> Grid | None:
        """The surface, completed from the runs' checkpoints (with the first run's ``probes.surface`` settings) when
        they exist, else as stored (None if neither)."""
        path = folder / f"{self.name}.npz"
        if not all((run / CHECKPOINT_FILE).exists() for run in self.runs):
            return Grid.read(path) if path.exists() else None
        return run_surface(self.kind, self.runs, path, surface_settings(self.runs[0]))


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
    """Per (net label, kind), the surfaces available (computed or stored)."""
    found: dict[tuple[str, str], list[Grid]] = {}
    for job in surface_jobs(results.summary):
        grid = job.grid(out / SURFACES)
        if grid is not None:
            found.setdefault((job.label, job.kind), []).append(grid)
    return found


def net_color(label: str) -> object:
    """Norm colours for the BN/none nets; two fixed palette colours for the ResNets."""
    return {"ResNet": "tab:purple", "ResNet-noshort": "tab:brown"}.get(label) or plotting.norm_color(label)


def plot_curve(ax, grids: list[Grid], label: str, x_label: str) -> None:
    """Loss along a line: the median over ``grids`` (seeds) with its min–max band."""
    x = grids[0].coords[:, 0]
    losses = np.stack([grid.values["loss"] for grid in grids])
    ax.plot(x, np.median(losses, axis=0), color=net_color(label), label=f"{label} (n={len(grids)})")
    ax.fill_between(x, losses.min(axis=0), losses.max(axis=0), color=net_color(label), alpha=0.25, linewidth=0)
    ax.set(xlabel=x_label, ylabel="training loss", yscale="log")


def plot_contour(ax, grid: Grid, label: str) -> None:
    """Li et al.'s 2-D contour plot of the loss (log-spaced levels from the grid's minimum)."""
    points = round(np.sqrt(len(grid.coords)))
    x = grid.coords[:, 0].reshape(points, points)
    y = grid.coords[:, 1].reshape(points, points)
    z = grid.values["loss"].reshape(points, points)
    levels = np.geomspace(np.nanmin(z), np.nanmax(z), 15)
    lines = ax.contour(x, y, z, levels=levels, cmap="viridis", linewidths=0.8)
    ax.clabel(lines, lines.levels[::3], fontsize=6, fmt="%.2g")
    ax.set(title=f"{label}: 2-D loss surface", xlabel="α (direction 1)", ylabel="β (direction 2)", aspect="equal")


def landscape_plot(results: Results, out: Path) -> list[Path]:
    """``surfaces_1d``: 1-D curves (BN vs none; ResNet vs noshort) and the interpolations; ``surfaces_2d``:
    one contour plot per net."""
    found = surfaces(results, out)
    labels = sorted(dict.fromkeys(label for label, _ in found), key=lambda n: (n.startswith("ResNet"), n))
    fig, axes = plotting.figure(ncols=3)
    for label in labels:
        ax = axes[1] if label.startswith("ResNet") else axes[0]
        if (label, "1d") in found:
            plot_curve(ax, found[label, "1d"], label, "α along a filter-normalized direction")
        if (label, "interpolation") in found:
            plot_curve(axes[2], found[label, "interpolation"], label, INTERPOLATION_LABEL)
    titles = ("(a) 1-D surface: BN vs none", "(b) 1-D surface: skip connections", "(c) interpolation between seeds")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    paths = plotting.save(fig, out, "surfaces_1d")
    contours = [(label, found[label, "2d"][0]) for label in labels if (label, "2d") in found]
    if contours:
        fig, axes = plotting.figure(ncols=len(contours), width=3.6, height=3.6)
        for ax, (label, grid) in zip(axes, contours, strict=True):
            plot_contour(ax, grid, label)
        paths += plotting.save(fig, out, "surfaces_2d")
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
    )
)
