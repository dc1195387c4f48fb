# %% [markdown]
# # Loading your own runs
#
# Every run writes a self-describing folder (`config.yaml`, `metrics.parquet`, `summary.json`).
# `normexp.analysis.load_runs` reads any set of them into two frames: `runs` (tidy: one row per run × step × metric,
# with the grid's config columns) and `summary` (one row per run, every config key flattened). This notebook trains
# a tiny grid at the `smoke` scale (generated data, seconds), loads it, aggregates over seeds and plots it; then
# shows the same for runs logged to W&B.

# %% [markdown]
# **A grid** (norm × seed, 20 steps each) into a scratch folder; in a shell it is `normexp run -m
# experiment=ioffe2015-fig1 scale=smoke out_dir=...`.

# %%
import tempfile
from pathlib import Path

import pandas as pd
import seaborn as sns

from normexp import analysis, plotting, sweep

%matplotlib inline

out_dir = Path(tempfile.mkdtemp()) / "runs"
jobs = sweep.launch(["experiment=ioffe2015-fig1", "scale=smoke", f"out_dir={out_dir}"], multirun=True)
sorted(p.name for p in (out_dir / "ioffe2015-fig1" / "smoke").iterdir())

# %% [markdown]
# **Load the folders**: the grid's axes (`norm.name`, `seed`) become columns of `runs`; keys that do not change what
# a run computes (launcher, device, logger, …) never split a cell.

# %%
runs, summary = analysis.load_runs((out_dir / "ioffe2015-fig1" / "smoke").iterdir())
print(f"{len(summary)} runs, {len(runs)} metric rows; grid axes: {analysis.varying_columns(summary)}")
summary[["run_id", "norm.name", "seed", "status", "steps", "final/test/acc"]]

# %% [markdown]
# **Aggregate over seeds** (n, median, IQR, min–max, mean ± std; diverged and failed runs counted) and **plot** with
# seaborn, median and min–max band, in normexp's print style.

# %%
sns.set_theme(style="whitegrid", context="paper", rc=plotting.RC)
acc = runs[runs["metric"] == "test/acc"]
plotting.seed_lines(acc, height=2.4, aspect=1.5)
analysis.aggregate(summary, ["norm.name"], "final/test/acc")

# %% [markdown]
# **Runs logged to W&B** (`logger=wandb`) come back into the same frames with `analysis.wandb_frames`, from the W&B
# API (network and a login needed, so this cell only runs when `WANDB_API_KEY` is set): W&B holds each run's
# resolved config, its metrics by step and normexp's summary. Select runs by the claim's experiment (`group`) and
# scale (a tag).

# %%
import os

if os.environ.get("WANDB_API_KEY"):
    import wandb

    api_runs = wandb.Api().runs("<entity>/normexp", filters={"group": "ioffe2015-fig1", "tags": {"$in": ["cpu"]}})
    runs, summary = analysis.wandb_frames(api_runs)
    print(analysis.aggregate(summary, ["norm.name"], "final/test/acc"))
else:
    print("WANDB_API_KEY is not set: skipped")
