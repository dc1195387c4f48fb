"""Models with a norm slot, selected by ``model.name``.

Every builder takes the model config, a :class:`~normexp.norms.NormSpec`, the input shape and the number of
classes, and never imports a concrete norm class: swapping ``norm=`` swaps every norm in the net.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from normexp.errors import ConfigError
from normexp.models.deep_linear import build_deep_linear
from normexp.models.mlp import build_mlp
from normexp.models.noshort import build_li_resnet
from normexp.models.resnet import build_resnet
from normexp.models.transformer import build_transformer_lm, build_transformer_seq2seq
from normexp.models.vgg import build_vgg
from normexp.norms import NormSpec

MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": build_mlp,
    "resnet": build_resnet,
    "transformer_lm": build_transformer_lm,
    "transformer_seq2seq": build_transformer_seq2seq,
    "santurkar_vgg": build_vgg,
    "deep_linear": build_deep_linear,
    "li_resnet": build_li_resnet,
}
"""name -> builder(cfg, norm, input_shape, num_classes) returning an ``nn.Module``."""


def build(cfg: Any, norm: NormSpec, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Build the model ``cfg.name`` with ``norm`` in its norm slots."""
    if cfg.name not in MODELS:
        raise ConfigError(f"unknown model {cfg.name!r}.", choices=sorted(MODELS), fix="set model=<one of the choices>")
    return MODELS[cfg.name](cfg, norm, input_shape, num_classes)


def from_config(cfg: Any, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The model of a run's config for its data: ``cfg.model`` with the norms of ``cfg.norm`` in its slots."""
    return build(cfg.model, NormSpec.from_config(cfg.norm), input_shape, num_classes)
