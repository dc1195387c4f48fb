"""Shared figure helpers: one colour per norm across every figure, median curves with IQR bands, saving.

Figures are drawn from stored results only (``normexp figures``); each is saved as PNG and vector PDF.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

NORM_ORDER = (
    "none",
    "bn",
    "gn",
    "gn+ws",
    "bcn+ws",
    "bcn",
    "ln",
    "ln_c",
    "in",
    "brn",  # in tab10's range: Dark2's orange, which it had after rms, was too close to bn's
    "rms",
    "ln_chw",
    "noisy_bn",
    "noise",
    "wn",
    "bn+ws",
    "ws",
    "sync_bn",
)
"""Norm names in legend order; also fixes each norm's colour."""


def norm_color(name: str) -> tuple[float, float, float]:
    """The colour of norm ``name``, the same in every figure."""
    palette = sns.color_palette("tab10") + sns.color_palette("Dark2")  # 18 colours, neighbours clearly distinct
    index = NORM_ORDER.index(name) if name in NORM_ORDER else sum(map(ord, name))  # stable across processes
    return palette[index % len(palette)]


def sorted_norms(names: object) -> list[str]:
    """Norm names in legend order."""
    return sorted(set(names), key=lambda n: (NORM_ORDER.index(n) if n in NORM_ORDER else len(NORM_ORDER), n))


def band(ax: plt.Axes, cell: pd.DataFrame, label: str, color: object, x: str = "step", **line: object) -> None:
    """A median line with its IQR band (seed statistics from :func:`normexp.analysis.curves`)."""
    cell = cell.sort_values(x)
    ax.plot(cell[x], cell["median"], color=color, label=label, **line)
    ax.fill_between(cell[x], cell["q25"], cell["q75"], color=color, alpha=0.25, linewidth=0)


def save(fig: plt.Figure, directory: Path, name: str) -> list[Path]:
    """Save ``fig`` as ``<name>.png`` and ``<name>.pdf`` in ``directory``, each written atomically (a crash never
    leaves a truncated figure in place of the last good one); return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{name}.png", directory / f"{name}.pdf"]
    fig.tight_layout()
    for path in paths:
        _write(fig, path)
    plt.close(fig)
    return paths


def _write(fig: plt.Figure, path: Path) -> None:
    from normexp.rundir import atomic_write  # here, not at the top: rundir brings torch, which drawing does not need

    kind = path.suffix[1:]
    metadata = {"CreationDate": None} if kind == "pdf" else None  # undated: an unchanged figure redraws byte-equal
    atomic_write(path, lambda f: fig.savefig(f, format=kind, dpi=110, metadata=metadata), mode="wb")


def figure(ncols: int = 1, nrows: int = 1, width: float = 4.2, height: float = 3.2) -> tuple[plt.Figure, list]:
    """A themed figure with a flat list of axes."""
    sns.set_theme(style="whitegrid", context="paper")
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    return fig, list(axes.flat)
