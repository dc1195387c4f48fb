"""Santurkar et al. 2018's VGG and deep linear network, Li et al. 2018's ResNet-noshort, and the regression task."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from normexp import data, models, tasks
from normexp.errors import ConfigError
from normexp.models.noshort import NoShortcut


def build(compose, input_shape: tuple[int, ...], *overrides: str) -> nn.Module:
    cfg = compose(*overrides)
    return models.from_config(cfg, input_shape, 10)


def test_default_vgg_is_vgg11_for_cifar(compose) -> None:
    model = build(compose, (3, 32, 32), "model=santurkar_vgg", "norm=bn")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 256, 512, 512, 512, 512]
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 5
    assert model.classifier.in_features == 512  # 32 / 2⁵ = 1
    assert all(c.bias is None for c in convs)  # BN's shift makes the conv bias redundant
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_small_vgg_flattens_what_the_pools_leave(compose) -> None:
    model = build(compose, (1, 28, 28), "model=santurkar_vgg", "model.channels=[8,M,16,M,32,M]", "norm=none")
    assert model.classifier.in_features == 32 * 3 * 3
    assert all(block.conv.bias is not None for block in model.features if hasattr(block, "conv"))
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize(
    ("factor", "widths"),
    [(None, [64, 128, 256, 256]), (0.5, [32, 64, 128, 128]), (2, [128, 256, 512, 512]), (0.001, [1, 1, 1, 1])],
)
def test_width_factor_multiplies_every_conv_width(compose, factor, widths) -> None:
    model = build(
        compose,
        (3, 32, 32),
        "model=santurkar_vgg",
        "model.channels=[64,M,128,M,256,256,M]",
        f"model.width_factor={'null' if factor is None else factor}",
        "norm=bn",
    )
    assert [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)] == widths
    assert model.classifier.in_features == widths[-1] * 4 * 4


@pytest.mark.parametrize("factor", [0, -1, "wide"])
def test_width_factor_must_be_positive(compose, factor) -> None:
    with pytest.raises(ConfigError, match="width_factor"):
        build(compose, (3, 32, 32), "model=santurkar_vgg", f"model.width_factor={factor}", "norm=bn")


def test_standard_deep_linear_network_is_a_product_of_matrices(compose) -> None:
    model = build(compose, (10,), "model=deep_linear", "norm=none")
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 25 and all(m.bias is None and m.weight.shape == (10, 10) for m in linears)
    product = torch.eye(10)
    for linear in linears:
        product = linear.weight @ product
    x = torch.randn(7, 10)
    torch.testing.assert_close(model(x), x @ product.T, rtol=1e-4, atol=1e-5)
    assert abs(torch.cat([m.weight.flatten() for m in linears]).std().item() - 10**-0.5) < 0.02


def test_bn_deep_linear_network_normalizes_every_layer_but_the_output(compose) -> None:
    model = build(compose, (10,), "model=deep_linear", "norm=bn")
    assert sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()) == 24
    assert isinstance(model.output, nn.Linear)


def test_noshort_resnet_has_the_resnets_weights_and_no_shortcut(compose) -> None:
    def resnet(skip: str) -> nn.Module:
        torch.manual_seed(0)
        return build(compose, (1, 16, 16), "experiment=li2018-skip", f"model.skip={skip}").eval()

    short, noshort = resnet("true"), resnet("false")
    weights, same_weights = short.state_dict(), noshort.state_dict()
    assert weights.keys() == same_weights.keys()
    assert all(torch.equal(weights[name], same_weights[name]) for name in weights)
    block = noshort.stages[0][0]
    assert isinstance(block.shortcut, NoShortcut)
    x = torch.randn(2, 4, 16, 16)
    plain = F.relu(block.norm2(block.conv2(F.relu(block.norm1(block.conv1(x))))))
    torch.testing.assert_close(block(x), plain)
    assert not torch.allclose(short.stages[0][0](x), plain)


def test_regression_task_is_one_linear_map_shared_by_every_run_seed(compose) -> None:
    cfg = compose("data=linear_regression")
    splits, other_seed = data.load(cfg.data, seed=0), data.load(cfg.data, seed=5)
    assert splits.train_x.shape == (256, 10) and splits.test_y.shape == (128, 10)
    matrix = torch.linalg.lstsq(splits.train_x, splits.train_y).solution
    torch.testing.assert_close(splits.test_x @ matrix, splits.test_y, rtol=1e-4, atol=1e-4)
    assert torch.equal(splits.train_y, other_seed.train_y)
    assert tasks.of(cfg.data) is tasks.REGRESSION and tasks.of({}) is tasks.CLASSIFICATION


def test_deep_linear_init_gain_scales_the_weights_by_gain_over_root_fan_in(compose) -> None:
    """The DLN map's init axis: W ~ N(0, gain²/fan_in), checked as the pooled sample std of 25 layers' weights."""
    for gain in (0.8, 1.2):
        torch.manual_seed(0)
        model = build(compose, (10,), "model=deep_linear", "norm=none", f"model.init_gain={gain}", "model.width=100")
        weights = torch.cat([m.weight.flatten() for m in model.modules() if isinstance(m, nn.Linear)][1:-1])
        assert abs(weights.std().item() - gain / 100**0.5) < 0.01 * gain / 100**0.5 * 3


def test_he_init_is_torchvisions_vgg_init(compose) -> None:
    """He-normal fan-out convs (std √(2 / (9 · out))), an N(0, 0.01²) classifier, zero biases; +ws standardizes the
    He weights it is given."""
    torch.manual_seed(0)
    model = build(
        compose, (1, 28, 28), "model=santurkar_vgg", "model.channels=[64,M,128]", "model.init=he", "norm=none"
    )
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    for conv in convs:
        assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (9 * conv.out_channels)), rel=0.05)
        assert torch.count_nonzero(conv.bias) == 0
    assert model.classifier.weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert torch.count_nonzero(model.classifier.bias) == 0
    torch.manual_seed(0)
    ws = build(compose, (1, 28, 28), "model=santurkar_vgg", "model.channels=[64,M,128]", "model.init=he", "norm=gn+ws")
    original = ws.features[2].conv.parametrizations.weight.original
    assert original.std().item() == pytest.approx(math.sqrt(2 / (9 * 128)), rel=0.05)


def test_unknown_vgg_init_is_refused(compose) -> None:
    with pytest.raises(ConfigError, match=r"model\.init='xavier'"):
        build(compose, (1, 28, 28), "model=santurkar_vgg", "model.init=xavier", "norm=none")
