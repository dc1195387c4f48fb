"""Putting a run together: one function, :func:`assemble`, builds everything a run trains from its config.

In this order, so a seed gives the same run wherever it is assembled (the runner, a fused cell's members, the
benchmark's bare loop, a landscape of a finished run): the process settings (CPU threads, deterministic kernels),
the seed, the device and fast path, the data (resident on the device, in the fast path's memory format), the
model with its norms, the data-dependent initialization, the optimizer at its (scaled) learning rate with its
schedule, the training batches, the probes, then compilation and CUDA-graph capture.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, replace

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from normexp import accel, data, models, norms, optim, probes, tasks
from normexp.config import TrainConfig
from normexp.data.splits import Splits
from normexp.training.batches import Batches, LoaderBatches

SPLIT_TENSORS = ("train_x", "train_y", "test_x", "test_y")


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


def set_process(cfg: DictConfig) -> None:
    """The process settings of ``cfg``: torch's CPU threads (``threads``) and deterministic kernels."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    set_deterministic(cfg.deterministic)


class DeviceData:
    """Datasets moved to the device once: runs assembled with the same :class:`DeviceData` whose data are equal
    (the seeds of a fused cell on real data, which do not depend on the seed) share one copy there."""

    def __init__(self) -> None:
        self._moved: list[tuple[Splits, Splits]] = []

    def to(self, splits: Splits, device: torch.device, fmt: torch.memory_format) -> Splits:
        """``splits`` on ``device``, images in ``fmt``: the copy made before for equal data, else a new one."""
        for host, moved in self._moved:
            if all(torch.equal(getattr(host, name), getattr(splits, name)) for name in SPLIT_TENSORS):
                return moved
        moved = splits.to(device)
        moved = replace(moved, **{k: accel.to_memory_format(getattr(moved, k), fmt) for k in ("train_x", "test_x")})
        self._moved.append((splits, moved))
        return moved


@dataclass
class Run:
    """Everything a run trains, assembled from its config by :func:`assemble`."""

    cfg: DictConfig
    train: TrainConfig  # cfg.train as a plain object: a loop reads it every step (a DictConfig lookup costs ~20 µs)
    device: torch.device
    fast: accel.FastPath
    splits: Splits  # on the device
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    batches: Batches | LoaderBatches
    task: tasks.Task
    probes: list[probes.Probe]


def assemble(cfg: DictConfig, shared: DeviceData | None = None, loader: bool = False) -> Run:
    """The run ``cfg`` describes, ready to train (see the module docstring for the order); ``shared`` lets runs
    share their data on the device; ``loader`` draws batches through DataLoader workers (:class:`LoaderBatches`,
    for the benchmark) instead of from resident data."""
    set_process(cfg)
    seed_everything(cfg.seed)
    device = select_device(cfg.device)
    fast = accel.FastPath.parse(cfg.fast_path)
    fast.check(device)
    fmt = accel.memory_format(fast)
    train = OmegaConf.to_object(cfg.train)
    if isinstance(train, dict):  # a config loaded from a run folder is resolved but untyped
        train = TrainConfig(**train)
    splits = (shared or DeviceData()).to(data.load(cfg.data, seed=cfg.seed), device, fmt)
    model = models.from_config(cfg, splits.input_shape, splits.num_classes)
    model.to(device=device, memory_format=fmt)
    norms.data_dependent_init(model, splits.train_x[: train.batch_size])
    lr = optim.scaled_lr(cfg.optim, train.batch_size * train.accumulate)
    optimizer, scheduler = optim.build(model.parameters(), cfg.optim, cfg.schedule, train.steps, lr)
    if loader:
        batches = LoaderBatches(splits, train.batch_size, cfg.seed, device, fmt)
    else:
        batches = Batches(splits, train.batch_size, cfg.seed, fmt)
    task = tasks.of(cfg.data)
    run_probes = probes.build(cfg.probes, model, splits, task)
    if fast.compile:
        accel.compile_model(model)
    if fast.cuda_graphs:  # captured for the batches a step forwards: norm_batch samples at a time
        model = accel.graph_training_step(model, splits.train_x[: train.norm_batch or train.batch_size], fast.bf16)
    return Run(cfg, train, device, fast, splits, model, optimizer, scheduler, batches, task, run_probes)
