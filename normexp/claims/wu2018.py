"""Wu & He 2018 (arXiv 1803.08494), Group Normalization, Fig. 1 / Table 3: as the batch per GPU shrinks from 32
to 2, BN's error rises steeply while GN's stays flat. Criteria: docs/claims.md §2 (2d), judged on the ``batchsize`` grid
(same images seen, lr linear in the batch, as the paper's lr = 0.1·N/32).

How the criteria's words are read (fixed before the grid was run): "error" is the final test error in percentage
points, a cell's value its median over ≥ 3 seeds; GN's "spread" is the max minus the min of its cell medians over
batch {32, 16, 8, 4, 2}; BN's error "rises as batch shrinks" when its median never falls from one batch to the next
smaller one (32 → 16 → 8 → 4 → 2); the gap criterion is strict.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from normexp import plotting
from normexp.claims import Check, Claim, Results, register, save_table
from normexp.claims.batchsize import (
    BATCH,
    BUDGET_EXPERIMENT,
    EXPERIMENT,
    NORM,
    at_budget,
    batch_caption,
    budget_plot,
    describe,
    error_vs_batch,
    final_accuracy,
    median,
    setting,
    table,
)

BATCHES = (32, 16, 8, 4, 2)
"""Wu & He's images per GPU, largest first."""
FLAT = 1.0
GAP = 3.0
PAPER_ERROR = {
    "BN, Wu & He (ImageNet ResNet-50)": {32: 23.6, 16: 23.7, 8: 24.8, 4: 27.3, 2: 34.7},
    "GN, Wu & He (ImageNet ResNet-50)": {32: 24.1, 16: 24.2, 8: 24.0, 4: 24.2, 2: 24.1},
    "LN, Wu & He (ImageNet ResNet-50)": {32: 25.3},
    "IN, Wu & He (ImageNet ResNet-50)": {32: 28.4},
    "BRN, Wu & He (ImageNet ResNet-50)": {4: 26.3},
}
"""Wu & He 2018's ResNet-50 ImageNet top-1 error (%) by images per GPU (docs/claims.md §2)."""
SHOWN = ("bn", "gn", "ln", "in", "brn")
"""The norms of Wu & He's Fig. 1 and Table 3, drawn where the stored grid has them (the criteria need BN and GN)."""


def criteria(results: Results) -> list[Check]:
    """The budget check, then 2d: GN's error spread < 1 point; BN's error never falls as the batch shrinks; BN's rise
    from 32 to 2 exceeds GN's by more than 3 points. Margins in error points (BN's rise: its smallest step up)."""
    final = final_accuracy(results.summary)
    gn = {batch: median(final, "gn", batch, "error") for batch in BATCHES}
    bn = {batch: median(final, "bn", batch, "error") for batch in BATCHES}
    spread = max(gn.values()) - min(gn.values())
    bn_rise, gn_rise = bn[2] - bn[32], gn[2] - gn[32]
    steps_up = [bn[smaller] - bn[larger] for larger, smaller in itertools.pairwise(BATCHES)]
    checks = [
        Check(
            f"2d: GN's error spread over batch {list(BATCHES)} < {FLAT:g} point",
            spread < FLAT,
            f"spread {spread:.2f}; " + "; ".join(describe(final, "gn", b, "error") for b in BATCHES),
            margin=FLAT - spread,
        ),
        Check(
            f"2d: BN's error rises as the batch shrinks ({' → '.join(map(str, BATCHES))})",
            min(steps_up) >= 0,
            "; ".join(describe(final, "bn", b, "error") for b in BATCHES),
            margin=min(steps_up),
        ),
        Check(
            f"2d: error(BN@2) − error(BN@32) exceeds error(GN@2) − error(GN@32) by > {GAP:g} points",
            bn_rise - gn_rise > GAP,
            f"BN rises {bn_rise:.2f}, GN {gn_rise:.2f}: difference {bn_rise - gn_rise:.2f}",
            margin=bn_rise - gn_rise - GAP,
        ),
    ]
    return at_budget(results.summary, checks)


def plot(results: Results, out: Path) -> list[Path]:
    """(a) BN against GN, the criteria's comparison, on its own scale; (b) every norm of Wu & He's Fig. 1 and Table 3
    that is stored (LN, IN, BRN too); (c) Wu & He's ImageNet numbers; and the table of every cell."""
    final = final_accuracy(results.summary)
    norms = [norm for norm in SHOWN if norm in set(final[NORM])]
    fig, (pair, every, theirs) = plotting.figure(ncols=3, height=2.7)
    error_vs_batch(pair, final, ["bn", "gn"], BATCHES)
    pair.set_title("(a) ours: BN vs GN (criterion 2d)")
    error_vs_batch(every, final, norms)
    every.set_title(f"(b) ours: {', '.join(n.upper() for n in norms)}")
    for label, row in PAPER_ERROR.items():
        norm = label.split(",")[0].lower()
        batches = sorted(row)
        theirs.plot(batches, [row[b] for b in batches], label=norm, **plotting.style(norm).line())
    theirs.set_xscale("log", base=2)
    theirs.set_xticks(sorted(BATCHES), [str(b) for b in sorted(BATCHES)])
    theirs.minorticks_off()
    theirs.set_xlim(max(BATCHES) * 1.25, min(BATCHES) / 1.25)
    theirs.set(title="(c) Wu & He, ImageNet ResNet-50", xlabel="images per GPU", ylabel="top-1 error (%)")
    theirs.legend(title="norm")
    for ax in (pair, every):
        ax.set_xlabel("batch size (images per step)")
    plotting.note(
        fig,
        f"ours: {setting(results.summary)}; "
        + plotting.band_note(final.groupby([NORM, BATCH]).size())
        + "; (c) single numbers per cell",
    )
    text = batch_caption(
        "Wu & He 2018, Fig. 1 / Table 3 (criterion 2d): final test error against the batch size, the batch "
        "decreasing from left to right as in the paper. (a) BN and GN over the criterion's batches 32 → 2, on "
        "their own y scale; (b) every stored norm of the paper's comparison over the whole grid (LN, IN and "
        "Batch Renorm blow up at large batches on this short budget, see README); (c) the paper's ImageNet "
        "ResNet-50 numbers, for the shape of the trend (the values are another scale)."
    )
    prose = (
        "Wu & He's rows are ImageNet ResNet-50 (a different scale): the shape of the trend compares, the values do "
        "not.\n\n" + table(final, norms, PAPER_ERROR)
    )
    figure = plotting.save(fig, out, "batchsize", text, results.summary)
    return [*figure, *budget_plot(results.summary, out), save_table(prose, out, "batchsize")]


register(
    Claim(
        id="wu2018-batchsize",
        title="BN's error rises as the batch per GPU shrinks; GN's stays flat",
        paper="Wu & He 2018",
        paper_figure="Fig. 1, Table 3 (2d)",
        paper_result="ResNet-50 ImageNet error, 32 → 2 images/GPU: BN 23.6 → 34.7, GN 24.1 → 24.1",
        criteria=criteria,
        plot=plot,
        experiments=(EXPERIMENT, BUDGET_EXPERIMENT),
    )
)
