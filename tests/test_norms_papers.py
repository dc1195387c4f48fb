"""The zoo's own norms against computations written from the papers (float64 hand formulas, published numbers)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from normexp.norms import data_dependent_init, make, reparametrize, set_global_step

F64 = torch.float64


def randn(*shape: int, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
    return scale * torch.randn(*shape, dtype=F64) + shift


def by_channel(x: torch.Tensor) -> torch.Tensor:
    """``(C, N·positions)``: each channel's values over the batch and all spatial positions."""
    return x.transpose(0, 1).reshape(x.shape[1], -1)


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance over N and all spatial positions, from sums."""
    flat = by_channel(x)
    mean = flat.sum(1) / flat.shape[1]
    return mean, ((flat - mean[:, None]) ** 2).sum(1) / flat.shape[1]


def bc(values: torch.Tensor, ndim: int = 4) -> torch.Tensor:
    """Broadcast a per-channel vector over a channels-first tensor."""
    return values.view(-1, *[1] * (ndim - 2))


# --- rms: the official code's eps outside the root ------------------------------------------------------------------


@pytest.mark.parametrize("channels_last", [False, True])
def test_rms_default_is_the_official_formula(channels_last: bool) -> None:
    torch.manual_seed(0)
    rms = make("rms", 5, channels_last=channels_last).double()
    with torch.no_grad():
        rms.weight.copy_(randn(5))
    x = randn(3, 5, 4, 2, scale=0.01)  # small activations, where eps placement matters
    x_last = x.movedim(1, -1)
    rms_x = torch.sqrt((x_last**2).sum(-1, keepdim=True) / 5)
    expected = (x_last / (rms_x + 1e-8) * rms.weight).movedim(-1, 1)
    out = rms(x_last).movedim(-1, 1) if channels_last else rms(x)
    torch.testing.assert_close(out, expected)


# --- ws --------------------------------------------------------------------------------------------------------------

WS_VARIANTS = [(unbiased, eps_inside) for unbiased in (True, False) for eps_inside in (True, False)]
LAYERS = {"conv": lambda: nn.Conv2d(3, 4, 3, bias=False), "linear": lambda: nn.Linear(7, 5, bias=False)}


def standardized(raw: torch.Tensor, eps: float, unbiased: bool, eps_inside: bool) -> torch.Tensor:
    flat = raw.reshape(raw.shape[0], -1)
    n = flat.shape[1]
    centered = flat - flat.sum(1, keepdim=True) / n
    var = (centered**2).sum(1, keepdim=True) / (n - 1 if unbiased else n)
    std = torch.sqrt(var + eps) if eps_inside else torch.sqrt(var) + eps
    return (centered / std).view_as(raw)


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize(("unbiased", "eps_inside"), WS_VARIANTS)
def test_ws_matches_formula_with_zero_mean_unit_std_filters(layer: str, unbiased: bool, eps_inside: bool) -> None:
    torch.manual_seed(0)
    module = reparametrize(LAYERS[layer]().double(), "ws", eps=1e-5, unbiased=unbiased, eps_inside=eps_inside)
    raw = module.parametrizations.weight.original
    torch.testing.assert_close(module.weight, standardized(raw, 1e-5, unbiased, eps_inside))
    filters = module.weight.reshape(module.weight.shape[0], -1)
    torch.testing.assert_close(filters.mean(1), torch.zeros(filters.shape[0], dtype=F64))
    std = filters.std(1, correction=int(unbiased))
    torch.testing.assert_close(std, torch.ones_like(std), atol=2e-3, rtol=0)  # eps is the only departure from 1


def test_ws_default_is_the_authors_unbiased_std_plus_eps() -> None:
    conv = reparametrize(nn.Conv2d(3, 4, 3, bias=False).double(), "ws")
    expected = standardized(conv.parametrizations.weight.original, 1e-5, unbiased=True, eps_inside=False)
    torch.testing.assert_close(conv.weight, expected)


def test_ws_gradient_reaches_the_raw_weight() -> None:
    torch.manual_seed(0)
    conv = reparametrize(nn.Conv2d(3, 4, 3).double(), "ws")
    conv(randn(2, 3, 5, 5)).square().sum().backward()
    raw = conv.parametrizations.weight.original
    assert raw.grad is not None
    assert raw.grad.abs().sum() > 0
    # The standardization is invariant to the filter's shift and scale, so the gradient is orthogonal to both.
    filters_grad = raw.grad.reshape(4, -1)
    torch.testing.assert_close(filters_grad.sum(1), torch.zeros(4, dtype=F64))


# --- wn --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layer", LAYERS)
def test_wn_weight_is_g_times_unit_direction_per_output_unit(layer: str) -> None:
    module = reparametrize(LAYERS[layer]().double(), "wn")
    with torch.no_grad():
        module.parametrizations.weight.original0.mul_(3.0)  # g moved away from ‖v‖
    g = module.parametrizations.weight.original0  # (out, 1, ...)
    v = module.parametrizations.weight.original1
    v_norm = torch.sqrt((v**2).sum(tuple(range(1, v.dim())), keepdim=True))
    torch.testing.assert_close(module.weight, g * v / v_norm)


def test_wn_data_dependent_init_standardizes_preactivations_on_the_init_batch() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        reparametrize(nn.Conv2d(3, 8, 3), "wn"),
        nn.ReLU(),
        nn.Flatten(),
        reparametrize(nn.Linear(8 * 4 * 4, 5), "wn"),
    ).double()
    batch = randn(16, 3, 6, 6, scale=2.0, shift=1.0)
    assert data_dependent_init(model, batch) == 2
    outputs = {}
    for index in (0, 3):
        model[index].register_forward_hook(lambda m, i, out, index=index: outputs.__setitem__(index, out))
    model(batch)
    for index, dims in ((0, (0, 2, 3)), (3, (0,))):
        var, mean = torch.var_mean(outputs[index], dims, correction=0)
        torch.testing.assert_close(mean, torch.zeros_like(mean))
        torch.testing.assert_close(var, torch.ones_like(var))


def test_data_dependent_init_is_a_no_op_without_wn() -> None:
    model = nn.Sequential(nn.Linear(3, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert data_dependent_init(model, torch.randn(4, 3)) == 0
    torch.testing.assert_close(model.state_dict(), before)


# --- bcn -------------------------------------------------------------------------------------------------------------


class BCNReference:
    """Qiao et al.'s BCN written from the official README: EstBN (affine per channel), GN without affine, per-group
    affine; all loops and sums, float64."""

    def __init__(self, channels: int, groups: int, rate: float, estimate: bool, eps: float = 1e-5) -> None:
        self.groups, self.rate, self.estimate, self.eps = groups, rate, estimate, eps
        self.mean, self.var = torch.zeros(channels, dtype=F64), torch.ones(channels, dtype=F64)

    def __call__(self, x: torch.Tensor, bcn: nn.Module, training: bool) -> torch.Tensor:
        batch_mean, batch_var = channel_stats(x)
        if training and self.estimate:
            deviation = by_channel((x - bc(self.mean)) ** 2).mean(1)  # around the *old* estimate
            self.mean = (1 - self.rate) * self.mean + self.rate * batch_mean
            self.var = (1 - self.rate) * self.var + self.rate * deviation
        mean, var = (self.mean, self.var) if self.estimate or not training else (batch_mean, batch_var)
        y = bc(bcn.batch.weight) * (x - bc(mean)) / bc(torch.sqrt(var + self.eps)) + bc(bcn.batch.bias)
        out = torch.empty_like(y)
        size = y.shape[1] // self.groups
        for n in range(y.shape[0]):
            for g in range(self.groups):
                chunk = y[n, g * size : (g + 1) * size]
                mu = chunk.mean()
                sigma2 = ((chunk - mu) ** 2).mean()
                out[n, g * size : (g + 1) * size] = bcn.weight[g] * (chunk - mu) / torch.sqrt(sigma2 + self.eps)
                out[n, g * size : (g + 1) * size] += bcn.bias[g]
        return out


def test_bcn_matches_reference_with_estimates_in_train_and_eval() -> None:
    torch.manual_seed(0)
    bcn = make("bcn", 8, groups=2, momentum=0.3).double()
    with torch.no_grad():
        for param in bcn.parameters():
            param.copy_(torch.randn_like(param))
    reference = BCNReference(8, 2, rate=0.3, estimate=True)
    for _ in range(3):
        x = randn(2, 8, 3, 3, scale=2.0, shift=1.0)
        torch.testing.assert_close(bcn(x), reference(x, bcn, training=True))
        torch.testing.assert_close(bcn.batch.running_mean, reference.mean)
        torch.testing.assert_close(bcn.batch.running_var, reference.var)
    bcn.eval()
    x = randn(2, 8, 3, 3)
    torch.testing.assert_close(bcn(x), reference(x, bcn, training=False))
    torch.testing.assert_close(bcn.batch.running_var, reference.var)  # eval does not update


def test_bcn_without_estimate_uses_batch_statistics() -> None:
    torch.manual_seed(0)
    bcn = make("bcn", 8, groups=4, estimate=False).double()
    x = randn(3, 8, 2, 2, scale=2.0, shift=1.0)
    torch.testing.assert_close(bcn(x), BCNReference(8, 4, rate=0.0, estimate=False)(x, bcn, training=True))


# --- brn -------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "r_max", "d_max"), [(0, 1.0, 0.0), (5000, 1.0, 0.0), (25000, None, 5.0), (40000, 3.0, 5.0)]
)
def test_brn_schedule_matches_the_paper(step: int, r_max: float | None, d_max: float) -> None:
    schedule = make("brn", 4).schedule
    got_r, got_d = schedule.limits(step)
    assert got_d == pytest.approx(d_max)
    if r_max is None:  # between warm-up and 40k the paper gives no number, only "gradually relaxed"
        assert 1.0 < got_r < 3.0
    else:
        assert got_r == pytest.approx(r_max)
    assert schedule.limits(10**6) == (3.0, 5.0)


def test_brn_with_r_max_1_and_d_max_0_is_bn() -> None:
    torch.manual_seed(0)
    brn = make("brn", 4, r_max=1.0, d_max=0.0, momentum=0.1).double()
    bn = make("bn", 4, momentum=0.1).double()
    set_global_step(brn, 50_000)
    for _ in range(3):
        x = randn(5, 4, 3, 3, scale=3.0, shift=2.0)
        torch.testing.assert_close(brn(x), bn(x))
    torch.testing.assert_close(brn.state_dict(), bn.state_dict())
    brn.eval()
    bn.eval()
    x = randn(5, 4, 3, 3)
    torch.testing.assert_close(brn(x), bn(x))


def brn_reference(x: torch.Tensor, brn: nn.Module, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """Ioffe 2017 Algorithm 1 from the running mean/var *before* the step: r and d are constants (detached)."""
    r_max, d_max = brn.schedule.limits(brn.global_step)
    batch_mean, batch_var = channel_stats(x)
    batch_std = torch.sqrt(batch_var + brn.eps)
    running_std = torch.sqrt(var + brn.eps)
    r = (batch_std / running_std).clamp(1 / r_max, r_max).detach()
    d = ((batch_mean - mean) / running_std).clamp(-d_max, d_max).detach()
    x_hat = (x - bc(batch_mean)) / bc(batch_std) * bc(r) + bc(d)
    return bc(brn.weight) * x_hat + bc(brn.bias)


@pytest.mark.parametrize("step", [10_000, 40_000])
def test_brn_matches_the_paper_and_r_d_carry_no_gradient(step: int) -> None:
    torch.manual_seed(0)
    brn = make("brn", 4, momentum=0.5).double()
    for _ in range(2):  # running estimates far from the next batch's, so r, d are away from 1, 0
        brn(randn(6, 4, 3, 3))
    set_global_step(brn, step)
    x = randn(6, 4, 3, 3, scale=4.0, shift=3.0).requires_grad_()
    ref_x = x.detach().clone().requires_grad_()
    mean, var = brn.running_mean.clone(), brn.running_var.clone()
    expected = brn_reference(ref_x, brn, mean, var)
    grad_out = torch.randn_like(expected)
    params = [brn.weight, brn.bias]
    ref_grads = torch.autograd.grad(expected, [ref_x, *params], grad_out)
    got = brn(x)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(torch.autograd.grad(got, [x, *params], grad_out), ref_grads)
    batch_mean, batch_var = channel_stats(x.detach())
    torch.testing.assert_close(brn.running_mean, 0.5 * mean + 0.5 * batch_mean)
    torch.testing.assert_close(brn.running_var, 0.5 * var + 0.5 * batch_var * x[:, 0].numel() / (x[:, 0].numel() - 1))


def test_set_global_step_reaches_nested_brn_layers() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Sequential(make("brn", 4), make("bn", 4)), make("brn", 4))
    set_global_step(model, 12_345)
    assert [m.global_step for m in model.modules() if hasattr(m, "global_step")] == [12_345, 12_345]


# --- noisy_bn --------------------------------------------------------------------------------------------------------


def test_noise_follows_the_papers_distributions() -> None:
    torch.manual_seed(0)
    channels = 2000
    scale, shift = make("noise", channels).sample(torch.empty(50, channels, 4, 4, dtype=F64))
    shift, scale = by_channel(shift), by_channel(scale)
    mu, sigma = shift.mean(1), scale.mean(1)  # each channel's μ and σ for this step, estimated from 800 draws
    assert mu.abs().max() < 0.5 + 0.01
    assert ((sigma > 1.0 - 0.01) & (sigma < 1.25 + 0.01)).all()
    assert mu.mean().item() == pytest.approx(0.0, abs=0.03)
    assert mu.var().item() == pytest.approx(1 / 12, rel=0.1)  # U(-0.5, 0.5)
    assert sigma.mean().item() == pytest.approx(1.125, abs=0.01)
    assert sigma.var().item() == pytest.approx(0.25**2 / 12, rel=0.15)  # U(1, 1.25)
    within_m = shift - mu[:, None]
    assert within_m.abs().max() < 0.1 + 0.01  # m ~ U(μ - 0.1, μ + 0.1)
    assert within_m.var().item() == pytest.approx(0.2**2 / 12, rel=0.05)
    within_s = scale - sigma[:, None]
    assert within_s.std().item() == pytest.approx(0.1, rel=0.05)  # s ~ N(σ, 0.1)
    assert abs(within_s.pow(3).mean().item()) < 1e-4  # symmetric, as a normal is


def test_noisy_bn_output_is_s_times_bn_plus_m_in_training() -> None:
    noisy, bn = make("noisy_bn", 4).double(), make("bn", 4).double()
    x = randn(5, 4, 3, 3, scale=2.0)
    torch.manual_seed(1)
    scale, shift = noisy.noise.sample(x)
    torch.manual_seed(1)
    torch.testing.assert_close(noisy(x), scale * bn(x) + shift)


def test_noisy_bn_in_eval_mode_is_bn_without_noise() -> None:
    noisy, bn = make("noisy_bn", 4).double(), make("bn", 4).double()
    for _ in range(2):
        x = randn(5, 4, 3, 3, scale=2.0, shift=1.0)
        noisy(x), bn(x)
    noisy.eval(), bn.eval()
    x = randn(5, 4, 3, 3)
    torch.testing.assert_close(noisy(x), bn(x))
    torch.testing.assert_close(noisy(x), noisy(x))
