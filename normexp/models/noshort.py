"""Li et al. (2018, arXiv 1712.09913)'s ResNet vs ResNet-noshort (their Fig. 5): normexp's CIFAR ResNet
(:mod:`normexp.models.resnet`) whose shortcuts can be switched off.

With ``skip: false`` every basic block computes relu(norm2(conv2(relu(norm1(conv1(x)))))) without adding its
input: a plain deep CNN with the ResNet's exact layers and initialization, as in the authors' ``resnet*_noshort``
models. The net is built as the ResNet and its shortcuts replaced afterwards, so both variants draw the same
initial weights for the same seed (option-B projections are drawn, then dropped).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from normexp.models.resnet import BasicBlock, CifarResNet, build_resnet
from normexp.norms import NormSpec


class NoShortcut(nn.Module):
    """A shortcut that contributes nothing: the block's output is relu(residual + 0) = relu(residual)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(())


def build_li_resnet(cfg: Any, norm: NormSpec, input_shape: tuple[int, ...], num_classes: int) -> CifarResNet:
    """The ResNet of ``normexp/configs/model/li_resnet.yaml``, without any shortcut when ``model.skip`` is false."""
    model = build_resnet(cfg, norm, input_shape, num_classes)
    if not cfg.skip:
        for block in model.modules():
            if isinstance(block, BasicBlock):
                block.shortcut = NoShortcut()
    return model
