"""Throughput of the normexp runner against a bare PyTorch loop doing the same work, and of the GPU fast path.

    .venv/bin/python scripts/bench.py --quick          # < 1 min on CPU; the last line is the runner's overhead ratio
    .venv/bin/python scripts/bench.py                  # the benchmarked experiments at CPU scale -> results/bench/
    .venv/bin/python scripts/bench.py --device cuda --synthetic   # on a GPU: fast-path variants, FLOP/s vs peak

What is compared, for one experiment's composed config at a scale (probes off: they measure, they do not train):

* ``runner``: :func:`normexp.training.runner.train` as a black box, logging, progress bar and checkpointing at the
  config's settings; evaluation only at step 0 and after the last step, outside the timed window.
* ``bare``: a hand-written loop over the same model, data (resident on the same device), optimizer, lr schedule
  and batch size: sample, forward, loss, backward, step. Nothing else.
* ``bare+<switches>``: the bare loop with switches of :mod:`normexp.accel` (``bf16``, ``channels_last``,
  ``compile``, ``cuda_graphs``), and ``bare+loader``: batches from a ``DataLoader`` with worker processes instead of
  resident data. Measured on GPU by default.

How it is timed: a global optimizer-step hook (:class:`StepClock`) marks the end of step W and of step W + S, so
both sides are timed by the same clock, the runner without touching its code. Setup, warm-up and compilation come
before the first mark and are reported apart (``warmup_s``). On GPU the marks are CUDA events (no synchronization
inside the window); on CPU the wall clock, plus the process CPU time, which is steadier on a shared machine. The
implementations alternate within each repeat, in reversed order every other repeat, so drifting load hits them
alike, and ``ratio`` is an implementation's time per step over the bare loop's in the same repeat (median, IQR).
S is calibrated to ``--seconds`` per window and rounded to a multiple of the logging period, and of the checkpoint
period once it is longer, so every window holds the share of logging and checkpointing of a whole run.
"""

from __future__ import annotations

import argparse
import itertools
import math
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.utils.flop_counter import FlopCounterMode

from normexp import (
    accel,
    analysis,
    tables,
)
from normexp.config import compose_config
from normexp.errors import ConfigError
from normexp.rundir import atomic_write
from normexp.training import runner
from normexp.training.assemble import assemble, select_device
from normexp.training.batches import Batches, LoaderBatches
from normexp.training.fused import FusedRuns
from normexp.training.loop import Interrupted

RESULTS_DIR = Path("results/bench")
EXPERIMENTS = (
    "ioffe2015-fig1",  # 3×100 sigmoid MLP, batch 60
    "batchsize",  # ResNet-8 (16/32/64 channels, pooled head), the micro-batch grid's model
    "santurkar2018-vgg",  # small VGG with BN, batch 128
    "qiao2019-ws-smoothness",  # the same VGG with GN + weight standardization
    "li2018-skip",  # ResNet-56 at half width (8/16/32 channels), pad-crop-flip augmentation
    "santurkar2018-dln",  # 25-layer deep linear network, full batch, regression
    "xiong2020-warmup",  # 6-block byte-level Transformer LM
)
"""One experiment per model family of the CPU scale (others share these models and data)."""
QUICK_EXPERIMENTS = ("ioffe2015-fig1",)
GPU_VARIANTS = ("bf16", "channels_last", "bf16+channels_last", "compile", "cuda_graphs", "bf16+cuda_graphs", "loader")
"""Fast-path variants of the bare loop measured by default on a GPU."""
LOADER = "loader"

PEAK_BF16_TFLOPS = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("A10", 125.0),
)
"""Dense BF16 tensor-core peaks (TFLOP/s, NVIDIA datasheets) by device-name substring, most specific first."""


# --- timing -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """One timed window: ``steps`` optimizer steps in ``seconds`` (wall, or CUDA events on GPU) and
    ``cpu_seconds`` (process CPU time); ``warmup_seconds`` from the start to the window (setup, warm-up, compile)."""

    steps: int
    seconds: float
    cpu_seconds: float
    warmup_seconds: float


class StepClock:
    """Times optimizer steps ``(start, stop]`` of whatever trains inside its ``with`` block.

    It counts steps through torch's global optimizer-step post-hook, so the runner is timed as a black box and the
    bare loop by the very same clock. On CUDA the marks are events, read after the block, never synchronizing.
    """

    def __init__(self, start: int, stop: int, device: torch.device) -> None:
        self.start, self.stop, self.cuda = start, stop, device.type == "cuda"
        self._count = 0
        self._marks: dict[str, Any] = {}

    def __enter__(self) -> StepClock:
        self._mark("begin")
        if self.start == 0:  # no warm-up: the window opens now
            self._mark("start")
        self._handle = register_optimizer_step_post_hook(self._tick)
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()

    def _tick(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._count += 1
        if self._count == self.start:
            self._mark("start")
        elif self._count == self.stop:
            self._mark("stop")

    def _mark(self, name: str) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self._marks[name] = (event, time.process_time())
        else:
            self._marks[name] = (time.perf_counter(), time.process_time())

    def _seconds(self, first: str, last: str) -> float:
        (a, _), (b, _) = self._marks[first], self._marks[last]
        if self.cuda:
            b.synchronize()
            return a.elapsed_time(b) / 1e3
        return b - a

    def window(self) -> Window:
        """The timed window (raises if fewer than ``stop`` steps ran)."""
        if "stop" not in self._marks:
            raise RuntimeError(f"only {self._count} optimizer steps ran; the window ends at step {self.stop}")
        return Window(
            steps=self.stop - self.start,
            seconds=self._seconds("start", "stop"),
            cpu_seconds=self._marks["stop"][1] - self._marks["start"][1],
            warmup_seconds=self._seconds("begin", "start"),
        )


def window_steps(rate: float, seconds: float, log_every: int, checkpoint_every: int, run_steps: int) -> int:
    """Steps that take about ``seconds`` at ``rate`` steps/s, rounded up to whole logging periods, and to whole
    checkpoint periods once the window is at least that long, so it holds a run's share of both. A period longer than
    the run (``run_steps``) never recurs in it and is ignored."""
    log = log_every if log_every <= run_steps else 1
    target = rate * seconds
    checkpoints = checkpoint_every if 0 < checkpoint_every <= min(run_steps, target) else 1
    period = math.lcm(log, checkpoints)
    return max(1, math.ceil(target / period)) * period


# --- what is measured ---------------------------------------------------------------------------------------


def bench_config(
    experiment: str, scale: str, device: str, synthetic: bool = False, overrides: Sequence[str] = ()
) -> DictConfig:
    """The experiment's config at ``scale``, resolved, with probes off and no resume (steps are set per window)."""
    cfg = compose_config(
        [f"experiment={experiment}", f"scale={scale}", f"device={device}", "resume=never", "logger=none", *overrides]
        + (["data.synthetic=true"] if synthetic else [])
    )
    OmegaConf.resolve(cfg)  # freeze values interpolated from train.steps (e.g. log_every) before steps change
    with open_dict(cfg):
        cfg.probes = {}
    return cfg


def with_steps(cfg: DictConfig, steps: int) -> DictConfig:
    """``cfg`` training ``steps`` steps and evaluating only at step 0 and after the last step."""
    return OmegaConf.merge(cfg, {"train": {"steps": steps, "eval_every": steps}})


def time_runner(cfg: DictConfig, warmup: int, steps: int) -> Window:
    """Time steps ``(warmup, warmup + steps]`` of :func:`normexp.training.runner.train` on ``cfg`` (in a scratch
    folder)."""
    cfg = with_steps(cfg, warmup + steps)
    clock = StepClock(warmup, warmup + steps, select_device(cfg.device))
    with tempfile.TemporaryDirectory(prefix="normexp-bench-") as scratch, clock:
        runner.train(cfg, Path(scratch) / "run")
    return clock.window()


@dataclass
class BareLoop:
    """What the bare loop trains: an assembled run's model, optimizer, schedule, batches and loss, nothing else."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    batches: Batches | LoaderBatches
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    device: torch.device
    fast: accel.FastPath

    def step(self) -> None:
        """One optimizer step on the next batch."""
        x, y = self.batches.next()
        self.optimizer.zero_grad(set_to_none=True)
        with accel.autocast(self.device, self.fast.bf16):
            loss = self.loss(self.model(x), y)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()


def build_bare(cfg: DictConfig, steps: int, variant: str = "") -> BareLoop:
    """The bare loop for ``cfg`` (``steps`` long), with fast-path switches or ``loader`` in ``variant`` (e.g.
    ``"bf16+compile"``), assembled as the runner assembles its run."""
    if cfg.train.accumulate != 1 or cfg.train.norm_batch is not None:
        raise ConfigError(
            "the bare loop forwards whole batches: train.accumulate and train.norm_batch are not benchmarked.",
            fix="--override train.accumulate=1 --override train.norm_batch=null",
        )
    switches = variant.split("+")
    fast_path = "+".join(v for v in switches if v != LOADER) or "none"
    run = assemble(OmegaConf.merge(with_steps(cfg, steps), {"fast_path": fast_path}), loader=LOADER in switches)
    run.model.train()
    return BareLoop(run.model, run.optimizer, run.scheduler, run.batches, run.task.training_loss, run.device, run.fast)


def time_bare(cfg: DictConfig, warmup: int, steps: int, variant: str = "") -> Window:
    """Time steps ``(warmup, warmup + steps]`` of the bare loop (setup, warm-up and compilation before them)."""
    device = select_device(cfg.device)
    with StepClock(warmup, warmup + steps, device) as clock:
        bare = build_bare(cfg, warmup + steps, variant)
        for _ in range(warmup + steps):
            bare.step()
    return clock.window()


def flops_per_step(cfg: DictConfig) -> float:
    """FLOPs of one training forward and backward (``torch.utils.flop_counter``: matmuls, convolutions and
    attention; norms and elementwise ops are not counted)."""
    bare = build_bare(cfg, steps=1)
    x, y = bare.batches.next()
    with FlopCounterMode(display=False) as counter:
        bare.loss(bare.model(x), y).backward()
    return float(counter.get_total_flops())


def peak_bf16_flops(device: torch.device, tflops: float | None = None) -> float | None:
    """The device's dense BF16 tensor-core peak in FLOP/s: ``tflops`` if given, else looked up by the device's name
    in :data:`PEAK_BF16_TFLOPS`; None when unknown (CPUs, unlisted GPUs)."""
    if tflops is not None:
        return tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((tflops * 1e12 for key, tflops in PEAK_BF16_TFLOPS if key in name), None)


def device_slug(device: torch.device) -> str:
    """``cpu``, or the GPU's name as a file name (``nvidia-h100-80gb-hbm3``)."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


# --- alternating repeats and their summary ------------------------------------------------------------------


def alternate(
    measure: dict[str, Callable[[], Window]], repeats: int, optional: Sequence[str] = ()
) -> Iterator[tuple[int, str, Window]]:
    """``(repeat, impl, window)`` for every implementation in every repeat, in reversed order every other repeat.
    An ``optional`` implementation that raises is reported and dropped from later repeats."""
    impls, dropped = list(measure), set()
    for repeat in range(repeats):
        for impl in impls if repeat % 2 == 0 else impls[::-1]:
            if impl in dropped:
                continue
            try:
                window = measure[impl]()
            except Exception as error:
                if impl not in optional:
                    raise
                print(f"{impl}: dropped, {type(error).__name__}: {error}", file=sys.stderr, flush=True)
                dropped.add(impl)
                continue
            yield repeat, impl, window


def window_row(cfg: DictConfig, impl: str, repeat: int, window: Window, members: int = 1) -> dict[str, Any]:
    """One CSV row: a window of ``steps`` optimizer steps, each advancing ``members`` runs by one step."""
    rate = window.steps / window.seconds
    return {
        "experiment": cfg.experiment_name,
        "scale": cfg.scale_name,
        "model": cfg.model.name,
        "impl": impl,
        "repeat": repeat,
        "steps": window.steps,
        "seconds": window.seconds,
        "cpu_seconds": window.cpu_seconds,
        "steps_per_s": rate,
        "samples_per_s": rate * cfg.train.batch_size * members,
        "members": members,
        "warmup_s": window.warmup_seconds,
        "batch_size": cfg.train.batch_size,
        "device": device_slug(select_device(cfg.device)),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }


def with_ratios(frame: pd.DataFrame, by: Sequence[str], baseline: str) -> pd.DataFrame:
    """``frame`` plus ``ratio`` (and ``cpu_ratio``): each row's time per run-step over the ``baseline``
    implementation's in the same case ``by`` and repeat (> 1: slower), and ``speedup`` = 1 / ratio."""
    key = [*by, "repeat"]
    run_steps = frame["steps"] * frame["members"]
    per_step = frame[key].assign(wall=frame["seconds"] / run_steps, cpu=frame["cpu_seconds"] / run_steps)
    base = per_step[frame["impl"] == baseline]
    merged = per_step.merge(base, on=key, how="left", suffixes=("", "_base"))  # keeps per_step's row order
    ratio = (merged["wall"] / merged["wall_base"]).to_numpy()
    return frame.assign(ratio=ratio, cpu_ratio=(merged["cpu"] / merged["cpu_base"]).to_numpy(), speedup=1 / ratio)


def summary_table(frame: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Per case ``by`` and implementation, the median over repeats (and IQR) of steps/s, samples/s, the time ratio
    to the baseline, the speedup and the fraction of the bf16 peak."""
    group = [*by, "impl"]
    stats = {column: analysis.aggregate(frame, group, column) for column in SUMMARIZED if column in frame}
    table = stats["steps_per_s"][[*group, "n"]].copy()
    for column, values in stats.items():
        table[column] = values["median"]
        table[f"{column}_q25"], table[f"{column}_q75"] = values["q25"], values["q75"]
    order = {impl: i for i, impl in enumerate(dict.fromkeys(frame["impl"]))}
    return table.sort_values(group, key=lambda c: c.map(order) if c.name == "impl" else c, kind="stable")


SUMMARIZED = ("steps_per_s", "samples_per_s", "ratio", "cpu_ratio", "speedup", "achieved_flops", "peak_bf16_fraction")


def format_table(table: pd.DataFrame, by: Sequence[str], ratio: str, markdown: bool = False) -> str:
    """The summary as aligned text, or as a Markdown table: ``ratio`` is the column shown against the baseline
    (``ratio``: time / bare; ``speedup``: serial time / fused time)."""
    label = {"ratio": "time / bare", "speedup": "speedup"}[ratio]
    has_peak = "peak_bf16_fraction" in table and table["peak_bf16_fraction"].notna().any()
    header = [*by, "impl", "steps/s (IQR)", "samples/s", f"{label} (IQR)", "CPU time / base"]
    header += ["TFLOP/s", "% bf16 peak"] if has_peak else []
    rows = [
        [
            *(str(getattr(r, column)) for column in by),
            r.impl,
            f"{r.steps_per_s:.1f} ({r.steps_per_s_q75 - r.steps_per_s_q25:.1f})",
            f"{r.samples_per_s:.0f}",
            f"{getattr(r, ratio):.3f} ({getattr(r, f'{ratio}_q25'):.3f}–{getattr(r, f'{ratio}_q75'):.3f})",
            f"{r.cpu_ratio:.3f}",
        ]
        + ([f"{r.achieved_flops / 1e12:.1f}", f"{100 * r.peak_bf16_fraction:.2f}"] if has_peak else [])
        for r in table.itertuples()
    ]
    return tables.render(header, rows, markdown)


def overhead_line(frame: pd.DataFrame) -> str:
    """One line: the runner's time per step over the bare loop's, median (IQR) over repeats and experiments."""
    runner_rows = frame[frame["impl"] == "runner"]
    stats = analysis.seed_stats(runner_rows["ratio"])
    return (
        f"overhead ratio (runner / bare time per step, median of {stats['n']} paired repeats): {stats['median']:.3f} "
        f"(IQR {stats['q25']:.3f}–{stats['q75']:.3f}; CPU time {runner_rows['cpu_ratio'].median():.3f})"
    )


# --- the runner against the bare loop --------------------------------------------------------------------------


def bench_experiment(
    cfg: DictConfig,
    variants: Sequence[str],
    repeats: int,
    warmup: int,
    seconds: float,
    steps: int | None,
    peak_tflops: float | None = None,
) -> pd.DataFrame:
    """Rows (one per implementation × repeat) for one experiment's config: the runner, the bare loop, variants."""
    if steps is None:
        probe = time_bare(cfg, warmup, 10)
        train = cfg.train
        steps = window_steps(probe.steps / probe.seconds, seconds, train.log_every, train.checkpoint_every, train.steps)
    fast = {f"bare+{variant}": partial(time_bare, cfg, warmup, steps, variant) for variant in variants}
    measure: dict[str, Callable[[], Window]] = {
        "runner": partial(time_runner, cfg, warmup, steps),
        "bare": partial(time_bare, cfg, warmup, steps),
    } | fast
    flops, peak = flops_per_step(cfg), peak_bf16_flops(select_device(cfg.device), peak_tflops)
    rows = [
        window_row(cfg, impl, repeat, window) | {"warmup_steps": warmup, "flops_per_step": flops}
        for repeat, impl, window in alternate(measure, repeats, optional=list(fast))
    ]
    frame = pd.DataFrame(rows).assign(achieved_flops=lambda f: f["flops_per_step"] * f["steps_per_s"])
    frame["peak_bf16_fraction"] = frame["achieved_flops"] / peak if peak else math.nan
    return with_ratios(frame, ["experiment"], "bare")


# --- fused runs against serial runs -----------------------------------------------------------------------------

FUSED_CASES = (
    ("ioffe2015-fig1", ("norm=gn", "norm.groups=4")),  # the MLP; GN: BN cannot normalize one sample per feature
    ("batchsize", ("norm=bn",)),  # the micro-batch grid's CNN
    ("batchsize", ("norm=gn",)),
)
FUSED_BATCHES = (1, 8, 64)


def time_fused(cfgs: Sequence[DictConfig], warmup: int, steps: int) -> Window:
    """Time fused steps ``(warmup, warmup + steps]`` of the members ``cfgs`` (each step advances every member)."""
    cfgs = [with_steps(cfg, warmup + steps) for cfg in cfgs]
    with StepClock(warmup, warmup + steps, select_device(cfgs[0].device)) as clock:
        fused = FusedRuns(cfgs)
        for step in range(1, warmup + steps + 1):
            fused.train_step(step)
    return clock.window()


def bench_fused(
    cfg: DictConfig, members: int, repeats: int, warmup: int, seconds: float, steps: int | None
) -> pd.DataFrame:
    """``members`` seeds of ``cfg`` fused against one run of the bare loop (serial: ``members`` such runs)."""
    cfgs = [OmegaConf.merge(cfg, {"seed": seed}) for seed in range(members)]
    if steps is None:
        probe = time_fused(cfgs, warmup, 3)
        steps = window_steps(probe.steps / probe.seconds, seconds, log_every=1, checkpoint_every=0, run_steps=1)
    measure = {
        "serial": partial(time_bare, cfg, warmup, members * steps),
        "fused": partial(time_fused, cfgs, warmup, steps),
    }
    rows = [
        window_row(cfg, impl, repeat, window, members if impl == "fused" else 1)
        | {"norm": cfg.norm.name, "seeds": members}
        for repeat, impl, window in alternate(measure, repeats)
    ]
    return with_ratios(pd.DataFrame(rows), ["experiment", "norm", "batch_size"], "serial")


# --- command line -------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options (shared by ``scripts/bench.py`` and a ``normexp bench`` command)."""
    parser.add_argument("--quick", action="store_true", help="one experiment, 3 short repeats: < 1 min on CPU")
    parser.add_argument("--fused", action="store_true", help="fused runs against serial runs at batch 1, 8, 64")
    parser.add_argument("--experiments", nargs="+", default=None, help=f"default: {' '.join(EXPERIMENTS)}")
    parser.add_argument("--scale", default="cpu", help="the experiments' scale (smoke | cpu | paper)")
    parser.add_argument("--repeats", type=int, default=None, help="alternating repeats (default 5; quick, fused 3)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--variants", default=None, help="comma list of bare-loop variants (default: GPU only, all)")
    parser.add_argument("--seconds", type=float, default=None, help="target seconds per window (default 3; quick 1)")
    parser.add_argument("--steps", type=int, default=None, help="steps per window (default: calibrated to --seconds)")
    parser.add_argument("--warmup", type=int, default=None, help="steps before the window (default 20; fused 3)")
    parser.add_argument("--members", type=int, nargs="+", default=[8], help="fused runs per cell (seeds 0 .. N-1)")
    parser.add_argument(
        "--batches", type=int, nargs="+", default=None, help="batch sizes (default: the config's; --fused: 1 8 64)"
    )
    parser.add_argument("--norms", nargs="+", default=None, help="--fused: these norms on each experiment")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak (default: table)")
    parser.add_argument("--synthetic", action="store_true", help="generated data of the datasets' shapes")
    parser.add_argument("--override", dest="overrides", action="append", default=[], help="extra Hydra override")
    parser.add_argument("--out", type=Path, default=None, help="CSV path (default: results/bench/<device>.csv)")
    parser.add_argument("--markdown", action="store_true", help="print the summary as a Markdown table")


def run(args: argparse.Namespace) -> int:
    """Benchmark, write the CSV, print the summary table and, last, the headline number."""
    device = select_device(args.device)
    frame, by, ratio, headline = (run_fused if args.fused else run_overhead)(args, device)
    name = f"{'fused-' if args.fused else ''}{device_slug(device)}{'-quick' if args.quick else ''}.csv"
    out = args.out or RESULTS_DIR / name
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda file: frame.to_csv(file, index=False))
    print(f"\n{format_table(summary_table(frame, by), by, ratio, args.markdown)}\n\nwrote {out}")
    print(headline)
    return 0


def run_overhead(args: argparse.Namespace, device: torch.device) -> tuple[pd.DataFrame, list[str], str, str]:
    """The runner against the bare loop (and its variants) for each experiment."""
    experiments = args.experiments or (QUICK_EXPERIMENTS if args.quick else EXPERIMENTS)
    repeats = args.repeats or (3 if args.quick else 5)
    seconds = args.seconds or (1.0 if args.quick else 3.0)
    default_variants = GPU_VARIANTS if device.type == "cuda" and not args.quick else ()
    variants = default_variants if args.variants is None else [v for v in args.variants.split(",") if v]
    frames = []
    for experiment, batch in itertools.product(experiments, args.batches or [None]):
        batch_override = [f"train.batch_size={batch}"] if batch else []
        cfg = bench_config(experiment, args.scale, str(device), args.synthetic, [*batch_override, *args.overrides])
        try:
            warmup = args.warmup or 20
            frames.append(bench_experiment(cfg, variants, repeats, warmup, seconds, args.steps, args.peak_tflops))
        except Interrupted:  # a stop signal (SIGTERM, Ctrl-C) ends the benchmark: nothing is written
            raise
        except Exception as error:  # one experiment the runner cannot train yet must not cost the others
            print(f"{experiment}: skipped, {type(error).__name__}: {error}", file=sys.stderr, flush=True)
            continue
        print(f"{experiment}: {len(frames[-1])} windows of {frames[-1]['steps'].iloc[0]} steps", flush=True)
    if not frames:
        raise RuntimeError("no experiment could be benchmarked (see the messages above)")
    frame = pd.concat(frames, ignore_index=True)
    return frame, ["experiment", *(["batch_size"] if args.batches else [])], "ratio", overhead_line(frame)


def run_fused(args: argparse.Namespace, device: torch.device) -> tuple[pd.DataFrame, list[str], str, str]:
    """``--members`` fused seeds against serial runs, per fused case and batch size."""
    if args.norms:
        cases = [
            (e, (f"norm={norm}",))
            for e in args.experiments or dict.fromkeys(c[0] for c in FUSED_CASES)
            for norm in args.norms
        ]
    else:
        cases = [c for c in FUSED_CASES if args.experiments is None or c[0] in args.experiments]
    frames = []
    for (experiment, overrides), batch, members in itertools.product(
        cases, args.batches or FUSED_BATCHES, args.members
    ):
        extra = [*overrides, f"train.batch_size={batch}", *args.overrides]
        cfg = bench_config(experiment, args.scale, str(device), args.synthetic, extra)
        frames.append(bench_fused(cfg, members, args.repeats or 3, args.warmup or 3, args.seconds or 2.0, args.steps))
        print(
            f"{experiment} {' '.join(overrides)} batch {batch}, {members} seeds: {len(frames[-1])} windows", flush=True
        )
    frame = pd.concat(frames, ignore_index=True)
    speedups = analysis.aggregate(frame[frame["impl"] == "fused"], ["batch_size", "seeds"], "speedup")
    headline = "fused speedup over serial (median over cases and repeats): " + ", ".join(
        f"batch {r.batch_size} × {r.seeds} seeds: {r.median:.2f}x" for r in speedups.itertuples()
    )
    return frame, ["experiment", "norm", "batch_size", "seeds"], "speedup", headline


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``scripts/bench.py``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
