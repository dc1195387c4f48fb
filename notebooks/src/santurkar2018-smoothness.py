# %% [markdown]
# Santurkar et al. (Fig. 4) measure, along the gradient at each probed step, how much the loss and the gradient
# change over step sizes η, and the effective β-smoothness: all smaller with BN, which they read as a smoother
# landscape. Criteria 3a–3c compare each run's median over probed steps, BN against the standard net, on the VGG and
# on the 25-layer deep linear network separately; 3b also asks a 3× gap in the first 20% of training.

# %% [markdown]
# **Per run, the median over probed steps** of the three measures, one panel each, per model. *Look for* BN below
# the standard net on the VGG, and what happens on the deep linear network (log axis).

# %%
from normexp.claims.santurkar2018 import BETA, GPRED_RANGE, LOSS_RANGE, per_run_median

per_run = pd.concat(
    [
        per_run_median(runs[runs["run_id"].str.startswith(experiment)], metric).assign(model=model, measure=metric)
        for model, experiment in {"VGG": "santurkar2018-vgg", "DLN": "santurkar2018-dln"}.items()
        for metric in (LOSS_RANGE, GPRED_RANGE, BETA)
    ]
)
grid = sns.catplot(
    data=per_run,
    x="norm.name",
    y="value",
    hue="norm.name",
    col="measure",
    row="model",
    palette=plotting.palette(per_run["norm.name"]),
    height=2.0,
    aspect=1.1,
    sharey=False,
)
grid.set(yscale="log")
per_run.groupby(["model", "measure", "norm.name"])["value"].median().unstack("norm.name")

# %% [markdown]
# **Gradient predictiveness over training**, with the first 20% shaded. *Look for* the early window, where the
# paper's gap is largest.

# %%
gpred = runs[runs["metric"] == GPRED_RANGE].assign(model=lambda f: f["run_id"].str.split("/").str[0])
grid = plotting.seed_lines(gpred, col="model", height=2.4, facet_kws={"sharex": False})
grid.set(yscale="log", ylabel="gradient-predictiveness range")
for ax, (_, part) in zip(grid.axes.flat, gpred.groupby("model", sort=False)):
    ax.axvspan(0, 0.2 * part["step"].max(), color="0.9", zorder=0)
