"""Qiao et al. 2019 (arXiv 1903.10520), Weight Standardization and Batch-Channel Normalization: with one image per
batch, GN + WS matches BN trained at a large batch, while BN collapses; BCN + WS does at least as well as GN + WS.
Criteria: docs/claims.md §2 (2a–2c), judged on the ``batchsize`` grid (same images seen, lr linear in the batch).

How the criteria's words are read (fixed before the grid was run): "accuracy" is the final test accuracy in
percentage points, a cell's value its median over ≥ 3 seeds; "batch b" is b images per optimizer step, all of them
sharing the norm's statistics (the literal batch-1 training that the authors replaced by a large optimizer batch
for GN + WS; the test suite checks that the two compute the same thing for GN + WS); "at least 5 points below" is
≤ BN@64 − 5, "≥ … minus 1 point" is ≥ BN@64 − 1, "GN+WS > GN" is strict, "BCN+WS ≥ GN+WS" is not.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

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
from normexp.claims.santurkar2018 import landscape_plot, ws_criteria

NORMS = ("bn", "gn", "gn+ws", "bcn+ws")
LARGE = 64
MATCH_MARGIN = 1.0
COLLAPSE_MARGIN = 5.0


def criteria(results: Results) -> list[Check]:
    """The budget check, then 2a: GN+WS@1 ≥ BN@64 − 1 and BN@1, BN@2 ≤ BN@64 − 5; 2b: GN+WS > GN at 1, 2, 64;
    2c: BCN+WS ≥ GN+WS at 1, 2. Margins in accuracy points."""
    final = final_accuracy(results.summary)
    bn_large = median(final, "bn", LARGE)
    gn_ws_1 = median(final, "gn+ws", 1)
    checks = [
        Check(
            f"2a: GN+WS at batch 1 ≥ BN at batch {LARGE} − {MATCH_MARGIN:g} point",
            gn_ws_1 >= bn_large - MATCH_MARGIN,
            f"accuracy {describe(final, 'gn+ws', 1)} vs {describe(final, 'bn', LARGE)}",
            margin=gn_ws_1 - (bn_large - MATCH_MARGIN),
        )
    ]
    for batch in (1, 2):
        bn_small = median(final, "bn", batch)
        checks.append(
            Check(
                f"2a: BN at batch {batch} ≥ {COLLAPSE_MARGIN:g} points below BN at batch {LARGE}",
                bn_small <= bn_large - COLLAPSE_MARGIN,
                f"accuracy {describe(final, 'bn', batch)} vs {describe(final, 'bn', LARGE)}",
                margin=bn_large - COLLAPSE_MARGIN - bn_small,
            )
        )
    checks += [better(final, "gn+ws", "gn", batch, strict=True, criterion="2b") for batch in (1, 2, LARGE)]
    checks += [better(final, "bcn+ws", "gn+ws", batch, strict=False, criterion="2c") for batch in (1, 2)]
    return at_budget(results.summary, checks)


def better(final: pd.DataFrame, norm: str, other: str, batch: int, strict: bool, criterion: str) -> Check:
    """``norm`` more accurate than ``other`` at ``batch`` (``>`` if strict, else ``≥``); margin: the difference."""
    difference = median(final, norm, batch) - median(final, other, batch)
    return Check(
        f"{criterion}: {norm.upper()} {'>' if strict else '≥'} {other.upper()} at batch {batch}",
        difference > 0 if strict else difference >= 0,
        f"accuracy {describe(final, norm, batch)} vs {describe(final, other, batch)}",
        margin=difference,
    )


def plot(results: Results, out: Path) -> list[Path]:
    """Test error against the batch size for BN, GN, GN+WS and BCN+WS, and the table of every cell."""
    final = final_accuracy(results.summary)
    fig, (ax,) = plotting.figure(width="column", height=2.8)
    error_vs_batch(ax, final, NORMS)
    ax.set_title(f"micro-batch training, Qiao et al. 2019\n{setting(results.summary)}")
    plotting.note(fig, plotting.band_note(final.groupby([NORM, BATCH]).size()))
    note = "Qiao et al.'s CIFAR tables could not be read (docs/claims.md §2): no paper numbers at this scale.\n\n"
    text = batch_caption(
        "Qiao et al. 2019, §2 (criteria 2a–2c): final test error against the batch size (every run sees the same "
        "images, lr linear in the batch; all images of a step share the norm's statistics) for BN, GN, GN+WS and "
        "BCN+WS; the batch decreases from left to right."
    )
    figure = plotting.save(fig, out, "microbatch", text, results.summary)
    return [*figure, *budget_plot(results.summary, out), save_table(note + table(final, NORMS), out, "microbatch")]


register(
    Claim(
        id="qiao2019-microbatch",
        title="GN+WS at batch 1 matches BN at a large batch; BN collapses; BCN+WS at least as good",
        paper="Qiao et al. 2019",
        paper_figure="§2 micro-batch claims (2a–2c)",
        paper_result=(
            "ResNet-50 ImageNet error: GN+WS (no batch statistics) 23.72, BN at 32 images/GPU 23.6 (Wu & He); "
            "VOC mIoU: BN 76.49, GN+WS 77.20, BCN+WS 78.10"
        ),
        criteria=criteria,
        plot=plot,
        experiments=(EXPERIMENT, BUDGET_EXPERIMENT),
    )
)
register(
    Claim(
        id="qiao2019-ws-smoothness",
        title="Weight Standardization smooths the landscape further (GN vs GN+WS)",
        paper="Qiao et al. 2019",
        paper_figure="§3 (3f)",
        criteria=ws_criteria,  # Santurkar et al.'s landscape measures, GN against GN+WS
        plot=landscape_plot,
    )
)
