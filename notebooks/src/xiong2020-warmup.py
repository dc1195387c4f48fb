# %% [markdown]
# Xiong et al. (§3, Fig. 2) show that a Post-LN Transformer needs a learning-rate warm-up and a Pre-LN one does not.
# The grid here is position × lr_max × warm-up length × seed on a byte-level language model. Criteria: some lr_max
# makes Post-LN without warm-up stall at the unigram plateau while warm-up and Pre-LN rescue it (4a); Post-LN
# worsens as warm-up shortens, more steeply at the larger lr_max (4b); Pre-LN reaches Post-LN-with-warm-up's final
# loss in ≤ 0.7× the steps (4c).

# %% [markdown]
# **Final test loss per cell**: the median over seeds, per position. *Look for* the Post-LN cells at the plateau
# (about 3.29 nats/token) without warm-up, and Pre-LN's row of low losses.

# %%
finals = analysis.aggregate(summary, ["model.position", "optim.lr", "schedule.warmup_steps"], "final/test/loss")
grid = sns.FacetGrid(finals, col="model.position", height=2.4)
grid.map_dataframe(
    lambda data, **kw: sns.heatmap(
        data.pivot(index="schedule.warmup_steps", columns="optim.lr", values="median").sort_index(ascending=False),
        annot=True,
        fmt=".2f",
        cmap="viridis_r",
        vmin=finals["median"].min(),
        vmax=finals["median"].max(),
        cbar=False,
    )
)
print("unigram plateau (median over runs):", summary["final/probe/unigram_loss"].median().round(3))
finals.pivot_table(index=["model.position", "schedule.warmup_steps"], columns="optim.lr", values="median")

# %% [markdown]
# **Test loss over training**, a panel per lr_max. *Look for* Post-LN without warm-up flattening at the plateau at
# 3e-3 and 1e-2, and Pre-LN falling earlier than Post-LN with warm-up.

# %%
loss = runs[runs["metric"] == "test/loss"]
grid = sns.relplot(
    data=loss,
    x="step",
    y="value",
    hue="model.position",
    style="schedule.warmup_steps",
    col="optim.lr",
    kind="line",
    estimator="median",
    errorbar=("pi", 100),
    height=2.4,
    palette=plotting.palette(loss["model.position"]),
)
grid.refline(y=summary["final/probe/unigram_loss"].median(), color="0.6", linewidth=2)
grid.set(ylabel="test loss (nats/token)");
