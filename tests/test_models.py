"""Models: the MLP of Ioffe & Szegedy (2015) (shape, norm placement before the sigmoid, bias dropped with BN), and
every `model=` choice that `normexp list` shows."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from normexp import models
from normexp.config import compose_config


def build(compose, *overrides: str) -> nn.Module:
    cfg = compose("experiment=ioffe2015-fig1", *overrides)
    return models.from_config(cfg, (1, 28, 28), 10)


def test_paper_architecture_784_100_100_100_10(compose) -> None:
    model = build(compose, "norm=bn")
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 100), (100, 100), (100, 100), (100, 10)]
    assert model(torch.rand(5, 1, 28, 28)).shape == (5, 10)


@pytest.mark.parametrize(("norm", "has_bias"), [("bn", False), ("none", True)])
def test_hidden_bias_dropped_only_when_the_norm_shifts(compose, norm: str, has_bias: bool) -> None:
    model = build(compose, f"norm={norm}")
    assert all((layer.linear.bias is not None) == has_bias for layer in model.hidden)
    assert model.classifier.bias is not None


def test_bn_normalizes_wu_before_the_sigmoid(compose) -> None:
    model = build(compose, "norm=bn").train()
    x = torch.rand(64, 1, 28, 28)
    seen: dict[str, torch.Tensor] = {}

    def record(name: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            seen[name] = output

        return hook

    for name in ("linear", "norm", "act"):
        getattr(model.hidden[0], name).register_forward_hook(record(name))
    model(x)
    assert list(seen) == ["linear", "norm", "act"]
    wu = x.flatten(1) @ model.hidden[0].linear.weight.T
    expected = (wu - wu.mean(0)) / torch.sqrt(wu.var(0, unbiased=False) + 1e-5)
    torch.testing.assert_close(seen["norm"], expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(seen["act"], torch.sigmoid(expected), atol=1e-5, rtol=1e-4)


def test_gaussian_init_uses_the_configured_std(compose) -> None:
    model = build(compose, "norm=none", "model.init_std=0.05")
    weight = model.hidden[0].linear.weight
    assert weight.std().item() == pytest.approx(0.05, rel=0.02)
    assert torch.all(model.hidden[0].linear.bias == 0)


def test_every_listed_model_is_a_model_choice(cli) -> None:
    status, out, _ = cli("list", "models")
    names = [line.split()[0] for line in out.splitlines()[1:]]
    assert status == 0 and {"mlp", "cnn", "resnet20", "vgg16", "transformer_pre"} <= set(names)
    for name in names:
        assert compose_config([f"model={name}"]).model.name  # each composes as `model=<name>`
