"""Helpers for channels-first tensors ``(N, C, *spatial)``, shared by the norms written here."""

from __future__ import annotations

import torch


def per_channel(values: torch.Tensor, ndim: int) -> torch.Tensor:
    """View a ``(C,)`` tensor so it broadcasts over an ``ndim``-dim channels-first tensor: ``(C, 1, ..., 1)``."""
    return values.view(-1, *[1] * (ndim - 2))


def batch_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance over N and every spatial dim, without gradient.

    torch's batch-norm statistics kernel: several times faster on CPU than ``torch.var_mean`` over dims (0, 2, ...).
    """
    with torch.no_grad():
        return torch.batch_norm_update_stats(x, None, None, 0.0)
