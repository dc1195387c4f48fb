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

from normexp import data, models, optim, probes, tracking
from normexp.config import norm_options
from normexp.norms import NormSpec
from normexp.rundir import MetricsLog, environment, save_config, write_json, SUMMARY_FILE


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


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> dict[str, float]:
    """Mean loss and accuracy over ``(x, y)`` in eval mode, in batches."""
    loss, correct = torch.zeros((), device=x.device), torch.zeros((), device=x.device)
    for start in range(0, len(x), batch_size):
        logits = model(x[start : start + batch_size])
        target = y[start : start + batch_size]
        loss += F.cross_entropy(logits, target, reduction="sum")
        correct += (logits.argmax(1) == target).sum()
    return {"test/loss": loss.item() / len(x), "test/acc": correct.item() / len(x)}


class Diverged(Exception):
    """The training loss became non-finite or exceeded ``train.diverge_loss``."""


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Train the run described by ``cfg`` into ``run_dir`` and return its summary (also in ``summary.json``)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(run_dir, cfg)
    seed_everything(cfg.seed)
    device = select_device(cfg.device)
    splits = data.load(cfg.data, seed=cfg.seed).to(device)
    model = models.build(cfg.model, NormSpec.parse(**norm_options(cfg)), splits.input_shape, splits.num_classes)
    model.to(device)
    optimizer, scheduler = optim.build(model.parameters(), cfg.optim, cfg.schedule, cfg.train.steps)
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
        indices = self.sampler.next()
        x, y = self.splits.train_x[indices], self.splits.train_y[indices]
        next_step = self.step + 1
        measured = {}
        if next_step % self.cfg.eval_every == 0:
            for probe in self.probes:
                measured |= probe.on_batch(self.model, x, y, next_step)
        self.model.train()
        logits = self.model(x)
        loss = F.cross_entropy(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.step = next_step
        with torch.no_grad():
            self._loss_sum += loss.detach() * len(y)
            self._correct += (logits.argmax(1) == y).sum()
        self._seen += len(y)
        if measured:
            self._record(measured, None)

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
            raise Diverged(f"training loss {loss:.4g} at step {self.step} (bound train.diverge_loss={self.cfg.diverge_loss})")
        return metrics

    def _evaluate(self) -> dict[str, float]:
        self.model.eval()
        metrics = evaluate(self.model, self.splits.test_x, self.splits.test_y, self.cfg.eval_batch_size)
        for probe in self.probes:
            metrics |= probe.on_eval(self.model, self.step)
        return metrics

    def _record(self, metrics: dict[str, float], bar: tqdm | None) -> None:
        self.log.write(self.step, metrics)
        self.tracker.log(metrics, self.step)
        self.last_metrics |= {k: v for k, v in metrics.items() if math.isfinite(v)}
        if bar is not None and "train/loss" in self.last_metrics:
            bar.set_postfix(
                loss=f"{self.last_metrics['train/loss']:.3f}", acc=f"{self.last_metrics.get('test/acc', 0):.3f}"
            )
