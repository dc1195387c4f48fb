"""Run folders into tidy tables; seed aggregation against hand-computed statistics."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from normexp.analysis import aggregate, load_runs
from normexp.runner import train


def test_runs_load_into_tidy_frames_with_config_columns(compose, tmp_path: Path) -> None:
    dirs = []
    for norm in ("none", "bn"):
        dirs.append(tmp_path / norm)
        train(compose("experiment=ioffe2015-fig1", f"norm={norm}", "train.steps=10"), dirs[-1])
    dirs.append(tmp_path / "never-ran")
    runs, summary = load_runs(dirs)
    assert len(summary) == 2 and set(summary["status"]) == {"completed"}
    assert list(runs.columns) == ["run_id", "norm.name", "seed", "step", "metric", "value"]
    assert set(runs["norm.name"]) == {"none", "bn"}
    assert runs.groupby("run_id").size().nunique() == 1
    assert "final/test/acc" in summary and "optim.lr" in summary


def test_metrics_of_a_run_still_going_load_from_the_log(compose, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(compose("experiment=ioffe2015-fig1", "train.steps=10"), run)
    (run / "metrics.parquet").unlink()
    (run / "summary.json").unlink()
    with open(run / "metrics.jsonl", "a") as log:
        log.write('{"step": 11, "train/lo')  # a crash mid-line
    runs, summary = load_runs([run])
    assert summary["status"].tolist() == ["running"]
    assert runs["step"].max() == 10


def test_seed_statistics() -> None:
    frame = pd.DataFrame({"norm": ["a"] * 4 + ["b"], "acc": [1.0, 2.0, 3.0, 10.0, 5.0]})
    stats = aggregate(frame, ["norm"], "acc").set_index("norm")
    assert stats.loc["a", "n"] == 4 and stats.loc["a", "median"] == 2.5
    assert stats.loc["a", "q25"] == pytest.approx(1.75) and stats.loc["a", "q75"] == pytest.approx(4.75)
    assert (stats.loc["a", "min"], stats.loc["a", "max"]) == (1.0, 10.0)
    assert stats.loc["a", "mean"] == 4.0 and stats.loc["a", "std"] == pytest.approx(4.0825, abs=1e-4)
    assert stats.loc["b", "n"] == 1


def test_aggregation_counts_diverged_and_failed_runs_per_cell() -> None:
    summary = pd.DataFrame(
        {
            "norm": ["bn", "bn", "bn", "none", "none"],
            "status": ["completed", "diverged", "failed", "completed", "completed"],
            "final/test/acc": [0.9, 0.2, None, 0.8, 0.7],  # the failed run recorded no value
        }
    )
    stats = aggregate(summary, ["norm"], "final/test/acc").set_index("norm")
    assert stats.loc["bn", ["n", "n_diverged", "n_failed"]].tolist() == [2, 1, 1]
    assert stats.loc["none", ["n", "n_diverged", "n_failed"]].tolist() == [2, 0, 0]
    assert "n_failed" not in aggregate(summary.drop(columns="status"), ["norm"], "final/test/acc")
