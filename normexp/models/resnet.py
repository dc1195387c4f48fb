"""CIFAR ResNets with a norm slot after every conv: He et al. 2016's ResNet-20/56 and the common ResNet-18 variant.

One class covers both families (``normexp/configs/model/resnet{20,56,18}.yaml``):

* ResNet-20/56 (He et al. 2016, arXiv 1512.03385, §4.2): a 3×3 stem of 16 channels, three stages of n = 3 or 9
  basic blocks with 16, 32, 64 channels (stride 1, 2, 2), global average pooling, a linear classifier. Shortcuts
  are option A, parameter-free: identity, or, where the shape changes, the input subsampled by the stride with
  zero channels padded on (``shortcut: A``).
* ResNet-18, CIFAR variant (github.com/kuangliu/pytorch-cifar): a 3×3 stem of 64 channels and no max-pool, then
  [2, 2, 2, 2] blocks of 64, 128, 256, 512 channels (stride 1, 2, 2, 2), with option-B shortcuts (a 1×1 conv and a
  norm where the shape changes, ``shortcut: B``).

A basic block is ``conv-norm-relu-conv-norm``, plus the shortcut, then a ReLU. ``zero_init_residual`` sets γ = 0 in
each block's last norm (Goyal et al. 2017; Wu & He 2018, §4), so every block starts as the identity.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from normexp.errors import ConfigError
from normexp.norms import NormSpec

SHORTCUTS = ("A", "B")


def he_conv(in_channels: int, out_channels: int, kernel: int, norm: NormSpec, stride: int = 1) -> nn.Module:
    """A conv (padding ``kernel // 2``) with He-normal init (He et al. 2015, fan-out, as torchvision's ResNet), the
    bias only without a shifting norm after it, and the spec's weight reparametrization (``+ws``) applied."""
    conv = nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2, bias=norm.layer_bias)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return norm.reparametrize(conv)


class PadShortcut(nn.Module):
    """He et al.'s option A: the input subsampled by ``stride`` and zero-padded to ``out_channels`` (no parameters).

    The zero channels are split around the input's, as the usual CIFAR ResNet code pads ``planes // 4`` per side.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.before = (out_channels - in_channels) // 2
        self.after = out_channels - in_channels - self.before

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, self.before, self.after))


class ProjectionShortcut(nn.Sequential):
    """Option B: a strided 1×1 conv and a norm."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm: NormSpec, where: str) -> None:
        super().__init__()
        self.conv = he_conv(in_channels, out_channels, 1, norm, stride)
        self.norm = norm.make(out_channels, where=f"{where}.norm")


class BasicBlock(nn.Module):
    """``relu(norm2(conv2(relu(norm1(conv1(x))))) + shortcut(x))`` with 3×3 convs; conv1 carries the stride."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, norm: NormSpec, shortcut: str, where: str
    ) -> None:
        super().__init__()
        self.conv1 = he_conv(in_channels, out_channels, 3, norm, stride)
        self.norm1 = norm.make(out_channels, where=f"{where}.norm1")
        self.conv2 = he_conv(out_channels, out_channels, 3, norm)
        self.norm2 = norm.make(out_channels, where=f"{where}.norm2")
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = (
                PadShortcut(in_channels, out_channels, stride)
                if shortcut == "A"
                else ProjectionShortcut(in_channels, out_channels, stride, norm, where=f"{where}.shortcut")
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.norm2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """A 3×3 stem, stages of :class:`BasicBlock` (the first block of every stage after the first halves the map),
    global average pooling and a linear classifier."""

    def __init__(
        self,
        in_channels: int,
        blocks: Sequence[int],
        widths: Sequence[int],
        num_classes: int,
        norm: NormSpec,
        shortcut: str,
        zero_init_residual: bool,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            he_conv(in_channels, widths[0], 3, norm), norm.make(widths[0], where="stem"), nn.ReLU()
        )
        stages, channels = [], widths[0]
        for index, (count, width) in enumerate(zip(blocks, widths, strict=True)):
            stage = []
            for position in range(count):
                stride = 2 if index > 0 and position == 0 else 1
                where = f"stages.{index}.{position}"
                stage.append(BasicBlock(channels, width, stride, norm, shortcut, where))
                channels = width
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        if zero_init_residual:
            for block in self.modules():
                if isinstance(block, BasicBlock):
                    zero_gamma(block.norm2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits for images ``(N, C, H, W)``."""
        return self.classifier(self.pool(self.stages(self.stem(x))).flatten(1))


def zero_gamma(norm: nn.Module) -> None:
    """Set the norm's scale γ to 0; a norm without a learned scale (``none``) is left as it is."""
    weight = getattr(norm, "weight", None)
    if isinstance(weight, nn.Parameter):
        nn.init.zeros_(weight)


def build_resnet(cfg: Any, norm: NormSpec, input_shape: tuple[int, ...], num_classes: int) -> CifarResNet:
    """The CIFAR ResNet of ``normexp/configs/model/resnet{20,56,18}.yaml`` for ``(C, H, W)`` inputs."""
    if cfg.shortcut not in SHORTCUTS:
        raise ConfigError(f"unknown model.shortcut {cfg.shortcut!r}.", choices=SHORTCUTS, fix="set model.shortcut")
    if len(cfg.blocks) != len(cfg.widths) or min(cfg.blocks) < 1:
        raise ConfigError(
            f"model.blocks={list(cfg.blocks)} and model.widths={list(cfg.widths)} must pair one positive block "
            "count with one width per stage.",
            fix="give both lists one entry per stage, e.g. blocks=[3,3,3] widths=[16,32,64]",
        )
    if cfg.shortcut == "A" and list(cfg.widths) != sorted(cfg.widths):
        raise ConfigError(
            f"option-A shortcuts pad channels, so model.widths={list(cfg.widths)} may not shrink.",
            fix="set model.shortcut=B (1×1 conv projections)",
        )
    return CifarResNet(input_shape[0], cfg.blocks, cfg.widths, num_classes, norm, cfg.shortcut, cfg.zero_init_residual)
