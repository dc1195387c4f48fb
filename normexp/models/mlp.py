"""The fully connected net of Ioffe & Szegedy (2015, Fig. 1): Linear -> norm -> activation per hidden layer.

784-100-100-100-10 with sigmoids in the paper. The norm acts on Wu, before the nonlinearity; a norm with a shift
of its own makes the linear layer's bias redundant, so the bias is dropped (``NormSpec.layer_bias``).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
from torch import nn

from normexp.errors import ConfigError
from normexp.norms import NormSpec

ACTIVATIONS: dict[str, type[nn.Module]] = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh}


class HiddenLayer(nn.Sequential):
    """``linear -> norm -> act``; the norm's output is the activation's input that Fig. 1b/c tracks."""

    def __init__(
        self, fan_in: int, width: int, norm: NormSpec, activation: type[nn.Module], init_std: float, where: str
    ) -> None:
        super().__init__()
        self.linear = norm.reparametrize(gaussian_linear(fan_in, width, init_std, bias=norm.layer_bias))
        self.norm = norm.make(width, where=f"{where}.norm")
        self.act = activation()


class MLP(nn.Module):
    """Flatten, hidden layers (:class:`HiddenLayer`), and a linear classifier."""

    def __init__(
        self, input_size: int, hidden: list[int], num_classes: int, norm: NormSpec, activation: str, init_std: float
    ) -> None:
        super().__init__()
        widths = [input_size, *hidden]
        self.hidden = nn.Sequential(
            *(
                HiddenLayer(a, b, norm, ACTIVATIONS[activation], init_std, where=f"hidden.{i}")
                for i, (a, b) in enumerate(itertools.pairwise(widths))
            )
        )
        self.classifier = gaussian_linear(widths[-1], num_classes, init_std, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits for a batch of inputs of any shape (flattened per sample)."""
        return self.classifier(self.hidden(x.flatten(1)))


def gaussian_linear(fan_in: int, fan_out: int, std: float, bias: bool) -> nn.Linear:
    """A linear layer with weights ~ N(0, std²) and zero bias (initialized before any reparametrization)."""
    layer = nn.Linear(fan_in, fan_out, bias=bias)
    nn.init.normal_(layer.weight, std=std)
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


def build_mlp(cfg: Any, norm: NormSpec, input_shape: tuple[int, ...], num_classes: int) -> MLP:
    """The MLP of ``normexp/configs/model/mlp.yaml``."""
    if cfg.activation not in ACTIVATIONS:
        raise ConfigError(
            f"unknown model.activation {cfg.activation!r}.", choices=sorted(ACTIVATIONS), fix="set model.activation"
        )
    return MLP(math.prod(input_shape), list(cfg.hidden), num_classes, norm, cfg.activation, cfg.init_std)
