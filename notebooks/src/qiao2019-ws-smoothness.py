# %% [markdown]
# Qiao et al. (§3) argue that Weight Standardization smooths the landscape further: with GN in both nets, WS should
# lower Santurkar et al.'s gradient predictiveness and effective β (criterion 3f), compared by each run's median
# over probed steps.

# %% [markdown]
# **Per run, the median over probed steps**, GN against GN + WS. *Look for* GN + WS below GN in both measures, and
# how large the gap is against the spread between seeds.

# %%
from normexp.claims.santurkar2018 import BETA, GPRED_RANGE, per_run_median

per_run = pd.concat([per_run_median(runs, m).assign(measure=m) for m in (GPRED_RANGE, BETA)])
sns.catplot(
    data=per_run,
    x="norm.name",
    y="value",
    hue="norm.name",
    col="measure",
    palette=plotting.palette(per_run["norm.name"]),
    height=2.4,
    sharey=False,
)
per_run.groupby(["measure", "norm.name"])["value"].agg(["median", "min", "max"])

# %% [markdown]
# **Effective β over training**. *Look for* whether the two nets separate at any stage of training.

# %%
beta = runs[runs["metric"] == BETA]
plotting.seed_lines(beta, height=2.6, aspect=1.6).set(yscale="log");
