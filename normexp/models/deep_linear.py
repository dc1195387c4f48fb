"""Santurkar et al. (2018, arXiv 1805.11604)'s deep linear network (``deep_linear``), with a norm slot.

``depth`` bias-free linear layers of ``width`` units, the norm after every layer but the last (25 layers of 10×10 in
the paper). Without a norm it computes y = W_L···W_1 x. The paper gives no init; ``init_std: null`` draws
W ~ N(0, 1/fan_in), which keeps E‖Wx‖² = ‖x‖² through depth.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
from torch import nn

from normexp.errors import ConfigError
from normexp.norms import NormSpec


class LinearNormLayer(nn.Sequential):
    """``linear (no bias) -> norm``: one hidden layer of a deep linear network."""

    def __init__(
        self, fan_in: int, width: int, norm: NormSpec, init_std: float | None, init_gain: float, where: str
    ) -> None:
        super().__init__()
        self.linear = norm.reparametrize(_normal_linear(fan_in, width, init_std, init_gain))
        self.norm = norm.make(width, where=f"{where}.norm")


class DeepLinearNet(nn.Module):
    """``depth`` bias-free linear layers, a norm after each but the last, no nonlinearity."""

    def __init__(
        self,
        fan_in: int,
        width: int,
        depth: int,
        outputs: int,
        norm: NormSpec,
        init_std: float | None,
        init_gain: float = 1.0,
    ) -> None:
        super().__init__()
        widths = [fan_in] + [width] * (depth - 1)
        self.hidden = nn.Sequential(
            *(
                LinearNormLayer(a, b, norm, init_std, init_gain, where=f"hidden.{i}")
                for i, (a, b) in enumerate(itertools.pairwise(widths))
            )
        )
        self.output = _normal_linear(widths[-1], outputs, init_std, init_gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs for a batch of inputs of any shape (flattened per sample)."""
        return self.output(self.hidden(x.flatten(1)))


def _normal_linear(fan_in: int, fan_out: int, std: float | None, gain: float = 1.0) -> nn.Linear:
    """A bias-free linear layer with weights ~ N(0, std²); ``std=None``: N(0, gain²/fan_in)."""
    layer = nn.Linear(fan_in, fan_out, bias=False)
    nn.init.normal_(layer.weight, std=gain / math.sqrt(fan_in) if std is None else std)
    return layer


def build_deep_linear(cfg: Any, norm: NormSpec, input_shape: tuple[int, ...], num_classes: int) -> DeepLinearNet:
    """The deep linear network of ``configs/model/deep_linear.yaml``; ``num_classes`` is the output size."""
    if cfg.depth < 1:
        raise ConfigError(f"model.depth must be at least 1, got {cfg.depth}.", fix="set model.depth=25")
    return DeepLinearNet(math.prod(input_shape), cfg.width, cfg.depth, num_classes, norm, cfg.init_std, cfg.init_gain)
