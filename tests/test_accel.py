"""The fast-path switches: parsed by name, refused where they cannot run, and computing what the plain path
computes (channels_last on CPU; CUDA graphs on a GPU, skipped without one)."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from normexp import accel, models
from normexp.errors import ConfigError
from normexp.norms import NormSpec
from normexp.training.runner import train


def small_cnn(norm: str) -> nn.Module:
    """conv -> norm -> ReLU, max-pool, conv -> norm -> ReLU, linear: the CPU scale's VGG form, tiny."""
    cfg = OmegaConf.create({"name": "santurkar_vgg", "channels": [4, "M", 8]})
    return models.build(cfg, NormSpec.parse(norm, **({"groups": 2} if norm.startswith("gn") else {})), (1, 8, 8), 3)


def test_fast_path_names_round_trip_and_unknown_switches_are_refused() -> None:
    fast = accel.FastPath.parse("bf16+cuda_graphs")
    assert (fast.bf16, fast.cuda_graphs, fast.channels_last, fast.compile) == (True, True, False, False)
    assert fast.name == "bf16+cuda_graphs" and accel.FastPath.parse("none").name == "none"
    with pytest.raises(ConfigError, match="unknown fast-path switch fp8"):
        accel.FastPath.parse("bf16+fp8")


def test_cuda_graphs_are_refused_without_cuda() -> None:
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        accel.FastPath.parse("cuda_graphs").check(torch.device("cpu"))
    with pytest.raises(ConfigError, match="need a CUDA device"):
        accel.graph_training_step(nn.Linear(2, 2), torch.zeros(1, 2))


@pytest.mark.parametrize("norm", ["bn", "gn+ws"])
def test_channels_last_computes_what_channels_first_computes(norm: str) -> None:
    torch.manual_seed(0)
    model, x = small_cnn(norm), torch.randn(6, 1, 8, 8)
    expected = model(x)
    expected.sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    fmt = accel.memory_format(accel.FastPath(channels_last=True))
    model.to(memory_format=fmt)
    actual = model(accel.to_memory_format(x, fmt))
    actual.sum().backward()
    torch.testing.assert_close(actual, expected)
    for p, g in zip(model.parameters(), grads, strict=True):
        torch.testing.assert_close(p.grad, g)


def test_only_image_batches_change_memory_format() -> None:
    tokens = torch.zeros(4, 16, dtype=torch.long)
    assert accel.to_memory_format(tokens, torch.channels_last) is tokens
    assert accel.to_memory_format(torch.zeros(2, 3, 4, 4), torch.channels_last).is_contiguous(
        memory_format=torch.channels_last
    )


def test_bf16_autocast_only_when_enabled() -> None:
    layer, x = nn.Linear(4, 4), torch.randn(2, 4)
    with accel.autocast(torch.device("cpu"), enabled=True):
        assert layer(x).dtype == torch.bfloat16
    with accel.autocast(torch.device("cpu"), enabled=False):
        assert layer(x).dtype == torch.float32


@pytest.mark.gpu
def test_cuda_graph_training_steps_equal_eager_steps() -> None:
    device = torch.device("cuda")
    torch.manual_seed(0)
    eager = small_cnn("bn").to(device)
    graphed = small_cnn("bn").to(device)
    graphed.load_state_dict(eager.state_dict())
    batches = [torch.randn(6, 1, 8, 8, device=device) for _ in range(3)]
    graphed = accel.graph_training_step(graphed, batches[0])
    torch.testing.assert_close(graphed.state_dict(), eager.state_dict())  # capture left BN's statistics untouched
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (eager, graphed)]
    for x in batches:
        for model, optimizer in zip((eager, graphed), optimizers, strict=True):
            optimizer.zero_grad(set_to_none=True)
            model(x).square().mean().backward()
            optimizer.step()
    torch.testing.assert_close(graphed.state_dict(), eager.state_dict())


RUN = ("experiment=batchsize", "norm=gn+ws", "norm.groups=null", "norm.group_size=8", "train.batch_size=4")


@pytest.mark.equality
def test_a_channels_last_run_ends_where_a_channels_first_run_ends(compose, tmp_path) -> None:
    plain = train(compose(*RUN), tmp_path / "plain")
    fast = train(compose(*RUN, "fast_path=channels_last"), tmp_path / "fast")
    assert fast["status"] == plain["status"] == "completed"
    assert fast["final"] == pytest.approx(plain["final"], rel=1e-4, abs=1e-6)


@pytest.mark.equality
def test_a_bf16_run_computes_its_layers_in_bfloat16_and_learns_what_fp32_learns(compose, tmp_path) -> None:
    dtypes: set[torch.dtype] = set()

    def seen(module: nn.Module, inputs: object, output: object) -> None:
        if isinstance(module, nn.Conv2d | nn.Linear):
            dtypes.add(output.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(seen)
    try:
        fast = train(compose(*RUN, "fast_path=bf16"), tmp_path / "fast")
    finally:
        handle.remove()
    plain = train(compose(*RUN), tmp_path / "plain")
    assert dtypes == {torch.bfloat16}
    assert fast["final"]["test/loss"] == pytest.approx(plain["final"]["test/loss"], rel=0.05)
