# %% [markdown]
# Ioffe & Szegedy trained a 3×100 sigmoid MLP on MNIST with and without BN (Fig. 1): BN reached a higher test
# accuracy sooner, and the input of a sigmoid in the last hidden layer kept its percentiles steady, while without BN
# they drifted. The criteria (1a, 1b) compare the median test accuracy at 20% of the steps and at the end, the steps
# BN needs to reach no-BN's final accuracy (≤ 0.5×), and the range over training of p50 and of p85 − p15.

# %% [markdown]
# **Test accuracy over training**, one line per norm, the median over seeds with the min–max band. *Look for* the BN
# curve above the plain one at 2000 steps (20%) and at the end, and where BN first crosses the plain net's final
# accuracy.

# %%
acc = runs[runs["metric"] == "test/acc"]
grid = plotting.seed_lines(acc, height=2.6, aspect=1.6)
grid.set(ylim=(0.75, 0.9), ylabel="test accuracy")
analysis.aggregate(acc[acc["step"].isin([2000, 5000, 10000])], ["norm.name", "step"], "value")

# %% [markdown]
# **The sigmoid input's percentiles**: per run, how far p50 and the spread p85 − p15 move over training (step 0 left
# out, where BN's running statistics are still at their initial values). *Look for* BN's ranges below the plain
# net's in every seed.

# %%
wide = (
    runs[runs["metric"].str.startswith("probe/p") & (runs["step"] > 0)]
    .pivot_table(index=["run_id", "norm.name", "step"], columns="metric", values="value")
    .reset_index()
)
wide["spread"] = wide["probe/p85"] - wide["probe/p15"]
ranges = (
    wide.groupby(["run_id", "norm.name"])
    .agg(p50_range=("probe/p50", lambda s: s.max() - s.min()), spread_range=("spread", lambda s: s.max() - s.min()))
    .reset_index()
)
tidy = ranges.melt(id_vars=["run_id", "norm.name"], var_name="measure", value_name="range over training")
sns.catplot(
    data=tidy,
    x="norm.name",
    y="range over training",
    col="measure",
    hue="norm.name",
    palette=plotting.palette(tidy["norm.name"]),
    height=2.4,
    aspect=1,
)
ranges.groupby("norm.name")[["p50_range", "spread_range"]].median()
