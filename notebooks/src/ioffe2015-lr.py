# %% [markdown]
# Ioffe & Szegedy trained Inception with BN at 5× and 30× the learning rate of the plain net, which at 5× overflowed
# (§4.2.1). Here the Fig. 1 MLP runs an lr grid with and without BN; criterion 1c finds the best plain lr and asks
# BN at 5× and 30× of it to end at least as accurate as the plain net there, while the plain net at ≥ 5× diverges or
# ends worse.

# %% [markdown]
# **Final test accuracy against the lr**: the median over seeds with the min–max. *Look for* the plain net falling
# to chance (0.1) from 5× its best lr on, and where BN falls.

# %%
grid = plotting.seed_lines(summary, x="optim.lr", y="final/test/acc", height=2.6, aspect=1.6)
grid.set(ylim=(0, 1), ylabel="final test accuracy")
plotting.log_axis(grid.ax, "x")
grid.ax.set_xticks(sorted(summary["optim.lr"].unique()))
grid.refline(y=0.1, linestyle=":", color="0.4")
cells = analysis.aggregate(summary, ["norm.name", "optim.lr"], "final/test/acc")
cells.pivot(index="optim.lr", columns="norm.name", values="median")

# %% [markdown]
# **Diverged and failed runs per cell** stay in the frame with their status: *look for* whether a run at chance
# diverged (loss NaN or above the threshold) or trained to a constant prediction.

# %%
cells.pivot(index="optim.lr", columns="norm.name", values="n_diverged")
