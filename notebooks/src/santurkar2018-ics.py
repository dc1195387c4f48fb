# %% [markdown]
# Santurkar et al. (Fig. 5) measure internal covariate shift directly: a layer's gradient G before and G′ after the
# preceding layers take their update, on the same batch. BN networks show *no less* shift: ‖G − G′‖ as large or
# larger, cos(G, G′) as low or lower (on the deep linear network, standard cos ≈ 1, BN ≈ 0). Criterion 3e: the
# median over layers of the ℓ2 ratio BN/standard ≥ 1, or BN's median cosine ≤ the standard net's.

# %% [markdown]
# **Per layer, each run's median over probed steps**, for ‖G − G′‖ and cos(G, G′), per model. *Look for* BN above
# the standard net in ‖G − G′‖ and below it in cosine, layer by layer.

# %%
ics = runs[runs["metric"].str.startswith("ics/")]
parts = ics["metric"].str.split("/")
ics = ics.assign(layer=parts.str[1], stat=parts.str[2], model=ics["run_id"].str.split("/").str[0])
per_layer = ics.groupby(["model", "layer", "stat", "run_id", "norm.name"], as_index=False)["value"].median()
grid = sns.catplot(
    data=per_layer,
    x="layer",
    y="value",
    hue="norm.name",
    col="stat",
    row="model",
    kind="point",
    estimator="median",
    errorbar=("pi", 100),
    palette=plotting.palette(per_layer["norm.name"]),
    height=2.6,
    aspect=1.6,
    sharex=False,
    sharey=False,
)
grid.tick_params(axis="x", rotation=90)
grid.set_titles("{row_name}: {col_name}")
per_layer.groupby(["model", "stat", "norm.name"])["value"].median().unstack("norm.name")
