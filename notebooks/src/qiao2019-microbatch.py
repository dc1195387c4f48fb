# %% [markdown]
# Qiao et al. train GN + WS with large optimizer batches and argue this equals batch 1, since GN + WS uses no batch
# statistics; BN needs large batches, and BCN + WS should match or beat GN + WS. The `batchsize` grid trains every
# norm at batch 1 … 64 with the same images per run and the lr linear in the batch. Criteria 2a–2c compare median
# accuracies at batch 1, 2 and 64.

# %% [markdown]
# **Test error against the batch**, the batch decreasing to the right as in Wu & He's Fig. 1. *Look for* BN at batch
# 1–2 against BN at 64 (the collapse the paper reports), GN + WS above GN everywhere, and BCN + WS against GN + WS
# at the smallest batches.

# %%
finals = summary[summary["norm.name"].isin(["bn", "gn", "gn+ws", "bcn+ws"])].assign(
    error=lambda f: 100 * (1 - f["final/test/acc"])
)
grid = plotting.seed_lines(finals, x="train.batch_size", y="error", height=2.6, aspect=1.6)
grid.set(ylabel="test error (%)")
plotting.log_axis(grid.ax, "x")
grid.ax.set_xticks(sorted(finals["train.batch_size"].unique()))
grid.ax.invert_xaxis()  # large batches left, as Wu & He's Fig. 1
cells = analysis.aggregate(finals, ["norm.name", "train.batch_size"], "error")
cells.pivot(index="norm.name", columns="train.batch_size", values="median").loc[["bn", "gn", "gn+ws", "bcn+ws"]]
