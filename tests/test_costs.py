"""Paper-scale costs: grids group into the right cost cells, the slice's clock separates steps from evaluations and
checkpoints, projections add up, and the generated files load through the real readers."""

from __future__ import annotations

import math
from pathlib import Path
from unittest import mock

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torchvision import datasets

from normexp import checkpoint, costs, data
from normexp.data import generated
from normexp.training import loop


def test_the_batch_size_grid_has_a_cell_per_norm_and_batch_size_holding_its_seeds() -> None:
    cells = costs.cost_cells("batchsize")  # 7 norms × 7 batch sizes × 3 seeds (configs/experiment/batchsize.yaml)
    assert len(cells) == 49 and all(cell.runs == 3 for cell in cells)
    assert cells[0].label == "norm=bn train.batch_size=1" and cells[-1].label == "norm=brn train.batch_size=64"


def test_learning_rates_and_warmups_share_a_cell() -> None:
    # paper scale: lr 5e-4, 1e-3 × warm-up 0, 500, 4000 × 3 seeds per position (at_scale/xiong2020-warmup/paper.yaml)
    cells = costs.cost_cells("xiong2020-warmup")
    assert [(cell.label, cell.runs) for cell in cells] == [
        ("model=transformer_post", 18),
        ("model=transformer_pre", 18),
    ]


def test_evaluation_and_checkpoint_fall_once_inside_the_timed_steps_off_logging_steps() -> None:
    for warmup, steps in [(10, 200), (1, 8), (5, 100), (20, 333)]:
        evaluate, save = costs.special_steps(warmup, steps)
        assert warmup < evaluate < save < warmup + steps  # the steps after them are timed
        assert 2 * evaluate >= warmup + steps and 2 * save >= warmup + steps  # neither recurs before the end
        assert all(k % 10 not in (0, 9) for k in (evaluate, save))


def test_paper_counts_are_the_runs_evaluations_and_checkpoints() -> None:
    train = OmegaConf.create({"steps": 50000, "eval_every": 1000, "checkpoint_every": 3000})
    assert costs.paper_counts(train) == {"run_steps": 50000, "evals": 50, "checkpoints": 17}  # 16 periodic + the last
    assert costs.paper_counts(OmegaConf.merge(train, {"checkpoint_every": 0}))["checkpoints"] == 1


def test_a_projected_run_adds_start_steps_evaluations_and_checkpoints() -> None:
    row = {"whole": False, "start_s": 5, "run_steps": 1000, "step_s": 0.01, "evals": 4, "eval_s": 2.0}
    assert costs.projected_run_s(row | {"checkpoints": 3, "checkpoint_s": 0.5}) == pytest.approx(5 + 10 + 8 + 1.5)
    assert costs.projected_run_s({"whole": True, "wall_s": 42.0}) == 42.0


def test_the_slice_clock_separates_steps_evaluations_and_checkpoints(compose, monkeypatch) -> None:
    """A fake clock that advances 1 per optimizer step, 7 per evaluation and 3 per checkpoint."""
    now = {"t": 0.0}

    def advance(by: float):
        now["t"] += by

    def costing(function, seconds: float):
        def timed(*args, **kwargs):
            advance(seconds)
            return function(*args, **kwargs)

        return timed

    monkeypatch.setattr(costs.time, "perf_counter", lambda: now["t"])
    monkeypatch.setattr(loop, "evaluate", costing(loop.evaluate, 7.0))
    monkeypatch.setattr(checkpoint, "save", costing(checkpoint.save, 3.0))
    cfg = compose("experiment=ioffe2015-fig1", "train.steps=10000", "train.log_every=7", "train.progress=false")
    handle = register_optimizer_step_pre_hook(lambda *_: advance(1.0))
    try:
        row = costs.measure(cfg, warmup=4, steps=40)
    finally:
        handle.remove()
    assert row["status"] == "completed" and not row["whole"] and row["slice_steps"] == 44
    assert row["step_s"] == pytest.approx(1.0) and row["steps_per_s"] == pytest.approx(1.0)
    assert (row["eval_s"], row["checkpoint_s"]) == pytest.approx((7.0, 3.0))
    assert row["start_s"] == pytest.approx(7.0 + 1.0)  # the step-0 evaluation, then the first step


def test_a_run_no_longer_than_the_slice_is_timed_whole(compose) -> None:
    row = costs.measure(compose("experiment=ioffe2015-fig1", "train.steps=6"), warmup=2, steps=8)
    assert row["whole"] and row["status"] == "completed" and row["slice_steps"] == 6 and row["wall_s"] > 0
    assert costs.projected_run_s(row) == row["wall_s"]


def test_tables_sum_runs_per_experiment_and_claim_only_when_every_cell_is_sliced() -> None:
    frame = pd.DataFrame(
        {
            "experiment": ["santurkar2018-vgg", "santurkar2018-vgg", "santurkar2018-dln", "ioffe2015-fig1"],
            "runs": [3, 3, 6, 6],
            "run_s": [3600.0, 7200.0, 1800.0, math.nan],  # the last cell not sliced
            "steps_per_s": [10.0, 5.0, 100.0, math.nan],
        }
    )
    experiments = costs.experiment_table(frame).set_index("experiment")
    assert experiments.loc["santurkar2018-vgg", "gpu_hours"] == pytest.approx(3 + 6)
    assert (experiments.loc["santurkar2018-vgg", "steps_per_s_min"], experiments.loc["santurkar2018-vgg", "cells"]) == (
        5.0,
        2,
    )
    assert math.isnan(experiments.loc["ioffe2015-fig1", "gpu_hours"])
    by_claim = costs.claim_table(experiments.reset_index()).set_index("claim")
    assert by_claim.loc["santurkar2018-ics", "gpu_hours"] == pytest.approx(9 + 3)  # vgg + dln
    assert by_claim.loc["santurkar2018-ics", "runs"] == 12
    assert math.isnan(by_claim.loc["ioffe2015-fig1", "gpu_hours"])


def test_a_grid_of_runs_trained_whole_has_hours_but_no_step_rate() -> None:
    frame = pd.DataFrame({"experiment": ["xiong2020-gradnorm"] * 2, "runs": [10, 10], "run_s": [36.0, 72.0]})
    (row,) = costs.experiment_table(frame).itertuples()
    assert row.gpu_hours == pytest.approx(0.3) and math.isnan(row.steps_per_s_min)
    assert "| xiong2020-gradnorm | 20 | 2/2 | — | 0.3 |" in costs.markdown(
        frame.assign(device="cpu", torch="2", cuda="none", cuda_device=False, warmup_steps=1, timed_steps=8)
    )


def test_generated_cifar_loads_through_torchvision_with_its_checksums(tmp_path: Path) -> None:
    patches = costs.write_datasets(tmp_path, {"cifar10"}, train_fraction=0.001)
    cls, attributes = patches["cifar10"]
    cfg = OmegaConf.create(
        {"name": "cifar10", "root": str(tmp_path), "download": False, "synthetic": False, "augment": True}
        | {"train_size": None, "test_size": None}
    )
    with mock.patch.multiple(cls, **attributes):
        splits = data.load(cfg)
    assert cls is datasets.CIFAR10 and splits.train_x.shape == (50, 3, 32, 32) and len(splits.test_x) == 10000
    assert splits.augment is not None and splits.num_classes == 10


def test_generated_iwslt14_loads_as_the_prepared_corpus(tmp_path: Path) -> None:
    sizes = {"train": 30, "valid": 5, "test": 7}
    generated.write_iwslt14(tmp_path, sizes, vocab_size=50, words=(2, 6))
    cfg = OmegaConf.create(
        {"name": "iwslt14", "root": str(tmp_path), "seq_len": 8, "test_split": "test", "synthetic": False}
        | {"train_size": None, "test_size": None}
    )
    splits = data.load(cfg)
    assert splits.train_x.shape == (30, 2, 8) and splits.test_x.shape == (7, 2, 8) and splits.num_classes == 54
    lengths = (splits.train_y >= 0).sum(1)  # target tokens + EOS
    assert lengths.min() >= 3 and lengths.max() <= 7


def test_generated_mnist_loads_through_torchvision(tmp_path: Path, patch_source) -> None:
    patch_source("mnist", sizes=(12, 5), offline_dirs=())
    generated.write_mnist(tmp_path, sizes=(12, 5))
    cfg = OmegaConf.create(
        {"name": "mnist", "root": str(tmp_path), "download": False, "synthetic": False}
        | {"train_size": None, "test_size": None}
    )
    splits = data.load(cfg)
    assert splits.train_x.shape == (12, 1, 28, 28) and splits.test_y.shape == (5,)
    assert splits.train_x.dtype == torch.float32 and 0 <= splits.train_x.min() <= splits.train_x.max() <= 1


def test_cells_completed_in_an_earlier_table_are_kept_and_the_rest_sliced(tmp_path: Path) -> None:
    out = tmp_path / "costs.csv"
    earlier = {"experiment": "santurkar2018-dln", "cell": "norm=none", "runs": 3, "status": "completed"}
    pd.DataFrame([earlier | {"run_s": 123.0, "steps_per_s": 9.0}]).to_csv(out, index=False)
    args = ["--device", "cpu", "--experiments", "santurkar2018-dln", "--warmup", "1", "--steps", "8", "--out", str(out)]
    assert costs.main(args) == 0
    frame = pd.read_csv(out).set_index("cell")
    assert frame.loc["norm=none", "run_s"] == 123.0 and frame.loc["norm=bn", "status"] == "completed"
    assert frame.loc["norm=bn", "run_s"] > 0 and "| santurkar2018-dln | 6 | 2/2 |" in out.with_suffix(".md").read_text()


def test_an_override_no_cell_composes_with_is_a_one_paragraph_error(capsys) -> None:
    args = ["--device", "cpu", "--experiments", "santurkar2018-dln", "--override", "probes.bleu.samples=4"]
    assert costs.main(args) == 2
    error = capsys.readouterr().err
    assert error.startswith("paper_costs: error: Could not override 'probes.bleu.samples'") and "Traceback" not in error
