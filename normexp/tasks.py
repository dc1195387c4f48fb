"""What a run learns, selected by ``data.task``: the loss, and whether an accuracy is defined.

* ``classification`` (the default when a data config names no task): cross-entropy over the last dim, so (N, K)
  logits against (N,) classes and (N, T, V) next-token logits against (N, T) tokens both work; accuracy per target.
* ``translation``: cross-entropy over target tokens, padding (:data:`IGNORE`) skipped: losses and accuracies are
  means over the scored tokens only, so a batch's padding does not dilute them.
* ``regression``: the mean squared error over every output element (``F.mse_loss``), no accuracy. Santurkar et
  al. (2018)'s deep linear network fits y = Ax with it.

``data.label_smoothing`` (cross-entropy tasks; Xiong et al.'s translation setup uses 0.1) smooths the targets of the
loss that training minimizes (``train/loss``, fairseq's ``loss``); evaluation reports the plain cross-entropy
(``test/loss``, fairseq's ``nll_loss``), comparable with perplexities and with baselines.

The task is an explicit key of the dataset's config rather than something guessed from the targets' dtype, so a
reader of the config sees which loss a run minimizes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

from normexp.errors import ConfigError

IGNORE = -100
"""Target id that cross-entropy skips (``F.cross_entropy``'s default ``ignore_index``): padding of translation."""


def cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, reduction: str = "mean", label_smoothing: float = 0.0
) -> torch.Tensor:
    """Cross-entropy over the last dim: (N, K) logits for classes, or (N, T, V) for next-token prediction; targets
    equal to :data:`IGNORE` are skipped (``mean`` is over the scored ones)."""
    return F.cross_entropy(
        logits.flatten(0, -2), target.flatten(), reduction=reduction, label_smoothing=label_smoothing
    )


def predicted_class(logits: torch.Tensor) -> torch.Tensor:
    """The class (or token) each row of logits predicts: the argmax over the last dim."""
    return logits.argmax(-1)


def hits(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """How many of ``predicted`` equal ``target``, as a tensor on the device."""
    return (predicted == target).sum()


def element_count(target: torch.Tensor) -> int:
    """Every target element is scored."""
    return target.numel()


def scored_count(target: torch.Tensor) -> torch.Tensor:
    """The targets that are not :data:`IGNORE` (a tensor on the device: counting them does not synchronize)."""
    return (target != IGNORE).sum()


def squared_error(output: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Squared error per output element: its mean (``reduction="mean"``) or sum (``"sum"``)."""
    return F.mse_loss(output, target, reduction=reduction)


@dataclass(frozen=True)
class Task:
    """A loss ``loss(output, target, reduction)`` with ``reduction`` "mean" or "sum" over the scored target
    elements (samples, tokens, or regression outputs), ``predict(output)``, the predictions that :meth:`correct`
    counts (None when accuracy is undefined: regression), ``count(target)``, how many target elements are scored,
    and the label smoothing of the loss that training minimizes (:meth:`training_loss`)."""

    name: str
    loss: Callable[..., torch.Tensor]
    predict: Callable[[torch.Tensor], torch.Tensor] | None
    count: Callable[[torch.Tensor], int | torch.Tensor] = element_count
    label_smoothing: float = 0.0

    def correct(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """How many predictions (samples, or tokens) are right, as a tensor on the device."""
        return hits(self.predict(output), target)

    def training_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The mean loss that training minimizes: :attr:`loss` with the targets smoothed by :attr:`label_smoothing`."""
        if self.label_smoothing:
            return self.loss(output, target, label_smoothing=self.label_smoothing)
        return self.loss(output, target)


CLASSIFICATION = Task("classification", cross_entropy, predicted_class)
TRANSLATION = Task("translation", cross_entropy, predicted_class, scored_count)  # argmax is never IGNORE
REGRESSION = Task("regression", squared_error, None)
TASKS: dict[str, Task] = {task.name: task for task in (CLASSIFICATION, TRANSLATION, REGRESSION)}


def get(name: str) -> Task:
    """The task ``name`` (a :class:`ConfigError` naming the choices when unknown)."""
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}.", choices=sorted(TASKS), fix="set data.task to one of the choices")
    return TASKS[name]


def of(data_cfg: Mapping[str, Any]) -> Task:
    """The task of a run from its data config: ``data.task`` (classification when the key is absent), with
    ``data.label_smoothing`` applied to its cross-entropy."""
    task = get(data_cfg.get("task", CLASSIFICATION.name))
    smoothing = data_cfg.get("label_smoothing", 0.0)
    if not smoothing:
        return task
    if task.loss is not cross_entropy or not 0.0 < smoothing < 1.0:
        raise ConfigError(
            f"data.label_smoothing={smoothing} needs a cross-entropy task and a value in [0, 1); data.task is "
            f"{task.name!r}.",
            fix="set data.label_smoothing=0 (or between 0 and 1 for classification and translation)",
        )
    return replace(task, label_smoothing=smoothing)
