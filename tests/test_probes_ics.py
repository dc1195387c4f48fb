"""The internal-covariate-shift probe (Santurkar et al. 2018, Def. 2.1) against a two-layer linear net by hand,
and the activation-statistics probe against a direct computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from normexp import tasks
from normexp.models.vgg import VGG
from normexp.norms import NormSpec
from normexp.probes.activations import ActivationStats
from normexp.probes.ics import ICSProbe

N, D, H, K = 30, 4, 6, 3


def test_ics_of_a_two_layer_linear_net_matches_the_hand_computation() -> None:
    generator = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(D, H, bias=False), nn.Linear(H, K, bias=False)).double()
    with torch.no_grad():
        for layer in model:
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator, dtype=torch.float64))
    x = torch.randn(N, D, generator=generator, dtype=torch.float64)
    y = torch.randn(N, K, generator=generator, dtype=torch.float64)
    lr = 0.05
    measured = ICSProbe(model, None, tasks.REGRESSION, every=1).on_batch(model, x, y, step=1, lr=lr)

    # L = ‖X W1ᵀ W2ᵀ − Y‖²/(NK); with R = X W1ᵀ W2ᵀ − Y: ∇W2 = c Rᵀ X W1ᵀ, ∇W1 = c W2ᵀ Rᵀ X, c = 2/(NK)
    xn, yn = x.numpy(), y.numpy()
    w1, w2 = (layer.weight.detach().numpy() for layer in model)
    c = 2 / (N * K)

    def grads(first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        residual = xn @ first.T @ second.T - yn
        return c * second.T @ residual.T @ xn, c * residual.T @ xn @ first.T

    g1, g2 = grads(w1, w2)
    _, g2_shifted = grads(w1 - lr * g1, w2)  # layer 1 has taken its SGD step; W2 has not
    cos = np.sum(g2 * g2_shifted) / (np.linalg.norm(g2) * np.linalg.norm(g2_shifted))
    expected = {
        "ics/0/l2": 0.0,  # nothing precedes the first layer
        "ics/0/cos": 1.0,
        "ics/1/l2": np.linalg.norm(g2 - g2_shifted),
        "ics/1/cos": cos,
    }
    assert measured.keys() == expected.keys()
    np.testing.assert_allclose([measured[k] for k in expected], list(expected.values()), rtol=1e-9, atol=1e-12)
    assert expected["ics/1/l2"] > 1e-3  # the shift is not trivially zero


def _vgg(norm: str = "bn") -> VGG:
    torch.manual_seed(0)
    return VGG((1, 8, 8), [4, "M", 6], 3, NormSpec.parse(norm))


def test_ics_measures_every_weight_layer_by_default_and_rejects_unknown_names() -> None:
    model = _vgg()
    assert ICSProbe(model, None, tasks.CLASSIFICATION).layers == ["features.0.conv", "features.2.conv", "classifier"]
    with pytest.raises(Exception, match=r"features\.1"):
        ICSProbe(model, None, tasks.CLASSIFICATION, layers=["features.1"])  # the max-pool has no parameters


@pytest.mark.parametrize("norm", ["bn", "none"])
def test_activation_stats_are_the_unit_mean_and_variance_of_a_training_mode_forward(norm: str) -> None:
    model = _vgg(norm)
    x = torch.rand(16, 1, 8, 8)
    probe = ActivationStats(model, None, modules=["features.0.norm", "features.2.act"], unit=1, every=1)
    measured = probe.on_batch(model, x, torch.zeros(16, dtype=torch.long), step=1, lr=0.1)

    conv = model.features[0].conv
    z = torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=1)[:, 1].double()
    if norm == "bn":  # batch statistics (training mode); γ = 1, β = 0 at init
        z = (z - z.mean()) / torch.sqrt(z.var(unbiased=False) + 1e-5)
    assert measured["act/features.0.norm/mean"] == pytest.approx(z.mean().item(), abs=1e-6)
    assert measured["act/features.0.norm/var"] == pytest.approx(z.var(unbiased=False).item(), rel=1e-5)
    assert set(measured) == {f"act/{m}/{s}" for m in ("features.0.norm", "features.2.act") for s in ("mean", "var")}
    if norm == "bn":  # measured on copies of the buffers: the running statistics have not moved
        assert torch.equal(model.features[0].norm.running_mean, torch.zeros(4))
