"""The line-search probe (Santurkar et al. 2018, Fig. 4) against a quadratic loss in closed form, and the
measurement-only guarantee of every Santurkar probe: a run with probes on follows the run with probes off."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from normexp import tasks
from normexp.checkpoint import CHECKPOINT_FILE
from normexp.probes.landscape import LineSearchProbe, step_sizes
from normexp.rundir import read_metrics_log
from normexp.training.runner import train

N, D, K = 40, 5, 3


@pytest.fixture
def quadratic() -> tuple[nn.Linear, torch.Tensor, torch.Tensor]:
    """A linear model under mean squared error: L(W) = ‖XWᵀ − Y‖²/(NK), quadratic in W."""
    generator = torch.Generator().manual_seed(0)
    model = nn.Linear(D, K, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(K, D, generator=generator, dtype=torch.float64))
    x = torch.randn(N, D, generator=generator, dtype=torch.float64)
    y = torch.randn(N, K, generator=generator, dtype=torch.float64)
    return model, x, y


def test_line_search_matches_the_closed_form_of_a_quadratic(quadratic) -> None:
    model, x, y = quadratic
    lr = 0.1
    probe = LineSearchProbe(model, None, tasks.REGRESSION, every=1, eta_min=0.5, eta_max=4.0, points=8)
    measured = probe.on_batch(model, x, y, step=1, lr=lr)

    xn, yn, w = x.numpy(), y.numpy(), model.weight.detach().numpy()
    scale = 2 / (N * K)

    def loss(weight: np.ndarray) -> float:
        return float(np.sum((xn @ weight.T - yn) ** 2) / (N * K))

    g = scale * (xn @ w.T - yn).T @ xn  # ∇L(W)
    change = scale * g @ xn.T @ xn  # ∇L(W − ηg) − ∇L(W) = −η · change: linear in η
    etas = lr * np.linspace(0.5, 4.0, 8)
    losses = [loss(w - eta * g) for eta in etas]
    grad_changes = etas * np.linalg.norm(change)
    expected = {
        "landscape/loss_min": min(losses),
        "landscape/loss_max": max(losses),
        "landscape/loss_range": max(losses) - min(losses),
        "landscape/gpred_min": grad_changes.min(),
        "landscape/gpred_max": grad_changes.max(),
        "landscape/gpred_range": grad_changes.max() - grad_changes.min(),
        "landscape/beta": np.linalg.norm(change) / np.linalg.norm(g),  # the same at every η for a quadratic
        "landscape/grad_norm": np.linalg.norm(g),
    }
    assert measured.keys() == expected.keys()
    np.testing.assert_allclose([measured[k] for k in expected], list(expected.values()), rtol=1e-9)


def test_step_sizes_span_the_multiples_of_the_lr_linearly_or_geometrically() -> None:
    np.testing.assert_allclose(step_sizes(0.1, 0.5, 4.0, 8, "linear"), [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4])
    np.testing.assert_allclose(step_sizes(1e-6, 0.01, 100.0, 5, "log"), [1e-8, 1e-7, 1e-6, 1e-5, 1e-4])


def test_measures_on_the_first_batch_of_every_nth_step(quadratic) -> None:
    model, x, y = quadratic
    probe = LineSearchProbe(model, None, tasks.REGRESSION, every=3)
    measured = [step for step in (1, 1, 2, 3, 4, 4, 7) if probe.on_batch(model, x, y, step, 0.1)]
    assert measured == [1, 4, 7]  # steps 1, 1 + 3, 1 + 6; a second batch of a step (accumulation) is skipped


def test_bad_grid_is_a_clear_error(quadratic) -> None:
    with pytest.raises(Exception, match="eta_min <= eta_max"):
        LineSearchProbe(quadratic[0], None, tasks.REGRESSION, eta_min=4.0, eta_max=0.5)


def _train(compose, run_dir: Path, *overrides: str) -> tuple[dict, dict[str, list[float]]]:
    train(compose("experiment=santurkar2018-noisy-bn", "norm=noisy_bn", "train.steps=12", *overrides), run_dir)
    state = torch.load(run_dir / CHECKPOINT_FILE, weights_only=True)
    metrics = read_metrics_log(run_dir / "metrics.jsonl")
    training = metrics[metrics["metric"].isin(["train/loss", "train/acc", "test/loss", "test/acc"])]
    return state, training.groupby("metric")["value"].apply(list).to_dict()


def test_probes_on_follow_the_same_trajectory_as_probes_off(compose, tmp_path: Path) -> None:
    """Noisy BN draws from the global RNG in every training forward and BN updates running statistics: any probe
    that leaked into either would change the weights, the buffers, the RNG state or the training metrics."""
    probes = (
        "probes.activation_stats.every=2",
        "+probes.line_search.every=2",
        "+probes.ics.every=3",
    )
    off, off_metrics = _train(compose, tmp_path / "off", "~probes.activation_stats")
    on, on_metrics = _train(compose, tmp_path / "on", *probes)
    assert off["model"].keys() == on["model"].keys()
    assert any("running_mean" in name for name in on["model"])
    for name, value in off["model"].items():
        assert torch.equal(value, on["model"][name]), name
    assert torch.equal(off["rng"]["torch"], on["rng"]["torch"])
    assert off_metrics == on_metrics
    probed = read_metrics_log(tmp_path / "on" / "metrics.jsonl")
    assert {"landscape/beta", "act/features.0.norm/mean"} <= set(probed["metric"])
    assert sorted(probed.loc[probed["metric"] == "landscape/beta", "step"]) == [1, 3, 5, 7, 9, 11]
