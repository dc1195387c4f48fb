"""Ioffe & Szegedy 2015 (arXiv 1502.03167), Fig. 1: BN speeds up training, stabilizes the sigmoid inputs, and
allows much higher learning rates. Criteria: PAPERS.md §1.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

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
    """Fig. 1a (test accuracy over steps) and 1b/c (sigmoid-input percentiles without and with BN)."""
    fig, axes = plotting.figure(ncols=3)
    acc = curves(results.runs, ACC, [NORM])
    for norm in plotting.sorted_norms(acc[NORM]):
        plotting.band(axes[0], acc[acc[NORM] == norm], norm, plotting.norm_color(norm))
    axes[0].set(title="(a) test accuracy", xlabel="step", ylabel="accuracy")
    axes[0].legend(title="norm")
    percentile_curves = pd.concat(
        [curves(results.runs, metric, [NORM]).assign(percentile=metric.split("/")[1]) for metric in PERCENTILES]
    )
    styles = {"p15": ":", "p50": "-", "p85": "--"}
    for ax, norm, label in ((axes[1], "none", "(b) without BN"), (axes[2], "bn", "(c) with BN")):
        for percentile, cell in percentile_curves[percentile_curves[NORM] == norm].groupby("percentile"):
            plotting.band(ax, cell, percentile, plotting.norm_color(norm), linestyle=styles[percentile])
        ax.set(title=f"{label}: sigmoid input", xlabel="step", ylabel="value (median, IQR over seeds)")
        ax.legend(title="percentile", fontsize=7)
    if not percentile_curves.empty:  # one y scale for (b) and (c), so their spreads compare at a glance
        low, high = percentile_curves["median"].min(), percentile_curves["median"].max()
        for ax in axes[1:]:
            ax.set_ylim(low - 0.15 * (high - low), high + 0.15 * (high - low))
    return plotting.save(fig, out, "fig1")


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
                f"1c: BN at {multiple}× ≥ no-BN at 1× (lr {best:g})",
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
    """Final test accuracy against the lr per norm (median, min–max; diverged runs as ×) and the curves."""
    fig, axes = plotting.figure(ncols=2)
    final = _final_accuracy(results.summary)
    for norm in plotting.sorted_norms(final[NORM]):
        runs = final[final[NORM] == norm]
        color = plotting.norm_color(norm)
        finished = runs[np.isfinite(runs["acc"])]
        cells = aggregate(finished, [LR], "acc")
        axes[0].errorbar(
            cells[LR],
            cells["median"],
            yerr=[cells["median"] - cells["min"], cells["max"] - cells["median"]],
            color=color,
            marker="o",
            capsize=3,
            label=norm,
        )
        diverged = runs[~np.isfinite(runs["acc"])]
        axes[0].scatter(diverged[LR], np.full(len(diverged), 0.05), marker="x", color=color, s=40)
    axes[0].set(
        xscale="log", title="final test accuracy vs lr (× = diverged)", xlabel="lr", ylabel="accuracy", ylim=(0, 1)
    )
    axes[0].legend(title="norm")
    best = _best_no_bn_lr(final)
    acc = curves(results.runs, ACC, [NORM, LR])
    for multiple, style in ((1, "-"), (5, "--"), (30, ":")):  # the cells the criteria compare
        for norm, cell in acc[np.isclose(acc[LR], best * multiple)].groupby(NORM):
            cell = cell.sort_values("step")
            axes[1].plot(
                cell["step"],
                cell["median"],
                color=plotting.norm_color(norm),
                linestyle=style,
                label=f"{norm}, {multiple}× (lr {best * multiple:g})",
            )
    axes[1].set(
        title=f"test accuracy at 1×, 5×, 30× the best no-BN lr ({best:g})",
        xlabel="step",
        ylabel="accuracy (median over seeds)",
        ylim=(0, 1),
    )
    axes[1].legend(fontsize=7)
    return plotting.save(fig, out, "lr")


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
