"""Learning-rate schedules against hand values: Xiong et al. (2020)'s warm-up lr(t) = t/T_warmup · lr_max, then
Vaswani et al. (2017)'s inverse square root; warm-up then constant; step decay; warm-up 0 = none."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from normexp import optim


def schedule(name: str, warmup: int, **options) -> OmegaConf:
    return OmegaConf.create({"name": name, "warmup_steps": warmup, "milestones": [], "gamma": 0.1} | options)


def factors(cfg: OmegaConf, steps: int, total: int = 100) -> list[float]:
    """The multiplier of the t-th update, t = 1 .. steps (the scheduler's step index is t − 1)."""
    factor = optim.lr_factor(cfg, total)
    return [factor(t - 1) for t in range(1, steps + 1)]


def test_inverse_sqrt_with_warmup_matches_hand_values() -> None:
    expected = [0.25, 0.5, 0.75, 1.0, math.sqrt(4 / 5), math.sqrt(4 / 6), math.sqrt(4 / 7)]
    assert factors(schedule("inverse_sqrt", 4), 7) == pytest.approx(expected)


def test_inverse_sqrt_is_vaswani_eq3_normalized_to_its_peak() -> None:
    warmup, d_model = 40, 512

    def vaswani(t: int) -> float:  # lrate = d^-0.5 · min(t^-0.5, t · warmup^-1.5), t from 1
        return d_model**-0.5 * min(t**-0.5, t * warmup**-1.5)

    expected = [vaswani(t) / vaswani(warmup) for t in range(1, 201)]
    assert factors(schedule("inverse_sqrt", warmup), 200, total=200) == pytest.approx(expected)


def test_inverse_sqrt_without_warmup_decays_from_the_first_update() -> None:
    assert factors(schedule("inverse_sqrt", 0), 4) == pytest.approx([1, 1 / math.sqrt(2), 1 / math.sqrt(3), 0.5])


def test_inverse_sqrt_with_a_decay_start_decays_alike_after_any_warmup() -> None:
    """Warm-ups 0, 2 and 4 share lr × sqrt(4 / t) past t = 4; the shorter ones hold lr_max until then."""
    tail = [math.sqrt(4 / 5), math.sqrt(4 / 6)]
    assert factors(schedule("inverse_sqrt", 0, decay_start=4), 6) == pytest.approx([1, 1, 1, 1, *tail])
    assert factors(schedule("inverse_sqrt", 2, decay_start=4), 6) == pytest.approx([0.5, 1, 1, 1, *tail])
    assert factors(schedule("inverse_sqrt", 4, decay_start=4), 6) == pytest.approx([0.25, 0.5, 0.75, 1, *tail])


def test_warmup_then_constant_and_no_warmup() -> None:
    assert factors(schedule("constant", 4), 6) == pytest.approx([0.25, 0.5, 0.75, 1, 1, 1])
    assert factors(schedule("constant", 0), 3) == [1, 1, 1]


def test_step_decay_after_warmup() -> None:
    cfg = schedule("step", 2, milestones=[3, 5], gamma=0.5)
    assert factors(cfg, 7) == pytest.approx([0.5, 1, 1, 0.5, 0.5, 0.25, 0.25])


def test_the_optimizer_sees_lr_max_over_warmup_at_the_first_update() -> None:
    """Through torch's scheduler: the lr in force at update t is t/T_warmup · lr_max (Xiong et al. 2020, §3.1)."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer_cfg = OmegaConf.create({"name": "adam", "lr": 1e-3, "betas": [0.9, 0.98], "eps": 1e-8,
                                      "weight_decay": 0.0, "decoupled_weight_decay": False})  # fmt: skip
    optimizer, scheduler = optim.build([param], optimizer_cfg, schedule("inverse_sqrt", 4), 100, lr=1e-3)
    seen = []
    for _ in range(6):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3 * math.sqrt(4 / 5), 1e-3 * math.sqrt(4 / 6)])


def test_schedule_configs_compose(compose) -> None:
    for name in ("constant", "step", "inverse_sqrt"):
        assert compose(f"schedule={name}").schedule.name == name
    assert compose("schedule=inverse_sqrt").schedule.warmup_steps == 4000  # the paper's Post-LN warm-up
