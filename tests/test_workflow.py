"""The researcher's workflow: the same grid through the parallel and submitit launchers, one W&B run per job with
its history, GPU pinning of parallel workers, aggregation over a grid with a diverged run."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from normexp import devices
from normexp.analysis import aggregate, load_runs
from normexp.config import workers

GRID = ("run", "-m", "scale=smoke", "norm=none,bn", "seed=0,1", "train.steps=6", "train.eval_every=3")
FOLDERS = [
    "norm=bn,train.eval_every=3,train.steps=6,seed=0",
    "norm=bn,train.eval_every=3,train.steps=6,seed=1",
    "norm=none,train.eval_every=3,train.steps=6,seed=0",
    "norm=none,train.eval_every=3,train.steps=6,seed=1",
]


def statuses(out_dir: Path) -> dict[str, str]:
    return {
        folder.name: json.loads((folder / "summary.json").read_text())["status"]
        for folder in sorted((out_dir / "adhoc" / "smoke").iterdir())
        if folder.is_dir() and not folder.name.startswith(".")  # submitit's job logs live in .submitit/
    }


@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_grid_of_four_runs_through_a_parallel_launcher(cli, out_dir: Path, launcher: str) -> None:
    status, _out, err = cli(
        *GRID,
        f"out_dir={out_dir}",
        f"launcher={launcher}",
        "hydra.launcher.n_jobs=2" if launcher == "joblib" else "hydra.launcher.tasks_per_node=1",
    )
    assert status == 0, err
    assert statuses(out_dir) == dict.fromkeys(FOLDERS, "completed")
    assert "[sweep] 4/4 done (0 failed)" in err


def wandb_records(run_dir: Path, kind: str) -> list:
    """The records of type ``kind`` (``run``, ``history``, ``summary``, ...) in a run's offline W&B file, read with
    wandb's own protobuf schema, once the file holds the run's ``exit`` record (W&B's service writes it on its own
    time after ``finish()`` returns).

    The file is a LevelDB-style log (wandb's ``datastore`` format): a 7-byte header, then 32 KiB blocks of records
    (crc32, length, type: full/first/middle/last) carrying serialized ``Record`` messages.
    """
    (offline,) = run_dir.glob("wandb/offline-run-*")
    return [getattr(record, kind) for record in _finished_records(offline) if record.WhichOneof("record_type") == kind]


def _finished_records(offline: Path) -> list:
    """Every record of the offline W&B run in folder ``offline``, once it holds the ``exit`` record."""
    for _ in range(300):
        records = _wandb_file_records_of(offline)
        if any(record.WhichOneof("record_type") == "exit" for record in records):
            break
        time.sleep(0.1)
    return records


def _wandb_file_records_of(offline: Path) -> list:
    """Every record written so far to the offline W&B run in folder ``offline``."""
    from wandb.proto import wandb_internal_pb2

    (path,) = offline.glob("run-*.wandb")
    data, position, pending, records = path.read_bytes(), 7, b"", []
    while position + 7 <= len(data):
        if 32768 - position % 32768 < 7:
            position += 32768 - position % 32768
            continue
        _, length, block_kind = struct.unpack("<IHB", data[position : position + 7])
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if block_kind in (1, 4):  # a full record, or the last piece of one
            records.append(wandb_internal_pb2.Record.FromString(pending))
            pending = b""
    return records


def wandb_history(run_dir: Path) -> list[dict[str, float]]:
    """The history rows a run logged to W&B."""
    return [
        {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in row.item}
        for row in wandb_records(run_dir, "history")
    ]


def test_wandb_offline_writes_one_run_per_job_with_its_history(cli, out_dir: Path) -> None:
    status, _, _ = cli(
        "run", "-m", "scale=smoke", "norm=none,bn", f"out_dir={out_dir}", "logger=wandb", "logger.mode=offline"
    )
    assert status == 0
    for folder in ("norm=bn,seed=0", "norm=none,seed=0"):
        run = out_dir / "adhoc" / "smoke" / folder
        assert len(list(run.glob("wandb/offline-run-*"))) == 1
        history = wandb_history(run)
        logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        acc = [r["test/acc"] for r in logged if "test/acc" in r]
        assert [h["test/acc"] for h in history if "test/acc" in h] == pytest.approx(acc)
        assert {"train/loss", "lr", "_step"} <= set().union(*history)


def test_wandb_run_carries_group_tags_job_type_resolved_config_and_summary(cli, out_dir: Path) -> None:
    overrides = ["experiment=ioffe2015-fig1", "scale=smoke", "norm=bn", "logger=wandb", "logger.mode=offline"]
    assert cli("run", *overrides, f"out_dir={out_dir}")[0] == 0
    run_dir = out_dir / "ioffe2015-fig1" / "smoke" / "norm=bn,seed=0"
    (run,) = wandb_records(run_dir, "run")
    assert (run.run_group, run.job_type, set(run.tags)) == (
        "ioffe2015-fig1",
        "train",
        {"ioffe2015-fig1", "bn", "smoke"},
    )
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["norm"]["name"] == "bn" and config["out_dir"] == str(out_dir)  # resolved: no ${...} left
    summary = {}
    for update in wandb_records(run_dir, "summary"):
        summary |= {item.key: json.loads(item.value_json) for item in update.update if item.key}
    final = json.loads((run_dir / "summary.json").read_text())["final"]
    assert (summary["status"], summary["diverged"], summary["final/test/acc"]) == (
        "completed",
        False,
        final["test/acc"],
    )
    assert {"best/test/acc", "steps_to_target", "steps_per_s"} <= set(summary)


def test_sync_lists_offline_runs(cli, out_dir: Path) -> None:
    cli("run", "scale=smoke", f"out_dir={out_dir}", "logger=wandb", "logger.mode=offline")
    status, out, _ = cli("sync", "--out-dir", str(out_dir), "--dry-run")
    assert status == 0 and "1 offline W&B run(s)" in out and "offline-run-" in out


def test_workers_pin_distinct_gpus_and_refuse_when_all_are_taken(tmp_path: Path, monkeypatch) -> None:
    import fcntl

    monkeypatch.setattr(devices, "_held", None)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    other_worker = open(tmp_path / "0.lock", "w")  # another process's slot 0  # noqa: SIM115
    fcntl.flock(other_worker, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert devices.pin_worker_gpu(2, tmp_path) == "1"
    assert devices.pin_worker_gpu(2, tmp_path) == "1"  # once per process
    monkeypatch.setattr(devices, "_held", None)
    with pytest.raises(RuntimeError, match="all 2 GPU slots"):
        devices.pin_worker_gpu(2, tmp_path)
    assert devices.pin_worker_gpu(0, tmp_path) is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_joblib_workers_pin_a_gpu_and_train_on_it(cli, out_dir: Path) -> None:
    status, _out, err = cli(*GRID, f"out_dir={out_dir}", "launcher=joblib", "gpus=1", "device=cuda")
    assert status == 0, err
    summaries = [json.loads(p.read_text()) for p in sorted((out_dir / "adhoc" / "smoke").glob("*/summary.json"))]
    assert [s["status"] for s in summaries] == ["completed"] * 4
    assert {(s["device"], s["cuda_visible_devices"]) for s in summaries} == {("cuda", "0")}


def test_aggregation_counts_a_diverged_run_and_drops_nothing(cli, out_dir: Path) -> None:
    cli(
        "run",
        "-m",
        "scale=smoke",
        f"out_dir={out_dir}",
        "norm=none",
        "optim.lr=0.1,1000",
        "seed=0,1",
        "train.diverge_loss=50",
    )
    runs, summary = load_runs(sorted((out_dir / "adhoc" / "smoke").glob("*,seed=*")))
    assert len(summary) == 4
    counts = summary.groupby("optim.lr")["status"].value_counts().to_dict()
    assert counts == {(0.1, "completed"): 2, (1000.0, "diverged"): 2}
    final = aggregate(summary, ["optim.lr"], "final/test/acc").set_index("optim.lr")
    assert final.loc[0.1, "n"] == 2 and final.loc[1000.0, "n"] == 2  # diverged runs keep their last finite metrics
    assert set(runs["run_id"]) == set(summary["run_id"])


def test_reproduce_logs_the_claims_figures_to_wandb(cli, tmp_path: Path) -> None:
    out_dir, results = tmp_path / "runs", tmp_path / "results"
    status, _, _ = cli(
        "reproduce",
        "ioffe2015-fig1",
        "--scale",
        "smoke",
        "--out-dir",
        str(out_dir),
        "--results",
        str(results),
        "--override",
        "logger=wandb",
        "--override",
        "logger.mode=offline",
    )
    assert status == 0
    (figures_run,) = out_dir.glob("wandb/offline-run-*")
    assert list(figures_run.glob("files/media/images/fig1_*.png"))
    assert (results / "ioffe2015-fig1" / "smoke" / "verdict.json").exists()


def test_parallel_workers_follow_the_cores_this_process_may_use(monkeypatch) -> None:
    """Under SLURM or taskset a process may use fewer cores than the machine has: one worker per usable core."""
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3}, raising=False)
    assert workers(0) == 2 and workers(4) == 4


# --- W&B the W&B way (offline files) --------------------------------------------------------------------------------


def wandb_exit_code(run_dir: Path) -> int:
    (exit_record,) = wandb_records(run_dir, "exit")
    return exit_record.exit_code


def test_wandb_exit_codes_follow_the_runs_status(cli, out_dir: Path) -> None:
    grid = ("-m", "scale=smoke", "norm=none", "optim.lr=0.1,1000", "train.diverge_loss=50", "train.log_every=1")
    cli("run", *grid, "logger=wandb", "logger.mode=offline", f"out_dir={out_dir}")
    smoke = out_dir / "adhoc" / "smoke"
    completed = smoke / "norm=none,optim.lr=0.1,train.diverge_loss=50.0,train.log_every=1,seed=0"
    diverged = smoke / "norm=none,optim.lr=1000.0,train.diverge_loss=50.0,train.log_every=1,seed=0"
    assert json.loads((diverged / "summary.json").read_text())["status"] == "diverged"
    assert (wandb_exit_code(completed), wandb_exit_code(diverged)) == (0, 1)


def test_wandb_runs_plot_against_samples_seen_and_epochs(cli, out_dir: Path) -> None:
    batch, accumulate, train_size = 8, 2, 256
    overrides = ["scale=smoke", f"train.batch_size={batch}", f"train.accumulate={accumulate}", "train.log_every=5"]
    cli("run", *overrides, "logger=wandb", "logger.mode=offline", f"out_dir={out_dir}")
    (run_dir,) = (out_dir / "adhoc" / "smoke").iterdir()
    metrics = {metric.name or metric.glob_name: metric for metric in wandb_records(run_dir, "metric")}
    assert {"samples_seen", "epoch"} <= set(metrics)
    assert metrics["train/*"].step_metric == "samples_seen" and metrics["test/*"].step_metric == "samples_seen"
    rows = [row for row in wandb_history(run_dir) if "train/loss" in row]
    assert rows and all(row["samples_seen"] == row["_step"] * batch * accumulate for row in rows)
    assert all(row["epoch"] == row["samples_seen"] / train_size for row in rows)


def test_wandb_tags_name_every_claim_that_reads_the_experiment(cli, out_dir: Path) -> None:
    overrides = ["experiment=batchsize", "scale=smoke", "train.steps=2", "logger=wandb", "logger.mode=offline"]
    cli("run", *overrides, f"out_dir={out_dir}")
    (run_dir,) = [p for p in (out_dir / "batchsize" / "smoke").iterdir() if p.is_dir()]
    (run,) = wandb_records(run_dir, "run")
    assert run.job_type == "train" and run.run_group == "batchsize"
    assert {"qiao2019-microbatch", "wu2018-batchsize", "smoke"} <= set(run.tags)


def test_wandb_environment_variables_beat_the_defaults(out_dir: Path) -> None:
    """A process as a compute node starts it: WANDB_MODE and WANDB_PROJECT set, logger.mode left at auto."""
    env = os.environ | {"WANDB_MODE": "offline", "WANDB_PROJECT": "my-project"}
    command = [sys.executable, "-m", "normexp", "run", "scale=smoke", "train.steps=2", "logger=wandb"]
    done = subprocess.run([*command, f"out_dir={out_dir}"], env=env, capture_output=True, text=True, check=False)
    run_dir = out_dir / "adhoc" / "smoke" / "train.steps=2,seed=0"
    (run,) = wandb_records(run_dir, "run")
    assert done.returncode == 0 and run.project == "my-project" and "W&B run:" in done.stdout
    assert list(run_dir.glob("wandb/offline-run-*/files/output.log"))  # the console is captured


def test_reproduce_logs_results_as_an_artifact_of_one_figures_run(cli, tmp_path: Path, out_dir: Path) -> None:
    results = tmp_path / "results"
    args = ("reproduce", "ioffe2015-fig1", "--scale", "smoke", "--results", str(results), "--out-dir", str(out_dir))
    extra = ("--override", "logger=wandb", "--override", "logger.mode=offline", "--override", "train.steps=2")
    for _ in range(2):
        cli(*args, *extra)
    figures_runs = sorted(out_dir.glob("wandb/offline-run-*"))
    assert len({folder.name.rsplit("-", 1)[1] for folder in figures_runs}) == 1  # one stable id per claim+scale
    records = [record for folder in figures_runs for record in _finished_records(folder)]
    kinds = [record.WhichOneof("record_type") for record in records]
    runs = [record.run for record, kind in zip(records, kinds, strict=True) if kind == "run"]
    artifacts = [record.artifact for record, kind in zip(records, kinds, strict=True) if kind == "artifact"]
    results_artifacts = [artifact for artifact in artifacts if artifact.type == "results"]  # besides W&B's tables
    assert {run.job_type for run in runs} == {"figures"} and len(results_artifacts) == 2  # one per reproduce
    for artifact in results_artifacts:
        assert artifact.name == "ioffe2015-fig1-smoke"
        stored = {entry.path for entry in artifact.manifest.contents}
        assert {"runs.parquet", "summary.csv", "verdict.json"} <= stored
