"""Issue 13's faithful CPU protocols: what each keeps from its paper, checked on the composed configs, and the new
schedule run at smoke scale."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from normexp import models
from normexp.config import compose_config, expand_grid

VGG_EXPERIMENTS = ("santurkar2018-vgg", "santurkar2018-noisy-bn", "qiao2019-ws-smoothness")
INPUT_SHAPES = {"cpu": (1, 28, 28), "paper": (3, 32, 32)}


def composed(experiment: str, scale: str, *overrides: str):
    return compose_config([f"experiment={experiment}", f"scale={scale}", *overrides], return_hydra_config=True)


@pytest.mark.parametrize(
    ("experiment", "keys"),
    [
        ("ioffe2015-fig1", ("train.steps", "train.batch_size", "model.hidden", "model.activation")),
        ("santurkar2018-dln", ("train.steps", "optim.lr", "train.batch_size", "model.depth", "model.width")),
        *(
            (vgg, ("train.steps", "optim.lr", "train.batch_size", "optim.name", "schedule.name"))
            for vgg in VGG_EXPERIMENTS
        ),
    ],
)
def test_cpu_protocol_keeps_the_papers_steps_lr_and_network(experiment: str, keys: tuple[str, ...]) -> None:
    cpu, paper = composed(experiment, "cpu"), composed(experiment, "paper")
    assert {k: OmegaConf.select(cpu, k) for k in keys} == {k: OmegaConf.select(paper, k) for k in keys}


def test_lr_claim_is_asked_of_inceptions_features_with_every_multiple_on_the_grid() -> None:
    cfg = composed("ioffe2015-lr", "cpu")
    assert cfg.model.activation == "relu" and cfg.optim.momentum == 0.9
    lrs = [float(v) for v in cfg.hydra.sweeper.params["optim.lr"].split(",")]
    candidates = [lr for lr in lrs if lr <= 0.2]
    for lr in candidates:
        assert all(any(math.isclose(k * lr, other) for other in lrs) for k in (5, 30)), lr


def test_xiong_warmups_share_the_inverse_sqrt_decay_after_the_longest(cli, out_dir: Path) -> None:
    """Smoke scale: warm-up 0 holds lr_max for decay_start updates, then lr_max·√(decay_start/t)."""
    status, _, _ = cli(
        "run",
        "experiment=xiong2020-warmup",
        "scale=smoke",
        "schedule.warmup_steps=0",
        "optim.lr=1e-3",
        "train.steps=8",
        "train.log_every=1",
        "train.eval_every=4",
        f"out_dir={out_dir}",
    )
    assert status == 0
    (run,) = (out_dir / "xiong2020-warmup" / "smoke").glob("*seed=*")
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    lr = {row["step"]: row["lr"] for row in logged if "lr" in row}
    decay_start = composed("xiong2020-warmup", "smoke").schedule.decay_start
    # the lr logged after `step` updates is the next update's, t = step + 1
    expected = {s: 1e-3 * math.sqrt(decay_start / max(s + 1, decay_start)) for s in lr}
    assert lr == pytest.approx(expected)


@pytest.mark.parametrize("steps", [200, 800, 1600])
def test_xiong_protocol_is_a_share_of_the_horizon_so_its_budget_map_changes_the_length_alone(steps: int) -> None:
    """The paper's warm-ups are 0, 500 and 4000 of ~16k updates (0, 1/32, 1/4), its decay pivots at the longest, and
    the curves hold 80 evaluations: at every horizon of the map, and at the primary 800 exactly the grid it had."""
    grid = expand_grid(["experiment=xiong2020-warmup", "scale=cpu", f"train.steps={steps}", "seed=0"])
    jobs = [composed("xiong2020-warmup", "cpu", *job) for job in grid]
    warmups = sorted({cfg.schedule.warmup_steps for cfg in jobs})
    assert warmups == [0, steps // 32, steps // 4]
    assert {(cfg.schedule.decay_start, cfg.train.eval_every, cfg.train.log_every) for cfg in jobs} == {
        (steps // 4, steps // 80, steps // 80)
    }
    if steps == 800:
        assert warmups == [0, 25, 200] and jobs[0].train.eval_every == 10


@pytest.mark.parametrize("width", [32, 64, 128, 512])
def test_xiong_gradnorm_width_map_keeps_the_papers_ffn_of_twice_the_width(width: int) -> None:
    cfg = composed("xiong2020-gradnorm", "cpu", f"model.width={width}")
    assert (cfg.model.ffn, cfg.model.heads) == (2 * width, 4)


def conv_widths(cfg) -> list[int]:
    return [int(item) for item in cfg.model.channels if item != "M"]


@pytest.mark.parametrize("experiment", VGG_EXPERIMENTS)
def test_cpu_vgg_is_vgg11_at_an_eighth_of_its_width_whose_classifier_sees_one_position(experiment: str) -> None:
    """Every conv of VGG-11 at 1/8 width, so as many norm (and noise) layers as the paper's; 28×28 after four pools
    and CIFAR's 32×32 after five both leave the classifier one position."""
    cpu, paper = composed(experiment, "cpu"), composed(experiment, "paper")
    assert conv_widths(cpu) == [width // 8 for width in conv_widths(paper)]
    for scale, cfg in (("cpu", cpu), ("paper", paper)):
        model = models.from_config(cfg, INPUT_SHAPES[scale], 10)
        assert model.classifier.in_features == conv_widths(cfg)[-1], scale


def test_cpu_group_norm_keeps_the_papers_channels_per_group_at_every_layer() -> None:
    cpu, paper = composed("qiao2019-ws-smoothness", "cpu"), composed("qiao2019-ws-smoothness", "paper")
    per_group = {cfg.scale_name: [width / cfg.norm.groups for width in conv_widths(cfg)] for cfg in (cpu, paper)}
    assert per_group["cpu"] == per_group["paper"] == [2, 4, 8, 8, 16, 16, 16, 16]


@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_noisy_bn_tracks_the_norm_of_the_second_and_last_conv_block(scale: str) -> None:
    cfg = composed("santurkar2018-noisy-bn", scale)
    convs = [i for i, item in enumerate(cfg.model.channels) if item != "M"]
    assert list(cfg.probes.activation_stats.modules) == [f"features.{convs[1]}.norm", f"features.{convs[-1]}.norm"]


def test_li2018_norm_trains_santurkar2018_vggs_net_by_its_recipe_at_every_scale() -> None:
    """li2018-norm draws Li et al.'s surfaces of Santurkar et al.'s VGG: it trains santurkar2018-vgg's runs exactly."""
    keys = ("data", "model", "train", "optim", "schedule")
    for scale in ("cpu", "paper"):
        li, santurkar = composed("li2018-norm", scale), composed("santurkar2018-vgg", scale)
        assert {k: li[k] for k in keys} == {k: santurkar[k] for k in keys}, scale


def test_li2018_skip_keeps_the_authors_recipe_depth_schedule_and_surface_grids() -> None:
    """The authors' SGD, batch, depth and augmentation; the lr falls ×0.1 after the same fractions of training
    (their epochs 150, 225, 275 of 300, within one step); the surfaces span the same grids."""
    cpu, paper = composed("li2018-skip", "cpu"), composed("li2018-skip", "paper")
    same = ("optim", "train.batch_size", "model.blocks", "data.augment", "schedule.name", "schedule.gamma")
    assert {k: OmegaConf.select(cpu, k) for k in same} == {k: OmegaConf.select(paper, k) for k in same}
    assert paper.optim.nesterov and paper.optim.momentum == 0.9 and paper.optim.weight_decay == 5e-4
    assert list(paper.model.blocks) == [9, 9, 9] and paper.schedule.milestones == [58650, 87975, 107525]
    for cfg in (cpu, paper):
        fractions = [m / cfg.train.steps for m in cfg.schedule.milestones]
        assert fractions == pytest.approx([150 / 300, 225 / 300, 275 / 300], abs=1 / cfg.train.steps)
    grid = ("points_1d", "points_2d", "span", "alpha_min", "alpha_max")
    assert {k: cpu.probes.surface[k] for k in grid} == {k: paper.probes.surface[k] for k in grid}
    assert (cpu.probes.surface.points_1d, cpu.probes.surface.points_2d) == (51, 51)  # Li et al.'s grids
