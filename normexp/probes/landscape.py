"""Line search along the gradient: the loss-landscape metrics of Santurkar et al. (2018, arXiv 1805.11604, §3.1,
Fig. 4), as a probe (``probes: {line_search: {...}}``).

At a probed step, with weights w and the gradient g = ∇L(w) of the training batch, the probe evaluates the loss and
its gradient at w − ηg for each step size η of a grid (the paper: η ∈ [0.5, 4] × lr for the VGG, [0.01, 30] × lr for
the deep linear network; how many points it used is not said) and records

* the loss landscape: the range of L(w − ηg) over η (``landscape/loss_min``, ``loss_max``, ``loss_range``);
* gradient predictiveness: the range of ‖∇L(w − ηg) − ∇L(w)‖₂ over η (``landscape/gpred_min``, ``gpred_max``,
  ``gpred_range``);
* effective β-smoothness: max over η of ‖∇L(w − ηg) − ∇L(w)‖₂ / ‖ηg‖₂ (``landscape/beta``);
* ``landscape/grad_norm``: ‖g‖₂.

"Range" is max − min over the grid; the paper draws the [min, max] interval as a band, the ``_min``/``_max``
metrics keep it. Everything runs on the probed batch in training mode (BN with batch statistics, the loss that
training minimizes), through :class:`~normexp.probes.functional.FunctionalModel`, so training is not touched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from normexp import tasks
from normexp.data.splits import Splits
from normexp.errors import ConfigError
from normexp.probes.functional import FunctionalModel, PeriodicProbe, axpy, flat, norm, untouched

SPACINGS = ("linear", "log")


def step_sizes(lr: float, eta_min: float, eta_max: float, points: int, spacing: str) -> np.ndarray:
    """``points`` step sizes from ``eta_min``·lr to ``eta_max``·lr, evenly spaced on a linear or log scale."""
    space = np.linspace if spacing == "linear" else np.geomspace
    return lr * space(eta_min, eta_max, points)


@dataclass(frozen=True)
class LineSearch:
    """Along w − ηg for each η of ``etas``: the loss, and ‖∇L(w − ηg) − ∇L(w)‖₂; ``grad_norm`` is ‖g‖₂."""

    etas: np.ndarray
    losses: np.ndarray
    grad_changes: np.ndarray
    grad_norm: float

    @property
    def beta(self) -> float:
        """Effective β-smoothness: the largest gradient change per unit of distance moved, ‖Δ∇L‖ / ‖ηg‖."""
        return float(np.max(self.grad_changes / (self.etas * self.grad_norm)))

    def metrics(self) -> dict[str, float]:
        """The probe's record for one step."""
        losses, changes = self.losses, self.grad_changes
        return {
            "landscape/loss_min": float(losses.min()),
            "landscape/loss_max": float(losses.max()),
            "landscape/loss_range": float(losses.max() - losses.min()),
            "landscape/gpred_min": float(changes.min()),
            "landscape/gpred_max": float(changes.max()),
            "landscape/gpred_range": float(changes.max() - changes.min()),
            "landscape/beta": self.beta,
            "landscape/grad_norm": self.grad_norm,
        }


def line_search(function: FunctionalModel, etas: np.ndarray) -> LineSearch:
    """Evaluate ``function`` along its negative gradient at the step sizes ``etas``."""
    _, grad = function.loss_and_grad(function.params)
    losses, changes = [], []
    for eta in etas:
        loss, moved_grad = function.loss_and_grad(axpy(-float(eta), grad, function.params))
        losses.append(loss)
        changes.append((flat(moved_grad) - flat(grad)).norm().item())
    return LineSearch(np.asarray(etas, dtype=float), np.array(losses), np.array(changes), norm(grad))


class LineSearchProbe(PeriodicProbe):
    """Santurkar et al. (2018)'s loss landscape, gradient predictiveness and effective β every ``every`` steps.

    Step sizes: ``points`` values from ``eta_min``·lr to ``eta_max``·lr (lr: the step's learning rate),
    ``spacing`` linear or log; the loss is that of the run's ``task`` (``data.task``, see :mod:`normexp.tasks`).
    The probe forwards the whole batch at once: its normalization batch is the training batch.
    """

    def __init__(
        self,
        model: nn.Module,
        splits: Splits,
        task: tasks.Task,
        every: int = 100,
        eta_min: float = 0.5,
        eta_max: float = 4.0,
        points: int = 8,
        spacing: str = "linear",
    ) -> None:
        super().__init__(every)
        if not (0 < eta_min <= eta_max and points >= 1 and spacing in SPACINGS):
            raise ConfigError(
                f"probe line_search: need 0 < eta_min <= eta_max, points >= 1 and spacing in {SPACINGS}; got "
                f"eta_min={eta_min}, eta_max={eta_max}, points={points}, spacing={spacing!r}.",
                fix="e.g. eta_min: 0.5, eta_max: 4, points: 8, spacing: linear",
            )
        self.eta_min, self.eta_max, self.points, self.spacing = eta_min, eta_max, points, spacing
        self.loss = task.loss

    def on_batch(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: int, lr: float) -> dict[str, float]:
        """The line-search metrics on this batch, before the update (on due steps)."""
        if not self.due(step):
            return {}
        etas = step_sizes(lr, self.eta_min, self.eta_max, self.points, self.spacing)
        with untouched(model):
            model.train()
            return line_search(FunctionalModel(model, x, y, self.loss), etas).metrics()
