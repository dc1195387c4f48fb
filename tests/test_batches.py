"""The one source of training batches: the resumable sampler, augmentation drawn from the run's own generator, and
a spy augmentation proving that every training loop (the runner, a fused cell, the benchmark's bare loop) trains on
augmented batches."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from normexp import bench, data
from normexp.errors import ConfigError
from normexp.training import runner
from normexp.training.batches import Batches, EpochSampler
from normexp.training.fused import FusedRuns


def test_sampler_covers_each_epoch_once_and_resumes_identically() -> None:
    sampler = EpochSampler(10, 3, seed=5)
    epoch = torch.cat([sampler.next() for _ in range(3)])
    assert len(set(epoch.tolist())) == 9  # the partial batch is dropped
    state = sampler.state_dict()
    expected = [sampler.next() for _ in range(4)]
    resumed = EpochSampler(10, 3, seed=5)
    resumed.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(expected, [resumed.next() for _ in range(4)], strict=True))


def test_batch_larger_than_the_data_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="exceeds the 10 training samples"):
        EpochSampler(10, 11, seed=0)


class SpyAugment:
    """A random augmentation that counts the samples it sees: each image negated with probability 1/2, drawn from
    the generator it is handed (as CIFAR's pad-crop-flip draws its offsets and flips)."""

    def __init__(self) -> None:
        self.samples = 0

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        self.samples += len(x)
        signs = torch.randint(0, 2, (len(x),), generator=generator, device=x.device) * 2 - 1
        return x * signs.view(-1, *[1] * (x.dim() - 1))


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> SpyAugment:
    """Every dataset loaded from now on augments its training batches with one :class:`SpyAugment`."""
    augment, load = SpyAugment(), data.load
    monkeypatch.setattr(data, "load", lambda *args, **kwargs: replace(load(*args, **kwargs), augment=augment))
    return augment


def splits(n: int = 12) -> data.Splits:
    x = torch.arange(n * 4, dtype=torch.float32).view(n, 4)
    return data.Splits(x, torch.arange(n), x[:2], torch.arange(2), num_classes=n)


def test_batches_are_the_samplers_rows_augmented_and_resume_with_their_draws() -> None:
    plain, spied = splits(), replace(splits(), augment=SpyAugment())
    batches, reference = Batches(spied, 4, seed=3), EpochSampler(12, 4, seed=3)
    x, y = batches.next()
    rows = reference.next()
    assert torch.equal(y, rows) and torch.equal(x.abs(), plain.train_x[rows]) and not torch.equal(x, x.abs())
    state = batches.state_dict()
    expected = [batches.next() for _ in range(5)]
    resumed = Batches(spied, 4, seed=3)
    resumed.load_state_dict(state)
    for (x, y), (x2, y2) in zip(expected, [resumed.next() for _ in range(5)], strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)
    assert Batches(plain, 4, seed=3).state_dict()["augment_rng"] is None


SMOKE = ("experiment=ioffe2015-fig1", "~probes.input_percentiles", "train.steps=3", "train.batch_size=6")


def test_the_runner_trains_on_augmented_batches(spy: SpyAugment, compose, tmp_path: Path) -> None:
    runner.train(compose(*SMOKE, "train.accumulate=2"), tmp_path / "run")
    assert spy.samples == 3 * 2 * 6  # every micro-batch of every step, never the test set


def test_a_fused_cell_trains_on_augmented_batches_as_its_separate_runs_do(spy: SpyAugment, compose, tmp_path) -> None:
    cfgs = [compose(*SMOKE, f"seed={seed}") for seed in (0, 1)]
    fused = FusedRuns(cfgs)
    for step in range(1, 4):
        fused.train_step(step)
    assert spy.samples == 3 * 2 * 6
    for member, cfg in enumerate(cfgs):
        runner.train(cfg, tmp_path / f"run{member}")
        separate = torch.load(tmp_path / f"run{member}" / "checkpoint.pt", weights_only=True)["model"]
        for name, value in fused.member_state_dict(member).items():
            torch.testing.assert_close(value, separate[name], rtol=1e-4, atol=1e-5)


def test_the_benchmarks_bare_loop_trains_on_augmented_batches(spy: SpyAugment, compose) -> None:
    cfg = compose(*SMOKE)
    with open_dict(cfg):
        cfg.probes = {}
    bare = bench.build_bare(cfg, steps=3)
    for _ in range(3):
        bare.step()
    assert spy.samples == 3 * 6
