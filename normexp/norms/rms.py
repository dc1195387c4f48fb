"""RMSNorm (Zhang & Sennrich 2019, arXiv 1910.07467): rescale by the root mean square, no mean removal, no shift.

The official code (github.com/bzhangGo/rmsnorm) computes ``x / (RMS(x) + eps) * g`` with eps = 1e-8 *outside*
the root; ``torch.nn.RMSNorm`` puts eps inside (``x * rsqrt(mean(x²) + eps) * g``). Both are options here; the
default is the official one. Partial RMSNorm (the paper's p) is not implemented.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from normexp.norms._layout import per_channel


class RMSNorm(nn.Module):
    """RMSNorm (Zhang & Sennrich 2019) over C per sample and position, gain, no bias; eps outside the root.

    ``eps_inside=False`` (default, the official code): ``x / (sqrt(mean(x²)) + eps)``; ``eps_inside=True``:
    ``x / sqrt(mean(x²) + eps)``, exactly ``torch.nn.RMSNorm(C, eps)``. Channels-first ``(N, C, *spatial)`` by
    default, ``(N, *, C)`` with ``channels_last=True``. Parameter ``weight`` matches ``torch.nn.RMSNorm``'s.
    """

    def __init__(
        self,
        num_channels: int,
        eps: float = 1e-8,
        eps_inside: bool = False,
        affine: bool = True,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.eps = eps
        self.eps_inside = eps_inside
        self.channels_last = channels_last
        self.weight = nn.Parameter(torch.ones(num_channels)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and self.eps_inside:
            # Same computation as torch's fused kernel: use it.
            return F.rms_norm(x, (self.num_channels,), self.weight, self.eps)
        dim = -1 if self.channels_last else 1
        # Reducing over dim 1 in place beats moving channels last for torch's kernel (no copy of x).
        if self.eps_inside:
            inv_rms = torch.rsqrt(x.square().mean(dim, keepdim=True) + self.eps)
        else:
            rms = torch.linalg.vector_norm(x, dim=dim, keepdim=True) * self.num_channels**-0.5
            inv_rms = (rms + self.eps).reciprocal()
        y = x * inv_rms
        if self.weight is None:
            return y
        return y * (self.weight if self.channels_last else per_channel(self.weight, x.dim()))

    def extra_repr(self) -> str:
        return (
            f"{self.num_channels}, eps={self.eps}, eps_inside={self.eps_inside}, "
            f"affine={self.weight is not None}, channels_last={self.channels_last}"
        )
