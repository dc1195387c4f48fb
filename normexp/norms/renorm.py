"""Batch Renormalization (Ioffe 2017, arXiv 1702.03275), with its r_max/d_max schedule driven by the global step.

Training output: ``γ·((x − μ_B)/σ_B · r + d) + β`` with ``r = clip(σ_B/σ, 1/r_max, r_max)`` and
``d = clip((μ_B − μ)/σ, −d_max, d_max)`` computed without gradient from the running estimates (μ, σ) before this
batch updates them; inference uses the running estimates, like BN. Paper schedule (§4): r_max = 1, d_max = 0
for the first 5k steps, then relaxed to r_max = 3 at 40k and d_max = 5 at 25k; "relaxed" is read as linear.

One deliberate deviation: the running estimates are torch BN's (mean and *unbiased* variance, rate ``momentum``,
σ = sqrt(running_var + eps)) instead of the paper's moving average of σ_B. The difference is second order, and it
makes ``brn`` with r_max = 1, d_max = 0 exactly ``bn`` in training and inference, with the same state dict.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from normexp.errors import ConfigError
from normexp.norms._layout import batch_moments
from normexp.norms.batch import BatchNorm


def _ramp(step: int, start: int, end: int, low: float, high: float) -> float:
    """``low`` until ``start``, ``high`` from ``end`` on, linear in between."""
    if step <= start:
        return low
    if step >= end:
        return high
    return low + (high - low) * (step - start) / (end - start)


@dataclass(frozen=True)
class RenormSchedule:
    """Ioffe 2017's clipping limits by step: (1, 0) up to ``warmup_steps``, then linear to ``r_max`` at
    ``r_max_step`` and to ``d_max`` at ``d_max_step``."""

    r_max: float = 3.0
    d_max: float = 5.0
    warmup_steps: int = 5000
    r_max_step: int = 40000
    d_max_step: int = 25000

    def __post_init__(self) -> None:
        if self.r_max < 1 or self.d_max < 0:
            raise ConfigError(
                f"brn needs r_max >= 1 and d_max >= 0, got r_max={self.r_max}, d_max={self.d_max}.",
                fix="set r_max: 1.0 and d_max: 0.0 to switch the corrections off (plain BN)",
            )
        if not self.warmup_steps <= min(self.r_max_step, self.d_max_step):
            raise ConfigError(
                f"brn's warmup_steps={self.warmup_steps} must not exceed r_max_step={self.r_max_step} "
                f"or d_max_step={self.d_max_step}.",
                fix="set the relaxation end steps after the warm-up",
            )

    def limits(self, step: int) -> tuple[float, float]:
        """``(r_max, d_max)`` in force at optimizer step ``step``."""
        return (
            _ramp(step, self.warmup_steps, self.r_max_step, 1.0, self.r_max),
            _ramp(step, self.warmup_steps, self.d_max_step, 0.0, self.d_max),
        )


class BatchRenorm(BatchNorm):
    """Batch Renorm (Ioffe 2017): BN corrected by clipped r, d towards the running stats; schedule by global step.

    r and d are clipped by :class:`RenormSchedule` at the step last given to :meth:`set_global_step` (0 until
    then, i.e. plain BN); ``normexp.norms.set_global_step(model, step)`` sets it on every layer. Moving-average rate
    ``momentum`` = 0.01 as in the paper. Inference is BN's.
    """

    def __init__(
        self,
        num_channels: int,
        eps: float = 1e-5,
        momentum: float = 0.01,
        affine: bool = True,
        r_max: float = 3.0,
        d_max: float = 5.0,
        warmup_steps: int = 5000,
        r_max_step: int = 40000,
        d_max_step: int = 25000,
    ) -> None:
        super().__init__(num_channels, eps=eps, momentum=momentum, affine=affine)
        self.schedule = RenormSchedule(r_max, d_max, warmup_steps, r_max_step, d_max_step)
        self.global_step = 0

    def set_global_step(self, step: int) -> None:
        """Use the clipping limits of optimizer step ``step`` from now on."""
        self.global_step = step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        self._check_input_dim(x)
        r, d = self._corrections(x)
        # γ(x̂·r + d) + β = x̂·(γr) + (γd + β): torch's fused kernel computes x̂ with gradients through μ_B and σ_B,
        # and updates the running estimates after r and d were taken from them.
        weight, bias = (r, d) if self.weight is None else (self.weight * r, self.bias + self.weight * d)
        self.num_batches_tracked.add_(1)
        return F.batch_norm(x, self.running_mean, self.running_var, weight, bias, True, self.momentum, self.eps)

    @torch.no_grad()
    def _corrections(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel ``(r, d)`` for batch ``x`` against the current running estimates; no gradient."""
        r_max, d_max = self.schedule.limits(self.global_step)
        batch_mean, batch_var = batch_moments(x)
        running_std = torch.sqrt(self.running_var + self.eps)
        r = (torch.sqrt(batch_var + self.eps) / running_std).clamp(1 / r_max, r_max)
        d = ((batch_mean - self.running_mean) / running_std).clamp(-d_max, d_max)
        return r, d

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, schedule={self.schedule}, global_step={self.global_step}"
