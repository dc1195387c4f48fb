"""Stored loss surfaces: the settings a surface is computed with, its grid of coordinates, and the ``.npz`` file that
holds its values (read by the claims' figures, written by :mod:`normexp.landscapes`).

A :class:`Grid` holds the values at every point of its coordinates, with a mask of the points computed, and the
settings that produced them (``meta``): a surface is computed ``chunk`` points at a time and the file is rewritten
after every chunk, so an interrupted surface resumes where it stopped and a finished one is never recomputed (a
point whose loss is NaN counts as computed). Figures read grids only; they never train or evaluate a model.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from normexp.errors import ConfigError
from normexp.rundir import atomic_write

METRICS = ("loss", "acc")
SURFACES = "surfaces"
"""The folder of a claim's results that holds its stored surfaces."""


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

    @classmethod
    def of(cls, cfg: Any) -> SurfaceSettings:
        """The settings a run's (or an experiment's) config sets in ``probes.surface``; the defaults where it sets
        none."""
        options = OmegaConf.select(cfg, "probes.surface")
        return cls.parse(OmegaConf.to_container(options) if options is not None else {})

    def departures(self, meta: dict[str, Any]) -> list[str]:
        """How a stored surface's ``meta`` departs from these settings (empty: it was made with them). A surface on
        fewer evaluation samples than ``samples`` may have used a whole smaller training set: only its computation,
        which loads the data, can tell."""
        expected = {
            "points": self.points_2d if meta.get("dims") == 2 else self.points_1d,
            "span": self.span,
            "seed": self.seed,
            "low": self.alpha_min,
            "high": self.alpha_max,
        }
        departures = [
            f"{key} {meta[key]}, not {value}" for key, value in expected.items() if meta.get(key, value) != value
        ]
        if meta.get("samples", 0) > self.samples:
            departures.append(f"samples {meta['samples']}, not {self.samples}")
        return departures


@dataclass(frozen=True)
class SurfaceJob:
    """One surface a claim shows: ``kind`` (1d, 2d or interpolation) of the run folders ``runs`` (two for an
    interpolation), stored as ``<results>/surfaces/<name>.npz``; ``label`` names the net in figures."""

    label: str
    kind: str
    name: str
    runs: tuple[Path, ...]

    def path(self, results: Path) -> Path:
        """Where the surface is stored among a claim's ``results``."""
        return Path(results) / SURFACES / f"{self.name}.npz"

    def stored(self, results: Path) -> Grid | None:
        """The stored surface, or None when there is none."""
        path = self.path(results)
        return Grid.read(path) if path.exists() else None


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
