"""The zoo's norms that torch also has match torch.nn's modules, in float64, in training and eval mode.

References are torch.nn modules we did not derive from (BatchNorm{1,2,3}d, GroupNorm, LayerNorm, InstanceNorm,
RMSNorm) and, for BN's conventions, hand formulas.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch import nn

from normexp.norms import make

C = 6
SHAPES = {2: (8, C), 3: (5, C, 7), 4: (4, C, 5, 3), 5: (3, C, 2, 3, 4)}
"""Channels-first input shapes by rank: MLP, sequence, image, video."""


class ChannelsLastRef(nn.Module):
    """Apply a channels-last torch module (LayerNorm(C), RMSNorm(C)) to a channels-first tensor."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.movedim(1, -1)).movedim(-1, 1)


def batch_norm_ref(shape: tuple[int, ...], **kwargs: Any) -> nn.Module:
    return {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}[len(shape)](C, **kwargs)


def instance_norm_ref(shape: tuple[int, ...]) -> nn.Module:
    return {3: nn.InstanceNorm1d, 4: nn.InstanceNorm2d, 5: nn.InstanceNorm3d}[len(shape)](C, affine=True)


@dataclass(frozen=True)
class Case:
    """Our norm ``name`` with ``options`` against ``reference(shape)``, a torch module on channels-first input."""

    name: str
    reference: Callable[[tuple[int, ...]], nn.Module]
    options: dict[str, Any] = field(default_factory=dict)
    ranks: tuple[int, ...] = (2, 3, 4, 5)

    def __str__(self) -> str:
        return self.name + "".join(f"-{k}={v}" for k, v in self.options.items())


CASES = [
    Case("bn", batch_norm_ref),
    Case("bn", lambda shape: batch_norm_ref(shape, momentum=0.3, eps=1e-3), {"momentum": 0.3, "eps": 1e-3}),
    Case("sync_bn", batch_norm_ref),
    Case("gn", lambda shape: nn.GroupNorm(2, C), {"groups": 2}),
    Case("gn", lambda shape: nn.GroupNorm(2, C), {"groups": None, "group_size": 3}),
    Case("in", instance_norm_ref, ranks=(3, 4, 5)),
    Case("ln", lambda shape: nn.LayerNorm(shape[1:])),
    Case("ln_chw", lambda shape: nn.LayerNorm(shape[1:])),
    Case("ln_c", lambda shape: ChannelsLastRef(nn.LayerNorm(C))),
    Case("rms", lambda shape: ChannelsLastRef(nn.RMSNorm(C, eps=1e-6)), {"eps_inside": True, "eps": 1e-6}),
]
PAIRS = [(case, rank) for case in CASES for rank in case.ranks]


def randomize_parameters(module: nn.Module) -> None:
    """Non-trivial affine parameters, so that the affine part is compared too."""
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn_like(param))


def per_channel_params(module: nn.Module) -> dict[str, torch.Tensor]:
    """``weight``/``bias`` reduced to one value per channel (torch's LayerNorm((C, H, W)) holds one per element)."""
    return {name.rsplit(".", 1)[-1]: param for name, param in module.named_parameters()}


def copy_parameters(ours: nn.Module, ref: nn.Module) -> None:
    """Broadcast our per-channel parameters into the reference's (identical values over any spatial dims)."""
    with torch.no_grad():
        for name, param in per_channel_params(ref).items():
            ours_param = per_channel_params(ours)[name]
            param.copy_(ours_param.view(C, *[1] * (param.dim() - 1)).expand_as(param))


def channel_grads(module: nn.Module) -> dict[str, torch.Tensor]:
    """Parameter gradients summed to one value per channel."""
    return {name: param.grad.reshape(C, -1).sum(1) for name, param in per_channel_params(module).items()}


def assert_same_step(ours: nn.Module, ref: nn.Module, x: torch.Tensor) -> None:
    """Same output, input gradient and per-channel parameter gradients for one forward/backward on ``x``."""
    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_ours, y_ref = ours(x_ours), ref(x_ref)
    torch.testing.assert_close(y_ours, y_ref)
    grad_out = torch.randn_like(y_ref)
    y_ours.backward(grad_out)
    y_ref.backward(grad_out)
    torch.testing.assert_close(x_ours.grad, x_ref.grad)
    for name, grad in channel_grads(ref).items():
        torch.testing.assert_close(channel_grads(ours)[name], grad)


@pytest.mark.parametrize(("case", "rank"), PAIRS, ids=[f"{case}-{rank}d" for case, rank in PAIRS])
def test_matches_torch_in_train_and_eval(case: Case, rank: int) -> None:
    torch.manual_seed(0)
    shape = SHAPES[rank]
    ours = make(case.name, C, **case.options).double()
    ref = case.reference(shape).double()
    randomize_parameters(ours)
    copy_parameters(ours, ref)
    for _ in range(3):  # several steps, so that running statistics accumulate
        assert_same_step(ours, ref, 3 * torch.randn(shape, dtype=torch.float64) + 1)
        torch.testing.assert_close(dict(ours.named_buffers()), dict(ref.named_buffers()))
    ours.eval()
    ref.eval()
    assert_same_step(ours, ref, 3 * torch.randn(shape, dtype=torch.float64) + 1)


@pytest.mark.parametrize("rank", [2, 4])
def test_bn_uses_biased_batch_variance_in_training_and_unbiased_running_variance_at_inference(rank: int) -> None:
    torch.manual_seed(0)
    shape = SHAPES[rank]
    dims = (0, *range(2, rank))
    bn = make("bn", C, momentum=1.0, eps=1e-5).double()  # momentum 1: the running stats are this batch's
    x = 2 * torch.randn(shape, dtype=torch.float64) + 3
    m = x.numel() // C
    mean = x.sum(dims, keepdim=True) / m
    sq_dev = ((x - mean) ** 2).sum(dims, keepdim=True)
    torch.testing.assert_close(bn(x), (x - mean) / torch.sqrt(sq_dev / m + 1e-5))
    torch.testing.assert_close(bn.running_var, (sq_dev / (m - 1)).flatten())
    bn.eval()
    torch.testing.assert_close(bn(x), (x - mean) / torch.sqrt(sq_dev / (m - 1) + 1e-5))


@pytest.mark.parametrize(
    ("name", "options", "reference"),
    [
        ("ln", {}, lambda: nn.LayerNorm(C)),
        ("ln_c", {}, lambda: nn.LayerNorm(C)),
        ("rms", {"eps_inside": True, "eps": 1e-6}, lambda: nn.RMSNorm(C, eps=1e-6)),
    ],
    ids=["ln", "ln_c", "rms"],
)
def test_channels_last_option_matches_torch_on_sequences(
    name: str, options: dict[str, Any], reference: Callable[[], nn.Module]
) -> None:
    torch.manual_seed(0)
    ours = make(name, C, channels_last=True, **options).double()
    randomize_parameters(ours)
    reference = reference().double()
    copy_parameters(ours, reference)
    assert_same_step(ours, reference, 3 * torch.randn(4, 7, C, dtype=torch.float64) + 1)
