# %% [markdown]
# Santurkar et al. (Fig. 2, 7) add time-varying random noise after each BN layer: the net still trains about as well
# as BN, so BN's benefit is not a stable input distribution; the same noise in a standard net should prevent
# training. Criterion 3d compares final training accuracies (training mode, noise included).

# %% [markdown]
# **Training accuracy over training** per net. *Look for* noisy BN beside BN, and the standard net with noise
# against the standard net.

# %%
train = runs[runs["metric"] == "train/acc"]
grid = plotting.seed_lines(train, height=2.6, aspect=1.6)
grid.set(ylim=(0, 1), ylabel="training accuracy")
analysis.aggregate(summary, ["norm.name"], "final/train/acc")

# %% [markdown]
# **One unit's activation** (the ReLU's input) in an early and a late layer: its mean over the batch through
# training. *Look for* how much the noise moves the unit's distribution in noisy BN — much more than BN's — while it
# still trains.

# %%
act = runs[runs["metric"].str.startswith("act/") & runs["metric"].str.endswith("/mean")]
act = act.assign(layer=act["metric"].str.split("/").str[1])
plotting.seed_lines(act, col="layer", height=2.4);
