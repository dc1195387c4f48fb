"""Santurkar et al. 2018 (arXiv 1805.11604), "How does batch normalization help optimization?": BN smooths the loss
landscape (Fig. 4), noisy BN still trains (Fig. 2), and BN does not reduce internal covariate shift (Fig. 5); and
Qiao et al. 2019 (arXiv 1903.10520, §3)'s claim that Weight Standardization smooths it further, measured with the
same instruments. Criteria: docs/claims.md §3 (3a–3f).

Every criterion compares medians over seeds (n, median and min–max reported) of one number per run, with at least
:data:`~normexp.claims.MIN_SEEDS` seeds per norm (else the verdict is "insufficient data"). 3a–3c and 3e
are judged on each of the paper's two models on its own, the VGG (experiment ``santurkar2018-vgg``) and the 25-layer
deep linear network (``santurkar2018-dln``); each check names its model ("3a (DLN): …"), and the claim is reproduced
only if every check of both models passes.

* 3a–3c, 3f: the median over the run's probed steps of ``landscape/loss_range``, ``landscape/gpred_range`` (max −
  min over the η grid) and ``landscape/beta`` (:mod:`normexp.probes.landscape`); "the first 20% of training" are
  the probed steps ≤ 0.2 × the run's length.
* 3e: per layer, the median over probed steps of ``ics/<layer>/l2`` and ``ics/<layer>/cos``
  (:mod:`normexp.probes.ics`); the ℓ2 ratio BN/standard per layer, then its median over layers; the cosine's median
  over layers. The first layer is left out: with no earlier layer, G′ = G in every net.
* 3d: the final training accuracy (``final/train/acc``, measured in training mode, noise included). "Near chance"
  reads as within 5 points of chance (10 classes), "clearly below standard" as at least 5 points below; a run
  that diverged counts as ending at chance.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from normexp import plotting
from normexp.analysis import curves, seed_stats
from normexp.claims import Check, Claim, InsufficientData, Results, register, seeded_cell

NORM, EXPERIMENT = "norm.name", "experiment_name"
MODELS = {"VGG": "santurkar2018-vgg", "DLN": "santurkar2018-dln"}
"""The models of the smoothness and ICS claims and the experiment that trains each."""
LOSS_RANGE, GPRED_RANGE, BETA = "landscape/loss_range", "landscape/gpred_range", "landscape/beta"
TRAIN_ACC = "final/train/acc"
CHANCE = 0.1
"""Chance accuracy: every dataset of these claims (Fashion-MNIST, CIFAR-10) has 10 classes."""
POINTS = 0.05
"""Five accuracy points."""


def _runs_of(frame: pd.DataFrame, norm: str) -> pd.DataFrame:
    """The rows of ``norm``'s runs; :class:`InsufficientData` without them or with fewer than :data:`MIN_SEEDS`
    seeds."""
    if NORM not in frame or not (frame[NORM] == norm).any():
        raise InsufficientData(f"no {norm!r} runs with the needed metrics in the stored results")
    return seeded_cell(frame, frame[NORM] == norm, norm)


def of_model(results: Results, model: str) -> Results:
    """The runs of ``model``'s experiment (:data:`MODELS`), or :class:`InsufficientData`."""
    summary = results.summary
    if EXPERIMENT not in summary or not (summary[EXPERIMENT] == MODELS[model]).any():
        raise InsufficientData(f"no {MODELS[model]} runs ({model}) in the stored results")
    summary = summary[summary[EXPERIMENT] == MODELS[model]]
    return Results(results.runs[results.runs["run_id"].isin(summary["run_id"])], summary)


def stored_models(results: Results) -> Iterator[tuple[str, Results]]:
    """``(model, its results)`` for each model of :data:`MODELS` with stored runs (for the figures)."""
    for model in MODELS:
        try:
            yield model, of_model(results, model)
        except InsufficientData:
            continue


def per_model(criteria: Callable[[Results], list[Check]]) -> Callable[[Results], list[Check]]:
    """``criteria`` applied to each model's runs on their own; check "3a: …" becomes "3a (VGG): …", "3a (DLN): …"."""

    def checks(results: Results) -> list[Check]:
        named = []
        for model in MODELS:
            for check in criteria(of_model(results, model)):
                label, _, text = check.name.partition(": ")
                named.append(replace(check, name=f"{label} ({model}): {text}"))
        return named

    return checks


def per_run_median(runs: pd.DataFrame, metric: str, until: int | None = None) -> pd.DataFrame:
    """Per run (with its norm and seed), the median of ``metric`` over its probed steps (those ≤ ``until`` if
    given)."""
    rows = runs[runs["metric"] == metric]
    if until is not None:
        rows = rows[rows["step"] <= until]
    return rows.groupby(["run_id", NORM, "seed"], as_index=False)["value"].median()


def _describe(values: pd.Series) -> str:
    stats = seed_stats(values)
    return f"median {stats['median']:.4g} [{stats['min']:.4g}–{stats['max']:.4g}] (n={stats['n']})"


def smaller_median(
    runs: pd.DataFrame, metric: str, low: str, high: str, name: str, factor: float = 1.0, until: int | None = None
) -> Check:
    """Whether the median over ``low``'s runs of :func:`per_run_median` is ``factor`` times smaller than ``high``'s."""
    per_run = per_run_median(runs, metric, until)
    a, b = _runs_of(per_run, low)["value"], _runs_of(per_run, high)["value"]
    ratio = a.median() / b.median() if b.median() else math.inf
    measured = f"{low} {_describe(a)} vs {high} {_describe(b)}; ratio {ratio:.3g}"
    # the margin in decades: log10(high / (factor · low)), > 0 when low is factor times smaller
    margin = math.log10(b.median() / (factor * a.median())) if a.median() > 0 and b.median() > 0 else None
    return Check(name, bool(a.median() * factor < b.median()), measured, margin)


def smoothness_criteria(results: Results) -> list[Check]:
    """3a–3c: loss range, gradient predictiveness and effective β smaller with BN; predictiveness ≥ 3× smaller early."""
    runs = results.runs
    early = int(0.2 * runs["step"].max())
    # the window's steps go into what was measured, not into the name, so that a map over the budget keeps one row
    early_check = smaller_median(
        runs, GPRED_RANGE, "bn", "none", "3b: gradient predictiveness ≥ 3× smaller with BN in the first 20%", 3.0, early
    )
    return [
        smaller_median(runs, LOSS_RANGE, "bn", "none", "3a: median loss range smaller with BN"),
        smaller_median(runs, GPRED_RANGE, "bn", "none", "3b: median gradient-predictiveness range smaller with BN"),
        smaller_median(runs, BETA, "bn", "none", "3c: median effective β smaller with BN"),
        replace(early_check, measured=f"steps ≤ {early}: {early_check.measured}"),
    ]


def ws_criteria(results: Results) -> list[Check]:
    """3f: with GN in both nets, WS lowers the median gradient predictiveness and effective β."""
    runs = results.runs
    return [
        smaller_median(runs, GPRED_RANGE, "gn+ws", "gn", "3f: median gradient-predictiveness range smaller with WS"),
        smaller_median(runs, BETA, "gn+ws", "gn", "3f: median effective β smaller with WS"),
    ]


def _ics_layers(runs: pd.DataFrame) -> list[str]:
    """The layers the ICS probe measured, in the order the metrics appear."""
    metrics = runs.loc[runs["metric"].str.startswith("ics/"), "metric"].drop_duplicates()
    return list(dict.fromkeys(metric.split("/")[1] for metric in metrics))


def _ics_by_layer(runs: pd.DataFrame, stat: str, norm: str) -> pd.Series:
    """Per layer, the median over ``norm``'s seeds of each run's median ``ics/<layer>/<stat>`` over probed steps."""
    frames = [per_run_median(runs, f"ics/{layer}/{stat}").assign(layer=layer) for layer in _ics_layers(runs)[1:]]
    if not frames:
        raise InsufficientData("no ICS metrics beyond the first layer in the stored results")
    return _runs_of(pd.concat(frames), norm).groupby("layer")["value"].median()


def ics_criteria(results: Results) -> list[Check]:
    """3e: BN does not have lower ICS than standard: ℓ2 ratio BN/standard ≥ 1, or BN's cosine ≤ standard's."""
    l2 = {norm: _ics_by_layer(results.runs, "l2", norm) for norm in ("bn", "none")}
    cos = {norm: _ics_by_layer(results.runs, "cos", norm) for norm in ("bn", "none")}
    ratio = float((l2["bn"] / l2["none"]).median())
    cos_bn, cos_none = float(cos["bn"].median()), float(cos["none"].median())
    measured = (
        f"median over {len(l2['bn'])} layers: ‖G − G′‖ ratio BN/standard {ratio:.3g}; cos(G, G′) BN {cos_bn:.4f} "
        f"vs standard {cos_none:.4f}"
    )
    return [Check("3e: BN does not have lower ICS than standard", ratio >= 1 or cos_bn <= cos_none, measured)]


def _final_train_accuracy(summary: pd.DataFrame, norm: str) -> pd.Series:
    """``norm``'s final training accuracies; a diverged run counts as chance."""
    runs = _runs_of(summary, norm)
    if TRAIN_ACC not in runs:
        raise InsufficientData(f"no {TRAIN_ACC} in the stored summary")
    return pd.Series(np.where(runs["status"] == "diverged", CHANCE, runs[TRAIN_ACC]), index=runs.index)


def noisy_bn_criteria(results: Results) -> list[Check]:
    """3d: noisy BN within 5 points of BN and above standard; standard + noise near chance or clearly below."""
    acc = {norm: _final_train_accuracy(results.summary, norm) for norm in ("bn", "noisy_bn", "none", "noise")}
    median = {norm: values.median() for norm, values in acc.items()}
    describe = {norm: f"{norm} {_describe(values)}" for norm, values in acc.items()}
    return [
        Check(
            "3d: noisy BN's final training accuracy within 5 points of BN",
            bool(abs(median["noisy_bn"] - median["bn"]) <= POINTS),
            f"{describe['noisy_bn']} vs {describe['bn']}",
            POINTS - abs(median["noisy_bn"] - median["bn"]),
        ),
        Check(
            "3d: noisy BN above standard",
            bool(median["noisy_bn"] > median["none"]),
            f"{describe['noisy_bn']} vs {describe['none']}",
            median["noisy_bn"] - median["none"],
        ),
        Check(
            "3d: standard + noise near chance or clearly below standard",
            bool(median["noise"] <= CHANCE + POINTS or median["noise"] <= median["none"] - POINTS),
            f"{describe['noise']} vs {describe['none']}, chance {CHANCE:g}",
            max(CHANCE + POINTS - median["noise"], median["none"] - POINTS - median["noise"]),
        ),
    ]


def _range_band(ax: Axes, runs: pd.DataFrame, metric: str, norm: str) -> None:
    """The [min, max] interval of a line-search metric over η (medians over seeds) as a band, per step."""
    low = curves(runs, f"{metric}_min", [NORM])
    high = curves(runs, f"{metric}_max", [NORM])
    low, high = low[low[NORM] == norm].sort_values("step"), high[high[NORM] == norm].sort_values("step")
    look = plotting.style(norm)
    ax.fill_between(low["step"], low["median"], high["median"], color=look.color, alpha=0.3, linewidth=0)
    for edge in (low, high):
        ax.plot(edge["step"], edge["median"], color=look.color, linestyle=look.linestyle, linewidth=0.8)
    ax.plot([], [], label=norm, **look.line())  # the legend entry: the norm's line and marker


def early_window(ax: Axes, runs: pd.DataFrame) -> None:
    """Shade the first 20% of training, the window of criterion 3b's "at least 3× smaller"."""
    end = 0.2 * runs["step"].max()
    ax.axvspan(0, end, color="0.85", zorder=0, linewidth=0)
    ax.annotate(
        "first 20%",
        (0, 0),
        xycoords=("data", "axes fraction"),
        xytext=(2, 2),
        textcoords="offset points",
        fontsize=plotting.MIN_FONT_PT,
        color="0.3",
    )


def landscape_row(axes: list, runs: pd.DataFrame, model: str = "", first: int = 0) -> None:
    """Fig. 4 on three axes: bands of the loss range and of gradient predictiveness over η, and effective β (log
    axes: BN's and the standard net's values can be orders of magnitude apart); the panels are lettered from the
    ``first``-th letter, so that the rows of a figure do not repeat (a)–(c)."""
    prefix = f"{model}: " if model else ""
    letter = [f"({chr(ord('a') + first + i)}) {prefix}" for i in range(3)]
    norms = plotting.sorted_norms(runs.loc[runs["metric"] == BETA, NORM])
    beta = curves(runs, BETA, [NORM])
    early_window(axes[1], runs)
    for norm in norms:
        _range_band(axes[0], runs, "landscape/loss", norm)
        _range_band(axes[1], runs, "landscape/gpred", norm)
        plotting.band(axes[2], beta[beta[NORM] == norm], norm, norm)
    axes[0].set(title=f"{letter[0]}loss L(w − ηg) over η", xlabel="step", ylabel="loss")
    axes[1].set(title=f"{letter[1]}gradient predictiveness", xlabel="step", ylabel="‖∇L(w − ηg) − ∇L(w)‖ over η")
    axes[2].set(title=f"{letter[2]}effective β-smoothness", xlabel="step", ylabel="max ‖Δ∇L‖ / ‖ηg‖")
    for ax in axes[1:]:
        plotting.log_axis(ax)
    axes[0].legend(title="norm")


LANDSCAPE_NOTE = "(a, b) bands: range over η, edges the median over seeds; (c) line: median, band: min–max over seeds"


def landscape_caption(what: str) -> plotting.Caption:
    """The caption of a landscape figure; a cell is one norm of one model."""
    return plotting.Caption(
        what + " Bands of the loss and gradient-predictiveness panels are the range over the step sizes η "
        "(their edges: the median over seeds of each run's min and max over η); in the β panel the line is the "
        "median over seeds and the band the min–max. Log axes in (b) and (c). Shaded: the first 20% of training, "
        "criterion 3b's window.",
        cells=[EXPERIMENT, NORM],
        band="see above",
    )


def landscape_plot(results: Results, out: Path) -> list[Path]:
    """Fig. 4 for one net: loss range, gradient predictiveness and effective β over steps."""
    return _landscape_figure(
        results,
        out,
        [("", results.runs)],
        "Qiao et al. 2019, §3 (criterion 3f), with Santurkar et al.'s instruments: along the gradient at each probed "
        "step, (a) the loss L(w − ηg) and (b) the gradient change ‖∇L(w − ηg) − ∇L(w)‖ over η, and (c) the "
        "effective β-smoothness, with GN in both nets, with and without WS.",
    )


def landscape_plot_per_model(results: Results, out: Path) -> list[Path]:
    """Fig. 4, one row per model with stored runs (VGG, then DLN)."""
    models = [(model, part.runs) for model, part in stored_models(results)]
    if not models:
        return []
    return _landscape_figure(
        results,
        out,
        models,
        "Santurkar et al. 2018, Fig. 4 (criteria 3a–3c), one row per model (VGG, deep linear network): along the "
        "gradient at each probed step, (a) the loss L(w − ηg) and (b) the gradient change "
        "‖∇L(w − ηg) − ∇L(w)‖ over η, and (c) the effective β-smoothness, with and without BN.",
    )


def _landscape_figure(results: Results, out: Path, rows: list[tuple[str, pd.DataFrame]], what: str) -> list[Path]:
    """``landscape``: a :func:`landscape_row` per (model, runs) of ``rows``, with its note and caption."""
    fig, axes = plotting.figure(ncols=3, nrows=len(rows), height=2.35 * len(rows))
    for row, (model, runs) in enumerate(rows):
        landscape_row(axes[3 * row : 3 * row + 3], runs, model, first=3 * row)
    n = plotting.cell_counts(results.summary, [EXPERIMENT, NORM])
    plotting.note(fig, f"{LANDSCAPE_NOTE}; n = {plotting.count(n)} seeds per norm")
    return plotting.save(fig, out, "landscape", landscape_caption(what), results.summary)


def ics_plot(results: Results, out: Path) -> list[Path]:
    """Fig. 5: a row per model, ‖G − G′‖₂ and cos(G, G′) over steps for two layers (the second and the last
    measured); the cosine on a fixed [0, 1] axis (or [−1, 1] when it goes negative), as the paper."""
    rows = []
    for model, part in stored_models(results):
        layers = _ics_layers(part.runs)
        rows.append((model, part.runs, [layers[1], layers[-1]] if len(layers) > 2 else layers[-1:]))
    if not rows:
        return []
    columns = 2 * max(len(layers) for _, _, layers in rows)
    fig, axes = plotting.figure(ncols=columns, nrows=len(rows), height=2.0 * len(rows))
    for row, (model, runs, layers) in enumerate(rows):
        for index, (layer, (stat, label)) in enumerate(
            itertools.product(layers, (("l2", "‖G − G′‖₂"), ("cos", "cos(G, G′)")))
        ):
            ax = axes[row * columns + index]
            frame = curves(runs, f"ics/{layer}/{stat}", [NORM])
            for norm in plotting.sorted_norms(frame[NORM]):
                plotting.band(ax, frame[frame[NORM] == norm], norm, norm)
            ax.set(title=f"{model} {layer}", xlabel="step", ylabel=label)
            if stat == "l2":
                plotting.log_axis(ax)
            else:
                ax.set_ylim(-1.05 if frame["min"].min() < 0 else -0.05, 1.05)
        axes[row * columns + 1].legend(title="norm", loc="lower right")
    n = plotting.cell_counts(results.summary, [EXPERIMENT, NORM])
    plotting.note(fig, plotting.band_note(n))
    text = plotting.Caption(
        "Santurkar et al. 2018, Fig. 5 (criterion 3e): internal covariate shift of two layers (the second and the "
        "last measured) per model, a row per model: ‖G − G′‖₂ (log axis) and cos(G, G′) (fixed axis) over "
        "training, where G is a layer's gradient and G′ the same gradient on the same batch after the layers "
        "before it have taken their update.",
        cells=[EXPERIMENT, NORM],
    )
    return plotting.save(fig, out, "ics", text, results.summary)


def _activation_modules(runs: pd.DataFrame) -> list[str]:
    metrics = runs.loc[runs["metric"].str.startswith("act/") & runs["metric"].str.endswith("/mean"), "metric"]
    return list(dict.fromkeys(metric[len("act/") : -len("/mean")] for metric in metrics))


def noisy_bn_plot(results: Results, out: Path) -> list[Path]:
    """Fig. 2: training and test accuracy per net (top row, two wide panels), and per tracked layer and net the
    unit's mean ± std over steps (a row per layer, a column per net, one y scale per row)."""
    runs = results.runs
    norms = plotting.sorted_norms(runs[NORM])
    modules = _activation_modules(runs)
    fig, axes = plotting.figure(ncols=len(norms), nrows=1 + len(modules), height=2.0 * (1 + len(modules)))
    for ax, metric in zip(_top_row_halves(fig, axes[: len(norms)]), ("train/acc", "test/acc"), strict=True):
        frame = curves(runs, metric, [NORM])
        for norm in norms:
            plotting.band(ax, frame[frame[NORM] == norm], norm, norm)
        ax.set(title=metric.replace("/", " "), xlabel="step", ylabel="accuracy", ylim=(0, 1))
        ax.axhline(CHANCE, color="0.4", linestyle=":", linewidth=0.8)
    ax.legend(title="norm", loc="lower right", ncols=2)
    for row, module in enumerate(modules, start=1):
        mean, var = curves(runs, f"act/{module}/mean", [NORM]), curves(runs, f"act/{module}/var", [NORM])
        first = axes[row * len(norms)]
        for col, norm in enumerate(norms):
            ax = axes[row * len(norms) + col]
            if col:
                ax.sharey(first)
            m = mean[mean[NORM] == norm].sort_values("step")
            std = np.sqrt(var[var[NORM] == norm].sort_values("step")["median"].to_numpy())
            look = plotting.style(norm)
            ax.plot(m["step"], m["median"], color=look.color, linestyle=look.linestyle)
            ax.fill_between(m["step"], m["median"] - std, m["median"] + std, color=look.color, alpha=0.3, linewidth=0)
            ax.set(title=f"{norm}: {module}", xlabel="step", ylabel="unit activation" if not col else "")
    n = plotting.cell_counts(results.summary, NORM)
    plotting.note(
        fig,
        f"accuracy: median, min–max over n = {plotting.count(n)} seeds; activations: the unit's mean ± std "
        "over the batch (medians over seeds); dotted: chance",
    )
    text = plotting.Caption(
        "Santurkar et al. 2018, Fig. 2 and 7 (criterion 3d): top, training (in training mode, noise included) and "
        "test accuracy over training of the standard net (none), BN, BN followed by distributional noise "
        "(noisy_bn) and the standard net with the same noise (noise); below, a row per tracked layer, one unit's "
        "activation (the ReLU's input) over training per net: its mean over the batch with ± one standard "
        "deviation as the band (medians over seeds), on one y scale per row.",
        cells=[NORM],
        band="accuracy lines are the median over seeds, bands the min–max; activation bands are mean ± std",
    )
    return plotting.save(fig, out, "noisy_bn", text, results.summary)


def _top_row_halves(fig: Figure, row: list[Axes]) -> list[Axes]:
    """Two axes splitting the width of the figure's top row ``row`` (its axes are removed), whatever its columns."""
    halves = row[0].get_subplotspec().get_gridspec()[0, :].subgridspec(1, 2)
    for ax in row:
        ax.remove()
    return [fig.add_subplot(halves[0, i]) for i in range(2)]


register(
    Claim(
        id="santurkar2018-smoothness",
        title="BN smooths the loss landscape: smaller loss range, gradient change and effective β",
        paper="Santurkar et al. 2018",
        paper_figure="Fig. 4 (3a–3c)",
        criteria=per_model(smoothness_criteria),
        plot=landscape_plot_per_model,
        experiments=tuple(MODELS.values()),
    )
)
register(
    Claim(
        id="santurkar2018-noisy-bn",
        title="BN with injected distributional noise still trains; the same noise breaks the standard net",
        paper="Santurkar et al. 2018",
        paper_figure="Fig. 2, 7 (3d)",
        criteria=noisy_bn_criteria,
        plot=noisy_bn_plot,
    )
)
register(
    Claim(
        id="santurkar2018-ics",
        title="BN does not reduce internal covariate shift",
        paper="Santurkar et al. 2018",
        paper_figure="Fig. 5 (3e)",
        criteria=per_model(ics_criteria),
        plot=ics_plot,
        experiments=tuple(MODELS.values()),
    )
)
