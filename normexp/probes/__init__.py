"""Probes: measurements taken during training, switched on from config (``probes: {<name>: {options}}``).

A probe is measurement only: it must not change the training trajectory (weights, norm buffers, RNG streams).
The runner calls two hooks, each returning ``{metric: value}`` to record at that step:

* ``on_batch(model, x, y, step, lr)`` with every training batch, before the update (a probe measuring less
  often checks ``step``); ``normexp.tasks`` gives the training loss (``data.task``);
* ``on_eval(model, step)`` at each evaluation step, after the test-set evaluation.

A probe measured after training (``surface``: loss surfaces from the final checkpoint) is configured the same way
and validated when the run starts, but the loop never calls it (``Probe.during_training``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from normexp.data.splits import Splits
from normexp.errors import ConfigError
from normexp.probes.activations import ActivationStats, InputPercentiles
from normexp.probes.base import Probe
from normexp.probes.baselines import UnigramLoss
from normexp.probes.gradients import GradientNorms
from normexp.probes.ics import ICSProbe
from normexp.probes.landscape import LineSearchProbe
from normexp.probes.surface import SurfaceProbe
from normexp.probes.translation import Bleu

PROBES: dict[str, Callable[..., Probe]] = {
    "input_percentiles": InputPercentiles,
    "unigram_loss": UnigramLoss,
    "grad_norms": GradientNorms,
    "bleu": Bleu,
    "line_search": LineSearchProbe,
    "ics": ICSProbe,
    "activation_stats": ActivationStats,
    "surface": SurfaceProbe,
}
"""name -> factory(model=, splits=, **options)."""

__all__ = ["PROBES", "Probe", "build"]


def build(cfg: dict[str, Any], model: nn.Module, splits: Splits) -> list[Probe]:
    """The probes named in ``cfg`` (a mapping name -> options) that measure during training, attached to ``model``;
    every probe named is built, so its options are checked."""
    probes = []
    for name, options in cfg.items():
        if name not in PROBES:
            raise ConfigError(f"unknown probe {name!r}.", choices=sorted(PROBES), fix="fix the key under probes:")
        probes.append(PROBES[name](model=model, splits=splits, **(options or {})))
    return [probe for probe in probes if probe.during_training]
