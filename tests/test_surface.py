"""Loss surfaces (Li et al. 2018): filter normalization, the resumable grid, interpolation with BN running
statistics, and a surface of a trained run against the runner's own evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from normexp import tasks
from normexp.models.santurkar import VGG
from normexp.norms import NormSpec
from normexp.probes.directions import filter_normalized_direction
from normexp.probes.surface import Grid, TrainedRun, grid_coordinates, interpolation_slice, random_surface
from normexp.runner import train


def _vgg(seed: int) -> VGG:
    torch.manual_seed(seed)
    return VGG((1, 8, 8), [4, "M", 6], 3, NormSpec.parse("bn"))


def _trained(seed: int, x: torch.Tensor, y: torch.Tensor) -> TrainedRun:
    """A BN net whose running statistics moved away from (0, 1), as after training."""
    model = _vgg(seed)
    with torch.no_grad():
        model.train()(x * (1 + seed))
    state = {name: value.clone() for name, value in model.state_dict().items()}
    return TrainedRun(f"seed{seed}", model.eval(), state, x, y, tasks.CLASSIFICATION)


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(24, 1, 8, 8, generator=generator), torch.randint(3, (24,), generator=generator)


def test_each_direction_filter_has_its_weight_filters_norm_and_1d_parameters_are_zero() -> None:
    weights = dict(_vgg(0).named_parameters())
    direction = filter_normalized_direction(weights, seed=3)
    assert direction.keys() == weights.keys()
    for name, weight in weights.items():
        if weight.dim() == 1:  # conv/classifier biases, BN's γ and β
            assert torch.equal(direction[name], torch.zeros_like(weight)), name
            continue
        for d_filter, w_filter in zip(direction[name], weight, strict=True):
            assert d_filter.norm().item() == pytest.approx(w_filter.norm().item(), rel=1e-5), name
    again = filter_normalized_direction(weights, seed=3)
    other = filter_normalized_direction(weights, seed=4)
    assert all(torch.equal(direction[n], again[n]) for n in weights)
    assert not torch.equal(direction["features.0.conv.weight"], other["features.0.conv.weight"])


def test_grid_coordinates_first_axis_slowest() -> None:
    coords = grid_coordinates(2, 3, -1.0, 1.0)
    assert coords.tolist() == [[a, b] for a in (-1.0, 0.0, 1.0) for b in (-1.0, 0.0, 1.0)]
    assert grid_coordinates(1, 5, -0.5, 1.5)[:, 0].tolist() == [-0.5, 0.0, 0.5, 1.0, 1.5]


class Killed(Exception):
    """The evaluation stops mid-grid, as a killed job would."""


def test_an_interrupted_grid_resumes_computing_only_the_missing_points(tmp_path: Path) -> None:
    coords = grid_coordinates(2, 4, -1.0, 1.0)
    meta = {"kind": "test"}
    path = tmp_path / "surface.npz"
    computed: list[tuple[float, ...]] = []
    kill_at = {"call": 7}  # during the second chunk

    def evaluate(point: np.ndarray) -> dict[str, float]:
        computed.append(tuple(point))
        if len(computed) == kill_at["call"]:
            raise Killed
        return {"loss": float(point @ point), "acc": 0.5}

    with pytest.raises(Killed):
        Grid.open(path, coords, meta).fill(evaluate, chunk=5)
    assert len(Grid.read(path).missing()) == 16 - 5  # the first chunk was saved
    computed.clear()
    kill_at["call"] = None
    grid = Grid.open(path, coords, meta).fill(evaluate, chunk=5)
    assert sorted(computed) == sorted(map(tuple, coords[5:]))  # only the missing points
    np.testing.assert_allclose(grid.values["loss"], (coords**2).sum(axis=1))
    computed.clear()
    Grid.open(path, coords, meta).fill(evaluate)
    assert computed == []  # a complete grid is never recomputed
    with pytest.raises(ValueError, match="other settings"):
        Grid.open(path, coords, {"kind": "other"})


def test_interpolation_includes_the_running_statistics(batch) -> None:
    start, end = _trained(0, *batch), _trained(1, *batch)
    middle = interpolation_slice(start, end).state_at([0.5])
    for name in ("features.0.norm.running_mean", "features.0.norm.running_var", "features.0.conv.weight"):
        torch.testing.assert_close(middle[name], (start.state[name] + end.state[name]) / 2)
    assert middle["features.0.norm.num_batches_tracked"] == start.state["features.0.norm.num_batches_tracked"]
    assert not torch.equal(start.state["features.0.norm.running_mean"], end.state["features.0.norm.running_mean"])


def test_the_origin_of_a_surface_is_the_solution_evaluated_in_eval_mode(batch, tmp_path: Path) -> None:
    run = _trained(0, *batch)
    grid = random_surface(run, tmp_path / "1d.npz", dims=1, points=5, span=1.0)
    x, y = batch
    reference = run.model.eval()(x)  # the model object itself holds the solution
    assert grid.values["loss"][2] == pytest.approx(F.cross_entropy(reference, y).item(), rel=1e-6)
    assert grid.values["acc"][2] == pytest.approx((reference.argmax(1) == y).float().mean().item())
    assert len(set(np.round(grid.values["loss"], 6))) == 5  # the direction moves the loss
    stored = np.load(tmp_path / "1d.npz")
    assert json.loads(str(stored["meta"]))["samples"] == 24


def test_a_trained_run_folder_loads_and_evaluates_like_the_runner(compose, tmp_path: Path) -> None:
    summary = train(compose("experiment=li2018-norm", "norm=bn"), tmp_path / "run")
    run = TrainedRun.load(tmp_path / "run", samples=128, split="test")
    assert run.evaluate(run.state)["loss"] == pytest.approx(summary["final"]["test/loss"], rel=1e-5)
    assert run.evaluate(run.state)["acc"] == pytest.approx(summary["final"]["test/acc"])
