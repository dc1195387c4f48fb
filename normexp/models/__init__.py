"""Models with a norm slot, selected by ``model.name``.

Every builder takes the model config, a :class:`~normexp.norms.NormSpec`, the input shape and the number of
classes, and never imports a concrete norm class: swapping ``norm=`` swaps every norm in the net.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from normexp.errors import ConfigError
from normexp.models.mlp import build_mlp
from normexp.norms import NormSpec

MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": build_mlp,
}
"""name -> builder(cfg, norm, input_shape, num_classes) returning an ``nn.Module``."""


def build(cfg: Any, norm: NormSpec, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Build the model ``cfg.name`` with ``norm`` in its norm slots."""
    if cfg.name not in MODELS:
        raise ConfigError(f"unknown model {cfg.name!r}.", choices=sorted(MODELS), fix="set model=<one of the choices>")
    return MODELS[cfg.name](cfg, norm, input_shape, num_classes)
