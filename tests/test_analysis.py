"""Run folders into tidy tables; seed aggregation against hand-computed statistics."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from normexp.analysis import aggregate, load_runs, run_seconds, varying_columns, wandb_frames
from normexp.training.runner import train


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


def test_keys_that_do_not_change_a_run_never_split_a_cell() -> None:
    summary = pd.DataFrame(
        {
            "run_id": ["a", "b", "c", "d"],
            "norm.name": ["bn", "bn", "gn", "gn"],
            "seed": [0, 1, 0, 1],
            "launcher_name": ["joblib", "basic", "joblib", "joblib"],  # one cell relaunched under another launcher
            "device": ["cpu", "cuda", "cpu", "cpu"],
            "logger.mode": ["offline", "online", "offline", "offline"],
            "data.root": ["data", "/scratch", "data", "data"],
            "status": ["completed"] * 4,
            "git_sha": ["1", "2", "1", "1"],
            "final/test/acc": [0.1, 0.2, 0.3, 0.4],
        }
    )
    assert varying_columns(summary) == ["norm.name", "seed"]
    cells = aggregate(summary, [c for c in varying_columns(summary) if c != "seed"], "final/test/acc")
    assert list(cells["n"]) == [2, 2]


def test_wandb_runs_load_into_the_frames_of_run_folders() -> None:
    """W&B's API objects (config, summary, history by ``_step``), faked: the frames match load_runs' layout."""

    def fake(norm: str, seed: int, acc: list[float]) -> SimpleNamespace:
        axes = {"samples_seen": [0, 600], "epoch": [0.0, 0.01]}  # the x-axes normexp logs beside each metric
        history = pd.DataFrame({"_step": [0, 10], "_runtime": [0.1, 0.2], **axes, "test/acc": acc})
        logger = {"mode": "online" if seed else "offline"}
        return SimpleNamespace(
            group="ioffe2015-fig1",
            job_type="train",
            name=f"norm={norm},seed={seed}",
            config={"scale_name": "cpu", "seed": seed, "norm": {"name": norm}, "logger": logger},
            summary={"status": "completed", "final/test/acc": acc[-1], "best/test/acc": max(acc)},
            history=lambda pandas=True, frame=history: frame,
        )

    runs, summary = wandb_frames([fake("bn", 0, [0.1, 0.9]), fake("bn", 1, [0.1, 0.7]), fake("none", 0, [0.1, 0.5])])
    assert list(runs.columns) == ["run_id", "norm.name", "seed", "step", "metric", "value"]
    assert set(runs["metric"]) == {"test/acc"} and len(runs) == 6
    assert runs["run_id"].iloc[0] == "ioffe2015-fig1/cpu/norm=bn,seed=0"
    cells = aggregate(summary, ["norm.name"], "final/test/acc")
    assert list(cells["n"]) == [2, 1] and list(cells["median"]) == [0.8, 0.5]


def test_a_fused_cells_wall_time_is_shared_by_its_members() -> None:
    summary = pd.DataFrame({"wall_time_s": [90.0, 90.0, 90.0, 20.0], "fused_members": [3, 3, 3, None]})
    assert run_seconds(summary).tolist() == [30.0, 30.0, 30.0, 20.0]
    assert run_seconds(summary.drop(columns="fused_members")).tolist() == [90.0, 90.0, 90.0, 20.0]
