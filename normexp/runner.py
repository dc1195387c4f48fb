"""The training loop: one run from a composed config to a run folder.

A plain loop a reader can hold in mind: draw a batch, step, and every ``log_every`` steps record the training
metrics, every ``eval_every`` steps evaluate on the test set and call the probes. Metrics accumulate on the
device and are read back only when recorded, so a GPU is not synchronized every step.

Every ``checkpoint_every`` steps, at the end, and when a stop signal arrives (SIGTERM, SIGUSR1, submitit's SIGUSR2,
Ctrl-C: :func:`normexp.checkpoint.stop_signals`), the loop saves a checkpoint; with ``resume: auto`` a relaunched
run continues from it and ends bit-identical (on CPU) to a run that was never interrupted. A run stopped any other
way (Ctrl-C twice, ``sys.exit``) is recorded ``interrupted`` too and resumes from its last periodic checkpoint.
"""

from __future__ import annotations

import math
import os
import random
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from tqdm import tqdm

from normexp import accel, checkpoint, data, models, norms, optim, probes, tasks, tracking
from normexp.config import norm_options
from normexp.rundir import (
    METRICS_LOG,
    SUMMARY_FILE,
    MetricsLog,
    config_hash,
    environment,
    resolved_config,
    save_config,
    truncate_metrics_log,
    write_json,
)


def select_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; any other value is a torch device string."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def set_deterministic(on: bool) -> None:
    """Deterministic kernels on GPU (slower; cuDNN autotuning off). CPU training is deterministic regardless."""
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required by deterministic cuBLAS
    torch.use_deterministic_algorithms(on)
    torch.backends.cudnn.benchmark = not on


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, task: tasks.Task = tasks.CLASSIFICATION
) -> dict[str, float]:
    """Mean loss, and accuracy when the task has one, per scored target over ``(x, y)`` in eval mode, in batches."""
    loss, correct = torch.zeros((), device=x.device), torch.zeros((), device=x.device)
    for start in range(0, len(x), batch_size):
        logits = model(x[start : start + batch_size])
        target = y[start : start + batch_size]
        loss += task.loss(logits, target, reduction="sum")
        if task.correct:
            correct += task.correct(logits, target)
    scored = float(task.count(y))
    metrics = {"test/loss": loss.item() / scored}
    return metrics | ({"test/acc": correct.item() / scored} if task.correct else {})


class Diverged(Exception):
    """The training loss became non-finite or exceeded ``train.diverge_loss``."""


class Interrupted(Exception):
    """A preemption signal arrived; the run was checkpointed and can resume."""

    def __init__(self, message: str, preemption: checkpoint.Preemption) -> None:
        super().__init__(message)
        self.preemption = preemption


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Train the run described by ``cfg`` into ``run_dir`` and return its summary (also in ``summary.json``)."""
    start(cfg, run_dir)
    seed_everything(cfg.seed)
    device = select_device(cfg.device)
    fast = accel.FastPath.parse(cfg.fast_path)
    fast.check(device)
    fmt = accel.memory_format(fast)
    splits = data.load(cfg.data, seed=cfg.seed).to(device)
    splits = replace(splits, **{k: accel.to_memory_format(getattr(splits, k), fmt) for k in ("train_x", "test_x")})
    model = models.build(cfg.model, norms.NormSpec.parse(**norm_options(cfg)), splits.input_shape, splits.num_classes)
    model.to(device=device, memory_format=fmt)
    norms.data_dependent_init(model, splits.train_x[: cfg.train.batch_size])
    lr = optim.scaled_lr(cfg.optim, cfg.train.batch_size * cfg.train.accumulate)
    optimizer, scheduler = optim.build(model.parameters(), cfg.optim, cfg.schedule, cfg.train.steps, lr)
    run_probes = probes.build(cfg.probes, model, splits)
    if fast.compile:
        accel.compile_model(model)
    if fast.cuda_graphs:  # captured for the batches the loop forwards: norm_batch samples at a time
        accel.graph_training_step(model, splits.train_x[: cfg.train.norm_batch or cfg.train.batch_size], fast.bf16)
    sampler = data.EpochSampler(len(splits.train_x), cfg.train.batch_size, cfg.seed, device)
    # The loop reads its knobs every step: a plain TrainConfig, since each DictConfig lookup costs ~20 µs.
    train_cfg = OmegaConf.to_object(cfg.train)
    loop = _Loop(train_cfg, model, optimizer, scheduler, splits, sampler, run_probes, tasks.of(cfg.data), fast.bf16)
    saved = run_dir / checkpoint.CHECKPOINT_FILE
    if cfg.resume == "auto" and saved.exists():
        loop.load_state_dict(checkpoint.load(saved, device))
        truncate_metrics_log(run_dir / METRICS_LOG, loop.step)
        print(f"run {run_dir} resumes from its checkpoint at step {loop.step}", file=sys.stderr)
    else:  # a stale checkpoint must not outlive the restart: a kill before the first save would resume from it
        (run_dir / METRICS_LOG).unlink(missing_ok=True)
        saved.unlink(missing_ok=True)
    loop.record.open(cfg, run_dir)
    identity = {"config_hash": config_hash(resolved_config(cfg))}
    status, error, interrupted = "completed", None, None
    try:
        with checkpoint.preemption_flag() as preempted:
            loop.run(lambda: checkpoint.save(saved, loop.state_dict() | identity), preempted)
    except Diverged as why:
        status, error = "diverged", str(why)
    except Interrupted as why:
        status, error, interrupted = "interrupted", str(why), why
    except Exception as why:
        status, error = "failed", f"{type(why).__name__}: {why}"
        raise
    except BaseException as why:  # KeyboardInterrupt (Ctrl-C twice), SystemExit: mid-step, so no checkpoint now
        status, error = "interrupted", f"{type(why).__name__} at step {loop.step}; resumes from the last checkpoint"
        raise
    finally:
        summary = finish(cfg, run_dir, loop.record, status, error, loop.step, loop.elapsed, loop.trained_steps, device)
    if interrupted is not None:
        raise interrupted
    if not cfg.train.keep_checkpoint:  # an ended run never resumes; only a landscape or a user would read it
        saved.unlink(missing_ok=True)
    return summary


def start(cfg: DictConfig, run_dir: Path) -> None:
    """Create ``run_dir`` with the run's config (``config.yaml``) and the process's settings from ``cfg``; remove
    the summary of an earlier attempt, which no longer describes the run (a running run has none)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / SUMMARY_FILE).unlink(missing_ok=True)
    save_config(run_dir, cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    set_deterministic(cfg.deterministic)


def finish(
    cfg: DictConfig,
    run_dir: Path,
    record: Record,
    status: str,
    error: str | None,
    steps: int,
    elapsed: float,
    trained_steps: int,
    device: torch.device,
    **extra: Any,
) -> dict[str, Any]:
    """Close the run's records and write its ``summary.json`` (``extra`` adds fields); return the summary."""
    record.log.close()
    summary = {
        "status": status,
        "error": error,
        "run_name": run_dir.name,
        "experiment": cfg.experiment_name,
        "claim": cfg.claim,
        "scale": cfg.scale_name,
        "seed": cfg.seed,
        "steps": steps,
        "total_steps": cfg.train.steps,
        "wall_time_s": elapsed,
        "steps_per_s": trained_steps / elapsed if elapsed > 0 else None,
        "final": record.last_metrics,
        "best": record.best,
        "steps_to_target": record.steps_to_target,
        "config_hash": config_hash(resolved_config(cfg)),
        **extra,
        **environment(device),
    }
    write_json(run_dir / SUMMARY_FILE, summary)
    record.tracker.finish(tracker_summary(summary))
    return summary


def divergence(loss: float, step: int, bound: float) -> str | None:
    """Why a run with training loss ``loss`` at ``step`` has diverged (non-finite, or above ``bound``), or None."""
    if math.isfinite(loss) and loss <= bound:
        return None
    return f"training loss {loss:.4g} at step {step} (bound train.diverge_loss={bound})"


def tracker_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary metrics a tracker shows per run: status, diverged, steps, final/*, best/*, steps to target."""
    flat = {f"final/{k}": v for k, v in summary["final"].items()} | {f"best/{k}": v for k, v in summary["best"].items()}
    keys = ("status", "steps", "steps_to_target", "wall_time_s", "steps_per_s")
    return {key: summary[key] for key in keys} | {"diverged": summary["status"] == "diverged"} | flat


BEST = {"test/acc": max, "test/loss": min}
"""Metrics whose best value over training is kept, and what "best" means for each."""


class Record:
    """What a run records: every metric to its log and tracker, and the last value of each, the best test metrics
    and the first evaluation step with ``test/acc >= target_acc`` for its summary."""

    def __init__(self, target_acc: float | None) -> None:
        self.target_acc = target_acc
        self.log: MetricsLog | None = None
        self.tracker: tracking.Tracker = tracking.Tracker()
        self.last_metrics: dict[str, float] = {}
        self.best: dict[str, float] = {}
        self.steps_to_target: int | None = None

    def open(self, cfg: DictConfig, run_dir: Path) -> None:
        """Start writing to ``run_dir``'s metrics log (appending) and to the tracker ``cfg.logger`` names."""
        self.log = MetricsLog(run_dir)
        self.tracker = tracking.build(resolved_config(cfg), run_dir)

    def write(self, metrics: dict[str, float], step: int) -> None:
        """Record ``metrics`` measured at ``step``."""
        self.log.write(step, metrics)
        self.tracker.log(metrics, step)
        finite = {k: v for k, v in metrics.items() if math.isfinite(v)}
        self.last_metrics |= finite
        for name in BEST.keys() & finite.keys():
            self.best[name] = BEST[name](self.best.get(name, finite[name]), finite[name])
        target = self.target_acc
        if target is not None and self.steps_to_target is None and finite.get("test/acc", -math.inf) >= target:
            self.steps_to_target = step

    def state_dict(self) -> dict[str, Any]:
        """The summary's state, for a checkpoint."""
        return {"last_metrics": self.last_metrics, "best": self.best, "steps_to_target": self.steps_to_target}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`."""
        self.last_metrics, self.best = dict(state["last_metrics"]), dict(state["best"])
        self.steps_to_target = state["steps_to_target"]


class _Loop:
    """The training loop's state: the step, the metrics accumulated since the last record, what it recorded."""

    def __init__(self, train_cfg, model, optimizer, scheduler, splits, sampler, run_probes, task, bf16) -> None:
        self.cfg, self.model, self.optimizer, self.scheduler = train_cfg, model, optimizer, scheduler
        self.splits, self.sampler, self.probes, self.task = splits, sampler, run_probes, task
        self.bf16, self.device = bf16, splits.train_x.device
        self.record = Record(train_cfg.target_acc)
        self.step = self.trained_steps = 0
        self.elapsed = 0.0  # wall seconds spent training, over every segment of a resumed run
        self._counts_steps = any(callable(getattr(m, "set_global_step", None)) for m in model.modules())
        device = splits.train_x.device
        self._loss_sum = torch.zeros((), device=device)
        self._correct = torch.zeros((), dtype=torch.long, device=device)  # a count: no float promotion per step
        self._seen = 0

    def run(self, save_checkpoint, preempted: checkpoint.Preemption) -> None:
        """Evaluate at step 0 (unless resuming), then train up to ``train.steps`` steps."""
        cfg = self.cfg
        bar = tqdm(
            total=cfg.steps, initial=self.step, disable=not cfg.progress or None, dynamic_ncols=True, unit="step"
        )
        started = time.perf_counter() - self.elapsed
        self.model.train()
        with bar:
            if self.step == 0:
                self._record(self._evaluate(), bar)
            while self.step < cfg.steps:
                self._train_step()
                self.trained_steps += 1
                bar.update()
                due = {}
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    due |= self._training_metrics()
                if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                    due |= self._evaluate()
                self._record(due, bar)
                self.elapsed = time.perf_counter() - started
                periodic = cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0
                if self.step == cfg.steps or preempted.is_set() or periodic:
                    save_checkpoint()
                if preempted.is_set():  # even after the last step: the signal is still handed on
                    names = "+".join(signal.Signals(sig).name for sig in preempted.signals)
                    raise Interrupted(f"{names} at step {self.step}; checkpoint saved", preempted)

    def _train_step(self) -> None:
        """One optimizer step over ``accumulate`` draws of ``batch_size`` samples, forwarded ``norm_batch`` at a time
        (the samples that share a norm's batch statistics)."""
        cfg, step = self.cfg, self.step + 1
        if self._counts_steps:
            norms.set_global_step(self.model, step)
        self.optimizer.zero_grad(set_to_none=True)
        samples = cfg.batch_size * cfg.accumulate
        for _ in range(cfg.accumulate):
            indices = self.sampler.next()
            x, y = self.splits.train_x[indices], self.splits.train_y[indices]
            for probe in self.probes:
                self._record(probe.on_batch(self.model, x, y, step, self.optimizer.param_groups[0]["lr"]), step=step)
            if self.probes:
                self.model.train()  # a probe may have evaluated the model
            chunk = cfg.norm_batch or len(x)
            for xs, ys in zip(x.split(chunk), y.split(chunk), strict=True) if chunk < len(x) else [(x, y)]:
                with accel.autocast(self.device, self.bf16):
                    logits = self.model(xs)
                    loss = self.task.training_loss(logits, ys)
                (loss if len(ys) == samples else loss * (len(ys) / samples)).backward()
                scored = self.task.count(ys)
                self._loss_sum.add_(loss.detach() * scored)
                if self.task.correct:
                    self._correct.add_(self.task.correct(logits.detach(), ys))
                self._seen += scored
        self.optimizer.step()
        self.scheduler.step()
        self.step = step

    def _training_metrics(self) -> dict[str, float]:
        seen = float(self._seen)  # an int, or a tensor when the task counts scored tokens on the device
        loss = self._loss_sum.item() / seen
        metrics = {"train/loss": loss, "lr": self.optimizer.param_groups[0]["lr"]}
        if self.task.correct:
            metrics["train/acc"] = self._correct.item() / seen
        self._loss_sum.zero_()
        self._correct.zero_()
        self._seen = 0
        why = divergence(loss, self.step, self.cfg.diverge_loss)
        if why:
            self._record(metrics)
            raise Diverged(why)
        return metrics

    def _evaluate(self) -> dict[str, float]:
        self.model.eval()
        with accel.autocast(self.device, self.bf16):
            metrics = evaluate(self.model, self.splits.test_x, self.splits.test_y, self.cfg.eval_batch_size, self.task)
        for probe in self.probes:
            metrics |= probe.on_eval(self.model, self.step)
        self.model.train()
        return metrics

    def _record(self, metrics: dict[str, float], bar: tqdm | None = None, step: int | None = None) -> None:
        if not metrics:
            return
        self.record.write(metrics, self.step if step is None else step)
        last = self.record.last_metrics
        if bar is not None and "train/loss" in last:
            bar.set_postfix(loss=f"{last['train/loss']:.3f}", acc=f"{last.get('test/acc', 0):.3f}")

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this loop exactly where it stands."""
        return {
            "step": self.step,
            "elapsed": self.elapsed,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "probes": [probe.state_dict() for probe in self.probes],
            "accumulated": {"loss_sum": self._loss_sum, "correct": self._correct, "seen": self._seen},
            **self.record.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` (RNG states are restored by :func:`normexp.checkpoint.load`)."""
        self.step, self.elapsed = state["step"], state["elapsed"]
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.sampler.load_state_dict(state["sampler"])
        for probe, probe_state in zip(self.probes, state["probes"], strict=True):
            probe.load_state_dict(probe_state)
        accumulated = state["accumulated"]
        self._loss_sum.copy_(accumulated["loss_sum"])
        self._correct.copy_(accumulated["correct"])
        self._seen = accumulated["seen"]
        self.record.load_state_dict(state)
        norms.set_global_step(self.model, self.step)
