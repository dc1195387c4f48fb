"""The command line's answers to bad input: one paragraph, the valid choices or the fix, exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

BAD_INPUT = [
    (("run", "norm=nope"), "norm/nope", "bn"),
    (("run", "model=nope"), "model/nope", "mlp"),
    (("run", "data=nope"), "data/nope", "fashion_mnist"),
    (("run", "experiment=nope"), "experiment/nope", "ioffe2015-fig1"),
    (("run", "data.name=nope"), "unknown data 'nope'", "fashion_mnist"),
    (("run", "optim.lr=-0.1"), "optim.lr must be a positive number", "optim.lr="),
    (("run", "train.steps=0"), "train.steps must be a positive integer", "train.steps=N>0"),
    (("run", "train.steps=ten"), "train.steps=ten: Value 'ten' of type 'str' could not be converted to Integer", "Fix"),
    (("run", "train.diverge_loss=0"), "train.diverge_loss must be > 0, got 0.0", "train.diverge_loss=1e4"),
    (("run", "train.target_acc=2"), "train.target_acc must lie in (0, 1] or be null, got 2.0", "target_acc=0.9"),
    (("run", "train.target_acc=0"), "train.target_acc must lie in (0, 1] or be null, got 0.0", "target_acc=0.9"),
    (("run", "data.train_size=0"), "data.train_size must be a positive integer or null, got 0", "data.train_size=N>0"),
    (("run", "data.test_size=-3"), "data.test_size must be a positive integer or null, got -3", "data.test_size=N>0"),
    (("run", "train.batch_size=200", "train.accumulate=2"), "= 400 exceeds the 256 training samples", "accumulate"),
    (
        ("run", "train.batch_size=600", "train.accumulate=2", "data.train_size=null"),
        "= 1200 exceeds the 1024 training samples",  # generated data's default size
        "raise data.train_size",
    ),
    (
        ("run", "scale=cpu", "data.train_size=1000", "train.batch_size=600", "train.accumulate=2"),
        "= 1200 exceeds the 1000 training samples",  # real data: at most data.train_size
        "lower train.batch_size",
    ),
    (("run", "norm.eps=-1"), "bad model and norm options: batch_norm eps must be positive", "under model and norm"),
    (("run", "+probes.input_percentiles.bogus=3"), "bad probes options", "unexpected keyword argument 'bogus'"),
    (
        ("run", "experiment=ioffe2015-fig1", "scale=cpu", "data=mnist"),
        "data=mnist is overridden by normexp/configs/at_scale/ioffe2015-fig1/cpu.yaml, which sets "
        "data.name=fashion_mnist",
        "set data.name=mnist",
    ),
    (("run", "-m", "norm=bn,nope"), "norm/nope", "bn"),
    (("run", "train.batch_size=8", "train.norm_batch=3"), "must divide train.batch_size=8", "divisor"),
    (("run", "schedule.warmup_steps=100"), "schedule.warmup_steps=100 must lie in [0, train.steps=20]", "Fix"),
    (("run", "norm=gn"), "hidden.0.norm", "100 channels"),
    (("run", "+probes.input_percentiles.module=hidden.7.norm"), "no module 'hidden.7.norm'", "hidden.2.norm"),
    (("run", "+probes.nope={}"), "unknown probes 'nope'", "input_percentiles"),
    (("run", "resume=sometimes"), "unknown resume 'sometimes'", "never"),
    (("run", "train.checkpoint_every=-1"), "train.checkpoint_every must be >= 0", "0 disables it"),
    (("run", "optim=nope"), "optim/nope", "adam"),
    (("run", "optim.name=nope"), "unknown optim 'nope'", "sgd"),
    (("run", "logger.name=nope"), "unknown logger 'nope'", "wandb"),
    (("run", "fast_path=bf16+warp"), "unknown fast-path switch warp", "channels_last"),
    (("run", "fast_path=cuda_graphs", "device=cpu"), "cuda_graphs needs a CUDA device", "drop cuda_graphs"),
    (("run", "fast_path=cuda_graphs", "experiment=ioffe2015-fig1"), "probes forward other batches", "~probes.<name>"),
    (
        ("run", "-m", "experiment=ioffe2015-fig1", "seed=0,1", "fuse=true"),
        "fused runs do not call probes",
        "one by one",
    ),
    (("reproduce", "nope"), "unknown claim 'nope'", "ioffe2015-fig1"),
    (("reproduce", "ioffe2015-fig1", "--scale", "smoke", "launcher=joblib"), "after --override", "--override launcher"),
    (("reproduce", "launcher=joblib", "ioffe2015-fig1"), "Hydra overrides", "--override launcher=joblib"),
    (("verify", "nope"), "unknown claim 'nope'", "ioffe2015-lr"),
]


@pytest.mark.parametrize(("args", "problem", "hint"), BAD_INPUT, ids=[" ".join(a) for a, _, _ in BAD_INPUT])
def test_bad_input_is_one_clear_paragraph_and_exit_2(cli, out_dir: Path, args, problem: str, hint: str) -> None:
    command, *rest = args
    scale = [] if any(arg.startswith("scale=") for arg in rest) else ["scale=smoke"]
    extra = [*scale, f"out_dir={out_dir}"] if command == "run" else []
    status, out, err = cli(command, *rest, *extra)
    assert status == 2
    assert err.startswith("normexp: error:") and problem in err and hint in err
    assert "Traceback" not in err + out
    assert not out_dir.exists() or not any(out_dir.rglob("summary.json"))  # no run started


def test_missing_data_names_the_fix(cli, out_dir: Path, tmp_path: Path, patch_source) -> None:
    patch_source("fashion_mnist", offline_dirs=(str(tmp_path / "nowhere"),))
    status, _, err = cli("run", f"out_dir={out_dir}", f"data.root={tmp_path / 'empty'}", "train.steps=1")
    assert status == 2
    assert "fashion_mnist not found" in err and "apt-get install dataset-fashion-mnist" in err


def test_unwritable_out_dir_is_refused_before_training(cli, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    status, _, err = cli("run", "scale=smoke", f"out_dir={blocker}/runs")
    assert status == 2 and "cannot write to out_dir" in err


def test_list_shows_every_registry(cli) -> None:
    status, out, _ = cli("list")
    assert status == 0
    for expected in ("claims:", "ioffe2015-fig1", "norms:", "bn", "models:", "mlp", "datasets:", "fashion_mnist"):
        assert expected in out


def test_cfg_job_shows_the_composed_config(cli) -> None:
    status, out, _ = cli("run", "experiment=ioffe2015-fig1", "scale=paper", "--cfg", "job")
    assert status == 0
    assert "steps: 50000" in out and "name: mnist" in out


def test_collect_turns_any_sweep_into_the_tidy_table_and_seed_statistics(cli, out_dir: Path, tmp_path: Path) -> None:
    import pandas as pd

    assert cli("run", "-m", "scale=smoke", "train.steps=3", "norm=bn,none", "seed=0,1", f"out_dir={out_dir}")[0] == 0
    table = tmp_path / "sweep.parquet"
    status, out, _ = cli("collect", str(out_dir), "--out", str(table))
    assert status == 0 and "4 run(s)" in out
    tidy = pd.read_parquet(table)
    assert {"run_id", "norm.name", "seed", "step", "metric", "value"} <= set(tidy.columns)
    assert set(tidy["metric"]) >= {"train/loss", "test/acc"} and tidy["run_id"].nunique() == 4
    for norm in ("bn", "none"):  # the median over seeds, from the run folders' own summaries
        finals = [
            json.loads(
                (out_dir / "adhoc" / "smoke" / f"norm={norm},train.steps=3,seed={seed}" / "summary.json").read_text()
            )["final"]["test/acc"]
            for seed in (0, 1)
        ]
        (row,) = [line.split() for line in out.splitlines() if line.split()[:1] == [norm]]
        assert row[1] == "2" and float(row[2]) == pytest.approx(sum(finals) / 2, rel=1e-3)


def test_collect_refuses_a_folder_without_runs(cli, tmp_path: Path) -> None:
    status, _, err = cli("collect", str(tmp_path))
    assert status == 2 and "no run folders" in err


def test_verify_reads_the_repositorys_results_from_any_folder(cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    status, out, _ = cli("verify", "ioffe2015-fig1", "--json")
    (verdict,) = json.loads(out)
    assert status == 0 and verdict["n_runs"] > 0
    status, out, _ = cli("verify", "ioffe2015-fig1", "--json", "--results", str(tmp_path))
    assert json.loads(out)[0]["n_runs"] == 0


def test_the_wheel_ships_the_configs_and_the_sweeper_plugin(tmp_path: Path) -> None:
    import subprocess
    import sys
    import zipfile

    root = Path(__file__).resolve().parents[1]
    command = [sys.executable, "-m", "pip", "wheel", str(root), "--no-deps", "--no-build-isolation", "-q", "-w"]
    subprocess.run([*command, str(tmp_path)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("normexp-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {name for name in names if name.startswith("normexp/configs/")}
    assert "normexp/configs/config.yaml" in shipped and "normexp/configs/experiment/batchsize.yaml" in shipped
    assert len(shipped) == len(list((root / "normexp" / "configs").rglob("*.yaml")))
    assert "hydra_plugins/normexp_sweeper/normexp_sweeper.py" in names
