"""Xiong et al. 2020 (arXiv 2002.04745), On Layer Normalization in the Transformer Architecture: Post-LN
Transformers need a learning-rate warm-up and Pre-LN ones do not (§3, Fig. 2), because at initialization the
gradients near the output of a Post-LN Transformer are large (§4, Fig. 3). Criteria: docs/claims.md §4.

How the criteria's words are read (fixed before the grid was run):

* a cell's loss is the median over seeds of the final test loss (nats/token); a diverged run counts as +inf;
* the plateau is the unigram loss (``probe/unigram_loss``); a Post-LN cell *fails* when its loss is at or above
  the plateau or above 1.5× the loss of Pre-LN without warm-up at the same lr; a cell *converges* when its loss is
  below the plateau; "with warm-up" is the longest warm-up on the grid;
* 4b: losses are capped at the plateau (two failed cells are equally failed, whatever their noise), the worsening
  at an lr is the mean excess of each shorter warm-up over the longest, and the comparison is between the two
  largest lr at which Post-LN with warm-up converges;
* 4c holds at every lr at which Post-LN with warm-up converges; steps are read off the median test-loss curves;
* margins (the sensitivity map's slack, > 0 passes): in nats for 4a and 4b (4a: the tighter of "Post-LN fails"
  and "warm-up rescues it" at the best lr; Pre-LN's distance below the plateau), in units of the 0.7 ratio for 4c;
* 4d: Pre-LN's per-layer norms are "flat" when their coefficient of variation is below 20% (the bound 4d sets
  for Post-LN across depths); the per-layer criteria hold at every depth on the grid.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from pathlib import Path

import matplotlib.colors
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from normexp import plotting
from normexp.analysis import aggregate, curves
from normexp.claims import Check, Claim, InsufficientData, Results, finished, median_range, register, save_table

POSITION = "model.position"
LR = "optim.lr"
WARMUP = "schedule.warmup_steps"
DEPTH = "model.depth"
LOSS = "test/loss"
PLATEAU = "final/probe/unigram_loss"
POSITION_LABELS = {"post": "Post-LN", "pre": "Pre-LN"}
DIVERGENCE_RATIO = 1.5
SAME_LOSS = 0.10
STEPS_RATIO = 0.7
DEPTH_CV = 0.20


# --- 4a-4c: the warm-up grid ------------------------------------------------------------------------------------


def final_losses(summary: pd.DataFrame) -> pd.DataFrame:
    """Per run: position, lr, warm-up, status and final test loss, +inf for a diverged run."""
    for column in (POSITION, LR, WARMUP, "status", f"final/{LOSS}"):
        if column not in summary:
            raise InsufficientData(f"no column {column!r} in the stored results")
    runs = finished(summary)
    loss = np.where(runs["status"] == "diverged", math.inf, runs[f"final/{LOSS}"])
    return runs[[POSITION, LR, WARMUP, "status"]].assign(loss=loss)


def cell_medians(final: pd.DataFrame) -> pd.Series:
    """Median final loss per (position, lr, warm-up)."""
    return final.groupby([POSITION, LR, WARMUP])["loss"].median()


def plateau(summary: pd.DataFrame) -> float:
    """The unigram loss of the runs' data (the same for every run)."""
    if PLATEAU not in summary or summary[PLATEAU].isna().all():
        raise InsufficientData("no unigram loss (probe unigram_loss) in the stored results")
    return float(summary[PLATEAU].median())


def _get(medians: pd.Series, position: str, lr: float, warmup: int) -> float:
    try:
        return float(medians.loc[(position, lr, warmup)])
    except KeyError:
        raise InsufficientData(f"no runs for position={position}, lr={lr:g}, warm-up={warmup}") from None


class WarmupGrid:
    """The median final losses of the grid, with the criteria's readings of "fails" and "converges"."""

    def __init__(self, summary: pd.DataFrame) -> None:
        self.final = final_losses(summary)
        self.medians = cell_medians(self.final)
        self.plateau = plateau(summary)
        self.lrs = sorted(self.final[LR].unique())
        self.warmups = sorted(self.final[WARMUP].unique())
        if len(self.warmups) < 2 or self.warmups[0] != 0:
            raise InsufficientData(f"the warm-up grid {self.warmups} needs 0 and at least one longer warm-up")
        self.longest = self.warmups[-1]

    def loss(self, position: str, lr: float, warmup: int) -> float:
        """The cell's median final loss."""
        return _get(self.medians, position, lr, warmup)

    def post_fails(self, lr: float) -> bool:
        """Post-LN without warm-up ends at/above the plateau or above 1.5× Pre-LN without warm-up."""
        post = self.loss("post", lr, 0)
        return post >= self.plateau or post > DIVERGENCE_RATIO * self.loss("pre", lr, 0)

    def converges(self, position: str, lr: float, warmup: int) -> bool:
        """The cell ends below the plateau."""
        return self.loss(position, lr, warmup) < self.plateau

    def warmup_rescues(self, lr: float) -> bool:
        """Post-LN with warm-up and Pre-LN without both converge, within 10% of each other."""
        post, pre = self.loss("post", lr, self.longest), self.loss("pre", lr, 0)
        both = self.converges("post", lr, self.longest) and self.converges("pre", lr, 0)
        return both and abs(post - pre) <= SAME_LOSS * min(post, pre)

    def fail_slack(self, lr: float) -> float:
        """How far (nats) Post-LN without warm-up is past the nearer of its two failure bounds: ≥ 0 when it fails."""
        post = self.loss("post", lr, 0)
        return max(post - self.plateau, post - DIVERGENCE_RATIO * self.loss("pre", lr, 0))

    def rescue_slack(self, lr: float) -> float:
        """The tightest of :meth:`warmup_rescues`' three conditions (nats): ≥ 0 when warm-up rescues Post-LN."""
        post, pre = self.loss("post", lr, self.longest), self.loss("pre", lr, 0)
        return min(self.plateau - post, self.plateau - pre, SAME_LOSS * min(post, pre) - abs(post - pre))

    def trainable_lrs(self) -> list[float]:
        """The lrs at which Post-LN with the longest warm-up converges."""
        return [lr for lr in self.lrs if self.converges("post", lr, self.longest)]

    def capped(self, position: str, lr: float, warmup: int) -> float:
        """The cell's loss, capped at the plateau (every failed cell is equally failed)."""
        return min(self.loss(position, lr, warmup), self.plateau)

    def worsening(self, lr: float) -> float:
        """Mean excess (capped) loss of Post-LN's shorter warm-ups over its longest at ``lr``."""
        longest = self.capped("post", lr, self.longest)
        return float(np.mean([self.capped("post", lr, w) - longest for w in self.warmups[:-1]]))

    def describe(self, position: str, lr: float) -> str:
        """The cell losses of one position at one lr, warm-up by warm-up, with diverged counts."""
        parts = []
        for warmup in self.warmups:
            cell = self.final[
                (self.final[POSITION] == position) & (self.final[LR] == lr) & (self.final[WARMUP] == warmup)
            ]
            if cell.empty:
                continue
            diverged = int((cell["status"] == "diverged").sum())
            parts.append(
                f"w{warmup} {self.loss(position, lr, warmup):.3f}" + (f" ({diverged} div)" if diverged else "")
            )
        return f"{POSITION_LABELS[position]}@{lr:g}: " + ", ".join(parts)


def warmup_criteria(results: Results) -> list[Check]:
    """4a (Post-LN fails without warm-up at some lr, Pre-LN never), 4b (steeper at the larger lr), 4c (Pre-LN
    faster)."""
    grid = WarmupGrid(results.summary)
    return [*_criterion_4a(grid), *_criterion_4b(grid), *_criterion_4c(grid, results.runs)]


def _criterion_4a(grid: WarmupGrid) -> list[Check]:
    failing = [lr for lr in grid.lrs if grid.post_fails(lr)]
    rescued = [lr for lr in failing if grid.warmup_rescues(lr)]
    cells = "; ".join(
        f"lr {lr:g}: Post-LN w0 {grid.loss('post', lr, 0):.3f}, w{grid.longest} "
        f"{grid.loss('post', lr, grid.longest):.3f}, Pre-LN w0 {grid.loss('pre', lr, 0):.3f}"
        for lr in grid.lrs
    )
    rescued_at = ", ".join(f"{lr:g}" for lr in rescued) or "none"
    critical = f"critical lr {failing[0]:g}" if failing else "no lr on the grid makes Post-LN fail"
    lr_warmups = list(itertools.product(grid.lrs, grid.warmups))
    pre_failed = [f"lr {lr:g} w{w}" for lr, w in lr_warmups if not grid.converges("pre", lr, w)]
    pre_diverged = int(((grid.final[POSITION] == "pre") & (grid.final["status"] == "diverged")).sum())
    return [
        Check(
            "4a: some lr_max fails Post-LN without warm-up; there warm-up and Pre-LN converge within 10%",
            bool(rescued),
            f"plateau {grid.plateau:.3f}; {critical}; rescued at lr {rescued_at}; {cells}",
            margin=max(min(grid.fail_slack(lr), grid.rescue_slack(lr)) for lr in grid.lrs),
        ),
        Check(
            "4a: Pre-LN never fails on the grid",
            not pre_failed and pre_diverged == 0,
            f"Pre-LN cells at/above the plateau: {', '.join(pre_failed) or 'none'}; "
            f"diverged Pre-LN runs: {pre_diverged}",
            margin=-math.inf if pre_diverged else min(grid.plateau - grid.loss("pre", lr, w) for lr, w in lr_warmups),
        ),
    ]


WORSENS = "4b: Post-LN's loss worsens as warm-up shortens (at the larger lr_max)"
STEEPER = "4b: more steeply at the larger lr_max"
"""4b's two criteria. Their names do not carry the lrs (what they measured does): the two largest lrs at which Post-LN
trains move with the setting, and a sensitivity map needs one row per criterion."""


def _criterion_4b(grid: WarmupGrid) -> list[Check]:
    trainable = grid.trainable_lrs()
    if len(trainable) < 2:
        lrs = ", ".join(f"{lr:g}" for lr in trainable) or "none"
        message = f"Post-LN with warm-up {grid.longest} converges at {len(trainable)} lr (needs 2): {lrs}"
        return [Check(WORSENS, False, message), Check(STEEPER, False, message)]
    low, high = trainable[-2:]
    capped = [grid.capped("post", high, w) for w in grid.warmups]
    monotone = all(a >= b for a, b in itertools.pairwise(capped)) and capped[0] > capped[-1]
    return [
        Check(
            WORSENS,
            monotone,
            grid.describe("post", high),
            margin=min(min(a - b for a, b in itertools.pairwise(capped)), capped[0] - capped[-1]),
        ),
        Check(
            STEEPER,
            grid.worsening(high) > grid.worsening(low),
            f"mean excess over w{grid.longest}: {grid.worsening(high):.3f} at {high:g} vs "
            f"{grid.worsening(low):.3f} at {low:g}; {grid.describe('post', low)}",
            margin=grid.worsening(high) - grid.worsening(low),
        ),
    ]


def steps_to_reach(curve: pd.DataFrame, target: float) -> int | None:
    """The first evaluated step at which a median curve is at or below ``target`` (None if never)."""
    reached = curve[curve["median"] <= target]["step"]
    return int(reached.min()) if not reached.empty else None


def _criterion_4c(grid: WarmupGrid, runs: pd.DataFrame) -> list[Check]:
    trainable = grid.trainable_lrs()
    if not trainable:
        return [Check("4c: Pre-LN reaches Post-LN-with-warm-up's final loss in ≤ 0.7× the steps", False, "no lr")]
    loss = curves(runs, LOSS, [POSITION, LR, WARMUP])
    parts, ratios = [], []
    for lr in trainable:
        target = grid.loss("post", lr, grid.longest)
        pre = loss[(loss[POSITION] == "pre") & (loss[LR] == lr) & (loss[WARMUP] == 0)]
        post = loss[(loss[POSITION] == "post") & (loss[LR] == lr) & (loss[WARMUP] == grid.longest)]
        if pre.empty or post.empty:
            raise InsufficientData(f"no test-loss curves at lr {lr:g}")
        pre_steps, post_steps = steps_to_reach(pre, target), steps_to_reach(post, target)
        ratio = pre_steps / post_steps if pre_steps is not None and post_steps else math.inf
        ratios.append(ratio)
        parts.append(
            f"lr {lr:g}: target {target:.3f}, Pre-LN at step {pre_steps}, Post-LN at {post_steps} ({ratio:.2f}×)"
        )
    name = "4c: Pre-LN reaches Post-LN-with-warm-up's final loss in ≤ 0.7× the steps"
    return [Check(name, max(ratios) <= STEPS_RATIO, "; ".join(parts), margin=STEPS_RATIO - max(ratios))]


def warmup_plot(results: Results, out: Path) -> list[Path]:
    """Test-loss curves per (position, warm-up) at each lr, the final-loss heat maps per position, and the table of
    every cell's final loss."""
    return [*_curves_plot(results, out), *_heatmap_plot(results, out), _loss_table(results, out)]


def _loss_table(results: Results, out: Path) -> Path:
    """Final test loss per (position, warm-up) and lr_max: ``median [min–max]`` over seeds, diverged runs counted."""
    final = final_losses(results.summary)
    lrs = sorted(final[LR].unique())
    lines = [
        "| position | warm-up | " + " | ".join(f"lr_max {lr:g}" for lr in lrs) + " |",
        "|---|---|" + "---|" * len(lrs),
    ]
    for (position, warmup), cells in final.groupby([POSITION, WARMUP]):
        entries = [_loss_entry(cells[cells[LR] == lr]) for lr in lrs]
        lines.append(f"| {POSITION_LABELS[position]} | {warmup} | " + " | ".join(entries) + " |")
    seeds = final.groupby([POSITION, LR, WARMUP]).size()
    text = f"Final test loss (nats/token), median [min–max] over {plotting.count(seeds)} seeds per cell.\n\n"
    return save_table(text + "\n".join(lines) + "\n", out, "final_loss")


def _loss_entry(runs: pd.DataFrame) -> str:
    finite = runs["loss"][np.isfinite(runs["loss"])]
    diverged = len(runs) - len(finite)
    entry = median_range(finite, 3) if len(finite) else ""
    return f"{entry} ({diverged} diverged)".strip() if diverged else entry


def _warmup_styles(warmups: list[int]) -> dict[int, object]:
    """No warm-up dotted, then dashed, solid, ... as the warm-up lengthens."""
    return dict(zip(sorted(warmups), [":", "--", "-", (0, (5, 1, 1, 1)), (0, (1, 1)), (0, (5, 1))], strict=False))


def _curves_plot(results: Results, out: Path) -> list[Path]:
    loss = curves(results.runs, LOSS, [POSITION, LR, WARMUP])
    lrs = sorted(loss[LR].unique())
    styles = _warmup_styles(list(loss[WARMUP].unique()))
    fig, axes = plotting.figure(ncols=len(lrs), height=2.6, sharey=True)
    final = final_losses(results.summary)
    level = plateau(results.summary) if PLATEAU in results.summary else None
    for ax, lr in zip(axes, lrs, strict=True):
        if level is not None:  # a wide pale line, unlike any curve, labelled where it lies
            ax.axhline(level, color="0.75", linewidth=3, zorder=0)
            ax.annotate(
                "unigram plateau",
                (1, level),
                xycoords=("axes fraction", "data"),
                xytext=(-2, 3),
                textcoords="offset points",
                ha="right",
                va="bottom",
                fontsize=plotting.MIN_FONT_PT,
                color="0.35",
            )
        for (position, warmup), cell in loss[loss[LR] == lr].groupby([POSITION, WARMUP]):
            look = replace(plotting.style(position), linestyle=styles[warmup])
            plotting.band(ax, cell, f"{POSITION_LABELS[position]}, warm-up {warmup}", look)
            runs = final[(final[POSITION] == position) & (final[LR] == lr) & (final[WARMUP] == warmup)]
            if (runs["status"] == "diverged").any():
                last = cell.sort_values("step").iloc[-1]
                ax.scatter([last["step"]], [last["median"]], marker="x", color=look.color, s=40, zorder=3)
        ax.set(title=f"lr_max = {lr:g}", xlabel="step", ylabel="test loss (nats/token)" if ax is axes[0] else "")
    axes[-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1))  # beside the panels: over them it hides the plateau
    diverged = "; × = a run diverged" if (final["status"] == "diverged").any() else ""
    plotting.note(fig, plotting.band_note(final.groupby([POSITION, LR, WARMUP]).size()) + diverged)
    text = plotting.Caption(
        "Xiong et al. 2020, §3 / Fig. 2 (criteria 4a–4c): test loss over training of the Post-LN and Pre-LN "
        "Transformer language models at each peak learning rate lr_max (a panel each), for each warm-up length "
        "(line style); the wide grey line is the unigram-entropy plateau, the loss of a model that ignores "
        "context.",
        cells=[POSITION, LR, WARMUP],
    )
    return plotting.save(fig, out, "loss_curves", text, results.summary)


def _heatmap_plot(results: Results, out: Path) -> list[Path]:
    final = final_losses(results.summary)
    positions = [p for p in POSITION_LABELS if p in set(final[POSITION])]
    fig, axes = plotting.figure(ncols=len(positions), height=2.4)
    finite = final[np.isfinite(final["loss"])]["loss"]
    norm = matplotlib.colors.Normalize(vmin=finite.min(), vmax=finite.max()) if not finite.empty else None
    for ax, position in zip(axes, positions, strict=True):
        cells = final[final[POSITION] == position]
        table = cells.groupby([WARMUP, LR])["loss"].median().unstack(LR).sort_index(ascending=False)
        diverged = cells.assign(d=cells["status"] == "diverged").groupby([WARMUP, LR])["d"].sum().unstack(LR)
        diverged = diverged.reindex_like(table)
        shown = np.ma.masked_invalid(table.to_numpy(dtype=float))
        image = ax.imshow(shown, cmap=_loss_cmap(), norm=norm, aspect="auto")
        for (i, j), value in np.ndenumerate(table.to_numpy(dtype=float)):
            count = int(diverged.iloc[i, j])
            text = "diverged" if not np.isfinite(value) else f"{value:.2f}"
            text += f"\n({count} div)" if count and np.isfinite(value) else ""
            dark = not np.isfinite(value) or norm(value) > 0.6
            ax.text(
                j, i, text, ha="center", va="center", fontsize=plotting.MIN_FONT_PT, color="white" if dark else "black"
            )
        ax.set_xticks(range(len(table.columns)), [f"{lr:g}" for lr in table.columns])
        ax.set_yticks(range(len(table.index)), [str(w) for w in table.index])
        ax.set(title=f"{POSITION_LABELS[position]}: final test loss", xlabel="lr_max", ylabel="warm-up steps")
        ax.grid(False)
    fig.colorbar(image, ax=axes, label="final test loss (nats/token)", shrink=0.9)
    n = final.groupby([POSITION, LR, WARMUP]).size()
    plotting.note(fig, f"cells: median over n = {plotting.count(n)} seeds")
    text = plotting.Caption(
        "Xiong et al. 2020, §3 (criteria 4a–4b): the final test loss of each (warm-up, lr_max) cell, Post-LN and "
        "Pre-LN, on one colour scale; a diverged cell would be black.",
        cells=[POSITION, LR, WARMUP],
        band="each cell is the median over seeds (min–max in final_loss.md)",
    )
    return plotting.save(fig, out, "final_loss_heatmap", text, results.summary)


def _loss_cmap() -> matplotlib.colors.Colormap:
    """Loss colour map: low loss light, high loss dark; diverged (masked) cells black."""
    return matplotlib.colormaps["viridis_r"].with_extremes(bad="black")


# --- 4d: gradient norms at initialization -----------------------------------------------------------------------


def layer_norms(runs: pd.DataFrame, kind: str) -> pd.DataFrame:
    """Per run: position, depth, seed, layer index and the probe's ``grad/<kind>/<layer>`` value at step 0."""
    prefix = f"grad/{kind}/"
    rows = runs[runs["metric"].str.startswith(prefix) & (runs["step"] == 0)]
    if rows.empty or POSITION not in rows or DEPTH not in rows:
        raise InsufficientData(f"no {prefix}<layer> metrics (probe grad_norms) with position and depth columns")
    return rows.assign(layer=rows["metric"].str.removeprefix(prefix).astype(int))


def last_layer_norms(runs: pd.DataFrame) -> pd.DataFrame:
    """Per position and depth, seed statistics of the last layer's mean gradient norm (Fig. 3a); the last layer is
    the highest index (the decoder's last block in an encoder-decoder)."""
    norms = layer_norms(runs, "norm")
    last = norms[norms["layer"] == norms.groupby("run_id")["layer"].transform("max")]
    return aggregate(last, [POSITION, DEPTH], "value")


def spearman(x: pd.Series, y: pd.Series) -> float:
    """Spearman's rank correlation (Pearson's on average ranks), without scipy."""
    return float(pd.Series(x).rank().corr(pd.Series(y).rank()))


def coefficient_of_variation(values: pd.Series) -> float:
    """Standard deviation (ddof 0) over mean."""
    return float(np.std(values) / np.mean(values))


def gradnorm_criteria(results: Results) -> list[Check]:
    """4d: Post-LN's last-layer norm is depth-independent, Pre-LN's falls with depth; per layer, Post-LN's rise
    with the layer index, Pre-LN's are flat or falling."""
    last = last_layer_norms(results.runs)
    positions = set(last[POSITION])
    if positions != {"post", "pre"}:
        raise InsufficientData(f"need Post-LN and Pre-LN runs, have {sorted(positions)}")
    post, pre = (last[last[POSITION] == p].sort_values(DEPTH) for p in ("post", "pre"))
    cv = coefficient_of_variation(post["median"])
    rho = spearman(pre[DEPTH], pre["median"])
    per_layer = aggregate(layer_norms(results.runs, "expected_norm"), [POSITION, DEPTH, "layer"], "value")
    post_rho, pre_shape = {}, {}
    for (position, depth), cell in per_layer.groupby([POSITION, DEPTH]):
        value = spearman(cell["layer"], cell["median"])
        if position == "post":
            post_rho[int(depth)] = value
        else:
            pre_shape[int(depth)] = (value, coefficient_of_variation(cell["median"]))

    def medians(cells: pd.DataFrame) -> str:
        return ", ".join(f"L{int(d)} {m:.3f}" for d, m in zip(cells[DEPTH], cells["median"], strict=True))

    return [
        Check(
            "4d: Post-LN's last-FFN gradient norm varies < 20% across depths",
            cv < DEPTH_CV,
            f"CV {cv:.3f}; medians {medians(post)}",
            margin=DEPTH_CV - cv,
        ),
        Check(
            "4d: Pre-LN's last-FFN gradient norm decreases with depth",
            rho < 0,
            f"Spearman ρ {rho:.2f}; medians {medians(pre)}",
            margin=-rho,
        ),
        Check(
            "4d: Post-LN's per-layer gradient norms rise with the layer index (ρ > 0 at every depth)",
            bool(post_rho) and all(r > 0 for r in post_rho.values()),
            ", ".join(f"L{d}: ρ {r:.2f}" for d, r in sorted(post_rho.items())),
            margin=min(post_rho.values(), default=None),
        ),
        Check(
            "4d: Pre-LN's per-layer gradient norms are flat (CV < 20%) or falling (ρ ≤ 0) at every depth",
            bool(pre_shape) and all(r <= 0 or c < DEPTH_CV for r, c in pre_shape.values()),
            ", ".join(f"L{d}: ρ {r:.2f}, CV {c:.2f}" for d, (r, c) in sorted(pre_shape.items())),
            # the depth nearest to failing: its slack on the better of its two ways to pass (ρ = 0 passes at 0)
            margin=min((max(-r, DEPTH_CV - c) for r, c in pre_shape.values()), default=None),
        ),
    ]


def gradnorm_plot(results: Results, out: Path) -> list[Path]:
    """Fig. 3 style: (a) last-FFN gradient norm vs depth; (b, c) ‖E[∇W²]‖ per layer for Post-LN and Pre-LN, one
    colour and marker per depth (viridis: ordered and colour-blind-safe)."""
    fig, axes = plotting.figure(ncols=3, height=2.5)
    last = last_layer_norms(results.runs)
    for position, cell in last.groupby(POSITION):
        plotting.band(axes[0], cell, POSITION_LABELS[position], position, x=DEPTH, markevery=1)
    axes[0].set(title="(a) ‖∇W²‖ of the last FFN at init", xlabel="layers", ylabel="gradient norm", ylim=(0, None))
    axes[0].legend()
    per_layer = aggregate(layer_norms(results.runs, "expected_norm"), [POSITION, DEPTH, "layer"], "value")
    depths = sorted(per_layer[DEPTH].unique())
    looks = {
        depth: plotting.Style(color, "-", marker)
        for depth, color, marker in zip(depths, plotting.sequential(len(depths)), plotting.MARKERS, strict=False)
    }
    axes[2].sharey(axes[1])
    for ax, position, label in ((axes[1], "post", "(b) Post-LN"), (axes[2], "pre", "(c) Pre-LN")):
        for depth, cell in per_layer[per_layer[POSITION] == position].groupby(DEPTH):
            plotting.band(ax, cell, f"{int(depth)}", looks[depth], x="layer", markevery=1)
        ax.set(title=f"{label}: ‖E[∇W²]‖ per layer", xlabel="layer index", ylabel="gradient norm", ylim=(0, None))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[2].legend(title="layers", ncols=2, loc="upper right")
    n = plotting.cell_counts(results.summary, [DEPTH, POSITION])
    plotting.note(fig, plotting.band_note(n))
    text = plotting.Caption(
        "Xiong et al. 2020, §4.3 / Fig. 3 (criterion 4d): at initialization, (a) the gradient norm of the last "
        "FFN's second weight against the number of layers, Post-LN and Pre-LN; (b, c) the norm of the expected "
        "gradient (over mini-batches) of each layer's FFN weight against the layer index, a line per depth.",
        cells=[POSITION, DEPTH],
    )
    return plotting.save(fig, out, "gradnorm", text, results.summary)


register(
    Claim(
        id="xiong2020-warmup",
        title="Post-LN Transformers need learning-rate warm-up, Pre-LN ones train without it and faster",
        paper="Xiong et al. 2020",
        paper_figure="§3, Fig. 2; §5",
        paper_result=(
            "IWSLT14 Post-LN BLEU ≈ 34 with warm-up 4000, 8.45 without; Pre-LN ≈ 34 without warm-up, "
            "epoch 9 matches Post-LN's epoch 15"
        ),
        criteria=warmup_criteria,
        plot=warmup_plot,
    )
)
register(
    Claim(
        id="xiong2020-gradnorm",
        title="At init, Post-LN's last-layer gradient does not shrink with depth, Pre-LN's does",
        paper="Xiong et al. 2020",
        paper_figure="§4.3, Fig. 3",
        paper_result="last-FFN gradient norm ≈ 1.6 at every depth (6–14) for Post-LN; shrinks with depth for Pre-LN",
        criteria=gradnorm_criteria,
        plot=gradnorm_plot,
    )
)
