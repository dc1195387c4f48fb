# %% [markdown]
# Li et al. draw the loss along filter-normalized random directions around a solution (1-D curves, 2-D contours) and
# along the line between two solutions; their Fig. 5 shows ResNets without shortcuts with sharper, more chaotic
# surfaces. No pass criterion was pre-registered for these plots: this notebook reads the stored surfaces
# (`results/li2018-landscape/<scale>/surfaces/*.npz`) into one tidy frame.

# %% [markdown]
# **The stored surfaces, tidy**: one row per net, kind, seed and point.

# %%
from normexp.grids import Grid

rows = []
for path in sorted((reproduce.results_dir(CLAIM, SCALE, RESULTS) / "surfaces").glob("*.npz")):
    grid = Grid.read(path)
    net, seed, kind = (
        path.stem.rsplit("-", 2)
        if path.stem.endswith(("1d", "2d"))
        else (path.stem.split("-seed")[0], "pair", "interpolation")
    )
    frame = pd.DataFrame({"loss": grid.values["loss"], "acc": grid.values["acc"], "x": grid.coords[:, 0]})
    frame["y"] = grid.coords[:, 1] if grid.coords.shape[1] == 2 else float("nan")
    rows.append(frame.assign(net=net, seed=seed, kind=kind))
surfaces = pd.concat(rows, ignore_index=True)
surfaces.groupby(["net", "kind"])[["loss", "acc"]].agg(["min", "max"])

# %% [markdown]
# **1-D curves and interpolations**, loss (log) and accuracy. *Look for* how fast the loss rises away from the
# solution (α = 0) with and without BN, with and without shortcuts, and the barrier between the two seeds' solutions
# (α = 0 and 1).

# %%
lines = surfaces[surfaces["kind"] != "2d"].melt(id_vars=["net", "seed", "kind", "x"], value_vars=["loss", "acc"])
grid = sns.relplot(
    data=lines,
    x="x",
    y="value",
    hue="net",
    row="variable",
    col="kind",
    kind="line",
    estimator="median",
    errorbar=("pi", 100),
    palette=plotting.palette(lines["net"]),
    height=2.2,
    facet_kws={"sharey": "row"},
)
grid.axes[0, 0].set_yscale("log")
