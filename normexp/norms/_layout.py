"""Shape helpers for channels-first tensors ``(N, C, *spatial)``, shared by the norms written here."""

from __future__ import annotations

import torch


def per_channel(values: torch.Tensor, ndim: int) -> torch.Tensor:
    """View a ``(C,)`` tensor so it broadcasts over an ``ndim``-dim channels-first tensor: ``(C, 1, ..., 1)``."""
    return values.view(-1, *[1] * (ndim - 2))


def batch_dims(ndim: int) -> tuple[int, ...]:
    """The dims a per-channel batch statistic reduces over: N and every spatial dim."""
    return (0, *range(2, ndim))
