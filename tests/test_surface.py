"""Loss surfaces (Li et al. 2018): filter normalization, the resumable grid, interpolation with BN running
statistics, a surface of a trained run against the runner's own evaluation, and the settings switched on from
config (``probes.surface``) for the claim and ``scripts/landscape.py``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from normexp import data, probes, tasks
from normexp.errors import ConfigError
from normexp.grids import Grid, SurfaceSettings, grid_coordinates
from normexp.landscapes import TrainedRun, interpolation_slice, random_surface, surface_settings
from normexp.landscapes.directions import filter_normalized_direction
from normexp.models.vgg import VGG
from normexp.norms import NormSpec
from normexp.training.runner import train

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "landscape.py"


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


def test_a_point_whose_loss_is_nan_is_computed_once(tmp_path: Path) -> None:
    coords = grid_coordinates(1, 6, -1.0, 1.0)
    path = tmp_path / "surface.npz"
    computed: list[float] = []

    def evaluate(point: np.ndarray) -> dict[str, float]:  # NaN where the net diverges (here: left of 0)
        computed.append(float(point[0]))
        return {"loss": float("nan") if point[0] < 0 else float(point[0]), "acc": 0.5}

    grid = Grid.open(path, coords, {"kind": "test"}).fill(evaluate, chunk=4)
    assert len(computed) == 6 and np.isnan(grid.values["loss"]).sum() == 3
    assert len(Grid.read(path).missing()) == 0  # complete after one fill, NaN points included
    computed.clear()
    Grid.open(path, coords, {"kind": "test"}).fill(evaluate)
    assert computed == []


def test_a_grid_stored_without_the_computed_mask_reads_nan_as_missing(tmp_path: Path) -> None:
    coords = grid_coordinates(1, 3, -1.0, 1.0)
    path = tmp_path / "old.npz"
    loss = np.array([1.0, np.nan, 3.0])  # the format before the mask: NaN marked a point not computed yet
    np.savez(path, coords=coords, meta=np.array(json.dumps({"kind": "test"})), loss=loss, acc=loss)
    grid = Grid.open(path, coords, {"kind": "test"})
    assert grid.missing().tolist() == [1]
    grid.fill(lambda point: {"loss": 2.0, "acc": 0.5})
    assert Grid.read(path).values["loss"].tolist() == [1.0, 2.0, 3.0] and len(Grid.read(path).missing()) == 0


def test_interpolated_running_variances_stay_non_negative_outside_0_1(batch) -> None:
    start, end = _trained(0, *batch), _trained(1, *batch)
    variances = [name for name in start.state if name.endswith("running_var")]
    for name in variances:  # the second solution's variances 5x the first's: extrapolated to α = −0.5 they are < 0
        end.state[name] = 5 * start.state[name]
    the_slice = interpolation_slice(start, end)
    for alpha in (-0.5, 1.5, 3.0):
        state = the_slice.state_at([alpha])
        for name in variances:
            assert (state[name] >= 0).all(), (alpha, name)
        assert np.isfinite(start.evaluate(state)["loss"]), alpha
    linear = start.state[variances[0]] - 0.5 * (end.state[variances[0]] - start.state[variances[0]])
    assert (linear < 0).all()  # what the clamp guards against
    torch.testing.assert_close(the_slice.state_at([-0.5])[variances[0]], torch.zeros_like(linear))
    torch.testing.assert_close(the_slice.state_at([0.25])[variances[0]], 2 * start.state[variances[0]])


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


def test_the_surface_probe_holds_settings_and_stays_out_of_the_training_loop() -> None:
    splits = data.load(OmegaConf.create({"name": "fashion_mnist", "synthetic": True, "train_size": 2, "test_size": 2}))
    model = _vgg(0)
    assert probes.build({"surface": {"points_1d": 7}}, model, splits, tasks.CLASSIFICATION) == []
    assert probes.PROBES["surface"](model=model, splits=splits, points_1d=7).settings.points_1d == 7
    for bad in ({"points_2d": 1}, {"alpha_min": 2.0}, {"span": 0.0}, {"point": 5}):
        with pytest.raises(ConfigError, match="probe surface"):
            probes.build({"surface": bad}, model, splits, tasks.CLASSIFICATION)


def test_surface_settings_come_from_the_run_config_and_the_script_overrides_them(compose, tmp_path: Path) -> None:
    train(compose("experiment=li2018-norm", "norm=bn", "train.steps=2"), tmp_path / "run")
    assert surface_settings(tmp_path / "run") == SurfaceSettings(points_1d=5, points_2d=3, samples=64)  # smoke.yaml
    out = tmp_path / "surface"
    command = [sys.executable, str(SCRIPT), str(tmp_path / "run"), "--points-1d", "4", "--span", "0.5", "--out"]
    subprocess.run([*command, str(out)], check=True, capture_output=True)
    meta = json.loads(str(np.load(out.with_suffix(".npz"))["meta"]))
    assert (meta["points"], meta["span"], meta["samples"]) == (4, 0.5, 64)
    assert out.with_suffix(".png").exists()


def _stored(path: Path, dims: int, points: int, **meta) -> Path:
    """A stored (empty) random surface made with ``points`` per axis."""
    coords = grid_coordinates(dims, points, -1.0, 1.0)
    settings = {"kind": "random", "run": "norm=bn,seed=0", "dims": dims, "points": points, "span": 1.0, "seed": 0}
    Grid.open(path, coords, settings | {"samples": 64} | meta).save()
    return path


def test_a_stored_surface_departs_from_settings_that_would_not_have_made_it(tmp_path: Path) -> None:
    settings = SurfaceSettings(points_1d=5, points_2d=3, samples=64)
    assert settings.departures(Grid.read(_stored(tmp_path / "a.npz", 1, 5)).meta) == []
    assert settings.departures(Grid.read(_stored(tmp_path / "b.npz", 2, 3)).meta) == []
    assert settings.departures(Grid.read(_stored(tmp_path / "c.npz", 2, 5)).meta) == ["points 5, not 3"]
    assert settings.departures(Grid.read(_stored(tmp_path / "d.npz", 1, 5, samples=128)).meta) == [
        "samples 128, not 64"
    ]
    # fewer samples than asked for: the whole of a smaller training set, which only the data can tell
    assert settings.departures(Grid.read(_stored(tmp_path / "e.npz", 1, 5, samples=32)).meta) == []
    interpolation = {"kind": "interpolation", "points": 5, "low": -1.0, "high": 1.5, "samples": 64}
    assert settings.departures(interpolation) == ["low -1.0, not -0.5"]


def test_reproduce_stops_before_any_run_at_a_stored_surface_made_with_other_settings(cli, tmp_path: Path) -> None:
    """li2018-landscape's smoke scale sets 5 points a 1-D surface; a stored 9-point one would only be found stale
    after the grid trained. It stops reproduce at once (exit 2), naming the file and the fix; nothing runs."""
    results, runs = tmp_path / "results", tmp_path / "runs"
    stale = _stored(results / "li2018-landscape" / "smoke" / "surfaces" / "bn-seed0-1d.npz", 1, 9)
    status, _, err = cli(
        "reproduce", "li2018-landscape", "--scale", "smoke", "--results", str(results), "--out-dir", str(runs)
    )
    assert status == 2
    assert str(stale) in err and "points 9, not 5" in err and "delete it" in err
    assert not runs.exists()
