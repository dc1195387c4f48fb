"""Batch Normalization (Ioffe & Szegedy 2015, arXiv 1502.03167).

Training normalizes with the batch mean and the biased (1/m) batch variance; inference uses running estimates
whose variance is the unbiased m/(m-1) one, exactly as ``torch.nn.BatchNorm*d``.
"""

from __future__ import annotations

import torch
from torch import nn


class BatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm (Ioffe & Szegedy 2015): per channel over (N, *spatial), batch stats in training, running at eval.

    Exactly ``torch.nn.BatchNorm{1,2,3}d``, for any input ``(N, C, *spatial)`` from 2-D (MLP) to 5-D: torch's
    classes differ only in the input rank they accept, so one class serves every model here.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True) -> None:
        super().__init__(num_channels, eps=eps, momentum=momentum, affine=affine)

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"BatchNorm expects (N, C, *spatial) input, got shape {tuple(input.shape)}")


def sync_batch_norm(
    num_channels: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True
) -> nn.SyncBatchNorm:
    """BatchNorm with batch statistics reduced across all processes (torch's SyncBatchNorm), for multi-GPU runs.

    The normalization batch is then the global batch. Without an initialized process group, and in eval mode,
    it computes exactly ``bn``; state dicts are interchangeable with ``bn``'s.
    """
    return nn.SyncBatchNorm(num_channels, eps=eps, momentum=momentum, affine=affine)
