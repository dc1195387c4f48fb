"""The training loop: one run from a composed config to a run folder.

A plain loop a reader can hold in mind: draw a batch, step, and every ``log_every`` steps record the training
metrics, every ``eval_every`` steps evaluate on the test set and call the probes. Metrics accumulate on the
device and are read back only when recorded, so a GPU is not synchronized every step.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn
from tqdm import tqdm

from normexp import data, models, norms, optim, probes, tracking
from normexp.config import norm_options
from normexp.rundir import SUMMARY_FILE, MetricsLog, environment, save_config, write_json


def select_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; any other value is a torch device string."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def loss_fn(logits: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy over the last dim: (N, K) logits for classes, or (N, T, V) for next-token prediction."""
    return F.cross_entropy(logits.flatten(0, -2), target.flatten(), reduction=reduction)


def correct_count(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """How many predictions (samples, or tokens) are right, as a tensor on the device."""
    return (logits.argmax(-1) == target).sum()


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> dict[str, float]:
    """Mean loss and accuracy per target (sample or token) over ``(x, y)`` in eval mode, in batches."""
    loss, correct = torch.zeros((), device=x.device), torch.zeros((), device=x.device)
    for start in range(0, len(x), batch_size):
        logits = model(x[start : start + batch_size])
        target = y[start : start + batch_size]
        loss += loss_fn(logits, target, reduction="sum")
        correct += correct_count(logits, target)
    return {"test/loss": loss.item() / y.numel(), "test/acc": correct.item() / y.numel()}


class Diverged(Exception):
    """The training loss became non-finite or exceeded ``train.diverge_loss``."""


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Train the run described by ``cfg`` into ``run_dir`` and return its summary (also in ``summary.json``)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(run_dir, cfg)
    seed_everything(cfg.seed)
    device = select_device(cfg.device)
    splits = data.load(cfg.data, seed=cfg.seed).to(device)
    model = models.build(cfg.model, norms.NormSpec.parse(**norm_options(cfg)), splits.input_shape, splits.num_classes)
    model.to(device)
    norms.data_dependent_init(model, splits.train_x[: cfg.train.batch_size])
    lr = optim.scaled_lr(cfg.optim, cfg.train.batch_size * cfg.train.accumulate)
    optimizer, scheduler = optim.build(model.parameters(), cfg.optim, cfg.schedule, cfg.train.steps, lr)
    run_probes = probes.build(cfg.probes, model, splits)
    sampler = data.EpochSampler(len(splits.train_x), cfg.train.batch_size, cfg.seed)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    tracker = tracking.build(resolved, run_dir)
    log = MetricsLog(run_dir)
    loop = _Loop(cfg.train, model, optimizer, scheduler, splits, sampler, run_probes, log, tracker)
    status, error, started = "completed", None, time.perf_counter()
    try:
        loop.run()
    except Diverged as why:
        status, error = "diverged", str(why)
    except Exception as why:
        status, error = "failed", f"{type(why).__name__}: {why}"
        raise
    finally:
        log.close()
        wall = time.perf_counter() - started
        summary = {
            "status": status,
            "error": error,
            "run_name": run_dir.name,
            "experiment": cfg.experiment_name,
            "claim": cfg.claim,
            "scale": cfg.scale_name,
            "seed": cfg.seed,
            "steps": loop.step,
            "total_steps": cfg.train.steps,
            "wall_time_s": wall,
            "steps_per_s": loop.step / wall if wall > 0 else None,
            "final": loop.last_metrics,
            **environment(device),
        }
        write_json(run_dir / SUMMARY_FILE, summary)
        tracker.finish({"status": status, "steps": loop.step, **loop.last_metrics})
    return summary


class _Loop:
    """The training loop's state: the step, the metrics accumulated since the last record, the last metrics."""

    def __init__(self, train_cfg, model, optimizer, scheduler, splits, sampler, run_probes, log, tracker) -> None:
        self.cfg, self.model, self.optimizer, self.scheduler = train_cfg, model, optimizer, scheduler
        self.splits, self.sampler, self.probes, self.log, self.tracker = splits, sampler, run_probes, log, tracker
        self.step = 0
        self.last_metrics: dict[str, float] = {}
        device = splits.train_x.device
        self._loss_sum, self._correct, self._seen = torch.zeros((), device=device), torch.zeros((), device=device), 0

    def run(self) -> None:
        """Evaluate at step 0, then train ``train.steps`` steps."""
        bar = tqdm(total=self.cfg.steps, disable=not self.cfg.progress, dynamic_ncols=True, unit="step")
        self._record(self._evaluate(), bar)
        with bar:
            while self.step < self.cfg.steps:
                self._train_step()
                bar.update()
                due = {}
                if self.step % self.cfg.log_every == 0 or self.step == self.cfg.steps:
                    due |= self._training_metrics()
                if self.step % self.cfg.eval_every == 0 or self.step == self.cfg.steps:
                    due |= self._evaluate()
                if due:
                    self._record(due, bar)

    def _train_step(self) -> None:
        """One optimizer step over ``accumulate`` draws of ``batch_size`` samples, forwarded ``norm_batch`` at a time
        (the samples that share a norm's batch statistics)."""
        cfg, step = self.cfg, self.step + 1
        norms.set_global_step(self.model, step)
        self.optimizer.zero_grad(set_to_none=True)
        samples = cfg.batch_size * cfg.accumulate
        for _ in range(cfg.accumulate):
            indices = self.sampler.next()
            x, y = self.splits.train_x[indices], self.splits.train_y[indices]
            for probe in self.probes:
                self._record(probe.on_batch(self.model, x, y, step, self.optimizer.param_groups[0]["lr"]), None)
            self.model.train()
            for xs, ys in zip(x.split(cfg.norm_batch or len(x)), y.split(cfg.norm_batch or len(y)), strict=True):
                logits = self.model(xs)
                loss = loss_fn(logits, ys)
                (loss * len(ys) / samples).backward()
                with torch.no_grad():
                    self._loss_sum += loss.detach() * ys.numel()
                    self._correct += correct_count(logits, ys)
                self._seen += ys.numel()
        self.optimizer.step()
        self.scheduler.step()
        self.step = step

    def _training_metrics(self) -> dict[str, float]:
        loss = self._loss_sum.item() / self._seen
        metrics = {
            "train/loss": loss,
            "train/acc": self._correct.item() / self._seen,
            "lr": self.optimizer.param_groups[0]["lr"],
        }
        self._loss_sum.zero_()
        self._correct.zero_()
        self._seen = 0
        if not math.isfinite(loss) or loss > self.cfg.diverge_loss:
            self._record(metrics, None)
            raise Diverged(
                f"training loss {loss:.4g} at step {self.step} (bound train.diverge_loss={self.cfg.diverge_loss})"
            )
        return metrics

    def _evaluate(self) -> dict[str, float]:
        self.model.eval()
        metrics = evaluate(self.model, self.splits.test_x, self.splits.test_y, self.cfg.eval_batch_size)
        for probe in self.probes:
            metrics |= probe.on_eval(self.model, self.step)
        return metrics

    def _record(self, metrics: dict[str, float], bar: tqdm | None) -> None:
        if not metrics:
            return
        self.log.write(self.step, metrics)
        self.tracker.log(metrics, self.step)
        self.last_metrics |= {k: v for k, v in metrics.items() if math.isfinite(v)}
        if bar is not None and "train/loss" in self.last_metrics:
            bar.set_postfix(
                loss=f"{self.last_metrics['train/loss']:.3f}", acc=f"{self.last_metrics.get('test/acc', 0):.3f}"
            )
