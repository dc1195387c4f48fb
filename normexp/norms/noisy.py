"""Noisy BatchNorm (Santurkar et al. 2018, arXiv 1805.11604, §2.1): time-varying noise injected after BN.

Per unit (channel) and step, draw μ ~ U(−0.5, 0.5) and σ ~ U(1, 1.25); per sample, m ~ U(μ − 0.1, μ + 0.1)
and s ~ N(σ, 0.1); the output is s·a + m. For conv maps spatial positions count as samples, so m and s are drawn
for every element. A "step" is a training-mode forward call; eval mode adds no noise. The constants are
options. ``noise`` is the same injection without BN, for the paper's "standard network + noise" control.
"""

from __future__ import annotations

import torch
from torch import nn

from normexp.norms._layout import per_channel
from normexp.norms.batch import BatchNorm


def _uniform(
    low: torch.Tensor | float, high: torch.Tensor | float, shape: tuple[int, ...], like: torch.Tensor
) -> torch.Tensor:
    """U(low, high) draws of ``shape`` (low/high broadcast), with ``like``'s dtype and device."""
    return low + (high - low) * torch.rand(shape, dtype=like.dtype, device=like.device)


class NoiseInjection(nn.Module):
    """Santurkar et al. 2018's noise s·a + m without BN, in training mode only (the "standard + noise" control).

    Per channel and call: μ ~ U(−mean_max, mean_max), σ ~ U(scale_min, scale_max); per element:
    m ~ U(μ − mean_jitter, μ + mean_jitter), s ~ N(σ, scale_jitter²). Draws from torch's global generator, so
    the run's seed fixes them.
    """

    def __init__(
        self,
        num_channels: int,
        mean_max: float = 0.5,
        scale_min: float = 1.0,
        scale_max: float = 1.25,
        mean_jitter: float = 0.1,
        scale_jitter: float = 0.1,
    ) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.mean_max = mean_max
        self.scale_min = scale_min
        self.scale_max = scale_max
        self.mean_jitter = mean_jitter
        self.scale_jitter = scale_jitter

    def sample(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step's noise for a channels-first tensor shaped like ``like``: ``(s, m)``, each of its shape."""
        channels = (self.num_channels,)
        mu = per_channel(_uniform(-self.mean_max, self.mean_max, channels, like), like.dim())
        sigma = per_channel(_uniform(self.scale_min, self.scale_max, channels, like), like.dim())
        shift = _uniform(mu - self.mean_jitter, mu + self.mean_jitter, like.shape, like)
        scale = sigma + self.scale_jitter * torch.randn_like(like)
        return scale, shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        scale, shift = self.sample(x)
        return torch.addcmul(shift, scale, x)

    def extra_repr(self) -> str:
        return (
            f"{self.num_channels}, mean_max={self.mean_max}, scale=U({self.scale_min}, {self.scale_max}), "
            f"mean_jitter={self.mean_jitter}, scale_jitter={self.scale_jitter}"
        )


class NoisyBatchNorm(BatchNorm):
    """Noisy BN (Santurkar et al. 2018 §2.1): BatchNorm, then per-step random shift and scale noise in training.

    The noise is :class:`NoiseInjection`; BN's options first, then the noise constants (defaults are the paper's).
    In eval mode it is exactly ``bn``, and its state dict is ``bn``'s.
    """

    def __init__(
        self,
        num_channels: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = True,
        mean_max: float = 0.5,
        scale_min: float = 1.0,
        scale_max: float = 1.25,
        mean_jitter: float = 0.1,
        scale_jitter: float = 0.1,
    ) -> None:
        super().__init__(num_channels, eps=eps, momentum=momentum, affine=affine)
        self.noise = NoiseInjection(num_channels, mean_max, scale_min, scale_max, mean_jitter, scale_jitter)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.noise(super().forward(x))
