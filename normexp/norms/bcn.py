"""Batch-Channel Normalization (Qiao et al. 2019, arXiv 1911.09738; code github.com/joe-siyuan-qiao/
Batch-Channel-Normalization, README ``BCNorm`` and ``EstBN``).

A batch part, per-channel BN over (N, *spatial) with per-channel affine, then a channel part: GroupNorm without
affine followed by one (γ, β) per *group*. For micro-batches the batch part uses *estimated* statistics
(:class:`EstimatedBatchNorm`), which the official code updates without gradient and uses in training and eval.

The estimate's rate r is not published (the official buffer starts at 0 and is set by unpublished training
code); the default r = 0.01 is the value secondary copies of the code set.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from normexp.norms._layout import batch_moments
from normexp.norms.batch import BatchNorm
from normexp.norms.group import resolve_groups


class EstimatedBatchNorm(BatchNorm):
    """BN on estimated statistics (official ``EstBN``): y = γ(x − μ̂)/sqrt(v̂ + eps) + β, per channel.

    In training, without gradient and *before* normalizing: μ_c = batch mean, v_c = mean of (x − μ̂_old)²
    (deviation from the old estimate, not the batch mean), then μ̂ ← (1 − r)·μ̂ + r·μ_c and v̂ likewise, with
    r = ``momentum``. Training and eval then use the estimates alike; buffers start at μ̂ = 0, v̂ = 1.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5, momentum: float = 0.01, affine: bool = True) -> None:
        super().__init__(num_channels, eps=eps, momentum=momentum, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if self.training:
            self._update_estimates(x)
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)

    @torch.no_grad()
    def _update_estimates(self, x: torch.Tensor) -> None:
        batch_mean, batch_var = batch_moments(x)
        # mean of (x − μ̂_old)² = biased batch variance + (μ_B − μ̂_old)²: one fast statistics pass instead of two.
        deviation = batch_var + (batch_mean - self.running_mean).square()
        self.running_mean.lerp_(batch_mean, self.momentum)
        self.running_var.lerp_(deviation, self.momentum)
        self.num_batches_tracked.add_(1)


class BatchChannelNorm(nn.Module):
    """Batch-Channel Norm (Qiao et al. 2019): estimated-statistics BN, then GN without affine, per-group affine.

    ``estimate=True`` (default, the micro-batch variant): batch part is :class:`EstimatedBatchNorm` with rate
    ``momentum`` (r, default 0.01); ``estimate=False``: plain BN with that momentum. ``groups`` (default 32) or
    ``group_size`` as for ``gn``; ``eps`` serves both parts.
    """

    def __init__(
        self,
        num_channels: int,
        groups: int | None = None,
        group_size: int | None = None,
        eps: float = 1e-5,
        estimate: bool = True,
        momentum: float = 0.01,
    ) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.num_groups = resolve_groups(num_channels, groups, group_size)
        self.eps = eps
        batch_norm = EstimatedBatchNorm if estimate else BatchNorm
        self.batch = batch_norm(num_channels, eps=eps, momentum=momentum)
        self.weight = nn.Parameter(torch.ones(self.num_groups))
        self.bias = nn.Parameter(torch.zeros(self.num_groups))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A per-group affine is a per-channel one with values repeated within each group, so GroupNorm's fused
        # kernel applies it (the gradient sums back over each group's channels).
        group_size = self.num_channels // self.num_groups
        weight = self.weight.repeat_interleave(group_size)
        bias = self.bias.repeat_interleave(group_size)
        return F.group_norm(self.batch(x), self.num_groups, weight, bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, groups={self.num_groups}, eps={self.eps}"
