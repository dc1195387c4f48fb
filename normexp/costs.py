"""What each paper-scale claim grid costs: a short slice of every cost cell of its experiments, trained by the runner
on generated files in the datasets' real formats, projected to GPU-hours.

    python scripts/paper_costs.py --device cuda          # every experiment -> CSV per cell, Markdown per claim

A **cost cell** is the runs of a paper-scale grid that do the same work per step: they differ only in
:data:`COST_FREE_KEYS` (seed, learning rate, warm-up length). Each cell is trained once, in process, through
:func:`normexp.training.runner.train` at its paper-scale config (probes, logging and evaluation as configured), on files
written by :mod:`normexp.data.generated`: ``warmup + steps`` steps, with one evaluation and one checkpoint placed
inside the timed steps. A mark at every optimizer step (CUDA events on GPU) gives

* ``step_s``: the mean time of the ordinary timed steps (probes and logging at their configured periods included);
* ``eval_s``, ``checkpoint_s``: the step holding the evaluation (or the checkpoint) less an ordinary step;
* ``start_s``: from the call to the first optimizer step (data loading, model building, the step-0 evaluation).

A run of the cell projects to ``start_s + steps·step_s + evals·eval_s + checkpoints·checkpoint_s`` with the paper
config's counts, and a grid to the sum over its runs, trained one after another on one GPU (``fuse=true`` and
several GPUs divide it). A run no longer than the slice (xiong2020-gradnorm's single step) is trained whole and its
wall time taken as is. Not counted: loss surfaces, which li2018-landscape computes after training from the final
checkpoints. The generated training sets hold ``--train-fraction`` of the real number of samples (resident data
are gathered by index, so a step costs the same); the test sets are full size, since evaluation cost depends on it.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from torch.optim.optimizer import register_optimizer_step_post_hook
from torchvision import datasets

from normexp import claims, tables
from normexp.bench import device_slug
from normexp.config import CONFIG_DIR, compose_config, expand_grid
from normexp.data import generated
from normexp.errors import UserError
from normexp.rundir import atomic_write
from normexp.training import runner
from normexp.training.assemble import select_device
from normexp.training.fused import MEMBER_KEYS

COST_FREE_KEYS = (*MEMBER_KEYS, "schedule.warmup_steps")
"""Grid keys whose values change what a run learns but not the work of a step."""
RESULTS_DIR = Path("results/bench")


def paper_experiments() -> list[str]:
    """Every experiment that some claim reads, in the claims' order."""
    return list(dict.fromkeys(e for claim in claims.CLAIMS.values() for e in claim.experiments))


# --- the cells of a grid ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """The runs of ``experiment``'s paper-scale grid that share ``overrides`` (all but the cost-free keys)."""

    experiment: str
    overrides: tuple[str, ...]
    runs: int
    job: tuple[str, ...]  # the overrides of one of its runs, as the grid composes it

    @property
    def label(self) -> str:
        """The cell's own grid values (``norm=bn train.batch_size=8``), or ``-`` for a grid of one cell."""
        own = [o for o in self.overrides if not o.startswith(("experiment=", "scale="))]
        return " ".join(own) or "-"


def cost_cells(experiment: str) -> list[Cell]:
    """``experiment``'s paper-scale grid grouped into cost cells, in grid order."""
    grouped: dict[tuple[str, ...], list[list[str]]] = {}
    for job in expand_grid([f"experiment={experiment}", "scale=paper"]):
        key = tuple(o for o in job if o.split("=", 1)[0] not in COST_FREE_KEYS)
        grouped.setdefault(key, []).append(job)
    return [Cell(experiment, key, len(jobs), tuple(jobs[0])) for key, jobs in grouped.items()]


# --- the clock --------------------------------------------------------------------------------------------------


class StepMarks:
    """A mark at the end of every optimizer step of whatever trains inside the ``with`` block (torch's global
    optimizer-step hook); CUDA events on GPU, read after the block. ``first_step_s``: host seconds from entering the
    block to the first step's mark."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self._marks: list[Any] = []
        self.first_step_s = math.nan

    def __enter__(self) -> StepMarks:
        self._begin = time.perf_counter()
        self._handle = register_optimizer_step_post_hook(self._tick)
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()

    def _tick(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if not self._marks:
            self.first_step_s = time.perf_counter() - self._begin
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self._marks.append(event)
        else:
            self._marks.append(time.perf_counter())

    def step_seconds(self) -> np.ndarray:
        """``s[k]``: seconds from the end of step k to the end of step k + 1 (index 0 unused, NaN)."""
        if self.cuda:
            self._marks[-1].synchronize()
            gaps = [a.elapsed_time(b) / 1e3 for a, b in zip(self._marks[:-1], self._marks[1:], strict=True)]
        else:
            gaps = np.diff(self._marks).tolist()
        return np.array([math.nan, *gaps])


# --- one slice --------------------------------------------------------------------------------------------------


def special_steps(warmup: int, steps: int) -> tuple[int, int]:
    """The steps after which the slice evaluates and checkpoints: past the middle of the timed steps (so neither
    recurs inside the slice), apart from each other, and off round numbers, where logging and probes fall."""

    def off_round(step: int) -> int:
        while step % 10 in (0, 9):  # neither the step nor the next one a multiple of 10
            step += 1
        return step

    evaluate = off_round(warmup + steps // 2)
    return evaluate, off_round(max(evaluate + 2, warmup + 3 * steps // 4))


def slice_config(cell: Cell, root: Path, device: str, overrides: Sequence[str] = ()) -> DictConfig:
    """The cell's paper-scale config (with extra ``overrides``) on the generated files under ``root``, resolved
    (values interpolated from ``train.steps`` keep the paper's), without resume, logger or progress bar."""
    cfg = compose_config([*cell.job, f"device={device}", "resume=never", "logger=none", *overrides])
    OmegaConf.resolve(cfg)
    files = {"root": str(root), "download": False}  # for the datasets read from files (not the generated ones)
    data = {key: value for key, value in files.items() if key in cfg.data}
    return OmegaConf.merge(cfg, {"train": {"progress": False, "keep_checkpoint": False}, "data": data})


def paper_counts(train: DictConfig) -> dict[str, int]:
    """A paper run's steps, evaluations after step 0, and checkpoints (the last one included)."""
    checkpoints = math.ceil(train.steps / train.checkpoint_every) if train.checkpoint_every else 1
    return {"run_steps": train.steps, "evals": math.ceil(train.steps / train.eval_every), "checkpoints": checkpoints}


def measure(cfg: DictConfig, warmup: int, steps: int) -> dict[str, Any]:
    """Train ``cfg`` for a slice of ``warmup + steps`` steps (or whole, if no longer) and return the timings."""
    device = select_device(cfg.device)
    whole = cfg.train.steps <= warmup + steps
    if not whole:
        evaluate, save = special_steps(warmup, steps)
        train = {"steps": warmup + steps, "eval_every": evaluate, "checkpoint_every": save}
        cfg = OmegaConf.merge(cfg, {"train": train})
    with tempfile.TemporaryDirectory(prefix="normexp-slice-") as scratch, StepMarks(device) as marks:
        started = time.perf_counter()
        summary = runner.train(cfg, Path(scratch) / "run")
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall = time.perf_counter() - started
    row = {"status": summary["status"], "whole": whole, "slice_steps": summary["steps"], "wall_s": wall}
    if whole or summary["status"] != "completed":
        return row
    seconds = marks.step_seconds()
    timed = np.arange(warmup + 1, warmup + steps + 1)  # s[k - 1]: step k's own time, k in (warmup, warmup + steps]
    special = {evaluate + 1, save + 1}  # the evaluation and checkpoint run between step k and step k + 1
    step_s = float(np.mean([seconds[k - 1] for k in timed if k not in special]))
    return row | {
        "start_s": marks.first_step_s,
        "step_s": step_s,
        "steps_per_s": 1 / step_s,
        "eval_s": max(0.0, float(seconds[evaluate]) - step_s),
        "checkpoint_s": max(0.0, float(seconds[save]) - step_s),
    }


def projected_run_s(row: dict[str, Any]) -> float:
    """A paper run's seconds from a slice's timings (``wall_s`` for a run trained whole)."""
    if row["whole"]:
        return row["wall_s"]
    return (
        row["start_s"]
        + row["run_steps"] * row["step_s"]
        + row["evals"] * row["eval_s"]
        + row["checkpoints"] * row["checkpoint_s"]
    )


# --- generated data ---------------------------------------------------------------------------------------------


def write_datasets(root: Path, names: set[str], train_fraction: float) -> dict[str, Any]:
    """Generate the files of the datasets ``names`` under ``root``; returns the class attributes to patch so that
    torchvision accepts them (CIFAR's md5 table)."""
    patches: dict[str, Any] = {}
    if "mnist" in names:
        generated.write_mnist(root, sizes=(60000, 10000))  # torchvision's MNIST reader checks these sizes
    if "cifar10" in names:
        generated.write_cifar(root, datasets.CIFAR10, per_file=round(10000 * train_fraction), test_size=10000)
        patches["cifar10"] = (datasets.CIFAR10, generated.cifar_checksums(root, datasets.CIFAR10))
    if "iwslt14" in names:
        sizes = generated.IWSLT14_SIZES | {"train": round(generated.IWSLT14_SIZES["train"] * train_fraction)}
        generated.write_iwslt14(root, sizes)
    return patches


# --- tables -----------------------------------------------------------------------------------------------------


def experiment_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per experiment: runs, cells sliced of all, the range of steps/s over its cells and the grid's GPU-hours
    (NaN until every cell is sliced)."""
    if "steps_per_s" not in frame:  # only runs trained whole so far: no step rate
        frame = frame.assign(steps_per_s=math.nan)
    sliced = frame["run_s"].notna()
    table = frame.assign(sliced=sliced, run_hours=frame["runs"] * frame["run_s"] / 3600).groupby(
        "experiment", sort=False
    )
    return pd.DataFrame(
        {
            "runs": table["runs"].sum(),
            "cells": table.size(),
            "cells_sliced": table["sliced"].sum(),
            "steps_per_s_min": table["steps_per_s"].min(),
            "steps_per_s_max": table["steps_per_s"].max(),
            "gpu_hours": table["run_hours"].sum(min_count=1).where(table["sliced"].all()),
        }
    ).reset_index()


def claim_table(experiments: pd.DataFrame) -> pd.DataFrame:
    """Per claim: its experiments, their runs and GPU-hours (NaN unless every one of them is fully sliced)."""
    by_experiment = experiments.set_index("experiment")
    rows = []
    for claim in claims.CLAIMS.values():
        if not set(claim.experiments) <= set(by_experiment.index):
            continue
        part = by_experiment.loc[list(claim.experiments)]
        rows.append(
            {
                "claim": claim.id,
                "experiments": " + ".join(claim.experiments),
                "runs": int(part["runs"].sum()),
                "gpu_hours": part["gpu_hours"].sum() if part["gpu_hours"].notna().all() else math.nan,
            }
        )
    return pd.DataFrame(rows)


def markdown(frame: pd.DataFrame) -> str:
    """The claim and experiment tables as Markdown, with what produced them."""
    experiments = experiment_table(frame)
    first = frame.iloc[0]
    hours = "GPU-hours" if first["cuda_device"] else "hours"
    claim_rows = [
        [r.claim, r.experiments, str(r.runs), _hours(r.gpu_hours)] for r in claim_table(experiments).itertuples()
    ]
    experiment_rows = [
        [r.experiment, str(r.runs), f"{r.cells_sliced}/{r.cells}", _range(r.steps_per_s_min, r.steps_per_s_max),
         _hours(r.gpu_hours)]
        for r in experiments.itertuples()
    ]  # fmt: skip
    return "\n".join(
        [
            f"Projected {hours} of each paper-scale claim grid on one {first['device']} (torch {first['torch']}, "
            f"CUDA {first['cuda']}), its runs one after another, from slices of {first['warmup_steps']} + "
            f"{first['timed_steps']} timed steps per cost cell (`scripts/paper_costs.py`):",
            "",
            tables.markdown(["claim", "experiments", "runs", hours], claim_rows)
            if claim_rows
            else "(no claim has all its experiments sliced)",
            "",
            tables.markdown(["experiment", "runs", "cells sliced", "steps/s (over cells)", hours], experiment_rows),
            "",
        ]
    )


def _hours(hours: float) -> str:
    return "—" if math.isnan(hours) else f"{hours:,.1f}"


def _range(low: float, high: float) -> str:
    return "—" if math.isnan(low) else f"{low:,.1f}" if low == high else f"{low:,.1f}–{high:,.1f}"


# --- command line -----------------------------------------------------------------------------------------------


def slice_all(args: argparse.Namespace, root: Path) -> pd.DataFrame:
    """Slice the cells of ``args.experiments``, the grids with fewer cells first, until the budget is spent; write
    the CSV and the Markdown after each cell. Cells completed in an earlier ``--out`` are kept, not sliced again."""
    grids = sorted((cost_cells(experiment) for experiment in args.experiments), key=len)  # small grids first
    cells = [cell for grid in grids for cell in grid]
    configs = [slice_config(cell, root, args.device, args.overrides) for cell in cells]
    device = select_device(args.device)
    earlier = completed_cells(args.out)
    started, rows = time.monotonic(), []
    with ExitStack() as patches:
        for cls, attributes in write_datasets(root, {cfg.data.name for cfg in configs}, args.train_fraction).values():
            patches.enter_context(mock.patch.multiple(cls, **attributes))
        for cell, cfg in zip(cells, configs, strict=True):
            if (cell.experiment, cell.label) in earlier:
                rows.append(earlier[cell.experiment, cell.label])
                continue
            row = {"experiment": cell.experiment, "cell": cell.label, "runs": cell.runs, **paper_counts(cfg.train)}
            row |= {"batch_size": cfg.train.batch_size, "device": device_slug(device), "torch": torch.__version__}
            row |= {"cuda_device": device.type == "cuda", "cuda": torch.version.cuda or "none"}
            row |= {"warmup_steps": args.warmup, "timed_steps": args.steps}
            if time.monotonic() - started < args.budget_s:
                row |= measure(cfg, args.warmup, args.steps)
                rate = row.get("steps_per_s", math.nan)  # none for a run trained whole or one that diverged
                timing = f"trained whole in {row['wall_s']:.1f} s" if row["whole"] else f"{rate:.1f} steps/s"
                print(f"{cell.experiment} {cell.label}: {row['status']}, {timing}", flush=True)
            else:
                row["status"] = "not sliced (budget spent)"
            row["run_s"] = projected_run_s(row) if row["status"] == "completed" else math.nan
            rows.append(row)
            write(pd.DataFrame(rows), args.out)
    return pd.DataFrame(rows)


def completed_cells(out: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """The completed cells of an earlier table at ``out`` (none if there is none), by experiment and cell."""
    if not out.exists():
        return {}
    frame = pd.read_csv(out)
    return {(r["experiment"], r["cell"]): r for r in frame[frame["status"] == "completed"].to_dict("records")}


def write(frame: pd.DataFrame, out: Path) -> None:
    """``out`` (the cells) and ``out`` with ``.md`` (the tables), each written whole."""
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda f: frame.to_csv(f, index=False))
    atomic_write(out.with_suffix(".md"), lambda f: f.write(markdown(frame)))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``scripts/paper_costs.py``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--experiments", nargs="+", default=paper_experiments(), help="default: every claim's")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--warmup", type=int, default=10, help="steps before the timed ones")
    parser.add_argument("--steps", type=int, default=200, help="timed steps per cell")
    parser.add_argument("--train-fraction", type=float, default=0.1, help="generated training set / the real one")
    parser.add_argument("--budget-s", type=float, default=math.inf, help="start no cell after this many seconds")
    parser.add_argument("--override", dest="overrides", action="append", default=[], help="extra Hydra override")
    parser.add_argument("--data", type=Path, default=None, help="folder for the generated files (default: temporary)")
    parser.add_argument("--out", type=Path, default=None, help="CSV (default: results/bench/paper-costs-<device>.csv)")
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.steps < 8:
        parser.error("--warmup must be at least 1 and --steps at least 8 (an evaluation and a checkpoint fall inside)")
    unknown = sorted(set(args.experiments) - {p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml")})
    if unknown:
        parser.error(f"unknown experiment {', '.join(unknown)}; choices: {' '.join(paper_experiments())}")
    args.out = args.out or RESULTS_DIR / f"paper-costs-{device_slug(select_device(args.device))}.csv"
    with tempfile.TemporaryDirectory(prefix="normexp-data-") as scratch:
        try:
            frame = slice_all(args, args.data or Path(scratch))
        except UserError as error:  # an override or config no grid cell composes with: before any slice
            print(f"paper_costs: error: {error.message}", file=sys.stderr)
            return 2
    print(f"\n{markdown(frame)}\nwrote {args.out} and {args.out.with_suffix('.md')}")
    return 0
