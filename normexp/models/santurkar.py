"""The two nets of Santurkar et al. (2018, arXiv 1805.11604), each with a norm slot.

* :class:`VGG` (``santurkar_vgg``): the paper's "VGG-like" CIFAR-10 net. The paper does not give the exact
  configuration; the usual reading is VGG-11 (configuration A): 3×3 convs (padding 1) -> norm -> ReLU, 2×2
  max-pools, and one linear classifier on the flattened features (the common CIFAR adaptation). ``channels``
  lists the convs' widths with ``M`` for a pool, so the CPU scale runs a small net of the same form on
  Fashion-MNIST. Weights keep torch's default init, as the common CIFAR VGG code does.
* :class:`DeepLinearNet` (``deep_linear``): ``depth`` bias-free linear layers of ``width`` units, the norm after
  every layer but the last (25 layers of 10×10 in the paper). Without a norm it computes y = W_L···W_1 x. The
  paper gives no init; ``init_std: null`` draws W ~ N(0, 1/fan_in), which keeps E‖Wx‖² = ‖x‖² through depth.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from normexp.errors import ConfigError
from normexp.norms import NormSpec

POOL = "M"
"""Marks a 2×2 max-pool in :class:`VGG`'s ``channels``."""


class ConvBlock(nn.Sequential):
    """``conv 3×3 -> norm -> ReLU``; the conv keeps its bias only when the norm has no shift of its own."""

    def __init__(self, in_channels: int, out_channels: int, norm: NormSpec, where: str) -> None:
        super().__init__()
        conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=norm.layer_bias)
        self.conv = norm.reparametrize(conv)
        self.norm = norm.make(out_channels, where=f"{where}.norm")
        self.act = nn.ReLU()


class VGG(nn.Module):
    """Conv blocks and max-pools as listed in ``channels``, then a linear classifier on the flattened features."""

    def __init__(
        self, input_shape: tuple[int, ...], channels: Sequence[int | str], num_classes: int, norm: NormSpec
    ) -> None:
        super().__init__()
        in_channels, height, width = input_shape
        layers: list[nn.Module] = []
        for i, item in enumerate(channels):
            if item == POOL:
                layers.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            else:
                layers.append(ConvBlock(in_channels, int(item), norm, where=f"features.{i}"))
                in_channels = int(item)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(in_channels * height * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits for images (N, C, H, W)."""
        return self.classifier(self.features(x).flatten(1))


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


def build_vgg(cfg: Any, norm: NormSpec, input_shape: tuple[int, ...], num_classes: int) -> VGG:
    """The VGG of ``normexp/configs/model/santurkar_vgg.yaml``."""
    if len(input_shape) != 3:
        raise ConfigError(
            f"santurkar_vgg needs images (C, H, W), got input shape {input_shape}.", fix="pick an image dataset"
        )
    unknown = [item for item in cfg.channels if item != POOL and not isinstance(item, int)]
    if unknown:
        raise ConfigError(
            f"model.channels holds {unknown}: widths must be integers, or {POOL!r} for a max-pool.",
            fix="write the channels as e.g. [64, M, 128, M]",
        )
    return VGG(input_shape, list(cfg.channels), num_classes, norm)


def build_deep_linear(cfg: Any, norm: NormSpec, input_shape: tuple[int, ...], num_classes: int) -> DeepLinearNet:
    """The deep linear network of ``normexp/configs/model/deep_linear.yaml``; ``num_classes`` is the output size."""
    if cfg.depth < 1:
        raise ConfigError(f"model.depth must be at least 1, got {cfg.depth}.", fix="set model.depth=25")
    return DeepLinearNet(math.prod(input_shape), cfg.width, cfg.depth, num_classes, norm, cfg.init_std, cfg.init_gain)
