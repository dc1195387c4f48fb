"""Fused runs equal separate runs: N members of a grid cell trained as one vmapped model end where N separate
runner runs end (weights, BatchNorm running statistics, training and test metrics), within float tolerance."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from omegaconf import DictConfig, open_dict

from normexp import checkpoint
from normexp.errors import ConfigError
from normexp.training.fused import FusedRuns
from normexp.training.runner import train

STEPS = 4  # enough to move every weight and BN's running statistics
# Batched kernels round differently from separate ones (~1e-7). Smooth nets keep that difference; a ReLU whose input
# lies within it of zero flips its mask and changes a gradient by O(1e-4), at a rate proportional to the number of
# ReLU inputs per step (about one flip per 10 steps at batch 128 on 28×28 maps); and weight standardization of a
# 9-weight first conv multiplies differences by ~4 per step at lr 0.1. The conv nets are compared at batch 8, lr 0.02.


@pytest.fixture
def cell(compose):
    """The configs of one grid cell's members: shared overrides plus one member override each, without probes."""

    def _cell(shared: tuple[str, ...], members: tuple[str, ...]) -> list[DictConfig]:
        steps = (f"train.steps={STEPS}", f"train.log_every={STEPS}", f"train.eval_every={STEPS}", "resume=never")
        cfgs = [compose(*steps, *shared, member) for member in members]
        for cfg in cfgs:
            with open_dict(cfg):
                cfg.probes = {}
        return cfgs

    return _cell


def assert_fused_equals_separate(cfgs: list[DictConfig], tmp_path: Path) -> None:
    fused = FusedRuns(cfgs)
    for step in range(1, STEPS + 1):
        fused.train_step(step)
    trained, tested = fused.training_metrics(), fused.evaluate(STEPS)
    for index, cfg in enumerate(cfgs):
        run_dir = tmp_path / f"member{index}"
        summary = train(cfg, run_dir)
        separate = torch.load(run_dir / checkpoint.CHECKPOINT_FILE, weights_only=True)["model"]
        mine = fused.member_state_dict(index)
        assert mine.keys() == separate.keys()
        for name, value in separate.items():
            torch.testing.assert_close(mine[name], value, rtol=1e-4, atol=1e-5, msg=f"member {index}: {name}")
        expected = summary["final"]
        for metrics in (trained[index], tested[index]):
            for name, value in metrics.items():
                assert value == pytest.approx(expected[name], rel=1e-4, abs=1e-6), (index, name)


@pytest.mark.equality
@pytest.mark.parametrize("norm", [("norm=none",), ("norm=bn",), ("norm=gn", "norm.groups=4")], ids=["none", "bn", "gn"])
def test_mlp_seeds_fused_equal_separate_runs(cell, tmp_path: Path, norm: tuple[str, ...]) -> None:
    # generated data depend on the seed: each member also has its own dataset here
    cfgs = cell(("experiment=ioffe2015-fig1", *norm), ("seed=0", "seed=1"))
    assert_fused_equals_separate(cfgs, tmp_path)


@pytest.mark.equality
def test_learning_rates_fused_equal_separate_runs(cell, tmp_path: Path) -> None:
    # one parameter group per member, with momentum and a warm-up: each member's updates and lr schedule are its own
    shared = ("experiment=ioffe2015-fig1", "norm=bn", "optim.momentum=0.9", "schedule.warmup_steps=3")
    assert_fused_equals_separate(cell(shared, ("optim.lr=0.1", "optim.lr=2")), tmp_path)


@pytest.mark.equality
@pytest.mark.parametrize(
    "experiment, norm",
    [
        ("santurkar2018-vgg", "norm=bn"),
        ("qiao2019-ws-smoothness", "norm=gn+ws"),
        ("batchsize", "norm=bcn+ws"),  # estimated statistics updated in the forward pass
        ("batchsize", "norm=brn"),  # r/d limits driven by the optimizer step
    ],
    ids=["vgg-bn", "vgg-gn+ws", "cnn-bcn+ws", "cnn-brn"],
)
def test_conv_net_seeds_fused_equal_separate_runs(cell, tmp_path: Path, experiment: str, norm: str) -> None:
    cfgs = cell((f"experiment={experiment}", norm, "train.batch_size=8", "optim.lr=0.02"), ("seed=0", "seed=1"))
    assert_fused_equals_separate(cfgs, tmp_path)


def test_members_may_differ_only_in_seed_and_lr(cell) -> None:
    cfgs = cell(("experiment=ioffe2015-fig1",), ("norm=bn", "norm=none"))
    with pytest.raises(ConfigError, match=r"may differ only in seed, optim\.lr"):
        FusedRuns(cfgs)


def test_random_forward_is_refused_rather_than_shared(cell) -> None:
    with pytest.raises(RuntimeError, match="randomness"):
        FusedRuns(cell(("experiment=ioffe2015-fig1", "norm=noisy_bn"), ("seed=0", "seed=1")))


NO_PROBE = "~probes.input_percentiles"  # the experiment's probe measures each run: fused runs refuse probes


def summaries(folder: Path) -> dict[str, dict]:
    return {
        run.name: json.loads((run / "summary.json").read_text()) for run in sorted(folder.iterdir()) if run.is_dir()
    }


def test_a_fused_sweep_writes_the_run_folders_a_serial_sweep_writes(cli, tmp_path: Path) -> None:
    grid = ("run", "-m", "experiment=ioffe2015-fig1", "scale=smoke", NO_PROBE, "norm=none,bn", "seed=0,1")
    assert cli(*grid, f"out_dir={tmp_path / 'serial'}")[0] == 0
    status, out, _ = cli(*grid, f"out_dir={tmp_path / 'fused'}", "fuse=true")
    assert status == 0, out
    serial = summaries(tmp_path / "serial" / "ioffe2015-fig1" / "smoke")
    fused = summaries(tmp_path / "fused" / "ioffe2015-fig1" / "smoke")
    assert serial.keys() == fused.keys() and len(fused) == 4  # same folder names: fuse does not name runs
    for name, expected in serial.items():
        assert fused[name]["status"] == "completed" and fused[name]["fused_members"] == 2
        assert fused[name]["steps"] == expected["steps"]
        assert fused[name]["final"] == pytest.approx(expected["final"], rel=1e-4, abs=1e-6), name
        records = pd.read_parquet(tmp_path / "fused" / "ioffe2015-fig1" / "smoke" / name / "metrics.parquet")
        reference = pd.read_parquet(tmp_path / "serial" / "ioffe2015-fig1" / "smoke" / name / "metrics.parquet")
        assert records[["step", "metric"]].equals(reference[["step", "metric"]])


def test_a_diverging_member_ends_diverged_at_the_step_a_separate_run_does(cli, tmp_path: Path) -> None:
    grid = ("run", "-m", "experiment=ioffe2015-fig1", "scale=smoke", NO_PROBE, "norm=none", "seed=0")
    args = (*grid, "optim.lr=0.1,1e6", "train.steps=6", "train.log_every=1", "train.diverge_loss=50")
    cli(*args, f"out_dir={tmp_path / 'serial'}")
    cli(*args, f"out_dir={tmp_path / 'fused'}", "fuse=true")
    serial = summaries(tmp_path / "serial" / "ioffe2015-fig1" / "smoke")
    fused = summaries(tmp_path / "fused" / "ioffe2015-fig1" / "smoke")
    statuses = {name: (summary["status"], summary["steps"]) for name, summary in fused.items()}
    assert statuses == {name: (summary["status"], summary["steps"]) for name, summary in serial.items()}
    assert sorted(status for status, _ in statuses.values()) == ["completed", "diverged"]
