"""Directions in parameter space for loss-surface plots (Li et al. 2018, arXiv 1712.09913, §4; authors' code
github.com/tomgoldstein/loss-landscape, ``net_plotter.py``).

* :func:`filter_normalized_direction`: a random Gaussian direction d whose every filter d_f (output unit of a
  linear layer, output channel of a conv) is rescaled to the norm of the matching weight filter θ_f,
  d_f ← d_f·‖θ_f‖/(‖d_f‖ + 1e-10), so that a step α·d perturbs every filter by the same relative amount whatever
  its scale (the scale invariance BN gives makes raw directions meaningless). Directions are zero on 1-D
  parameters (biases, norm affine γ and β), the code's ``ignore='biasbn'``.
* :func:`difference_direction`: B − A between two states, over every floating-point entry (running statistics
  included), for the linear interpolation between two solutions.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

EPS = 1e-10
"""Added to ‖d_f‖, as in the authors' code."""


def filter_normalized_direction(weights: Mapping[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """A filter-normalized random direction for ``weights`` (``{name: parameter}``), reproducible from ``seed``.

    The Gaussian draws come from a CPU generator seeded with ``seed``, in ``weights``' order, so the same seed and
    model give the same direction on any device.
    """
    generator = torch.Generator().manual_seed(seed)
    direction = {}
    for name, weight in weights.items():
        draw = torch.randn(weight.shape, generator=generator, dtype=weight.dtype).to(weight.device)
        direction[name] = torch.zeros_like(weight) if weight.dim() <= 1 else _normalize_filters(draw, weight)
    return direction


def _normalize_filters(direction: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Each filter (slice along dim 0) of ``direction`` rescaled to the norm of ``weight``'s filter."""
    scale = weight.flatten(1).norm(dim=1) / (direction.flatten(1).norm(dim=1) + EPS)
    return direction * scale.view(-1, *([1] * (weight.dim() - 1)))


def difference_direction(start: Mapping[str, torch.Tensor], end: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``end − start`` on every floating-point entry of two state dicts (integer buffers such as BN's
    ``num_batches_tracked`` have no direction: they stay at ``start``'s value)."""
    return {name: end[name] - value for name, value in start.items() if value.is_floating_point()}
