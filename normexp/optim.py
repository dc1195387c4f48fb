"""Optimizers and learning-rate schedules, selected by ``optim.name`` and ``schedule.name``.

A schedule is a function ``step -> multiplier of optim.lr`` (wrapped in ``LambdaLR``), so every schedule composes
with a linear warm-up: ``warmup_steps: 0`` means none.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR

OPTIMIZERS: dict[str, Callable[[Iterable[torch.nn.Parameter], Any], torch.optim.Optimizer]] = {
    "sgd": lambda params, cfg: torch.optim.SGD(
        params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
    ),
    "adam": lambda params, cfg: (torch.optim.AdamW if cfg.decoupled_weight_decay else torch.optim.Adam)(
        params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay
    ),
}


def _constant(cfg: Any, total_steps: int) -> Callable[[int], float]:
    return lambda step: 1.0


def _step_decay(cfg: Any, total_steps: int) -> Callable[[int], float]:
    milestones = sorted(cfg.milestones)
    return lambda step: cfg.gamma ** sum(step >= m for m in milestones)


def _cosine(cfg: Any, total_steps: int) -> Callable[[int], float]:
    span = max(total_steps - cfg.warmup_steps, 1)
    return lambda step: (
        cfg.min_factor
        + (1 - cfg.min_factor) * 0.5 * (1 + math.cos(math.pi * min(max(step - cfg.warmup_steps, 0) / span, 1.0)))
    )


def _inverse_sqrt(cfg: Any, total_steps: int) -> Callable[[int], float]:
    # Vaswani et al. 2017, eq. 3, as Xiong et al. 2020 use it: with warm-up, the t-th update (t = step + 1) runs at
    # lr_max * min(t / warmup, sqrt(warmup / t)), peaking at t = warmup. Without warm-up, lr_max / sqrt(t).
    # decay_start moves the start of the decay off the warm-up's end: runs that differ in warm-up alone then share
    # the same lr after it (lr_max * sqrt(decay_start / t) past decay_start).
    pivot = max(cfg.get("decay_start") or cfg.warmup_steps, 1)
    return lambda step: math.sqrt(pivot / max(step + 1, pivot))


SCHEDULES: dict[str, Callable[[Any, int], Callable[[int], float]]] = {
    "constant": _constant,
    "step": _step_decay,
    "cosine": _cosine,
    "inverse_sqrt": _inverse_sqrt,
}
"""name -> (schedule config, total steps) -> multiplier of optim.lr at a step (before warm-up)."""


def lr_factor(cfg: Any, total_steps: int) -> Callable[[int], float]:
    """The multiplier of ``optim.lr`` at each step: linear warm-up from 1/warmup to 1, then the schedule.

    The t-th update (t = step + 1) gets min(1, t / warmup): Xiong et al. 2020's lr(t) = t / T_warmup · lr_max.
    """
    schedule = SCHEDULES[cfg.name](cfg, total_steps)
    warmup = cfg.warmup_steps
    return lambda step: min(1.0, (step + 1) / warmup) * schedule(step) if warmup else schedule(step)


def scaled_lr(cfg: Any, batch_size: int) -> float:
    """``optim.lr`` under the config's scaling rule: ``linear`` multiplies it by batch_size / ``optim.base_batch``
    (Goyal et al. 2017; Wu & He 2018 use lr = 0.1·N/32), ``none`` keeps it."""
    return cfg.lr * batch_size / cfg.base_batch if cfg.lr_scaling == "linear" else cfg.lr


def build(
    params: Iterable[torch.nn.Parameter], optim_cfg: Any, schedule_cfg: Any, total_steps: int, lr: float
) -> tuple[torch.optim.Optimizer, LambdaLR]:
    """The optimizer at peak learning rate ``lr`` and its per-step lr scheduler."""
    optimizer = OPTIMIZERS[optim_cfg.name](params, optim_cfg)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return optimizer, LambdaLR(optimizer, lr_factor(schedule_cfg, total_steps))
