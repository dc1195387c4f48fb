"""Layer Normalization (Ba, Kiros & Hinton 2016, arXiv 1607.06450) in its two readings for feature maps.

Ba et al. normalize each sample over all hidden units of a layer. For a conv map ``(N, C, H, W)`` that is
ambiguous, so the zoo names both readings:

* ``ln_chw``: per sample over C·H·W (= GroupNorm with one group, the "LN" of Wu & He 2018), per-channel affine;
* ``ln_c``: per sample *and position* over C only (the Transformer/ConvNeXt reading), per-channel affine.

``ln`` is Ba et al.'s definition applied to the layout it gets: over C·H·W for channels-first maps, and over the
last dim with ``channels_last=True``, where each position of a ``(N, T, C)`` sequence is its own sample. For an
MLP's ``(N, C)`` all three coincide.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from normexp.norms.group import GroupNorm


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over C only (Ba et al. 2016, Transformer reading): per sample and position, per-channel affine.

    Channels-first ``(N, C, *spatial)`` by default; ``channels_last=True`` takes ``(N, *, C)`` (a Transformer's
    ``(N, T, C)``) and is exactly ``torch.nn.LayerNorm(C)``. Channels-first input is copied to channels-last for
    torch's fused kernel, which is faster on CPU than reducing over dim 1 directly; the output is a channels-first
    view of channels-last memory.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5, affine: bool = True, channels_last: bool = False) -> None:
        super().__init__(num_channels, eps=eps, elementwise_affine=affine)
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            return super().forward(x)
        # torch's kernel is fast on contiguous channels-last input only; the copy costs less than it saves.
        channels_last = x.movedim(1, -1).contiguous()
        return F.layer_norm(channels_last, self.normalized_shape, self.weight, self.bias, self.eps).movedim(-1, 1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, channels_last={self.channels_last}"


def layer_norm_chw(num_channels: int, eps: float = 1e-5, affine: bool = True) -> GroupNorm:
    """LayerNorm over C·H·W (Ba et al. 2016, as in Wu & He 2018): per sample, GroupNorm with 1 group.

    GroupNorm with one group, as Wu & He 2018 define LN for conv maps; equals ``torch.nn.LayerNorm((C, H, W))``
    whose elementwise affine is constant over H·W, without tying the module to one spatial size.
    """
    return GroupNorm(num_channels, groups=1, eps=eps, affine=affine)


def layer_norm(
    num_channels: int, eps: float = 1e-5, affine: bool = True, channels_last: bool = False
) -> GroupNorm | ChannelLayerNorm:
    """LayerNorm (Ba et al. 2016) per sample over all its features: ln_chw channels-first, ln_c channels-last.

    Channels-first maps are one sample per image (C·H·W); with ``channels_last=True`` every position of a
    ``(N, T, C)`` sequence is a sample, so the norm spans C as in the Transformer.
    """
    if channels_last:
        return ChannelLayerNorm(num_channels, eps=eps, affine=affine, channels_last=True)
    return layer_norm_chw(num_channels, eps=eps, affine=affine)
