"""What a run learns, selected by ``data.task``: the loss, and whether an accuracy is defined.

* ``classification`` (the default when a data config names no task): cross-entropy over the last dim, so (N, K)
  logits against (N,) classes and (N, T, V) next-token logits against (N, T) tokens both work; accuracy per target.
* ``regression``: the mean squared error over every output element (``F.mse_loss``), no accuracy. Santurkar et
  al. (2018)'s deep linear network fits y = Ax with it.

The task is an explicit key of the dataset's config rather than something guessed from the targets' dtype, so a
reader of the config sees which loss a run minimizes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from normexp.errors import ConfigError


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy over the last dim: (N, K) logits for classes, or (N, T, V) for next-token prediction."""
    return F.cross_entropy(logits.flatten(0, -2), target.flatten(), reduction=reduction)


def correct_count(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """How many predictions (samples, or tokens) are right, as a tensor on the device."""
    return (logits.argmax(-1) == target).sum()


def squared_error(output: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Squared error per output element: its mean (``reduction="mean"``) or sum (``"sum"``)."""
    return F.mse_loss(output, target, reduction=reduction)


@dataclass(frozen=True)
class Task:
    """A loss ``loss(output, target, reduction)`` with ``reduction`` "mean" or "sum" over the targets' elements
    (samples, tokens, or regression outputs), and ``correct(output, target)`` counting right predictions, or
    None when accuracy is undefined (regression)."""

    name: str
    loss: Callable[..., torch.Tensor]
    correct: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None


CLASSIFICATION = Task("classification", cross_entropy, correct_count)
REGRESSION = Task("regression", squared_error, None)
TASKS: dict[str, Task] = {task.name: task for task in (CLASSIFICATION, REGRESSION)}


def get(name: str) -> Task:
    """The task ``name`` (a :class:`ConfigError` naming the choices when unknown)."""
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}.", choices=sorted(TASKS), fix="set data.task to one of the choices")
    return TASKS[name]


def of(data_cfg: Mapping[str, Any]) -> Task:
    """The task of a run from its data config: ``data.task``, classification when the key is absent."""
    return get(data_cfg.get("task", CLASSIFICATION.name))
