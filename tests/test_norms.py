"""The norm registry and specs: names, options, errors, configs, and properties every norm must have
(batch independence, state-dict round trip, gradients)."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch import nn

from normexp.config import CONFIG_DIR
from normexp.errors import ConfigError
from normexp.norms import NORMS, WEIGHT_NORMS, NormSpec, make, reparametrize, set_global_step

NORM_CONFIGS = sorted(p.stem for p in (CONFIG_DIR / "norm").glob("*.yaml"))
RANK_SHAPES = {2: (4, 32), 3: (4, 32, 5), 4: (4, 32, 3, 5), 5: (2, 32, 2, 3, 3)}


def train_steps(module: nn.Module, shape: tuple[int, ...], steps: int = 3) -> None:
    """A few training-mode forward/backward passes, so running statistics and gradients exist."""
    for _ in range(steps):
        x = 3 * torch.randn(shape, dtype=torch.float64) + 1
        module(x.requires_grad_()).sum().backward()  # an input gradient, so that parameter-free norms pass too


# --- registry --------------------------------------------------------------------------------------------------------


def test_registry_names() -> None:
    expected = {"none", "bn", "sync_bn", "brn", "noisy_bn", "noise", "gn", "in", "ln", "ln_c", "ln_chw", "rms", "bcn"}
    assert set(NORMS) == expected
    assert set(WEIGHT_NORMS) == {"ws", "wn"}


@pytest.mark.parametrize("name", NORMS)
@pytest.mark.parametrize("rank", RANK_SHAPES)
def test_every_norm_takes_channels_first_input_of_any_rank(name: str, rank: int) -> None:
    norm = make(name, 32)
    x = torch.randn(RANK_SHAPES[rank])
    assert norm(x).shape == x.shape
    assert norm.eval()(x).shape == x.shape


@pytest.mark.parametrize("name", [*NORMS, *WEIGHT_NORMS])
def test_docstring_summary_is_one_plain_line(name: str) -> None:
    """``normexp list norms`` prints the first docstring line of each factory."""
    summary = inspect.getdoc({**NORMS, **WEIGHT_NORMS}[name]).split("\n\n")[0]
    assert "\n" not in summary and "``" not in summary and summary.endswith(".")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: make("batchnorm", 8), "unknown norm 'batchnorm'"),
        (lambda: make("bn", 8, groups=2), "no option 'groups'"),
        (lambda: reparametrize(nn.Conv2d(3, 4, 3), "sn"), "unknown weight reparametrization 'sn'"),
        (lambda: reparametrize(nn.Conv2d(3, 4, 3), "ws", epsilon=1e-6), "no option 'epsilon'"),
        (lambda: reparametrize(nn.ConvTranspose2d(3, 4, 3), "ws"), "not ConvTranspose2d"),
        (lambda: NormSpec.parse("bn+gn"), "names 2 activation norms"),
        (lambda: NormSpec.parse("gn+xs"), "unknown norm 'xs'"),
        (lambda: NormSpec.parse("gn+ws", ws={"eps_outside": True}), "no option 'eps_outside'"),
        (lambda: NormSpec.parse("bn", group_size=4), "no option 'group_size'"),
        (lambda: make("brn", 8, r_max=0.5), "r_max >= 1"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_bad_names_and_options_are_config_errors(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        call()
    assert error.value.fix or error.value.choices


# --- group counts ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "options", "groups"),
    [
        ("gn", {}, 32),
        ("gn", {"groups": 8}, 8),
        ("gn", {"groups": None, "group_size": 16}, 4),
        ("in", {}, 64),
        ("ln_chw", {}, 1),
        ("bcn", {"groups": None, "group_size": 4}, 16),
    ],
)
def test_group_count(name: str, options: dict, groups: int) -> None:
    assert make(name, 64, **options).num_groups == groups


@pytest.mark.parametrize(
    ("name", "options", "fragments"),
    [
        ("gn", {}, ["stage2.conv1", "48 channels", "groups=32"]),
        ("gn", {"groups": None, "group_size": 5}, ["stage2.conv1", "group_size=5", "48 channels"]),
        ("gn", {"groups": 8, "group_size": 6}, ["stage2.conv1", "ambiguous"]),
        ("bcn", {"groups": 7}, ["stage2.conv1", "48 channels", "groups=7"]),
    ],
)
def test_impossible_grouping_names_layer_and_channels(name: str, options: dict, fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as error:
        NormSpec.parse(name, **options).make(48, where="stage2.conv1")
    for fragment in fragments:
        assert fragment in error.value.message


# --- specs and configs -----------------------------------------------------------------------------------------------


def test_spec_routes_options_to_its_parts() -> None:
    spec = NormSpec.parse("gn+ws", groups=8, eps=1e-3, ws={"eps": 1e-6, "unbiased": False})
    assert (spec.name, spec.act, spec.weight, spec.layer_bias) == ("gn+ws", "gn", ("ws",), False)
    norm = spec.make(16)
    assert (norm.num_groups, norm.eps) == (8, 1e-3)
    conv = spec.reparametrize(nn.Conv2d(3, 16, 3, bias=spec.layer_bias))
    standardize = conv.parametrizations.weight[0]
    assert (standardize.eps, standardize.unbiased, standardize.eps_inside) == (1e-6, False, False)


@pytest.mark.parametrize(
    ("spec", "layer_bias", "needs_data_init"),
    [("none", True, False), ("rms", True, False), ("noise", True, False), ("bn+ws", False, False), ("wn", True, True)],
)
def test_spec_properties(spec: str, layer_bias: bool, needs_data_init: bool) -> None:
    parsed = NormSpec.parse(spec)
    assert (parsed.layer_bias, parsed.needs_data_init) == (layer_bias, needs_data_init)


def test_spec_make_overrides_for_transformers() -> None:
    norm = NormSpec.parse("ln").make(8, channels_last=True)
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(norm(x), nn.functional.layer_norm(x, (8,)))


def test_config_group_lists_the_claims_specs() -> None:
    needed = {"none", "bn", "gn", "ln", "ln_c", "ln_chw", "in", "rms", "bcn", "brn", "noisy_bn", "noise", "sync_bn"}
    assert needed | {"bn+ws", "gn+ws", "bcn+ws", "wn"} <= set(NORM_CONFIGS)


@pytest.mark.parametrize("config", NORM_CONFIGS)
def test_config_composes_and_builds(config: str) -> None:
    first_line = (CONFIG_DIR / "norm" / f"{config}.yaml").read_text().splitlines()[0]
    assert first_line.startswith("# ")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(overrides=[f"+norm={config}"])
    options = OmegaConf.to_container(cfg.norm, resolve=True)
    spec = NormSpec.parse(options.pop("name"), **options)
    assert spec.name == config
    spec.make(64)(torch.randn(2, 64, 3, 3))
    spec.reparametrize(nn.Conv2d(3, 64, 3))(torch.randn(2, 3, 5, 5))


# --- properties of every norm ----------------------------------------------------------------------------------------


def small_model(spec: NormSpec) -> nn.Module:
    """conv -> norm -> ReLU -> conv -> norm, built only through the spec, as models do."""
    conv1 = spec.reparametrize(nn.Conv2d(3, 8, 3, padding=1, bias=spec.layer_bias))
    conv2 = spec.reparametrize(nn.Conv2d(8, 8, 3, padding=1, bias=spec.layer_bias))
    return nn.Sequential(conv1, spec.make(8), nn.ReLU(), conv2, spec.make(8)).double()


@pytest.mark.parametrize(
    ("spec", "independent"),
    [
        *[(name, True) for name in ("gn", "ln", "ln_c", "ln_chw", "in", "rms", "gn+ws", "ln+ws", "none+ws", "wn")],
        ("bn", False),
        ("bn+ws", False),
        ("brn", False),
    ],
)
def test_batch_independence_in_training(spec: str, independent: bool) -> None:
    torch.manual_seed(0)
    model = small_model(NormSpec.parse(spec, groups=2) if spec.startswith("gn") else NormSpec.parse(spec))
    x = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    other = x.clone()
    other[1:] = 5 * torch.randn_like(other[1:]) + 2
    same = torch.allclose(model(x)[0], model(other)[0])
    assert same == independent


STATE_CASES = [*NORMS, "ws", "wn"]


def build_for_state(name: str) -> nn.Module:
    """The norm ``name``, or a conv reparametrized by it; float64."""
    if name in WEIGHT_NORMS:
        return reparametrize(nn.Conv2d(3, 32, 3), name).double()
    return make(name, 32).double()


@pytest.mark.parametrize("name", STATE_CASES)
def test_state_dict_round_trips(name: str) -> None:
    torch.manual_seed(0)
    source = build_for_state(name)
    set_global_step(source, 30_000)
    shape = (4, 3, 5, 5) if name in WEIGHT_NORMS else (4, 32, 3, 3)
    optimizer = torch.optim.SGD(source.parameters(), lr=0.1) if list(source.parameters()) else None
    for _ in range(3):
        train_steps(source, shape, steps=1)
        if optimizer:
            optimizer.step()
    target = build_for_state(name)
    target.load_state_dict(source.state_dict())
    torch.testing.assert_close(target.state_dict(), source.state_dict())
    source.eval(), target.eval()
    x = torch.randn(shape, dtype=torch.float64)
    torch.testing.assert_close(target(x), source(x))


@pytest.mark.parametrize("name", ["sync_bn", "brn", "noisy_bn"])
def test_bn_variants_share_bn_state_dict(name: str) -> None:
    variant = make(name, 8)
    train_steps(variant.double(), (4, 8, 3, 3))
    bn = make("bn", 8).double()
    bn.load_state_dict(variant.state_dict())
    torch.testing.assert_close(bn.state_dict(), variant.state_dict())


# --- gradients of the norms written here -----------------------------------------------------------------------------

SEEDED_NOISE = {"noise", "noisy_bn"}


@pytest.mark.parametrize(
    ("name", "options", "training"),
    [
        ("ln_c", {}, True),
        ("ln_c", {"channels_last": True}, True),
        ("rms", {}, True),
        ("rms", {"eps_inside": True}, True),
        ("rms", {"channels_last": True}, True),
        # bcn's estimates and brn's r, d depend on x without gradient by design (the papers' stop-gradients), so
        # finite differences see a path autograd must not: check them where that path is constant.
        ("bcn", {"groups": 2}, False),
        ("bcn", {"groups": 2, "estimate": False}, True),
        ("brn", {}, True),  # step 0 is in the warm-up: r = 1 and d = 0 after clipping
        ("brn", {}, False),
        ("noise", {}, True),
        ("noisy_bn", {}, True),
    ],
)
def test_gradcheck(name: str, options: dict, training: bool) -> None:
    torch.manual_seed(0)
    norm = make(name, 4, **options).double()
    shape = (3, 3, 2, 4) if options.get("channels_last") else (3, 4, 3, 2)
    train_steps(norm, shape)  # non-trivial running estimates for the eval-mode checks
    norm.train(training)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)

    def forward(*inputs: torch.Tensor) -> torch.Tensor:
        if name in SEEDED_NOISE:
            torch.manual_seed(1)  # the same noise draw on every evaluation
        return norm(inputs[0])

    assert torch.autograd.gradcheck(forward, (x, *norm.parameters()), fast_mode=True)


@pytest.mark.parametrize("unbiased", [True, False])
@pytest.mark.parametrize("eps_inside", [True, False])
def test_gradcheck_weight_standardization(unbiased: bool, eps_inside: bool) -> None:
    conv = reparametrize(nn.Conv2d(2, 3, 2), "ws", unbiased=unbiased, eps_inside=eps_inside)
    standardize = conv.parametrizations.weight[0]
    weight = torch.randn(3, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(standardize, (weight,), fast_mode=True)
