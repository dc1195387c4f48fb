"""Nothing lost: a run killed (SIGKILL) or preempted (SIGTERM) resumes from its checkpoint and ends bit-identical
to the run that was never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

RUN = "ioffe2015-fig1/smoke/data.train_size=512,train.eval_every=200,train.log_every=50,train.steps=1200,seed=0"


def command(out_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "normexp",
        "run",
        "experiment=ioffe2015-fig1",
        "scale=smoke",
        f"out_dir={out_dir}",
        "train.steps=1200",
        "train.eval_every=200",
        "train.log_every=50",
        "train.checkpoint_every=20",
        "data.train_size=512",
    ]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def interrupt(out_dir: Path, sig: signal.Signals) -> subprocess.CompletedProcess:
    """Start the run, send ``sig`` once its first checkpoint exists, and wait for the process to end."""
    process = subprocess.Popen(command(out_dir), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoint = out_dir / RUN / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(sig)
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def finish(out_dir: Path) -> dict:
    subprocess.run(command(out_dir), env=ENV, check=True, capture_output=True)
    return json.loads((out_dir / RUN / "summary.json").read_text())


def weights(out_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(out_dir / RUN / "checkpoint.pt", weights_only=True)["model"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run."""
    out_dir = tmp_path_factory.mktemp("reference")
    finish(out_dir)
    return out_dir


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_interrupted_run_resumes_bit_identical(reference: Path, tmp_path: Path, sig: signal.Signals) -> None:
    interrupted = interrupt(tmp_path, sig)
    assert interrupted.returncode != 0
    summary_path = tmp_path / RUN / "summary.json"
    if sig == signal.SIGTERM:  # handled: checkpointed at the next step boundary, recorded as interrupted
        stopped = json.loads(summary_path.read_text())
        assert stopped["status"] == "interrupted" and 0 < stopped["steps"] < 1200
        assert "relaunch the same command to resume" in interrupted.stderr
    else:  # killed outright: no summary, only the last periodic checkpoint
        assert not summary_path.exists()
    resumed = finish(tmp_path)
    assert resumed["status"] == "completed" and resumed["steps"] == 1200
    expected, actual = weights(reference), weights(tmp_path)
    assert all(torch.equal(expected[name], actual[name]) for name in expected)
    pd.testing.assert_frame_equal(
        pd.read_parquet(reference / RUN / "metrics.parquet"), pd.read_parquet(tmp_path / RUN / "metrics.parquet")
    )
    assert resumed["final"] == json.loads((reference / RUN / "summary.json").read_text())["final"]


def test_checkpoints_load_with_weights_only(reference: Path) -> None:
    state = torch.load(reference / RUN / "checkpoint.pt", weights_only=True)
    assert state["step"] == 1200 and set(state) >= {"model", "optimizer", "scheduler", "sampler", "rng"}


def test_resume_never_starts_again(reference: Path, tmp_path: Path) -> None:
    interrupt(tmp_path, signal.SIGKILL)
    subprocess.run([*command(tmp_path), "resume=never"], env=ENV, check=True, capture_output=True)
    metrics = pd.read_parquet(tmp_path / RUN / "metrics.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(reference / RUN / "metrics.parquet"), metrics)
