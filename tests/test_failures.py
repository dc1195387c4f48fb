"""Nothing lost: a NaN or a crash in one run does not stop the grid; tracker, disk and results-file problems are
clear messages; a crash mid-write leaves the last good file; two launches never train into one folder; secrets
never reach a run folder."""

from __future__ import annotations

import json
import warnings
from contextlib import nullcontext
from pathlib import Path

import pytest

from normexp import plotting, reproduce, sweep
from normexp.rundir import atomic_write, is_finished, run_lock, write_json
from normexp.training.runner import train

SMOKE = "adhoc/smoke"


def test_grid_goes_on_past_a_diverging_and_a_crashing_run(cli, out_dir: Path) -> None:
    # BN on one sample per forward fails at run time (a single value per channel); lr 1000 diverges.
    status, out, err = cli(
        "run",
        "-m",
        "scale=smoke",
        f"out_dir={out_dir}",
        "norm=bn,none",
        "optim.lr=0.1,1000",
        "train.norm_batch=1",
        "train.diverge_loss=50",
    )
    statuses = {
        folder.name: json.loads((folder / "summary.json").read_text())["status"]
        for folder in (out_dir / SMOKE).iterdir()
        if folder.is_dir()
    }
    assert statuses == {
        "norm=bn,optim.lr=0.1,train.diverge_loss=50.0,train.norm_batch=1,seed=0": "failed",
        "norm=bn,optim.lr=1000.0,train.diverge_loss=50.0,train.norm_batch=1,seed=0": "failed",
        "norm=none,optim.lr=0.1,train.diverge_loss=50.0,train.norm_batch=1,seed=0": "completed",
        "norm=none,optim.lr=1000.0,train.diverge_loss=50.0,train.norm_batch=1,seed=0": "diverged",
    }
    assert status == 1
    assert "runs: 1 completed, 1 diverged, 2 failed" in out
    assert err.count("failed: ") >= 2 and "Expected more than 1 value per channel" in err
    failed = json.loads(
        (
            out_dir / SMOKE / "norm=bn,optim.lr=0.1,train.diverge_loss=50.0,train.norm_batch=1,seed=0" / "summary.json"
        ).read_text()
    )
    assert "ValueError" in failed["error"] and "Traceback" in failed["traceback"]


def test_failed_runs_run_again_and_finished_ones_do_not(cli, out_dir: Path) -> None:
    args = ("run", "-m", "scale=smoke", f"out_dir={out_dir}", "norm=bn,none", "train.norm_batch=1")
    assert cli(*args)[0] == 1
    status, out, _ = cli(*args)
    assert status == 1 and "2 run(s), 1 already finished, 1 to run" in out


def test_tracker_failure_is_a_warning_and_the_run_completes(compose, tmp_path: Path, monkeypatch) -> None:
    import wandb

    def refuse(**kwargs):
        raise ConnectionError("server error 500")

    monkeypatch.setattr(wandb, "init", refuse)
    with pytest.warns(UserWarning, match="server error 500.*logging to the run folder only"):
        summary = train(compose("logger=wandb", "logger.mode=offline"), tmp_path / "run")
    assert summary["status"] == "completed"


def test_online_start_failure_falls_back_to_offline(compose, tmp_path: Path, monkeypatch) -> None:
    import wandb

    real_init, modes = wandb.init, []

    def online_fails(**kwargs):
        modes.append(kwargs["mode"])
        if kwargs["mode"] == "online":
            raise TimeoutError("no network")
        return real_init(**kwargs)

    monkeypatch.setattr(wandb, "init", online_fails)
    with pytest.warns(UserWarning, match="no network.*trying offline"):
        train(compose("logger=wandb", "logger.mode=online"), tmp_path / "run")
    assert modes == ["online", "offline"]
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))


def test_secrets_never_reach_the_run_folder(compose, tmp_path: Path, monkeypatch) -> None:
    secret = "sk-test-0123456789abcdef"
    monkeypatch.setenv("WANDB_API_KEY", secret)
    # an environment variable interpolated into the config (here a path the smoke scale never opens)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(compose("logger=wandb", "logger.mode=offline", "data.root=${oc.env:WANDB_API_KEY}"), tmp_path / "run")
    written = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert written and not [p for p in written if secret.encode() in p.read_bytes()]
    assert "***redacted***" in (tmp_path / "run" / "config.yaml").read_text()


def test_full_disk_is_refused_before_training(cli, out_dir: Path, monkeypatch) -> None:
    monkeypatch.setattr(sweep.shutil, "disk_usage", lambda path: type("Usage", (), {"free": 10 * 2**20})())
    status, _, err = cli("run", "scale=smoke", f"out_dir={out_dir}")
    assert status == 2 and "has only 10 MiB free" in err
    assert not any(out_dir.rglob("summary.json"))


def test_unreadable_summary_counts_as_unfinished(cli, out_dir: Path) -> None:
    args = ("run", "scale=smoke", f"out_dir={out_dir}")
    cli(*args)
    summary = out_dir / SMOKE / "seed=0" / "summary.json"
    summary.write_text('{"status": "compl')  # a torn write from an older, non-atomic tool
    with pytest.warns(UserWarning, match="unreadable"):
        status, out, _ = cli(*args)
    assert status == 0 and "0 already finished, 1 to run" in out
    assert json.loads(summary.read_text())["status"] == "completed"


@pytest.mark.parametrize("table", [reproduce.RUNS_TABLE, reproduce.SUMMARY_TABLE])
def test_damaged_results_are_a_clear_error_that_names_the_fix(cli, tmp_path: Path, table: str) -> None:
    folder = reproduce.results_dir("ioffe2015-fig1", "cpu", tmp_path)
    folder.mkdir(parents=True)
    (folder / reproduce.RUNS_TABLE).write_bytes(b"PAR1 not really parquet")
    (folder / reproduce.SUMMARY_TABLE).write_text("run_id\n")
    if table == reproduce.SUMMARY_TABLE:
        import pandas as pd

        pd.DataFrame({"run_id": ["a"]}).to_parquet(folder / reproduce.RUNS_TABLE)
        (folder / reproduce.SUMMARY_TABLE).write_bytes(b'"unterminated\n')
    status, out, err = cli("verify", "ioffe2015-fig1", "--results", str(tmp_path))
    assert status == 2 and "are damaged" in err and "normexp reproduce ioffe2015-fig1" in err
    assert "Traceback" not in out + err


def test_a_failed_write_leaves_the_old_file_and_no_partial_one(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    path.write_text("old")

    def crash(file) -> None:
        file.write("half of the new")
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic_write(path, crash)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_a_figure_that_fails_to_save_leaves_the_last_good_one(tmp_path: Path, monkeypatch) -> None:
    paths = plotting.save(plotting.figure()[0], tmp_path, "fig")
    good = {path: path.read_bytes() for path in paths}
    fig, _ = plotting.figure()

    def crash(target, **options) -> None:  # a process killed while matplotlib writes
        with open(target, "wb") if isinstance(target, str | Path) else nullcontext(target) as out:
            out.write(b"%PDF truncated")
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(fig, "savefig", crash)
    with pytest.raises(RuntimeError, match="killed mid-write"):
        plotting.save(fig, tmp_path, "fig")
    assert {path: path.read_bytes() for path in paths} == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.pdf", "fig.png"]


@pytest.mark.parametrize(
    ("status", "steps", "finished"),
    [("completed", 20, True), ("completed", 7, False), ("diverged", 7, True), ("interrupted", 7, False)],
)
def test_only_a_run_that_ended_counts_as_finished(tmp_path: Path, status: str, steps: int, finished: bool) -> None:
    """A ``completed`` summary short of its steps (older versions recorded Ctrl-C so) is not finished."""
    write_json(tmp_path / "summary.json", {"status": status, "steps": steps, "total_steps": 20})
    assert is_finished(tmp_path) is finished


@pytest.mark.parametrize("fuse", ["fuse=false", "fuse=true"])
def test_a_run_another_launch_trains_is_skipped_not_failed(cli, out_dir: Path, fuse: str) -> None:
    locked = out_dir / SMOKE / "norm=bn,seed=0"
    with run_lock(locked) as acquired:  # another launch of the same run, training now
        assert acquired
        status, out, err = cli("run", "-m", "scale=smoke", f"out_dir={out_dir}", "norm=bn,none", fuse)
    assert status == 0, err
    assert "running elsewhere" in out and "runs: 1 completed, 1 running elsewhere" in out
    assert not (locked / "summary.json").exists()
    assert json.loads((out_dir / SMOKE / "norm=none,seed=0" / "summary.json").read_text())["status"] == "completed"
