"""End to end on generated data: one run, a 2-run grid, relaunch skipping finished runs, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import open_dict

from normexp.bench import build_bare
from normexp.training import loop
from normexp.training.runner import train

SMOKE = "ioffe2015-fig1/smoke"


def test_one_run_writes_a_self_describing_folder(cli, out_dir: Path) -> None:
    status, _out, _ = cli("run", "experiment=ioffe2015-fig1", "scale=smoke", f"out_dir={out_dir}", "norm=bn", "seed=3")
    assert status == 0
    run = out_dir / SMOKE / "norm=bn,seed=3"
    files = [".lock", "checkpoint.pt", "config.yaml", "metrics.jsonl", "metrics.parquet", "summary.json"]
    assert sorted(p.name for p in run.iterdir()) == files
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["steps"] == summary["total_steps"] == 20
    for key in ("wall_time_s", "steps_per_s", "git_sha", "torch", "cuda", "host", "device", "config_hash"):
        assert key in summary
    metrics = pd.read_parquet(run / "metrics.parquet")
    assert list(metrics.columns) == ["step", "metric", "value"]
    evaluated = metrics[metrics["metric"] == "test/acc"]["step"].tolist()
    assert evaluated == [0, 10, 20]  # step 0, then every eval_every=10 steps
    assert {"train/loss", "train/acc", "lr", "probe/p15", "probe/p50", "probe/p85"} <= set(metrics["metric"])
    assert summary["final"]["test/acc"] == metrics[metrics["metric"] == "test/acc"]["value"].iloc[-1]


def test_training_learns_the_generated_data(compose, tmp_path: Path) -> None:
    summary = train(compose("norm=bn", "train.steps=60", "optim.lr=0.5"), tmp_path / "run")
    assert summary["final"]["test/acc"] > 0.5  # 10 classes: chance is 0.1


def test_same_seed_same_metrics_other_seed_other_metrics(compose, tmp_path: Path) -> None:
    def final(seed: int, name: str) -> dict:
        return train(compose("norm=bn", f"seed={seed}"), tmp_path / name)["final"]

    assert final(0, "a") == final(0, "b")
    assert final(0, "a") != final(1, "c")


def test_grid_of_two_runs_then_relaunch_skips_them(cli, out_dir: Path) -> None:
    args = ("run", "-m", "experiment=ioffe2015-fig1", "scale=smoke", f"out_dir={out_dir}", "norm=none,bn", "seed=0")
    status, out, _ = cli(*args)
    assert status == 0
    assert "2 run(s), 0 already finished, 2 to run" in out
    folders = sorted(p.name for p in (out_dir / SMOKE).iterdir() if p.is_dir())
    assert folders == ["norm=bn,seed=0", "norm=none,seed=0"]
    stamps = {f: (out_dir / SMOKE / f / "summary.json").stat().st_mtime_ns for f in folders}
    status, out, _ = cli(*args)
    assert status == 0 and "2 already finished, 0 to run" in out
    assert stamps == {f: (out_dir / SMOKE / f / "summary.json").stat().st_mtime_ns for f in folders}


def test_divergence_ends_the_run_with_status_diverged(compose, tmp_path: Path) -> None:
    summary = train(compose("norm=none", "optim.lr=1e6", "train.diverge_loss=50"), tmp_path / "run")
    assert summary["status"] == "diverged"
    assert summary["steps"] < 20
    assert "training loss" in summary["error"]


@pytest.mark.parametrize("overrides", [["logger=wandb", "logger.mode=offline"]])
def test_wandb_offline_logs_without_network(compose, tmp_path: Path, overrides: list[str], monkeypatch) -> None:
    monkeypatch.setenv("WANDB_SILENT", "true")
    summary = train(compose("norm=bn", *overrides), tmp_path / "run")
    assert summary["status"] == "completed"
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))


def final_loss(compose, tmp_path: Path, *overrides: str) -> float:
    name = "-".join(overrides) or "base"
    return train(compose("train.steps=5", *overrides), tmp_path / name)["final"]["test/loss"]


def test_accumulation_and_norm_batch_equal_one_big_batch_without_batch_statistics(compose, tmp_path: Path) -> None:
    big = final_loss(compose, tmp_path, "norm=none", "train.batch_size=16")
    accumulated = final_loss(compose, tmp_path, "norm=none", "train.batch_size=8", "train.accumulate=2")
    chunked = final_loss(compose, tmp_path, "norm=none", "train.batch_size=16", "train.norm_batch=4")
    assert accumulated == pytest.approx(big, rel=1e-5) and chunked == pytest.approx(big, rel=1e-5)


def test_norm_batch_changes_what_batch_norm_sees(compose, tmp_path: Path) -> None:
    whole = final_loss(compose, tmp_path, "norm=bn", "train.batch_size=16")
    chunked = final_loss(compose, tmp_path, "norm=bn", "train.batch_size=16", "train.norm_batch=4")
    assert chunked != pytest.approx(whole, rel=1e-3)


def test_linear_lr_scaling_follows_the_batch(compose, tmp_path: Path) -> None:
    overrides = ("optim.lr_scaling=linear", "optim.base_batch=32", "optim.lr=0.1", "train.batch_size=16")
    summary = train(compose(*overrides, "train.accumulate=4"), tmp_path / "run")
    assert summary["final"]["lr"] == pytest.approx(0.1 * 64 / 32)


@pytest.mark.parametrize("keep", [True, False])
def test_the_checkpoint_of_an_ended_run_is_kept_unless_asked_not_to(compose, tmp_path: Path, keep: bool) -> None:
    summary = train(compose("train.steps=5", f"train.keep_checkpoint={keep}"), tmp_path / "run")
    assert summary["status"] == "completed" and (tmp_path / "run" / "summary.json").exists()
    assert (tmp_path / "run" / "checkpoint.pt").exists() is keep


@pytest.mark.parametrize("pending", [None, 1], ids=["counted-when-logged", "counted-every-step"])
def test_logged_training_metrics_are_each_interval_s_mean_over_its_steps(
    compose, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pending: int | None
) -> None:
    """Also when the outputs kept for the accuracy exceed their bound and are counted at once (``pending=1``)."""
    if pending is not None:
        monkeypatch.setattr(loop, "PENDING_OUTPUTS", pending)
    cfg = compose("norm=bn", "train.steps=6", "train.log_every=3")
    with open_dict(cfg):
        cfg.probes = {}  # the replay below runs no probes
    train(cfg, tmp_path / "run")
    metrics = pd.read_parquet(tmp_path / "run" / "metrics.parquet").pivot(index="step", columns="metric")["value"]

    replay, losses, accuracies = build_bare(cfg, steps=6), [], []  # the same assembled run, stepped by hand
    for _ in range(6):
        x, y = replay.batches.next()
        replay.optimizer.zero_grad()
        logits = replay.model(x)
        loss = replay.loss(logits, y)
        loss.backward()
        replay.optimizer.step()
        replay.scheduler.step()
        losses.append(loss.item())
        accuracies.append((logits.argmax(-1) == y).float().mean().item())
    for step in (3, 6):
        assert metrics.loc[step, "train/loss"] == pytest.approx(sum(losses[step - 3 : step]) / 3, rel=1e-6)
        assert metrics.loc[step, "train/acc"] == pytest.approx(sum(accuracies[step - 3 : step]) / 3)


@pytest.mark.gpu
def test_training_accuracy_under_cuda_graphs_is_the_eager_runs(compose, tmp_path: Path) -> None:
    """CUDA graphs replay into one output buffer: the outputs kept for the accuracy must not all read the last step."""
    accuracies = []
    for fast_path in ("none", "cuda_graphs"):
        cfg = compose("norm=bn", "train.steps=6", "train.log_every=3", "device=cuda", f"fast_path={fast_path}")
        with open_dict(cfg):
            cfg.probes = {}
        train(cfg, tmp_path / fast_path)
        metrics = pd.read_parquet(tmp_path / fast_path / "metrics.parquet")
        accuracies.append(metrics[metrics["metric"] == "train/acc"]["value"].tolist())
    assert accuracies[1] == pytest.approx(accuracies[0], abs=0.02)
