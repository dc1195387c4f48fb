"""Santurkar et al. (2018, arXiv 1805.11604)'s "VGG-like" CIFAR-10 net (``santurkar_vgg``), with a norm slot.

The paper does not give the exact configuration; the usual reading is VGG-11 (configuration A): 3×3 convs (padding
1) -> norm -> ReLU, 2×2 max-pools, and one linear classifier on the flattened features (the common CIFAR
adaptation). ``channels`` lists the convs' widths with ``M`` for a pool, so the CPU scale runs a small net of the
same form on Fashion-MNIST; ``width_factor`` multiplies every conv's width (rounded, at least 1), so a width map needs
no second list. ``init`` picks the weights' init, which the paper does not give: ``torch`` keeps torch's
default, ``he`` is the He-normal fan-out init of torchvision's VGG and the common CIFAR VGG code (convs; the
classifier N(0, 0.01²); biases 0), under which a VGG without norm trains from scratch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from normexp.errors import ConfigError
from normexp.models.resnet import he_conv
from normexp.norms import NormSpec

POOL = "M"
"""Marks a 2×2 max-pool in :class:`VGG`'s ``channels``."""
INITS = ("torch", "he")
"""The weight inits of :class:`VGG` (``model.init``)."""


class ConvBlock(nn.Sequential):
    """``conv 3×3 -> norm -> ReLU``; the conv keeps its bias only when the norm has no shift of its own."""

    def __init__(self, in_channels: int, out_channels: int, norm: NormSpec, where: str, init: str = "torch") -> None:
        super().__init__()
        if init == "he":
            self.conv = he_conv(in_channels, out_channels, 3, norm)
        else:
            self.conv = norm.reparametrize(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=norm.layer_bias))
        self.norm = norm.make(out_channels, where=f"{where}.norm")
        self.act = nn.ReLU()


class VGG(nn.Module):
    """Conv blocks and max-pools as listed in ``channels``, then a linear classifier on the flattened features."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        channels: Sequence[int | str],
        num_classes: int,
        norm: NormSpec,
        init: str = "torch",
    ) -> None:
        super().__init__()
        in_channels, height, width = input_shape
        layers: list[nn.Module] = []
        for i, item in enumerate(channels):
            if item == POOL:
                layers.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            else:
                layers.append(ConvBlock(in_channels, int(item), norm, where=f"features.{i}", init=init))
                in_channels = int(item)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(in_channels * height * width, num_classes)
        if init == "he":
            nn.init.normal_(self.classifier.weight, 0.0, 0.01)
            nn.init.zeros_(self.classifier.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits for images (N, C, H, W)."""
        return self.classifier(self.features(x).flatten(1))


def build_vgg(cfg: Any, norm: NormSpec, input_shape: tuple[int, ...], num_classes: int) -> VGG:
    """The VGG of ``configs/model/santurkar_vgg.yaml``."""
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
    init = cfg.get("init", "torch")
    if init not in INITS:
        raise ConfigError(f"model.init={init!r} is not a VGG init; valid: {', '.join(INITS)}.", fix="model.init=he")
    return VGG(input_shape, scaled(list(cfg.channels), cfg.get("width_factor")), num_classes, norm, init)


def scaled(channels: list[int | str], factor: float | None) -> list[int | str]:
    """``channels`` with every width multiplied by ``factor`` (rounded, at least 1); as listed when it is None."""
    if factor is None:
        return channels
    if not isinstance(factor, (int, float)) or isinstance(factor, bool) or factor <= 0:
        raise ConfigError(
            f"model.width_factor={factor!r} must be a positive number (or null: the widths as listed).",
            fix="model.width_factor=0.5 halves every conv's width",
        )
    return [item if item == POOL else max(1, round(int(item) * factor)) for item in channels]
