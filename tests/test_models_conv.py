"""The conv nets of the batch-size claims: CIFAR ResNets (He et al. 2016 sizes), VGG-11/16, the CPU-scale CNN, the
WS slot, option-A shortcuts, zero-init of the last γ, and what BN computes with one image per batch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn
from torch.nn.utils import parametrize

from normexp import models
from normexp.config import CONFIG_DIR
from normexp.models.resnet import BasicBlock, PadShortcut
from normexp.norms import NormSpec
from normexp.training.runner import train

CIFAR = (3, 32, 32)


def build(config: str, spec: str = "bn", input_shape: tuple[int, ...] = CIFAR, **changes) -> nn.Module:
    cfg = OmegaConf.merge(OmegaConf.load(CONFIG_DIR / "model" / f"{config}.yaml"), changes)
    options = {"groups": None, "group_size": 4} if spec.split("+")[0] in ("gn", "bcn") else {}
    return models.build(cfg, NormSpec.parse(spec, **options), input_shape, 10)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("config", "millions"), [("resnet20", 0.27), ("resnet56", 0.85)])
def test_cifar_resnets_have_he_et_al_sizes(config: str, millions: float) -> None:
    model = build(config)
    assert round(parameter_count(model) / 1e6, 2) == millions  # He et al. 2016, Table 6
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) + 1 == int(config.removeprefix("resnet"))  # 6n + 1 convs and the classifier
    assert model(torch.randn(2, *CIFAR)).shape == (2, 10)


def test_resnet18_cifar_variant_has_the_reference_size_and_projection_shortcuts() -> None:
    model = build("resnet18")
    assert parameter_count(model) == 11_173_962  # kuangliu/pytorch-cifar's ResNet18 (BN, bias-free convs)
    shortcut_convs = [m for n, m in model.named_modules() if n.endswith("shortcut.conv")]
    assert [c.kernel_size for c in shortcut_convs] == [(1, 1)] * 3
    assert model(torch.randn(2, *CIFAR)).shape == (2, 10)


@pytest.mark.parametrize(("config", "convs"), [("vgg11", 8), ("vgg16", 13)])
def test_vgg_configurations_a_and_d(config: str, convs: int) -> None:
    model = build(config)
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == convs
    assert sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()) == convs
    assert model(torch.randn(2, *CIFAR)).shape == (2, 10)


def test_cpu_scale_cnn_on_fashion_mnist_and_gn_with_32_groups() -> None:
    cfg = OmegaConf.load(CONFIG_DIR / "model" / "cnn.yaml")
    model = models.build(cfg, NormSpec.parse("gn", groups=32), (1, 28, 28), 10)
    assert [m.num_groups for m in model.modules() if isinstance(m, nn.GroupNorm)] == [32, 32, 32]
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)


@pytest.mark.parametrize("config", ["resnet20", "resnet18", "vgg11"])
def test_ws_standardizes_every_conv_and_leaves_the_classifier_plain(config: str) -> None:
    model = build(config, "gn+ws")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(parametrize.is_parametrized(c, "weight") and c.bias is None for c in convs)
    for conv in convs:  # the authors' WS: per output filter, (W − mean) / (unbiased std + 1e-5)
        raw = conv.parametrizations.weight.original.flatten(1)
        expected = (raw - raw.mean(1, keepdim=True)) / (raw.std(1, keepdim=True) + 1e-5)
        torch.testing.assert_close(conv.weight.flatten(1), expected)
    classifier = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(classifier) == 1 and not parametrize.is_parametrized(classifier[0], "weight")


def test_convs_keep_their_bias_only_without_a_shifting_norm() -> None:
    assert all(m.bias is None for m in build("resnet20", "bn").modules() if isinstance(m, nn.Conv2d))
    assert all(m.bias is not None for m in build("resnet20", "none").modules() if isinstance(m, nn.Conv2d))


def test_option_a_shortcut_subsamples_and_pads_zero_channels() -> None:
    x = torch.randn(2, 16, 8, 8)
    out = PadShortcut(16, 32, stride=2)(x)
    assert out.shape == (2, 32, 4, 4)
    torch.testing.assert_close(out[:, 8:24], x[:, :, ::2, ::2], rtol=0, atol=0)
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0
    shortcuts = [m for m in build("resnet20").modules() if isinstance(m, PadShortcut)]
    assert len(shortcuts) == 2 and not any(list(m.parameters()) for m in shortcuts)  # parameter-free, stages 2, 3


@pytest.mark.parametrize("spec", ["bn", "gn", "bcn+ws"])
def test_zero_init_residual_makes_every_block_the_identity(spec: str) -> None:
    model = build("resnet20", spec, zero_init_residual=True).eval()
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert all(torch.all(block.norm2.weight == 0) for block in blocks)
    x = torch.rand(2, 16, 32, 32)  # non-negative, as a block's input after a ReLU
    torch.testing.assert_close(blocks[0](x), x, rtol=0, atol=0)
    assert all(torch.all(block.norm1.weight == 1) for block in blocks)


def test_bn_with_one_image_normalizes_each_channel_over_its_own_pixels() -> None:
    """BN at batch 1 trains as InstanceNorm: per image and channel over H×W (the micro-batch regime of claim 2a)."""
    model = build("vgg11").train()
    block = model.features[0]
    seen = {}
    block.norm.register_forward_hook(lambda module, inputs, output: seen.update(input=inputs[0], output=output))
    model(torch.randn(1, *CIFAR))
    expected = F.instance_norm(seen["input"], weight=block.norm.weight, bias=block.norm.bias, eps=block.norm.eps)
    torch.testing.assert_close(seen["output"], expected, rtol=1e-4, atol=1e-5)


def test_resnet20_with_gn_ws_trains_on_cifar_shapes_through_the_runner(compose, tmp_path) -> None:
    overrides = ("model=resnet20", "data=cifar10", "norm=gn+ws", "norm.groups=null", "norm.group_size=8")
    cfg = compose(*overrides, "train.steps=3", "train.batch_size=8", "train.eval_every=3", "data.test_size=16")
    summary = train(cfg, tmp_path / "run")
    assert summary["status"] == "completed" and summary["steps"] == 3
