"""Loss surfaces of trained runs (Li et al. 2018, arXiv 1712.09913): 1-D and 2-D slices along filter-normalized
random directions, and the linear interpolation between two solutions, computed from run folders after training.

This sits above the training layer: it loads finished runs (their config, assembled as the runner assembles them,
and the model state of their final checkpoint) and writes :class:`~normexp.grids.Grid` files that figures read.
``normexp reproduce`` calls :func:`complete` for a claim's surfaces after its runs; ``scripts/landscape.py`` for any
run folder. ``normexp figures`` never comes here.

A :class:`Slice` maps coordinates c to the state θ* + Σ_k c_k·d_k. The loss (and accuracy, for classification) at
each point is evaluated in eval mode over a fixed evaluation set, in mini-batches, through
``torch.func.functional_call``: the model object is never modified. Li et al. use 51 points on [−1, 1] per axis; the
interpolation runs over α ∈ [−0.5, 1.5] with θ(α) = (1 − α)·θ_A + α·θ_B on every floating-point entry, BN running
statistics included.

Outside [0, 1] a linearly extrapolated running variance can turn negative, and BN in eval mode then computes
sqrt(negative + ε) = NaN. The authors' code (``net_plotter.set_states``) extrapolates without a guard; here every
running variance of a slice's state is clamped at 0, the nearest valid BN state: the path is exactly theirs wherever
theirs is a valid network, and finite where theirs is NaN.

The settings (grid sizes, span, interpolation range, evaluation samples) are the run's config, ``probes.surface``
(:class:`~normexp.grids.SurfaceSettings`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.func import functional_call

from normexp import tasks
from normexp.checkpoint import CHECKPOINT_FILE
from normexp.grids import Grid, SurfaceJob, SurfaceSettings, grid_coordinates
from normexp.landscapes.directions import difference_direction, filter_normalized_direction
from normexp.rundir import CONFIG_FILE
from normexp.training.assemble import assemble

State = dict[str, torch.Tensor]
VARIANCE = "running_var"
"""The state entries that hold a variance (BN's and every norm here that keeps running statistics)."""


def surface_settings(run_dir: Path) -> SurfaceSettings:
    """The surface settings of a run folder's config (``probes.surface``; the defaults where it sets none)."""
    return SurfaceSettings.of(OmegaConf.load(Path(run_dir) / CONFIG_FILE))


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
        cfg.device, cfg.fast_path, cfg.probes = device, "none", {}  # evaluated here, plainly, without probes
        run = assemble(cfg)
        checkpoint = torch.load(run_dir / CHECKPOINT_FILE, map_location=run.device, weights_only=True)
        splits = run.splits
        x, y = (splits.train_x, splits.train_y) if split == "train" else (splits.test_x, splits.test_y)
        return cls(run_dir.name, run.model.eval(), checkpoint["model"], x[:samples], y[:samples], run.task)

    @torch.no_grad()
    def evaluate(self, state: State, batch_size: int = 1000) -> dict[str, float]:
        """Mean loss (and accuracy, for classification) of the model at ``state`` over the evaluation set."""
        loss, correct = 0.0, 0.0
        for start in range(0, len(self.x), batch_size):
            output = functional_call(self.model, state, (self.x[start : start + batch_size],))
            target = self.y[start : start + batch_size]
            loss += self.task.loss(output, target, reduction="sum").item()
            if self.task.predict is not None:
                correct += self.task.correct(output, target).item()
        values = {"loss": loss / self.y.numel()}
        return values | ({"acc": correct / self.y.numel()} if self.task.predict is not None else {})


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


def complete(jobs: Sequence[SurfaceJob], results: Path, device: str = "cpu") -> list[Grid]:
    """Compute (or complete) every surface of ``jobs`` whose runs' checkpoints are at hand, into ``results``, with
    the first run's ``probes.surface`` settings; a stored surface whose runs are gone is kept as it is."""
    return [
        run_surface(job.kind, job.runs, job.path(results), surface_settings(job.runs[0]), device)
        for job in jobs
        if all((Path(run) / CHECKPOINT_FILE).exists() for run in job.runs)
    ]
