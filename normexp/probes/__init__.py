"""Probes: measurements taken during training, switched on from config (``probes: {<name>: {options}}``).

A probe is measurement only: it must not change the training trajectory (weights, norm buffers, RNG streams).
The runner calls two hooks, each returning ``{metric: value}`` to record at that step:

* ``on_batch(model, x, y, step, lr)`` with every training batch, before the update (a probe measuring less
  often checks ``step``); a probe that needs the run's loss takes a ``task`` argument and is handed the run's
  :class:`~normexp.tasks.Task` (``data.task``);
* ``on_eval(model, step)`` at each evaluation step, after the test-set evaluation.

The loss surfaces of a finished run are no probe (they are computed from run folders after training, by
:mod:`normexp.landscapes`), but their settings are configured the same way, ``probes: {surface: {...}}``, and
validated when the run starts: :class:`SurfaceSettingsProbe` holds them and the loop never calls it
(``Probe.during_training``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from normexp.data.splits import Splits
from normexp.errors import ConfigError
from normexp.grids import SurfaceSettings
from normexp.probes.activations import ActivationStats, InputPercentiles
from normexp.probes.base import Probe
from normexp.probes.baselines import UnigramLoss
from normexp.probes.gradients import GradientNorms
from normexp.probes.ics import ICSProbe
from normexp.probes.landscape import LineSearchProbe
from normexp.probes.translation import Bleu
from normexp.tasks import Task


class SurfaceSettingsProbe(Probe):
    """The settings of the run's loss surfaces (:class:`~normexp.grids.SurfaceSettings`), computed after training
    from its final checkpoint (:mod:`normexp.landscapes`); during training it measures nothing and is left out."""

    during_training = False

    def __init__(self, model: nn.Module, splits: Splits, **options: Any) -> None:
        self.settings = SurfaceSettings.parse(options)


PROBES: dict[str, Callable[..., Probe]] = {
    "input_percentiles": InputPercentiles,
    "unigram_loss": UnigramLoss,
    "grad_norms": GradientNorms,
    "bleu": Bleu,
    "line_search": LineSearchProbe,
    "ics": ICSProbe,
    "activation_stats": ActivationStats,
    "surface": SurfaceSettingsProbe,
}
"""name -> factory(model=, splits=, [task=,] **options)."""

__all__ = ["PROBES", "Probe", "build"]


def build(cfg: dict[str, Any], model: nn.Module, splits: Splits, task: Task) -> list[Probe]:
    """The probes named in ``cfg`` (a mapping name -> options) that measure during training, attached to ``model``
    of a run with ``task`` (handed to the probes that take one); every probe named is built, so its options are
    checked."""
    probes = []
    for name, options in cfg.items():
        if name not in PROBES:
            raise ConfigError(f"unknown probe {name!r}.", choices=sorted(PROBES), fix="fix the key under probes:")
        factory = PROBES[name]
        run = {"task": task} if "task" in inspect.signature(factory).parameters else {}
        probes.append(factory(model=model, splits=splits, **run, **(options or {})))
    return [probe for probe in probes if probe.during_training]
