"""Loss surfaces of trained models (Li et al. 2018, arXiv 1712.09913): 1-D and 2-D slices along filter-normalized
random directions, and the linear interpolation between two solutions.

A :class:`Slice` maps coordinates c to the state θ* + Σ_k c_k·d_k. The loss (and accuracy, for classification) at
each point is evaluated in eval mode over a fixed evaluation set, in mini-batches, through
``torch.func.functional_call``: the model object is never modified. Values live in a :class:`Grid` stored as an
``.npz`` file next to the figures: points are computed ``chunk`` at a time and the file is rewritten after every
chunk, so an interrupted surface resumes where it stopped and a finished one is never recomputed (only missing
points are computed). Li et al. use 51 points on [−1, 1] per axis; the interpolation runs over α ∈ [−0.5, 1.5]
with θ(α) = (1 − α)·θ_A + α·θ_B on every floating-point entry, BN running statistics included.

A trained model comes from a run folder (:meth:`TrainedRun.load`): its resolved config and the model state of
its final checkpoint (``checkpoint.pt``, saved by the runner at the last step).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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
from normexp.norms import NormSpec
from normexp.probes.directions import difference_direction, filter_normalized_direction
from normexp.rundir import CONFIG_FILE, atomic_write

State = dict[str, torch.Tensor]
METRICS = ("loss", "acc")


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
        """The state at ``coords`` (one coordinate per direction)."""
        state = dict(self.origin)
        for coordinate, direction in zip(coords, self.directions, strict=True):
            for name, step in direction.items():
                state[name] = state[name] + float(coordinate) * step
        return state


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
    """Surface values at ``coords`` (NaN: not computed yet) and the settings that produced them (``meta``)."""

    path: Path
    coords: np.ndarray
    meta: dict[str, Any]
    values: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def open(cls, path: Path, coords: np.ndarray, meta: dict[str, Any]) -> Grid:
        """The grid stored at ``path``, or a new empty one; a stored grid made with other settings is an error."""
        path = Path(path)
        if not path.exists():
            empty = {metric: np.full(len(coords), np.nan) for metric in METRICS}
            return cls(path, coords, meta, empty)
        with np.load(path) as stored:
            stored_meta = json.loads(str(stored["meta"]))
            if stored_meta != meta or not np.allclose(stored["coords"], coords):
                raise ValueError(
                    f"{path} holds a surface made with other settings ({stored_meta}, not {meta}); delete it to "
                    "compute this one"
                )
            return cls(path, coords, meta, {metric: stored[metric].copy() for metric in METRICS})

    @classmethod
    def read(cls, path: Path) -> Grid:
        """The grid stored at ``path`` as it is (for drawing it)."""
        with np.load(path) as stored:
            values = {metric: stored[metric].copy() for metric in METRICS}
            return cls(Path(path), stored["coords"].copy(), json.loads(str(stored["meta"])), values)

    def missing(self) -> np.ndarray:
        """Indices of the points not computed yet."""
        return np.flatnonzero(np.isnan(self.values["loss"]))

    def save(self) -> None:
        """Write the grid atomically (a reader never sees half a file)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"coords": self.coords, "meta": np.array(json.dumps(self.meta, sort_keys=True)), **self.values}
        atomic_write(self.path, lambda f: np.savez(f, **arrays), mode="wb")

    def fill(self, evaluate: Callable[[np.ndarray], dict[str, float]], chunk: int = 64) -> Grid:
        """Compute the missing points with ``evaluate(coords) -> {"loss": ..., "acc": ...}``, saving after every
        ``chunk`` points; return the grid."""
        missing = self.missing()
        for start in range(0, len(missing), chunk):
            for index in missing[start : start + chunk]:
                for metric, value in evaluate(self.coords[index]).items():
                    self.values[metric][index] = value
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
