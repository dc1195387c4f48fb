"""Weight reparametrizations of conv/linear layers: Weight Standardization and Weight Normalization.

Both are ``torch.nn.utils.parametrize`` parametrizations of ``layer.weight``: the raw tensor lives in
``layer.parametrizations.weight.original*`` and receives the gradients; ``layer.weight`` is recomputed from it.

* ``ws``, Qiao et al. 2019 (arXiv 1903.10520): each output filter standardized over its fan-in.
* ``wn``, Salimans & Kingma 2016 (arXiv 1602.07868): w = g·v/‖v‖ per output unit, plus the paper's data-dependent
  initialization (:func:`data_dependent_init`, called by the runner on one batch before training).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrizations, parametrize

from normexp.errors import ConfigError

REPARAMETRIZABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
"""Layers whose weight is laid out (out, fan-in...), the layout both reparametrizations assume."""


def _check_layer(layer: nn.Module, what: str) -> None:
    if not isinstance(layer, REPARAMETRIZABLE):
        raise ConfigError(
            f"{what} applies to Linear and Conv1d/2d/3d layers (output units on dim 0), not {type(layer).__name__}.",
            fix=f"apply {what} only to those layers",
        )


class Standardize(nn.Module):
    """The Weight Standardization map W ↦ (W − mean)/std per output filter, over its fan-in (C_in·k·k).

    ``unbiased``: std from the unbiased (n − 1) variance; ``eps_inside``: ``sqrt(var + eps)`` rather than
    ``std + eps``. Default (unbiased, eps = 1e-5 outside the root) is the authors' PyTorch code in
    github.com/joe-siyuan-qiao/WeightStandardization (README ``Conv2d``). Other official and common variants:
    the BCN repository's ``sqrt(unbiased var + 1e-5)`` (unbiased, eps_inside); timm's StdConv2d, biased with eps =
    1e-6 inside.
    """

    def __init__(self, eps: float = 1e-5, unbiased: bool = True, eps_inside: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.unbiased = unbiased
        self.eps_inside = eps_inside

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        fan_in = tuple(range(1, weight.dim()))
        var, mean = torch.var_mean(weight, fan_in, correction=int(self.unbiased), keepdim=True)
        inv_std = torch.rsqrt(var + self.eps) if self.eps_inside else (var.sqrt() + self.eps).reciprocal()
        return (weight - mean) * inv_std

    def extra_repr(self) -> str:
        return f"eps={self.eps}, unbiased={self.unbiased}, eps_inside={self.eps_inside}"


def weight_standardization(
    layer: nn.Module, eps: float = 1e-5, unbiased: bool = True, eps_inside: bool = False
) -> nn.Module:
    """Weight Standardization (Qiao et al. 2019): each output filter standardized over its fan-in, unbiased std + 1e-5.

    Meant for a conv followed by an activation norm (GN or BN), conv bias off. See :class:`Standardize`.
    """
    _check_layer(layer, "ws")
    parametrize.register_parametrization(layer, "weight", Standardize(eps, unbiased, eps_inside))
    return layer


def weight_normalization(layer: nn.Module) -> nn.Module:
    """Weight Normalization (Salimans & Kingma 2016): w = g·v/‖v‖ per output unit, data-dependent init of g and b.

    torch's ``parametrizations.weight_norm`` (dim 0): g is ``parametrizations.weight.original0``, v is
    ``original1``. Initialize g and the bias from data with :func:`data_dependent_init`.
    """
    _check_layer(layer, "wn")
    return parametrizations.weight_norm(layer, "weight", dim=0)


def is_weight_normalized(layer: nn.Module) -> bool:
    """Whether ``layer.weight`` is parametrized by :func:`weight_normalization`."""
    return parametrize.is_parametrized(layer, "weight") and any(
        isinstance(p, parametrizations._WeightNorm) for p in layer.parametrizations.weight
    )


@torch.no_grad()
def _init_from_output(layer: nn.Module, output: torch.Tensor) -> torch.Tensor:
    """Rescale g and shift the bias so this output becomes zero-mean, unit-variance per output unit; return it.

    With per-unit output mean μ and std σ: g ← g/σ and b ← (b − μ)/σ (Salimans & Kingma 2016 §3, and their code's
    biased variance with 1e-10 under the root). Without a bias only the scale can be set.
    """
    unit_dim = -1 if isinstance(layer, nn.Linear) else 1
    moved = output.movedim(unit_dim, -1)
    var, mean = torch.var_mean(moved.reshape(-1, moved.shape[-1]), 0, correction=0)
    inv_std = torch.rsqrt(var + 1e-10)
    g = layer.parametrizations.weight.original0
    g.mul_(inv_std.view_as(g))
    if layer.bias is None:
        return (moved * inv_std).movedim(-1, unit_dim)
    layer.bias.sub_(mean).mul_(inv_std)
    return ((moved - mean) * inv_std).movedim(-1, unit_dim)


@torch.no_grad()
def data_dependent_init(model: nn.Module, batch: torch.Tensor) -> int:
    """Salimans & Kingma 2016's data-dependent init of every ``wn`` layer in ``model``, from one input ``batch``.

    Runs ``model(batch)`` once in eval mode (no running-statistic updates, no dropout); each weight-normalized
    layer, in forward order, sets g and its bias so that its pre-activations on the batch are zero-mean and
    unit-variance, and passes the initialized output on. Returns the number of layers initialized (0 when the
    model has none, so the runner may call it for every spec).
    """
    layers = [m for m in model.modules() if is_weight_normalized(m)]
    if not layers:
        return 0
    handles = [m.register_forward_hook(lambda layer, _inputs, output: _init_from_output(layer, output)) for m in layers]
    was_training = model.training
    try:
        model.eval()
        model(batch)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return len(layers)
