"""Fused runs equal separate runs: N members of a grid cell trained as one vmapped model end where N separate
runner runs end (weights, BatchNorm running statistics, training and test metrics), within float tolerance."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, open_dict

from normexp import checkpoint
from normexp.errors import ConfigError
from normexp.fused import FusedRuns
from normexp.runner import train

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
    for _ in range(STEPS):
        fused.train_step()
    trained, tested = fused.training_metrics(), fused.evaluate()
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


@pytest.mark.parametrize("norm", [("norm=none",), ("norm=bn",), ("norm=gn", "norm.groups=4")], ids=["none", "bn", "gn"])
def test_mlp_seeds_fused_equal_separate_runs(cell, tmp_path: Path, norm: tuple[str, ...]) -> None:
    # generated data depend on the seed: each member also has its own dataset here
    cfgs = cell(("experiment=ioffe2015-fig1", *norm), ("seed=0", "seed=1"))
    assert_fused_equals_separate(cfgs, tmp_path)


def test_learning_rates_fused_equal_separate_runs(cell, tmp_path: Path) -> None:
    # one parameter group per member, with momentum and a warm-up: each member's updates and lr schedule are its own
    shared = ("experiment=ioffe2015-fig1", "norm=bn", "optim.momentum=0.9", "schedule.warmup_steps=3")
    assert_fused_equals_separate(cell(shared, ("optim.lr=0.1", "optim.lr=2")), tmp_path)


@pytest.mark.parametrize(
    "experiment, norm",
    [("santurkar2018-vgg", "norm=bn"), ("qiao2019-ws-smoothness", "norm=gn+ws")],
    ids=["vgg-bn", "vgg-gn+ws"],
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
