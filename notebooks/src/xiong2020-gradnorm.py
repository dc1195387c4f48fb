# %% [markdown]
# Xiong et al. (§4.3, Fig. 3) measure gradients at initialization: the last FFN layer's gradient norm stays about
# the same as Post-LN Transformers get deeper and shrinks for Pre-LN; per layer, Post-LN's gradients grow toward the
# output, Pre-LN's stay flat. Criterion 4d: Post-LN's last-layer norm varies < 20% across depths, Pre-LN's
# decreases; per layer, Spearman ρ > 0 for Post-LN and flat or falling for Pre-LN.

# %% [markdown]
# **The last FFN's gradient norm against depth**, 10 seeds per cell. *Look for* Post-LN's flat line and Pre-LN's
# falling one.

# %%
from normexp.claims.xiong2020 import layer_norms

norms = layer_norms(runs, "norm")
last = norms[norms["layer"] == norms.groupby("run_id")["layer"].transform("max")]
plotting.seed_lines(last, x="model.depth", hue="model.position", height=2.6, aspect=1.4)
analysis.aggregate(last, ["model.position", "model.depth"], "value")

# %% [markdown]
# **‖E[∇W]‖ per layer**, a line per depth. *Look for* Post-LN's norms rising with the layer index and Pre-LN's
# falling or flat, at every depth.

# %%
per_layer = layer_norms(runs, "expected_norm")
grid = sns.relplot(
    data=per_layer,
    x="layer",
    y="value",
    hue="model.depth",
    col="model.position",
    kind="line",
    estimator="median",
    errorbar=None,
    palette="viridis",
    height=2.4,
    aspect=1.2,
)
