# %% [markdown]
# Wu & He (Fig. 1) report ImageNet ResNet-50 error by images per GPU: BN's rises from 23.6 at 32 to 34.7 at 2, GN's
# stays at 24.1. Criterion 2d asks GN's spread over batch 32 … 2 to stay under 1 point, BN's error to rise as the
# batch shrinks, and BN's rise to exceed GN's by more than 3 points. Our values are another scale; the *shape*
# compares, so this notebook lines up each norm's error relative to its own error at batch 32.

# %% [markdown]
# **Each norm's rise from batch 32**, ours and the paper's. *Look for* BN's curve climbing at small batches while
# GN's stays flat, in the paper's panel and in ours.

# %%
from normexp.claims.wu2018 import BATCHES, PAPER_ERROR

ours = summary[summary["train.batch_size"].isin(BATCHES) & summary["norm.name"].isin(["bn", "gn"])]
ours = analysis.aggregate(
    ours.assign(error=100 * (1 - ours["final/test/acc"])), ["norm.name", "train.batch_size"], "error"
)
ours = ours.assign(
    source="ours",
    rise=ours["median"]
    - ours.groupby("norm.name")["median"].transform(lambda s: s[ours.loc[s.index, "train.batch_size"] == 32].iloc[0]),
)
paper = pd.DataFrame(
    [
        {"norm.name": label.split(",")[0].lower(), "train.batch_size": b, "median": e}
        for label, row in PAPER_ERROR.items()
        if label[:2] in ("BN", "GN")
        for b, e in row.items()
    ]
)
paper = paper.assign(
    source="Wu & He (ImageNet)",
    rise=paper["median"]
    - paper["norm.name"].map(paper[paper["train.batch_size"] == 32].set_index("norm.name")["median"]),
)
both = pd.concat([ours, paper], ignore_index=True)
grid = plotting.seed_lines(both, x="train.batch_size", y="rise", col="source", height=2.4, aspect=1.2)
grid.set(ylabel="error − error at batch 32 (points)")
for ax in grid.axes.flat:
    plotting.log_axis(ax, "x")
    ax.set_xticks(BATCHES)
grid.axes.flat[0].invert_xaxis()  # large batches left, as the paper (the panels share the axis)
both.pivot_table(index=["source", "norm.name"], columns="train.batch_size", values="rise").round(2)
