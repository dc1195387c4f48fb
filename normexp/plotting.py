"""The figure style for print, in one place: sizes, fonts, one style per condition, seed bands, captions, saving.

Every figure of ``normexp figures`` is drawn through :func:`figure` and :func:`save`, so a figure redrawn from new
results picks up the style by itself:

* **Sizes**: a figure is one column (:data:`COLUMN_WIDTH`, 3.3 in) or the text width (:data:`TEXT_WIDTH`, 7 in)
  wide, saved at exactly that size, so that its text prints at the size it was set in: no font below
  :data:`MIN_FONT_PT` (7 pt).
* **Conditions**: each norm (and each other compared condition: Post-/Pre-LN, ResNet with and without shortcuts) has
  one :class:`Style` in every figure: a colour from the colour-blind-safe Okabe–Ito/seaborn ``colorblind`` set, and
  a line style and a marker, so that paired conditions (``gn`` and ``gn+ws``, ``bn`` and ``none``, ``bn`` and
  ``noisy_bn``) differ in more than hue.
* **Bands** are the median over seeds with the min–max over seeds (what the tables and verdicts report); each figure
  says so, with its n, in the figure (:func:`band_note`).
* **Captions**: :func:`save` writes ``<name>.caption.md`` beside ``<name>.png``/``.pdf``: what is plotted, n per
  cell, what the band is, data, model, steps and the commit the runs came from (:func:`caption`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import matplotlib.ticker
import pandas as pd
import seaborn as sns

COLUMN_WIDTH = 3.3
"""Inches: one column of a two-column paper."""
TEXT_WIDTH = 7.0
"""Inches: the full text width."""
WIDTHS = {"column": COLUMN_WIDTH, "text": TEXT_WIDTH}
CAPTION_SUFFIX = ".caption.md"
"""A figure's caption file: ``<name>.caption.md`` beside ``<name>.png``."""
MIN_FONT_PT = 7
"""The smallest font at print size."""
DPI = 200
"""PNG resolution: a text-width figure is 1400 pixels wide."""
RC = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.title_fontsize": 7,
    "figure.titlesize": 8,
    "lines.linewidth": 1.2,
    "lines.markersize": 4,
    "axes.linewidth": 0.6,
    "grid.linewidth": 0.4,
    "legend.frameon": False,
    "legend.handlelength": 2.4,
    "pdf.fonttype": 42,  # TrueType in the PDF: the text stays text (searchable, editable)
}
"""matplotlib settings on top of seaborn's ``whitegrid`` theme; every size is ≥ :data:`MIN_FONT_PT`."""

_BLUE, _ORANGE, _GREEN, _VERMILLION, _PURPLE, _BROWN, _GREY, _SKY, _BLACK = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#D55E00",
    "#CC79A7",
    "#A6761D",
    "#7F7F7F",
    "#56B4E9",
    "#000000",
)
"""Okabe & Ito's colour-blind-safe colours (yellow left out: too light on white), with a brown and a grey."""


@dataclass(frozen=True)
class Style:
    """How one condition is drawn in every figure: colour, line style and marker."""

    color: str
    linestyle: object
    marker: str

    def line(self) -> dict[str, object]:
        """Keyword arguments for ``Axes.plot``."""
        return {"color": self.color, "linestyle": self.linestyle, "marker": self.marker}


STYLES: dict[str, Style] = {
    "none": Style(_BLACK, "--", "s"),
    "bn": Style(_BLUE, "-", "o"),
    "gn": Style(_GREEN, "-", "D"),
    "gn+ws": Style(_VERMILLION, "--", "^"),
    "bcn+ws": Style(_PURPLE, "-.", "v"),
    "bcn": Style(_PURPLE, ":", "<"),
    "ln": Style(_ORANGE, "-", "P"),
    "ln_c": Style(_ORANGE, "--", "p"),
    "ln_chw": Style(_ORANGE, ":", "h"),
    "in": Style(_SKY, "-", "X"),
    "brn": Style(_BROWN, "-.", "*"),
    "rms": Style(_GREY, "-", "d"),
    "noisy_bn": Style(_BLUE, ":", "H"),  # BN's colour: the pair of Santurkar et al.'s Fig. 2 differs by line style
    "noise": Style(_BLACK, ":", "D"),  # the standard net's colour, likewise
    "wn": Style(_BROWN, ":", ">"),
    "bn+ws": Style(_BLUE, "--", "^"),
    "ws": Style(_VERMILLION, ":", "v"),
    "sync_bn": Style(_BLUE, "-.", "8"),
    "ResNet": Style(_PURPLE, "-", "o"),
    "ResNet-noshort": Style(_BROWN, "--", "s"),
    "post": Style(_VERMILLION, "--", "s"),  # Post-LN
    "pre": Style(_BLUE, "-", "v"),  # Pre-LN
}
"""Every compared condition's style; the order is the legend order."""
NORM_ORDER = tuple(STYLES)
_FALLBACK = [Style(color, "-", "o") for color in sns.color_palette("colorblind").as_hex()]


def style(name: str) -> Style:
    """The style of condition ``name``, the same in every figure (a name without one gets a stable fallback)."""
    return STYLES.get(name) or _FALLBACK[sum(map(ord, name)) % len(_FALLBACK)]


def norm_color(name: str) -> str:
    """The colour of condition ``name``."""
    return style(name).color


def sorted_norms(names: Iterable[object]) -> list[str]:
    """Condition names in legend order."""
    order = {name: index for index, name in enumerate(NORM_ORDER)}
    return sorted({str(n) for n in names}, key=lambda n: (order.get(n, len(order)), n))


def palette(names: Iterable[object]) -> dict[str, str]:
    """``{name: colour}`` for seaborn's ``palette=``, in legend order."""
    return {name: norm_color(name) for name in sorted_norms(names)}


_DASHES = {"-": "", "--": (4, 1.5), ":": (1, 1.5), "-.": (4, 1.5, 1, 1.5)}


def seaborn_lines(names: Iterable[object]) -> dict[str, object]:
    """seaborn ``relplot``/``lineplot`` keywords that draw each condition with its :class:`Style` (use with
    ``hue=`` and ``style=`` the same column): palette, dashes, markers and the legend order."""
    order = sorted_norms(names)
    looks = {name: style(name) for name in order}
    return {
        "palette": palette(order),
        "hue_order": order,
        "style_order": order,
        "dashes": {n: _DASHES.get(s.linestyle, "") if isinstance(s.linestyle, str) else "" for n, s in looks.items()},
        "markers": {n: s.marker for n, s in looks.items()},
    }


def seed_lines(data: pd.DataFrame, x: str = "step", y: str = "value", hue: str = "norm.name", **relplot: object):
    """seaborn's ``relplot`` of ``y`` against ``x``, a line per ``hue`` in its :class:`Style`: the median over seeds
    with the min–max band (what the tables and verdicts report); ``relplot`` adds facets, sizes, ... Returns the
    ``FacetGrid`` to restyle."""
    return sns.relplot(
        data=data,
        x=x,
        y=y,
        hue=hue,
        style=hue,
        kind="line",
        estimator="median",
        errorbar=("pi", 100),  # the percentile interval at 100: min–max
        **seaborn_lines(data[hue]),
        **relplot,
    )


def sequential(n: int) -> list[tuple[float, float, float]]:
    """``n`` colours for an ordered quantity (depth, lr): viridis, whose hues stay apart in colour-blind vision."""
    return sns.color_palette("viridis", n)


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
"""Markers paired with :func:`sequential` colours, so neighbouring levels differ in shape too."""


def band(
    ax: plt.Axes, cell: pd.DataFrame, label: str | None, look: Style | str, x: str = "step", markevery: int = 0
) -> None:
    """A median line over seeds with its min–max band (seed statistics from :func:`normexp.analysis.curves` or
    :func:`~normexp.analysis.aggregate`); ``look`` is a :class:`Style` or a condition name. Markers every
    ``markevery`` points (0: at every point when there are few, else about ten along the line)."""
    look = style(look) if isinstance(look, str) else look
    cell = cell.sort_values(x)
    every = markevery or max(1, len(cell) // 10)
    ax.plot(cell[x], cell["median"], label=label, markevery=every, **look.line())
    ax.fill_between(cell[x], cell["min"], cell["max"], color=look.color, alpha=0.2, linewidth=0)


def band_note(n: int | Sequence[int], what: str = "seeds") -> str:
    """What a figure's lines and bands are, for the figure itself: ``lines: median; bands: min–max over n seeds``."""
    return f"lines: median, bands: min–max over n = {count(n)} {what} per cell"


def cell_counts(frame: pd.DataFrame, cells: str | Sequence[str]) -> pd.Series:
    """Runs per cell of ``frame`` (one row per run), a cell being a value of the ``cells`` columns it has."""
    present = [c for c in ([cells] if isinstance(cells, str) else cells) if c in frame]
    return frame.groupby(present, dropna=False).size() if present else pd.Series([len(frame)])


def log_axis(ax: plt.Axes, axis: str = "y") -> None:
    """A log scale with plain tick labels (0.01, 1e-05, 100): mathtext's 10ⁿ sets its exponent below 7 pt."""
    getattr(ax, f"set_{axis}scale")("log")
    plain = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}")
    getattr(ax, f"{axis}axis").set_major_formatter(plain)
    getattr(ax, f"{axis}axis").set_minor_formatter(matplotlib.ticker.NullFormatter())


def count(n: int | Sequence[int]) -> str:
    """``3`` for one count, ``3–5`` for the range of several (runs per cell)."""
    counts = sorted({int(n)} if isinstance(n, int | float) else {int(v) for v in n})
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"


def figure(
    ncols: int = 1, nrows: int = 1, width: str = "text", height: float | None = None, **subplots: object
) -> tuple[plt.Figure, list]:
    """A figure of ``width`` ``"column"`` (3.3 in) or ``"text"`` (7 in), ``height`` inches high (default: panels
    about 4:3), in the print style, with a flat list of axes; ``subplots`` go to :func:`matplotlib.pyplot.subplots`
    (``sharey=True``, ...)."""
    if width not in WIDTHS:
        raise ValueError(f"width must be one of {sorted(WIDTHS)}, not {width!r}")
    sns.set_theme(style="whitegrid", context="paper", rc=RC)
    inches = WIDTHS[width]
    height = height if height is not None else nrows * min(2.6, 0.78 * inches / ncols + 0.3)
    fig, axes = plt.subplots(nrows, ncols, figsize=(inches, height), squeeze=False, layout="constrained", **subplots)
    return fig, list(axes.flat)


def note(fig: plt.Figure, text: str) -> None:
    """A line of text at the top of ``fig``: what its lines and bands are, or what a mark means."""
    fig.suptitle(text, fontsize=MIN_FONT_PT, color="0.25")


@dataclass(frozen=True)
class Caption:
    """The text of ``<name>.caption.md``: ``what`` is plotted, ``cells`` the columns that make a cell (n is counted
    per cell), ``band`` what its bands are; data, model, steps and the runs' commit are read from the results."""

    what: str
    cells: Sequence[str] = ()
    band: str = "lines are the median over seeds, bands the min–max over seeds"


def caption(text: Caption, summary: pd.DataFrame, directory: Path, name: str) -> str:
    """The caption Markdown of figure ``name`` drawn from ``summary``'s runs into ``directory``."""
    lines = [f"**{name}** — {text.what}", ""]
    if not summary.empty:
        cells = [c for c in text.cells if c in summary]
        n = cell_counts(summary, cells)
        lines.append(f"- n: {count(n)} runs per cell ({len(n)} cells: {', '.join(cells) or 'all runs'}); {text.band}.")
        lines.append(
            f"- data: {_values(summary, 'data.name')}; model: {_values(summary, 'model.name')}; "
            f"steps per run: {_values(summary, 'total_steps', 'train.steps')}."
        )
        lines.append(f"- runs' code: {_commits(summary)}.")
    lines.append(
        f"- drawn from `{directory.as_posix()}/runs.parquet` and `summary.csv` by `normexp figures` "
        f"(`normexp/plotting.py` style)."
    )
    return "\n".join(lines) + "\n"


def _values(summary: pd.DataFrame, *columns: str) -> str:
    for column in columns:
        if column in summary:
            distinct = summary[column].dropna().unique()
            numeric = pd.api.types.is_numeric_dtype(summary[column])
            values = [f"{v:g}" if numeric else str(v) for v in sorted(distinct)]
            return ", ".join(values) if len(values) <= 6 else f"{values[0]} … {values[-1]} ({len(values)} values)"
    return "not recorded"


def _commits(summary: pd.DataFrame) -> str:
    if "git_sha" not in summary or summary["git_sha"].isna().all():
        return "commit not recorded in these stored results"
    shas = sorted({str(sha)[:10] for sha in summary["git_sha"].dropna()})
    dirty = "git_dirty" in summary and summary["git_dirty"].astype(str).str.lower().eq("true").any()
    return f"commit {', '.join(shas)}" + (" (with uncommitted changes)" if dirty else "")


def save(
    fig: plt.Figure, directory: Path, name: str, text: Caption | None = None, summary: pd.DataFrame | None = None
) -> list[Path]:
    """Save ``fig`` as ``<name>.png`` and ``<name>.pdf`` at its print size, and its caption as
    ``<name>.caption.md``, in ``directory``, each written atomically (a crash never leaves a truncated figure in
    place of the last good one); return the figure paths."""
    from normexp.rundir import atomic_write  # here, not at the top: rundir brings torch, which drawing does not need

    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{name}.png", directory / f"{name}.pdf"]
    for path in paths:
        _write(fig, path)
    plt.close(fig)
    if text is not None:
        shown = Path(*directory.parts[-3:])  # results/<claim>/<scale>, wherever the results root lies
        body = caption(text, summary if summary is not None else pd.DataFrame(), shown, name)
        atomic_write(directory / f"{name}{CAPTION_SUFFIX}", lambda f: f.write(body))
    return paths


def _write(fig: plt.Figure, path: Path) -> None:
    from normexp.rundir import atomic_write

    kind = path.suffix[1:]
    metadata = {"CreationDate": None} if kind == "pdf" else None  # undated: an unchanged figure redraws byte-equal
    atomic_write(path, lambda f: fig.savefig(f, format=kind, dpi=DPI, metadata=metadata), mode="wb")
