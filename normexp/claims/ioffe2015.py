"""Ioffe & Szegedy 2015 (arXiv 1502.03167), Fig. 1: BN speeds up training, stabilizes the sigmoid inputs, and
allows much higher learning rates. Criteria: docs/claims.md §1.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from normexp import plotting
from normexp.analysis import aggregate, curves
from normexp.claims import Check, Claim, InsufficientData, Results, register

NORM = "norm.name"
LR = "optim.lr"
ACC = "test/acc"
PERCENTILES = ("probe/p15", "probe/p50", "probe/p85")


def _cell(frame: pd.DataFrame, **where: object) -> pd.DataFrame:
    mask = np.ones(len(frame), dtype=bool)
    for column, value in where.items():
        column = {"norm": NORM, "lr": LR}.get(column, column)
        if column not in frame:
            raise InsufficientData(f"no column {column!r} in the stored results")
        values = frame[column]
        mask &= np.isclose(values, value, rtol=1e-6) if isinstance(value, float) else (values == value).to_numpy()
    cell = frame[mask]
    if cell.empty:
        raise InsufficientData(f"no runs for {where}")
    return cell


def _at(curve: pd.DataFrame, step: int) -> float:
    """The median at the evaluated step nearest to ``step``."""
    nearest = curve.iloc[(curve["step"] - step).abs().argsort().iloc[0]]
    return float(nearest["median"])


def _percentile_ranges(runs: pd.DataFrame) -> pd.DataFrame:
    """Per run, the range over training of p50 and of (p85 − p15), the probe's stability measures (Fig. 1b/c).

    Step 0 is left out: BN's running statistics are still their initial (0, 1) there, so eval-mode BN passes the
    raw Wu through; from the first evaluation on they track the batch statistics.
    """
    probe = runs[runs["metric"].isin(PERCENTILES) & (runs["step"] > 0)]
    wide = probe.pivot_table(index=["run_id", NORM, "step"], columns="metric", values="value").reset_index()
    wide["spread"] = wide["probe/p85"] - wide["probe/p15"]
    ranges = wide.groupby(["run_id", NORM]).agg(
        p50_range=("probe/p50", lambda s: s.max() - s.min()), spread_range=("spread", lambda s: s.max() - s.min())
    )
    return ranges.reset_index()


def fig1_criteria(results: Results) -> list[Check]:
    """1a speed and 1b stability."""
    acc = curves(results.runs, ACC, [NORM])
    bn, none = _cell(acc, norm="bn"), _cell(acc, norm="none")
    total = int(acc["step"].max())
    early = round(0.2 * total)
    bn_early, none_early = _at(bn, early), _at(none, early)
    bn_end, none_end = _at(bn, total), _at(none, total)
    reached = bn[bn["median"] >= none_end]["step"]
    steps_to_target = int(reached.min()) if not reached.empty else None
    ranges = _percentile_ranges(results.runs)
    medians = ranges.groupby(NORM)[["p50_range", "spread_range"]].median()
    if not {"bn", "none"} <= set(medians.index):
        raise InsufficientData("percentile probe missing for bn or none")
    return [
        Check(
            "1a: BN more accurate at 20% of the steps",
            bn_early > none_early,
            f"step {early}: BN {bn_early:.4f} vs no-BN {none_early:.4f}",
            bn_early - none_early,
        ),
        Check(
            "1a: BN more accurate at the end",
            bn_end > none_end,
            f"step {total}: BN {bn_end:.4f} vs no-BN {none_end:.4f}",
            bn_end - none_end,
        ),
        Check(
            "1a: BN reaches no-BN's final accuracy within 0.5× the steps",
            steps_to_target is not None and steps_to_target <= 0.5 * total,
            f"BN reached {none_end:.4f} at step {steps_to_target} of {total}",
            0.5 - steps_to_target / total if steps_to_target is not None else None,
        ),
        Check(
            "1b: range of p50 smaller with BN",
            medians.loc["bn", "p50_range"] < medians.loc["none", "p50_range"],
            f"BN {medians.loc['bn', 'p50_range']:.3f} vs no-BN {medians.loc['none', 'p50_range']:.3f}",
            medians.loc["none", "p50_range"] - medians.loc["bn", "p50_range"],
        ),
        Check(
            "1b: range of p85 − p15 smaller with BN",
            medians.loc["bn", "spread_range"] < medians.loc["none", "spread_range"],
            f"BN {medians.loc['bn', 'spread_range']:.3f} vs no-BN {medians.loc['none', 'spread_range']:.3f}",
            medians.loc["none", "spread_range"] - medians.loc["bn", "spread_range"],
        ),
    ]


def fig1_plot(results: Results, out: Path) -> list[Path]:
    """Fig. 1a (test accuracy over steps, from 10% of the run as the paper's 10k–50k, with the criteria's marks) and
    1b/c (the sigmoid input's percentiles without and with BN, on one y scale)."""
    fig, axes = plotting.figure(ncols=3, height=2.4)
    acc = curves(results.runs, ACC, [NORM])
    for norm in plotting.sorted_norms(acc[NORM]):
        plotting.band(axes[0], acc[(acc[NORM] == norm) & (acc["step"] >= 0.1 * acc["step"].max())], norm, norm)
    if not acc.empty:
        _mark_speed_criteria(axes[0], acc)
    axes[0].set(title="(a) test accuracy", xlabel="step", ylabel="accuracy")
    axes[0].legend(title="norm", loc="lower right")
    percentile_curves = pd.concat(
        [curves(results.runs, metric, [NORM]).assign(percentile=metric.split("/")[1]) for metric in PERCENTILES]
    )
    styles = {"p15": ":", "p50": "-", "p85": "--"}
    axes[2].sharey(axes[1])  # one y scale for (b) and (c), so their spreads compare at a glance
    for ax, norm, label in ((axes[1], "none", "(b) without BN"), (axes[2], "bn", "(c) with BN")):
        for percentile, cell in percentile_curves[percentile_curves[NORM] == norm].groupby("percentile"):
            look = replace(plotting.style(norm), linestyle=styles[percentile], marker="")
            plotting.band(ax, cell, percentile, look)
        ax.set(title=f"{label}: sigmoid input", xlabel="step", ylabel="percentile of the input")
    handles = [Line2D([], [], color="0.3", linestyle=s, label=p) for p, s in styles.items()]
    axes[2].legend(handles=handles, title="percentile", loc="lower center", ncols=3, columnspacing=0.8)
    plotting.note(fig, plotting.band_note(plotting.cell_counts(results.summary, NORM)))
    text = plotting.Caption(
        "Ioffe & Szegedy 2015, Fig. 1. (a) Test accuracy against training steps with and without BN, from 10% of "
        "the run on (the paper shows 10k–50k of 50k steps); dotted: criterion 1a's marks (20% of the steps, "
        "0.5× the steps, no-BN's final accuracy). (b, c) The 15th, 50th and 85th percentiles of one sigmoid "
        "input of the last hidden layer over training, without and with BN, on a shared y axis.",
        cells=[NORM],
    )
    return plotting.save(fig, out, "fig1", text, results.summary)


def _mark_speed_criteria(ax: object, acc: pd.DataFrame) -> None:
    """Criterion 1a's marks: 20% and 0.5× of the steps, and no-BN's final median accuracy."""
    total = acc["step"].max()
    for fraction, label in ((0.2, "20%"), (0.5, "0.5×")):
        ax.axvline(fraction * total, color="0.4", linestyle=":", linewidth=0.8)
        ax.annotate(
            label,
            (fraction * total, 1),
            xycoords=("data", "axes fraction"),
            xytext=(2, -8),
            textcoords="offset points",
            fontsize=plotting.MIN_FONT_PT,
            color="0.3",
        )
    none = acc[acc[NORM] == "none"]
    if not none.empty:
        ax.axhline(_at(none, int(total)), color="0.4", linestyle=":", linewidth=0.8)


def _final_accuracy(summary: pd.DataFrame) -> pd.DataFrame:
    """Per run the final test accuracy, −inf for a diverged run (it ranks below any run that finished)."""
    frame = summary[[NORM, LR, "status", f"final/{ACC}"]].copy()
    frame["acc"] = np.where(frame["status"] == "diverged", -math.inf, frame[f"final/{ACC}"])
    return frame


def _describe(cell: pd.DataFrame) -> str:
    diverged = int((cell["status"] == "diverged").sum())
    finite = cell["acc"][np.isfinite(cell["acc"])]
    spread = f" [{finite.min():.4f}–{finite.max():.4f}]" if not finite.empty else ""
    return f"median {cell['acc'].median():.4f}{spread}, n={len(cell)}, diverged {diverged}"


def tick_labels(values: list[float], spacing: float = 1.6) -> list[str]:
    """Labels for log-axis ticks at ``values``: a value is written when it is at least ``spacing`` times the last
    one written, so close grid values (0.2, 0.25, 0.3) keep their ticks without overlapping labels."""
    labels, last = [], None
    for value in values:
        shown = last is None or value >= spacing * last
        labels.append(f"{value:g}" if shown else "")
        last = value if shown else last
    return labels


def _best_no_bn_lr(final: pd.DataFrame) -> float:
    """The lr at which no-BN ends with the highest median accuracy (ties go to the smaller lr)."""
    return float(_cell(final, norm="none").groupby(LR)["acc"].median().idxmax())


def lr_criteria(results: Results) -> list[Check]:
    """1c: BN at 5× and 30× the best no-BN lr is at least as accurate as no-BN at 1×; no-BN at ≥5× is not."""
    final = _final_accuracy(results.summary)
    best = _best_no_bn_lr(final)
    reference = _cell(final, norm="none", lr=best)
    base = reference["acc"].median()
    checks = []
    for multiple in (5, 30):
        bn = _cell(final, norm="bn", lr=best * multiple)
        checks.append(
            Check(
                f"1c: BN at {multiple}× ≥ no-BN at 1× (its best lr)",
                bn["acc"].median() >= base,
                f"BN@{best * multiple:g}: {_describe(bn)}; no-BN@{best:g}: {_describe(reference)}",
                bn["acc"].median() - base,
            )
        )
    for multiple in (5, 30):
        none = _cell(final, norm="none", lr=best * multiple)
        worse = none["acc"].median() < base
        checks.append(
            Check(
                f"1c: no-BN at {multiple}× diverges or ends worse than at 1×",
                bool(worse),
                f"no-BN@{best * multiple:g}: {_describe(none)}",
                base - none["acc"].median(),
            )
        )
    return checks


def lr_plot(results: Results, out: Path) -> list[Path]:
    """(a) Final test accuracy against the lr per norm (median, min–max over seeds; diverged runs as ×, chance
    dotted); (b) the test-accuracy curves of the cells the criteria compare (1×, 5×, 30× the best no-BN lr)."""
    fig, axes = plotting.figure(ncols=2, height=2.6)
    final = _final_accuracy(results.summary)
    chance = 1 / 10  # Fashion-MNIST and MNIST: 10 classes
    for norm in plotting.sorted_norms(final[NORM]):
        runs, look = final[final[NORM] == norm], plotting.style(norm)
        cells = aggregate(runs[np.isfinite(runs["acc"])], [LR], "acc")
        axes[0].errorbar(
            cells[LR],
            cells["median"],
            yerr=[cells["median"] - cells["min"], cells["max"] - cells["median"]],
            capsize=2,
            label=norm,
            **look.line(),
        )
        diverged = runs[~np.isfinite(runs["acc"])]
        if not diverged.empty:
            axes[0].scatter(
                diverged[LR],
                np.full(len(diverged), 0.02),
                marker="x",
                color=look.color,
                s=30,
                label=f"{norm}: diverged ({len(diverged)} runs)",
            )
    axes[0].axhline(chance, color="0.4", linestyle=":", linewidth=0.8, label="chance (10 classes)")
    axes[0].set(
        xscale="log", title="(a) final test accuracy against the lr", xlabel="lr", ylabel="test accuracy", ylim=(0, 1)
    )
    lr_grid = sorted(final[LR].unique())
    axes[0].set_xticks(lr_grid, tick_labels(lr_grid))
    axes[0].minorticks_off()
    axes[0].legend(loc="center left")
    best = _best_no_bn_lr(final)
    acc = curves(results.runs, ACC, [NORM, LR])
    multiples = {1: "-", 5: "--", 30: ":"}  # the cells the criteria compare
    at_chance = []
    for multiple, linestyle in multiples.items():
        for norm, cell in acc[np.isclose(acc[LR], best * multiple)].groupby(NORM):
            look = replace(plotting.style(norm), linestyle=linestyle)
            plotting.band(axes[1], cell, None, look)
            if cell.sort_values("step")["median"].iloc[-1] <= chance + 0.01:
                at_chance.append(f"{norm} {multiple}×")
    axes[1].axhline(chance, color="0.4", linestyle=":", linewidth=0.8)
    if at_chance:  # curves that lie on top of each other at chance: say which, instead of hiding them
        axes[1].annotate(
            f"at chance: {', '.join(at_chance)}",
            (0.98, chance + 0.03),
            xycoords=("axes fraction", "data"),
            ha="right",
            va="bottom",
            fontsize=plotting.MIN_FONT_PT,
            color="0.25",
        )
    lrs = [Line2D([], [], color="0.3", linestyle=s, label=f"{m}× (lr {best * m:g})") for m, s in multiples.items()]
    axes[1].legend(handles=lrs, title="× best no-BN lr (norms as in a)", loc="center right")
    axes[1].set(
        title=f"(b) test accuracy at 1×, 5×, 30×\nthe best no-BN lr ({best:g})",
        xlabel="step",
        ylabel="test accuracy",
        ylim=(0, 1),
    )
    plotting.note(fig, plotting.band_note(plotting.cell_counts(results.summary, [NORM, LR])))
    text = plotting.Caption(
        "Ioffe & Szegedy 2015, §4.2.1 / Fig. 3, on the Fig. 1 MLP. (a) Final test accuracy against the SGD lr, "
        "with (bn) and without (none) BN: markers the median over seeds, bars the min–max; diverged runs (loss "
        "NaN/inf or above train.diverge_loss) would be drawn as × at the bottom; dotted: chance. (b) Test accuracy "
        "over training at 1×, 5× and 30× the best no-BN lr, the cells criterion 1c compares; curves that end at "
        "chance are named in the panel, since they coincide.",
        cells=[NORM, LR],
    )
    return plotting.save(fig, out, "lr", text, results.summary)


register(
    Claim(
        id="ioffe2015-fig1",
        title="BN speeds up training and stabilizes the sigmoid inputs",
        paper="Ioffe & Szegedy 2015",
        paper_figure="Fig. 1a–c",
        paper_result="MNIST, 50k steps: BN reaches higher test accuracy faster; its sigmoid-input percentiles stay put",
        criteria=fig1_criteria,
        plot=fig1_plot,
    )
)
register(
    Claim(
        id="ioffe2015-lr",
        title="BN allows much higher learning rates",
        paper="Ioffe & Szegedy 2015",
        paper_figure="Fig. 3 (lr ×5, ×30), §4.2.1",
        paper_result=(
            "Inception, steps to 72.2%: no BN 31.0M; BN-x5 (lr ×5) 2.1M; BN-x30 2.7M, best 74.8%; "
            "no BN at lr ×5 overflowed"
        ),
        criteria=lr_criteria,
        plot=lr_plot,
    )
)
