"""The batch-size claims: criteria 2a–2d on synthetic stored results (pass, fail, boundaries, missing cells), the
convergence rule for the budget (met, met later, never), their figures and tables, the experiment's budget, and GN+WS's
large-batch equivalence as something measurable."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pandas as pd
import pytest

from normexp import claims, optim
from normexp.claims import Results
from normexp.claims.batchsize import BATCH, BUDGET_EXPERIMENT, EXPERIMENT, IMAGES, NORM, grid_hours
from normexp.config import compose_config, expand_grid
from normexp.identity import flatten
from normexp.rundir import resolved_config
from normexp.training.runner import train

SEEDS = (0, 1, 2)
SEED_JITTER = (-0.2, 0.0, 0.2)  # accuracy points around a cell's median
GRID_IMAGES = 4096
CONVERGING = {1024: 80.0, 2048: 85.0, 4096: 89.6, 8192: 90.0}
"""BN@64's accuracy over the budget ladder: moves 5, 4.6, then 0.4 < 0.5 from 4096 to 8192 images, the grid's."""


def summary(
    cells: dict[tuple[str, int], float],
    seeds: tuple[int, ...] = SEEDS,
    ladder: dict[int, float] = CONVERGING,
) -> pd.DataFrame:
    """The grid: one completed run per seed and cell, final accuracy = the cell's value (in points) ± jitter, NaN:
    diverged; and the budget ladder: BN@64 at each number of images of ``ladder``, accuracy its value ± jitter."""
    grid = runs(cells, seeds).assign(experiment_name=EXPERIMENT, **{IMAGES: GRID_IMAGES})
    rungs = [
        runs({("bn", 64): acc}, seeds, f"-{images}").assign(experiment_name=BUDGET_EXPERIMENT, **{IMAGES: images})
        for images, acc in ladder.items()
    ]
    return pd.concat([grid, *rungs], ignore_index=True)


def runs(cells: dict[tuple[str, int], float], seeds: tuple[int, ...], tag: str = "") -> pd.DataFrame:
    rows = []
    for (norm, batch), acc in cells.items():
        for seed, jitter in zip(seeds, SEED_JITTER, strict=False):
            diverged = math.isnan(acc)
            rows.append(
                {
                    "run_id": f"{norm}-{batch}-{seed}{tag}",
                    NORM: norm,
                    BATCH: batch,
                    "seed": seed,
                    "status": "diverged" if diverged else "completed",
                    "final/test/acc": math.nan if diverged else (acc + jitter) / 100,
                    "wall_time_s": 10.0 / batch,
                }
            )
    return pd.DataFrame(rows)


def verdict(
    claim_id: str,
    cells: dict[tuple[str, int], float],
    seeds: tuple[int, ...] = SEEDS,
    ladder: dict[int, float] = CONVERGING,
) -> claims.Verdict:
    frame = summary(cells, seeds, ladder)
    return claims.get(claim_id).verify(Results(pd.DataFrame(), frame), "test")


def failed(result: claims.Verdict) -> list[str]:
    return [check.name for check in result.checks if not check.passed]


QIAO = {
    ("bn", 1): 60.0,
    ("bn", 2): 80.0,
    ("bn", 64): 90.0,
    ("gn", 1): 86.0,
    ("gn", 2): 86.0,
    ("gn", 64): 86.0,
    ("gn+ws", 1): 89.0,  # exactly BN@64 − 1: the boundary passes
    ("gn+ws", 2): 89.5,
    ("gn+ws", 64): 90.5,
    ("bcn+ws", 1): 89.0,  # equal to GN+WS: "≥" passes
    ("bcn+ws", 2): 90.0,
}


def test_qiao_reproduced_on_the_papers_pattern() -> None:
    result = verdict("qiao2019-microbatch", QIAO)
    assert result.verdict == "reproduced", result.checks
    assert len(result.checks) == 9 and result.n_runs == 33 + 12
    assert result.checks[0].passed and "Converged at 4096 (moves 0.40 to 8192)" in result.checks[0].measured
    assert "gn+ws@1 89.00 [88.80–89.20] (n=3)" in result.checks[1].measured
    assert result.checks[1].margin == pytest.approx(0.0) and result.checks[2].margin == pytest.approx(25.0)


@pytest.mark.parametrize(
    ("changes", "failing"),
    [
        ({("gn+ws", 1): 88.9}, ["2a: GN+WS at batch 1 ≥ BN at batch 64 − 1 point"]),
        ({("bn", 2): 85.1}, ["2a: BN at batch 2 ≥ 5 points below BN at batch 64"]),
        (
            {("bn", 1): 85.5, ("bn", 2): 85.5},
            ["2a: BN at batch 1 ≥ 5 points below BN at batch 64", "2a: BN at batch 2 ≥ 5 points below BN at batch 64"],
        ),
        ({("gn", 64): 90.5}, ["2b: GN+WS > GN at batch 64"]),  # equal is not better
        ({("bcn+ws", 2): 89.4}, ["2c: BCN+WS ≥ GN+WS at batch 2"]),
    ],
)
def test_qiao_not_reproduced_when_a_criterion_misses(changes: dict, failing: list[str]) -> None:
    result = verdict("qiao2019-microbatch", QIAO | changes)
    assert result.verdict == "not reproduced"
    assert failed(result) == failing


def test_a_diverged_run_ranks_below_every_finished_one() -> None:
    result = verdict("qiao2019-microbatch", QIAO | {("bn", 1): math.nan})
    assert result.verdict == "reproduced"
    assert "3 diverged" in result.checks[2].measured


def test_runs_whose_norm_batch_is_smaller_than_the_batch_are_not_cells_of_the_grid() -> None:
    frame = summary(QIAO).assign(**{"train.norm_batch": math.nan})
    bn_large = frame[(frame[NORM] == "bn") & (frame[BATCH] == 64)]
    per_image = bn_large.assign(**{"train.norm_batch": 1, "final/test/acc": 0.1, "run_id": bn_large["run_id"] + "-n1"})
    result = claims.get("qiao2019-microbatch").verify(Results(pd.DataFrame(), pd.concat([frame, per_image])), "test")
    assert result.verdict == "reproduced" and "bn@64 90.00" in result.checks[1].measured


@pytest.mark.parametrize("claim_id", ["qiao2019-microbatch", "wu2018-batchsize"])
def test_fewer_than_three_seeds_or_a_missing_cell_is_insufficient_data(claim_id: str) -> None:
    cells = QIAO | WU
    assert verdict(claim_id, cells, seeds=(0, 1)).verdict == "insufficient data"
    missing = {cell: acc for cell, acc in cells.items() if cell != ("bn", 2)}
    result = verdict(claim_id, missing)
    assert result.verdict == "insufficient data" and "bn at batch 2" in result.note


WU = {
    **{("gn", b): acc for b, acc in {32: 76.0, 16: 75.8, 8: 76.1, 4: 75.5, 2: 75.2}.items()},  # spread 0.9
    **{("bn", b): acc for b, acc in {32: 76.4, 16: 76.3, 8: 75.2, 4: 72.7, 2: 65.3}.items()},
}


def test_wu_reproduced_on_the_papers_numbers_as_accuracies() -> None:
    result = verdict("wu2018-batchsize", WU)
    assert result.verdict == "reproduced", result.checks
    assert len(result.checks) == 4
    assert "difference 10.30" in result.checks[3].measured  # BN rises 11.10 points, GN 0.80
    assert [round(check.margin, 2) for check in result.checks[1:]] == [0.1, 0.1, 7.3]


@pytest.mark.parametrize(
    ("changes", "failing"),
    [
        ({("gn", 2): 74.9}, "2d: GN's error spread over batch [32, 16, 8, 4, 2] < 1 point"),  # spread 1.2
        ({("bn", 16): 76.5}, "2d: BN's error rises as the batch shrinks (32 → 16 → 8 → 4 → 2)"),
        (
            {("bn", 2): 73.7, ("bn", 4): 74.0},
            "2d: error(BN@2) − error(BN@32) exceeds error(GN@2) − error(GN@32) by > 3 points",
        ),
    ],
)
def test_wu_not_reproduced_when_a_criterion_misses(changes: dict, failing: str) -> None:
    result = verdict("wu2018-batchsize", WU | changes)
    assert result.verdict == "not reproduced"
    assert failed(result) == [failing]


@pytest.mark.parametrize("claim_id", ["qiao2019-microbatch", "wu2018-batchsize"])
def test_a_grid_below_the_yardsticks_convergence_is_not_testable_at_this_scale(claim_id: str) -> None:
    later = {4096: 86.0, 8192: 89.6, 16384: 90.0}  # moves 3.6 from the grid's 4096, converges at 8192
    result = verdict(claim_id, QIAO | WU | {("gn+ws", 1): 10.0}, ladder=later)  # 2a would fail
    assert result.verdict == "not testable at this scale"
    assert all(check.passed is None for check in result.checks)
    budget = result.checks[0].measured
    assert "Converged at 8192" in budget and "the grid runs 4096; at 8192 it would cost" in budget
    assert all(check.measured.endswith("(yardstick not converged)") for check in result.checks[1:])


def test_a_ladder_that_never_converges_is_not_testable_with_the_cost_of_its_last_rung() -> None:
    result = verdict("wu2018-batchsize", WU, ladder={2048: 80.0, 4096: 84.0, 8192: 87.0})
    assert result.verdict == "not testable at this scale"
    assert "No rung converges; the ladder's largest (8192) would cost" in result.checks[0].measured


def test_the_ladders_runs_are_no_cell_of_the_grid() -> None:
    result = verdict("qiao2019-microbatch", QIAO, ladder={4096: 50.0, 8192: 50.2})  # converged, but far from 90
    assert result.verdict == "reproduced" and "vs bn@64 90.00" in result.checks[1].measured


def test_the_grids_cost_scales_with_images_and_shares_a_fused_cells_time() -> None:
    grid = pd.DataFrame({"wall_time_s": [3600.0] * 3 + [1800.0], "fused_members": [3, 3, 3, None], IMAGES: 4096})
    assert grid_hours(grid, 8192) == pytest.approx(2 * (3 * 1200 + 1800) / 3600)


def test_no_ladder_is_insufficient_data() -> None:
    frame = summary(QIAO)
    grid_only = frame[frame["experiment_name"] == EXPERIMENT]
    result = claims.get("qiao2019-microbatch").verify(Results(pd.DataFrame(), grid_only), "test")
    assert result.verdict == "insufficient data" and BUDGET_EXPERIMENT in result.note


def test_figures_and_tables_are_drawn_from_stored_results(tmp_path: Path) -> None:
    results = Results(pd.DataFrame(), summary(QIAO | WU))
    for claim_id, name in (("qiao2019-microbatch", "microbatch"), ("wu2018-batchsize", "batchsize")):
        paths = claims.get(claim_id).plot(results, tmp_path)
        assert {p.name for p in paths} == {f"{name}.png", f"{name}.pdf", f"{name}.md", "budget.png", "budget.pdf"}
    table = (tmp_path / "batchsize.md").read_text()
    caption = (tmp_path / "budget.caption.md").read_text()
    assert "n: 3 runs per cell (4 cells: train.images)" in caption, caption
    assert "| bn | 40.0 [39.8–40.2] | 34.7 [34.5–34.9] |" in table  # error = 100 − accuracy, median [min–max]
    assert "| BN, Wu & He (ImageNet ResNet-50) |  | 34.7 | 27.3 | 24.8 | 23.7 | 23.6 |  |" in table


@pytest.mark.parametrize("batch", [1, 8, 64])
def test_every_batch_sees_the_same_images_at_a_linearly_scaled_lr(compose, batch: int) -> None:
    cfg = compose("experiment=batchsize", "scale=cpu", f"train.batch_size={batch}")
    images = cfg.train.images
    assert cfg.train.steps * batch == images
    assert list(cfg.schedule.milestones) == [images // 2 // batch, images * 3 // 4 // batch]  # ×0.1 at 50%, 75%
    assert optim.scaled_lr(cfg.optim, batch) == pytest.approx(0.05 * batch / 64)  # 0.1 at 128, as He et al.


def test_the_cpu_grid_is_a_resnet_at_full_resolution_with_a_pooled_head(compose) -> None:
    cfg = compose("experiment=batchsize", "scale=cpu", "norm=gn")
    assert (cfg.model.name, list(cfg.model.blocks), cfg.data.name, cfg.data.test_size) == (
        "resnet",
        [1, 1, 1],
        "fashion_mnist",
        None,
    )
    assert cfg.norm.groups == 8 and all(width % 8 == 0 for width in cfg.model.widths)
    assert compose("experiment=li2018-norm", "norm=gn").norm.groups == 32  # Wu & He's default elsewhere
    grid = expand_grid(["experiment=batchsize", "scale=cpu"])  # the criteria's 4 norms × 7 batches × 3 seeds
    assert len(grid) == 84 and {job[0] for job in grid} == {"norm=bn", "norm=gn", "norm=gn+ws", "norm=bcn+ws"}
    assert len(expand_grid(["experiment=batchsize-budget", "scale=cpu"])) == 5 * 3  # BN alone over 5 rungs


def test_the_budget_ladder_is_the_grids_bn_at_batch_64_over_doubling_images(compose) -> None:
    grid = compose("experiment=batchsize", "scale=cpu", "norm=bn", "train.batch_size=64")
    params = compose_config(["experiment=batchsize-budget", "scale=cpu"], return_hydra_config=True).hydra.sweeper.params
    ladder = [int(n) for n in params["train.images"].split(",")]
    assert all(larger == 2 * smaller for smaller, larger in itertools.pairwise(ladder))
    assert grid.train.images in ladder[:-1]  # the rung the rule chose, and the one above it to show the move
    rung = compose(
        "experiment=batchsize-budget", "scale=cpu", "norm=bn", "train.batch_size=64", f"train.images={ladder[0]}"
    )
    differs = {"experiment_name", "train.images", "train.steps", "schedule.milestones"}
    one, other = flatten(resolved_config(grid)), flatten(resolved_config(rung))
    assert {key for key in one if one[key] != other.get(key)} <= differs


def test_paper_scale_is_he_et_als_cifar_recipe_counted_in_images(compose) -> None:
    cfg = compose("experiment=batchsize", "scale=paper", "train.batch_size=2")
    assert (cfg.model.name, list(cfg.model.widths), cfg.model.zero_init_residual) == (
        "resnet",
        [64, 128, 256, 512],
        True,
    )
    assert (cfg.data.name, cfg.data.augment) == ("cifar10", True)
    assert cfg.train.steps * 2 == 64_000 * 128  # 64k iterations of 128 images
    assert list(cfg.schedule.milestones) == [32_000 * 64, 48_000 * 64]  # 32k and 48k iterations of 128
    assert (cfg.optim.momentum, cfg.optim.weight_decay, optim.scaled_lr(cfg.optim, 128)) == (0.9, 1e-4, 0.1)


def test_experiment_runs_at_smoke_scale(cli, out_dir: Path) -> None:
    status, out, _ = cli(
        "run", "experiment=batchsize", "scale=smoke", f"out_dir={out_dir}", "norm=bcn+ws", "train.batch_size=2"
    )
    assert status == 0 and "1 completed" in out


def final_loss(compose, run_dir: Path, *overrides: str) -> float:
    cfg = compose("experiment=batchsize", "train.steps=5", "optim.lr=0.5", *overrides)
    return train(cfg, run_dir)["final"]["train/loss"]


def test_gn_ws_with_one_image_per_norm_batch_trains_as_the_whole_batch(compose, tmp_path: Path) -> None:
    """The authors trained GN+WS at a large batch and call it batch 1 per GPU: GN+WS uses no batch statistics, so
    forwarding 16 images one at a time (norm_batch 1) and all at once must give the same run; BN's differs."""
    per_image = final_loss(compose, tmp_path / "a", "norm=gn+ws", "train.batch_size=16", "train.norm_batch=1")
    whole = final_loss(compose, tmp_path / "b", "norm=gn+ws", "train.batch_size=16")
    assert per_image == pytest.approx(whole, rel=1e-5)
    bn_per_image = final_loss(compose, tmp_path / "c", "norm=bn", "train.batch_size=16", "train.norm_batch=1")
    bn_whole = final_loss(compose, tmp_path / "d", "norm=bn", "train.batch_size=16")
    assert bn_per_image != pytest.approx(bn_whole, rel=1e-3)
