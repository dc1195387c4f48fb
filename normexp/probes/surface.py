"""Loss surfaces of trained models (Li et al. 2018, arXiv 1712.09913): 1-D and 2-D slices along filter-normalized
random directions, and the linear interpolation between two solutions.

A :class:`Slice` maps coordinates c to the state θ* + Σ_k c_k·d_k. The loss (and accuracy, for classification) at
each point is evaluated in eval mode over a fixed evaluation set, in mini-batches, through
``torch.func.functional_call``: the model object is never modified. Values live in a :class:`Grid` stored as an
``.npz`` file next to the figures, with a mask of the points computed: points are computed ``chunk`` at a time and
the file is rewritten after every chunk, so an interrupted surface resumes where it stopped and a finished one is
never recomputed (only missing points are computed; a point whose loss is NaN counts as computed). Li et al. use 51
points on [−1, 1] per axis; the interpolation runs over α ∈ [−0.5, 1.5] with θ(α) = (1 − α)·θ_A + α·θ_B on every
floating-point entry, BN running statistics included.

Outside [0, 1] a linearly extrapolated running variance can turn negative, and BN in eval mode then computes
sqrt(negative + ε) = NaN. The authors' code (``net_plotter.set_states``) extrapolates without a guard; here every
running variance of a slice's state is clamped at 0, the nearest valid BN state: the path is exactly theirs wherever
theirs is a valid network, and finite where theirs is NaN.

The surfaces are switched on from config, ``probes: {surface: {...}}`` (:class:`SurfaceSettings`: grid sizes, span,
interpolation range, evaluation samples). They need the trained solution (and the interpolation two runs), so they
are evaluated after training from the final checkpoint, by the claim ``li2018-landscape`` and
``scripts/landscape.py``; during training the probe measures nothing. A trained model comes from a run folder
(:meth:`TrainedRun.load`): its resolved config and the model state of its final checkpoint (``checkpoint.pt``,
saved by the runner at the last step).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.func import functional_call

from normexp import data, models, tasks
from normexp.checkpoint import CHECKPOINT_FILE
from normexp.config import norm_options
from normexp.data.splits import Splits
from normexp.errors import ConfigError
from normexp.norms import NormSpec
from normexp.probes.base import Probe
from normexp.probes.directions import difference_direction, filter_normalized_direction
from normexp.rundir import CONFIG_FILE, atomic_write

State = dict[str, torch.Tensor]
METRICS = ("loss", "acc")
VARIANCE = "running_var"
"""The state entries that hold a variance (BN's and every norm here that keeps running statistics)."""


@dataclass(frozen=True)
class SurfaceSettings:
    """What the loss surfaces of a run evaluate (config ``probes.surface``; defaults: Li et al.'s grid)."""

    points_1d: int = field(default=51, metadata={"help": "points of a 1-D surface and of an interpolation"})
    points_2d: int = field(default=51, metadata={"help": "points per axis of a 2-D surface"})
    span: float = field(default=1.0, metadata={"help": "random-direction coordinates lie in [-span, span]"})
    alpha_min: float = field(default=-0.5, metadata={"help": "interpolation from alpha_min (0: the first run)"})
    alpha_max: float = field(default=1.5, metadata={"help": "interpolation to alpha_max (1: the second run)"})
    samples: int = field(default=10000, metadata={"help": "training samples the loss is evaluated on"})
    seed: int = field(default=0, metadata={"help": "seed of the first random direction (the second: seed + 1)"})

    def __post_init__(self) -> None:
        if not (self.points_1d >= 2 and self.points_2d >= 2 and self.span > 0 and self.samples >= 1):
            raise ConfigError(
                f"probe surface: need points_1d, points_2d >= 2, span > 0 and samples >= 1; got {self}.",
                fix="e.g. points_1d: 51, points_2d: 51, span: 1.0, samples: 10000",
            )
        if not self.alpha_min < self.alpha_max:
            raise ConfigError(
                f"probe surface: alpha_min={self.alpha_min} must be below alpha_max={self.alpha_max}.",
                fix="e.g. alpha_min: -0.5, alpha_max: 1.5",
            )

    @classmethod
    def parse(cls, options: dict[str, Any]) -> SurfaceSettings:
        """The settings of ``options`` (``probes.surface``); an unknown option is a :class:`ConfigError`."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ConfigError(f"probe surface: unknown option(s) {unknown}.", choices=known)
        return cls(**options)


def surface_settings(run_dir: Path) -> SurfaceSettings:
    """The surface settings of a run folder's config (``probes.surface``; the defaults where it sets none)."""
    options = OmegaConf.select(OmegaConf.load(Path(run_dir) / CONFIG_FILE), "probes.surface")
    return SurfaceSettings.parse(OmegaConf.to_container(options) if options is not None else {})


class SurfaceProbe(Probe):
    """Switches the loss surfaces on (``probes: {surface: {...}}``) with their :class:`SurfaceSettings`.

    A surface needs the trained solution, so it is evaluated after training from the final checkpoint
    (:func:`run_surface`); during training this probe measures nothing and is left out of the loop.
    """

    during_training = False

    def __init__(self, model: nn.Module, splits: Splits, **options: Any) -> None:
        self.settings = SurfaceSettings.parse(options)


@dataclass(frozen=True)
class TrainedRun:
    """A trained model of a run folder, its final state, and the evaluation set ``(x, y)``."""

    name: str
    model: nn.Module
    state: State
    x: torch.Tensor
    y: torch.Tensor
    task: tasks.Task

    @classmethod
    def load(cls, run_dir: Path, samples: int = 1000, split: str = "train", device: str = "cpu") -> TrainedRun:
        """The model of ``run_dir``'s final checkpoint, evaluated on the first ``samples`` of ``split``."""
        run_dir = Path(run_dir)
        cfg = OmegaConf.load(run_dir / CONFIG_FILE)
        splits = data.load(cfg.data, seed=cfg.seed)
        model = models.build(cfg.model, NormSpec.parse(**norm_options(cfg)), splits.input_shape, splits.num_classes)
        checkpoint = torch.load(run_dir / CHECKPOINT_FILE, map_location=device, weights_only=True)
        x, y = (splits.train_x, splits.train_y) if split == "train" else (splits.test_x, splits.test_y)
        return cls(
            run_dir.name,
            model.to(device).eval(),
            checkpoint["model"],
            x[:samples].to(device),
            y[:samples].to(device),
            tasks.of(cfg.data),
        )

    @torch.no_grad()
    def evaluate(self, state: State, batch_size: int = 1000) -> dict[str, float]:
        """Mean loss (and accuracy, for classification) of the model at ``state`` over the evaluation set."""
        loss, correct = 0.0, 0.0
        for start in range(0, len(self.x), batch_size):
            output = functional_call(self.model, state, (self.x[start : start + batch_size],))
            target = self.y[start : start + batch_size]
            loss += self.task.loss(output, target, reduction="sum").item()
            if self.task.correct is not None:
                correct += self.task.correct(output, target).item()
        values = {"loss": loss / self.y.numel()}
        return values | ({"acc": correct / self.y.numel()} if self.task.correct is not None else {})


@dataclass(frozen=True)
class Slice:
    """The states ``origin + Σ_k coords[k]·directions[k]`` (entries without a direction stay at the origin)."""

    origin: State
    directions: Sequence[State]

    def state_at(self, coords: Sequence[float]) -> State:
        """The state at ``coords`` (one coordinate per direction), running variances clamped at 0."""
        state = dict(self.origin)
        for coordinate, direction in zip(coords, self.directions, strict=True):
            for name, step in direction.items():
                state[name] = state[name] + float(coordinate) * step
        # Extrapolated past a solution a variance can turn negative: BN would normalize by sqrt(< 0) = NaN.
        moved = set().union(*self.directions)
        return {name: v.clamp(min=0) if name in moved and name.endswith(VARIANCE) else v for name, v in state.items()}


def random_slice(run: TrainedRun, dims: int, seed: int = 0) -> Slice:
    """``dims`` filter-normalized random directions around the run's solution (seeds ``seed``, ``seed + 1``...),
    over its trainable parameters; buffers (BN running statistics) stay at the solution."""
    weights = {name: run.state[name] for name, p in run.model.named_parameters() if p.requires_grad}
    return Slice(run.state, [filter_normalized_direction(weights, seed + k) for k in range(dims)])


def interpolation_slice(start: TrainedRun, end: TrainedRun) -> Slice:
    """The line from ``start``'s solution (α = 0) to ``end``'s (α = 1), running statistics included."""
    return Slice(start.state, [difference_direction(start.state, end.state)])


def grid_coordinates(dims: int, points: int, low: float, high: float) -> np.ndarray:
    """A (points**dims, dims) array of every point of an even grid on [low, high] per axis, the first axis
    varying slowest (so ``values.reshape(points, points)[i, j]`` is at (axis[i], axis[j]))."""
    axis = np.linspace(low, high, points)
    return np.stack([c.ravel() for c in np.meshgrid(*([axis] * dims), indexing="ij")], axis=1)


@dataclass
class Grid:
    """Surface values at ``coords``, which points are ``computed``, and the settings that produced them (``meta``).

    The mask, not NaN, marks a computed point: a point where the loss is NaN (a diverged net) is computed once."""

    path: Path
    coords: np.ndarray
    meta: dict[str, Any]
    values: dict[str, np.ndarray]
    computed: np.ndarray

    @classmethod
    def open(cls, path: Path, coords: np.ndarray, meta: dict[str, Any]) -> Grid:
        """The grid stored at ``path``, or a new empty one; a stored grid made with other settings is an error."""
        path = Path(path)
        if not path.exists():
            empty = {metric: np.full(len(coords), np.nan) for metric in METRICS}
            return cls(path, coords, meta, empty, np.zeros(len(coords), dtype=bool))
        stored = cls.read(path)
        if stored.meta != meta or not np.allclose(stored.coords, coords):
            raise ValueError(
                f"{path} holds a surface made with other settings ({stored.meta}, not {meta}); delete it to "
                "compute this one"
            )
        return stored

    @classmethod
    def read(cls, path: Path) -> Grid:
        """The grid stored at ``path`` as it is (for drawing it)."""
        with np.load(path) as stored:
            values = {metric: stored[metric].copy() for metric in METRICS}
            # Files written before the mask marked a missing point by NaN: read them so.
            computed = stored["computed"].copy() if "computed" in stored.files else ~np.isnan(values["loss"])
            return cls(Path(path), stored["coords"].copy(), json.loads(str(stored["meta"])), values, computed)

    def missing(self) -> np.ndarray:
        """Indices of the points not computed yet."""
        return np.flatnonzero(~self.computed)

    def save(self) -> None:
        """Write the grid atomically (a reader never sees half a file)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        meta = np.array(json.dumps(self.meta, sort_keys=True))
        arrays = {"coords": self.coords, "meta": meta, "computed": self.computed, **self.values}
        atomic_write(self.path, lambda f: np.savez(f, **arrays), mode="wb")

    def fill(self, evaluate: Callable[[np.ndarray], dict[str, float]], chunk: int = 64) -> Grid:
        """Compute the missing points with ``evaluate(coords) -> {"loss": ..., "acc": ...}``, saving after every
        ``chunk`` points; return the grid."""
        missing = self.missing()
        for start in range(0, len(missing), chunk):
            for index in missing[start : start + chunk]:
                for metric, value in evaluate(self.coords[index]).items():
                    self.values[metric][index] = value
                self.computed[index] = True
            self.save()
        return self


def surface(
    run: TrainedRun, the_slice: Slice, coords: np.ndarray, path: Path, meta: dict[str, Any], chunk: int = 64
) -> Grid:
    """The run's loss over ``coords`` of ``the_slice``, stored at ``path`` (only missing points are computed)."""
    grid = Grid.open(path, coords, meta | {"samples": len(run.x)})
    return grid.fill(lambda c: run.evaluate(the_slice.state_at(c)), chunk)


def random_surface(
    run: TrainedRun, path: Path, dims: int, points: int = 51, span: float = 1.0, seed: int = 0, chunk: int = 64
) -> Grid:
    """Li et al.'s 1-D (``dims=1``) or 2-D (``dims=2``) surface L(θ* + αδ [+ βη]), α, β ∈ [−span, span]."""
    coords = grid_coordinates(dims, points, -span, span)
    meta = {"kind": "random", "run": run.name, "dims": dims, "points": points, "span": span, "seed": seed}
    return surface(run, random_slice(run, dims, seed), coords, path, meta, chunk)


def interpolation_surface(
    start: TrainedRun, end: TrainedRun, path: Path, points: int = 51, low: float = -0.5, high: float = 1.5
) -> Grid:
    """The loss (on ``start``'s evaluation set) along (1 − α)·θ_start + α·θ_end, α ∈ [low, high]."""
    coords = grid_coordinates(1, points, low, high)
    meta = {"kind": "interpolation", "run": start.name, "end": end.name, "points": points, "low": low, "high": high}
    return surface(start, interpolation_slice(start, end), coords, path, meta)


def run_surface(
    kind: str, run_dirs: Sequence[Path], path: Path, settings: SurfaceSettings, device: str = "cpu"
) -> Grid:
    """The surface ``kind`` (``1d``, ``2d`` or ``interpolation``) of the runs in ``run_dirs`` (two for an
    interpolation, from the first to the second), evaluated with ``settings`` and stored at ``path`` (only missing
    points are computed)."""
    runs = [TrainedRun.load(run_dir, samples=settings.samples, device=device) for run_dir in run_dirs]
    if kind == "interpolation":
        return interpolation_surface(*runs, path, settings.points_1d, settings.alpha_min, settings.alpha_max)
    dims, points = (1, settings.points_1d) if kind == "1d" else (2, settings.points_2d)
    return random_surface(runs[0], path, dims, points, settings.span, settings.seed)
