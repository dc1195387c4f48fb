"""Normalization layers, selected by name from configs.

This package is the one place where normalizations live. Two kinds exist:

* activation norms (``bn``, ``gn``, ...): modules applied to a feature tensor laid out channels-first,
  ``(N, C, *spatial)`` with 0 to 3 spatial dims (0 for an MLP). Built by :func:`make`; every factory takes the
  channel count first so any norm swaps for any other. ``ln_c``, ``ln``, ``rms`` and ``none`` also take
  ``channels_last=True`` for a Transformer's ``(N, T, C)``.
* weight reparametrizations (``ws``, ``wn``): applied to a conv/linear layer's weight by :func:`reparametrize`.

A *norm spec* joins both with ``+``: ``"gn+ws"`` is GroupNorm after a weight-standardized conv. Models take a
:class:`NormSpec` and never import a concrete norm class. Two calls belong to the runner, not the model:
:func:`set_global_step` once per optimizer step (drives ``brn``'s schedule) and :func:`data_dependent_init` once
before training (``wn``'s init; a no-op for other specs).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from normexp.errors import ConfigError
from normexp.norms.batch import BatchNorm, sync_batch_norm
from normexp.norms.bcn import BatchChannelNorm
from normexp.norms.group import GroupNorm, instance_norm
from normexp.norms.layer import ChannelLayerNorm, layer_norm, layer_norm_chw
from normexp.norms.noisy import NoiseInjection, NoisyBatchNorm
from normexp.norms.renorm import BatchRenorm
from normexp.norms.rms import RMSNorm
from normexp.norms.weight import data_dependent_init, weight_normalization, weight_standardization

__all__ = [
    "NORMS",
    "SHIFT_FREE",
    "WEIGHT_NORMS",
    "NormSpec",
    "data_dependent_init",
    "make",
    "reparametrize",
    "set_global_step",
]


def identity(num_channels: int, channels_last: bool = False) -> nn.Identity:
    """No normalization: the identity, for any layout."""
    return nn.Identity()


NORMS: dict[str, Callable[..., nn.Module]] = {
    "none": identity,
    "bn": BatchNorm,
    "sync_bn": sync_batch_norm,
    "brn": BatchRenorm,
    "noisy_bn": NoisyBatchNorm,
    "noise": NoiseInjection,
    "gn": GroupNorm,
    "in": instance_norm,
    "ln": layer_norm,
    "ln_c": ChannelLayerNorm,
    "ln_chw": layer_norm_chw,
    "rms": RMSNorm,
    "bcn": BatchChannelNorm,
}
"""Activation norms: name -> factory(num_channels, **options)."""

WEIGHT_NORMS: dict[str, Callable[..., nn.Module]] = {
    "ws": weight_standardization,
    "wn": weight_normalization,
}
"""Weight reparametrizations: name -> function(layer, **options) returning the reparametrized layer."""

SHIFT_FREE = {"none", "noise", "rms"}
"""Activation norms without a learned shift; a layer before any other norm drops its bias."""


def _check_options(kind: str, name: str, factory: Callable[..., Any], options: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` when ``factory`` has no parameter for one of ``options``."""
    params = list(inspect.signature(factory).parameters)[1:]  # the first is the channel count / the layer
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise ConfigError(
            f"{kind} {name!r} has no option {', '.join(map(repr, unknown))}.",
            choices=params,
            fix=f"remove the option from norm config, or pick a {kind} that has it",
        )


def make(name: str, num_channels: int, where: str | None = None, **options: Any) -> nn.Module:
    """Build the activation norm ``name`` for ``num_channels`` channels.

    ``where`` names the layer being built (e.g. ``"features.3"``); it prefixes any :class:`ConfigError`, such as
    GN's impossible grouping, so the message says which layer failed.
    """
    try:
        if name not in NORMS:
            raise ConfigError(f"unknown norm {name!r}.", choices=sorted(NORMS), fix="set norm=<one of the choices>")
        _check_options("norm", name, NORMS[name], options)
        return NORMS[name](num_channels, **options)
    except ConfigError as error:
        if where is None:
            raise
        problem = f"layer {where} ({name}, {num_channels} channels): {error.problem}"
        raise ConfigError(problem, error.choices, error.fix) from error


def reparametrize(layer: nn.Module, name: str, **options: Any) -> nn.Module:
    """Apply the weight reparametrization ``name`` to a conv or linear ``layer`` in place and return it."""
    if name not in WEIGHT_NORMS:
        raise ConfigError(
            f"unknown weight reparametrization {name!r}.",
            choices=sorted(WEIGHT_NORMS),
            fix="write the norm as <activation norm>+<weight norm>, e.g. gn+ws",
        )
    _check_options("weight reparametrization", name, WEIGHT_NORMS[name], options)
    return WEIGHT_NORMS[name](layer, **options)


def set_global_step(model: nn.Module, step: int) -> None:
    """Tell every module of ``model`` that has a ``set_global_step`` method (``brn``) the optimizer step.

    The runner calls this once per optimizer step, before the forward pass, and once after loading a checkpoint;
    the step is not part of the state dict.
    """
    for module in model.modules():
        if callable(getattr(module, "set_global_step", None)):
            module.set_global_step(step)


@dataclass(frozen=True)
class NormSpec:
    """A parsed norm spec: one activation norm plus zero or more weight reparametrizations.

    Built from a run's config by :meth:`from_config`. Options are checked against the
    parts' factories at parse time, so a typo fails before any model is built.
    """

    act: str = "none"
    weight: tuple[str, ...] = ()
    act_options: Mapping[str, Any] = field(default_factory=dict)
    weight_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str, **options: Any) -> NormSpec:
        """Parse ``"gn+ws"``-style specs; ``options`` go to the activation norm, or to a weight norm when
        given as a mapping under its name (``ws={"eps": 1e-6}``)."""
        parts = [part.strip() for part in spec.split("+") if part.strip()]
        acts = [p for p in parts if p in NORMS]
        weights = tuple(p for p in parts if p not in NORMS)
        if len(acts) > 1:
            raise ConfigError(
                f"norm spec {spec!r} names {len(acts)} activation norms; at most one is allowed.",
                fix="keep one activation norm and join weight norms with +, e.g. gn+ws",
            )
        for name in weights:
            if name not in WEIGHT_NORMS:
                raise ConfigError(
                    f"unknown norm {name!r} in spec {spec!r}.",
                    choices=sorted(NORMS) + sorted(WEIGHT_NORMS),
                    fix="write the norm as <activation norm>[+<weight norm>], e.g. bn, gn+ws",
                )
        act = acts[0] if acts else "none"
        weight_options = {k: dict(v or {}) for k, v in options.items() if k in weights}
        act_options = {k: v for k, v in options.items() if k not in WEIGHT_NORMS}
        _check_options("norm", act, NORMS[act], act_options)
        for name, name_options in weight_options.items():
            _check_options("weight reparametrization", name, WEIGHT_NORMS[name], name_options)
        return cls(act, weights, act_options, weight_options)

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> NormSpec:
        """The spec of a run's ``norm`` config section: its ``name`` (``none`` when absent) with the other keys as
        options."""
        options = {key: value for key, value in section.items() if key != "name"}
        return cls.parse(section.get("name", "none"), **options)

    @property
    def name(self) -> str:
        """The canonical spec string, e.g. ``gn+ws``; ``wn`` for weight norms alone (not ``none+wn``)."""
        parts = [self.act] if self.act != "none" or not self.weight else []
        return "+".join([*parts, *self.weight])

    @property
    def layer_bias(self) -> bool:
        """Whether the conv/linear layer before the norm should keep its bias (a norm's shift makes it redundant)."""
        return self.act in SHIFT_FREE

    @property
    def needs_data_init(self) -> bool:
        """Whether the runner must call :func:`data_dependent_init` on one batch before training (``wn``)."""
        return "wn" in self.weight

    def make(self, num_channels: int, where: str | None = None, **overrides: Any) -> nn.Module:
        """The activation norm for ``num_channels`` channels; ``where`` names the layer in errors, ``overrides``
        are options the model fixes (e.g. ``channels_last=True`` in a Transformer)."""
        return make(self.act, num_channels, where=where, **{**self.act_options, **overrides})

    def reparametrize(self, layer: nn.Module) -> nn.Module:
        """Apply this spec's weight reparametrizations to ``layer``."""
        for name in self.weight:
            layer = reparametrize(layer, name, **self.weight_options.get(name, {}))
        return layer
