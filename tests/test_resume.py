"""Nothing lost: a run killed (SIGKILL), preempted (SIGTERM, SIGUSR1, submitit's SIGUSR2) or stopped by Ctrl-C
(SIGINT) resumes from its checkpoint and ends bit-identical to the run that was never interrupted; a caught signal
is handed on to the handler installed before (submitit's requeue) once the checkpoint is saved."""

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

from normexp import checkpoint
from normexp.training import runner
from normexp.training.loop import SingleRun

GRID = "ioffe2015-fig1/smoke"
TRAIN = ("train.steps=1200", "train.eval_every=200", "train.log_every=50", "train.checkpoint_every=20")
VARIANTS = {
    "single": ("run",),
    "fused": ("run", "-m", "seed=0,1", "fuse=true", "~probes.input_percentiles"),  # fused cells take no probes
}
"""A single run, and a fused cell of two seeds: both are checkpointed, stopped and resumed the same way."""


def command(out_dir: Path, variant: str, extra: tuple[str, ...]) -> list[str]:
    args = ("experiment=ioffe2015-fig1", "scale=smoke", f"out_dir={out_dir}", *TRAIN, "data.train_size=512", *extra)
    return [sys.executable, "-m", "normexp", *VARIANTS[variant], *args]


def run_dirs(out_dir: Path) -> list[Path]:
    return sorted(path for path in (out_dir / GRID).iterdir() if path.is_dir())


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def default_sigint() -> None:
    """In the child: Ctrl-C's default handling, which a shell or test runner started in the background may have set
    to ignore (then Python installs no KeyboardInterrupt handler)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt(out_dir: Path, variant: str, sig: signal.Signals, extra: tuple[str, ...]) -> subprocess.CompletedProcess:
    """Start the run(s), send ``sig`` once a first checkpoint exists, and wait for the process to end."""
    process = subprocess.Popen(
        command(out_dir, variant, extra),
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,  # only resets a signal disposition, before exec
    )
    deadline = time.monotonic() + 120
    while not list(out_dir.glob(f"{GRID}/*/checkpoint.pt")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(sig)
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def finish(out_dir: Path, variant: str, extra: tuple[str, ...]) -> list[dict]:
    subprocess.run(command(out_dir, variant, extra), env=ENV, check=True, capture_output=True)
    return [json.loads((run / "summary.json").read_text()) for run in run_dirs(out_dir)]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoint.pt", weights_only=True)["model"]


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def reference(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, device_overrides: tuple[str, ...]
) -> tuple[str, Path]:
    """The uninterrupted run(s) of each variant."""
    out_dir = tmp_path_factory.mktemp(f"reference-{request.param}")
    finish(out_dir, request.param, device_overrides)
    return request.param, out_dir


STOP_SIGNALS = [signal.SIGKILL, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT]
KILLED = [pytest.param(sig, marks=[pytest.mark.equality] if sig == signal.SIGKILL else []) for sig in STOP_SIGNALS]


@pytest.mark.parametrize("sig", KILLED, ids=[sig.name for sig in STOP_SIGNALS])
def test_interrupted_runs_resume_bit_identical(
    reference: tuple[str, Path], tmp_path: Path, sig: signal.Signals, device_overrides: tuple[str, ...]
) -> None:
    variant, expected_dir = reference
    interrupted = interrupt(tmp_path, variant, sig, device_overrides)
    assert interrupted.returncode != 0
    for run in run_dirs(tmp_path):
        if sig != signal.SIGKILL:  # handled: checkpointed at the next step boundary, recorded as interrupted
            stopped = json.loads((run / "summary.json").read_text())
            assert stopped["status"] == "interrupted" and 0 < stopped["steps"] < 1200
            assert sig.name in stopped["error"] and "relaunch the same command to resume" in interrupted.stderr
            assert "Traceback" not in interrupted.stderr
            assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == stopped["steps"]
        else:  # killed outright: no summary, only the last periodic checkpoint
            assert not (run / "summary.json").exists()
    resumed = finish(tmp_path, variant, device_overrides)
    references = run_dirs(expected_dir)
    assert [run.name for run in run_dirs(tmp_path)] == [run.name for run in references]
    for summary, run, expected in zip(resumed, run_dirs(tmp_path), references, strict=True):
        assert summary["status"] == "completed" and summary["steps"] == 1200
        assert all(torch.equal(value, weights(run)[name]) for name, value in weights(expected).items())
        pd.testing.assert_frame_equal(
            pd.read_parquet(expected / "metrics.parquet"), pd.read_parquet(run / "metrics.parquet")
        )
        assert summary["final"] == json.loads((expected / "summary.json").read_text())["final"]


def test_checkpoints_load_with_weights_only(reference: tuple[str, Path]) -> None:
    for run in run_dirs(reference[1]):  # a fused member's checkpoint has a separate run's form
        state = torch.load(run / "checkpoint.pt", weights_only=True)
        assert state["step"] == 1200 and set(state) >= {"model", "optimizer", "scheduler", "batches", "rng"}


def test_resume_never_starts_again(
    reference: tuple[str, Path], tmp_path: Path, device_overrides: tuple[str, ...]
) -> None:
    variant, expected_dir = reference
    interrupt(tmp_path, variant, signal.SIGKILL, device_overrides)
    rerun = [*command(tmp_path, variant, device_overrides), "resume=never"]
    subprocess.run(rerun, env=ENV, check=True, capture_output=True)
    for expected, run in zip(run_dirs(expected_dir), run_dirs(tmp_path), strict=True):
        metrics = pd.read_parquet(run / "metrics.parquet")
        pd.testing.assert_frame_equal(pd.read_parquet(expected / "metrics.parquet"), metrics)


def test_stop_signals_follow_submitits_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(checkpoint.SUBMITIT_SIGNAL_ENV, raising=False)
    assert checkpoint.stop_signals() == (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT)
    monkeypatch.setenv(checkpoint.SUBMITIT_SIGNAL_ENV, "HUP")
    assert signal.SIGHUP in checkpoint.stop_signals() and signal.SIGUSR2 not in checkpoint.stop_signals()


@pytest.fixture
def usr1_handler():
    """Install a handler for SIGUSR1 (the handler before the run's, e.g. submitit's); restore the old one after."""
    old = signal.getsignal(signal.SIGUSR1)
    yield lambda handler: signal.signal(signal.SIGUSR1, handler)
    signal.signal(signal.SIGUSR1, old)


def test_a_stop_signal_sent_twice_goes_straight_to_the_previous_handler(usr1_handler) -> None:
    class Stopped(Exception):
        pass

    def previous(signum, frame) -> None:
        raise Stopped

    usr1_handler(previous)
    with checkpoint.preemption_flag() as flag:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert flag.is_set() and flag.signals == [signal.SIGUSR1]  # noted; the run goes on to its step boundary
        with pytest.raises(Stopped):
            os.kill(os.getpid(), signal.SIGUSR1)
    assert signal.getsignal(signal.SIGUSR1) is previous


def test_an_ignored_signal_stays_ignored(usr1_handler) -> None:
    usr1_handler(signal.SIG_IGN)  # as SIGINT is for a job started in the background
    with checkpoint.preemption_flag() as flag:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert not flag.is_set()


SMOKE_RUN = ("experiment=ioffe2015-fig1", "train.checkpoint_every=5")


def stop_at(monkeypatch: pytest.MonkeyPatch, step: int, stop) -> None:
    """Make the training loop call ``stop()`` inside optimizer step ``step``, after the update."""
    original = SingleRun.train_step

    def train_step(stepper: SingleRun, at: int) -> list:
        measured = original(stepper, at)
        if at == step:
            stop()
        return measured

    monkeypatch.setattr(SingleRun, "train_step", train_step)


def test_submitits_preemption_checkpoints_then_requeues(cli, out_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As submitit preempts a job: SIGTERM (its handler only logs it), then SIGUSR2 (its handler requeues the job and
    exits). The run checkpoints at the step boundary, then hands both on in that order."""
    handled = []

    def submitit_bypass(signum, frame) -> None:
        handled.append("bypass")

    def submitit_requeue(signum, frame) -> None:
        handled.append("requeue")
        raise SystemExit(-1)

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGUSR2)}
    signal.signal(signal.SIGTERM, submitit_bypass)
    signal.signal(signal.SIGUSR2, submitit_requeue)
    try:
        args = ("run", "scale=smoke", f"out_dir={out_dir}", *SMOKE_RUN)

        def preempt() -> None:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGUSR2)

        stop_at(monkeypatch, 7, preempt)
        with pytest.raises(SystemExit):
            cli(*args)
        assert handled == ["bypass", "requeue"]
        folder = out_dir / "ioffe2015-fig1" / "smoke" / "seed=0"
        stopped = json.loads((folder / "summary.json").read_text())
        assert stopped["status"] == "interrupted" and stopped["steps"] == 7 and "SIGTERM+SIGUSR2" in stopped["error"]
        assert torch.load(folder / "checkpoint.pt", weights_only=True)["step"] == 7
        monkeypatch.undo()
        assert cli(*args)[0] == 0  # the requeued job resumes
        assert json.loads((folder / "summary.json").read_text())["status"] == "completed"
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@pytest.mark.parametrize("stop", [KeyboardInterrupt, SystemExit])
def test_a_run_stopped_mid_step_is_interrupted_and_resumes(compose, tmp_path: Path, monkeypatch, stop) -> None:
    """Ctrl-C pressed twice, or ``sys.exit`` from elsewhere, stops the run at once: recorded ``interrupted`` (not
    ``completed``), never skipped as finished, resumed from its last periodic checkpoint to the same end."""
    from normexp.rundir import is_finished

    expected = runner.train(compose(*SMOKE_RUN), tmp_path / "reference")

    def raise_stop() -> None:
        raise stop()

    stop_at(monkeypatch, 7, raise_stop)
    run = tmp_path / "run"
    with pytest.raises(stop):
        runner.train(compose(*SMOKE_RUN), run)
    stopped = json.loads((run / "summary.json").read_text())
    # stopped inside step 7, which the loop never counted: 6 steps done, the checkpoint of step 5 to resume from
    assert stopped["status"] == "interrupted" and stopped["steps"] == 6 and stop.__name__ in stopped["error"]
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 5 and not is_finished(run)
    monkeypatch.undo()
    resumed = runner.train(compose(*SMOKE_RUN), run)
    assert resumed["status"] == "completed" and resumed["final"] == expected["final"]
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "reference" / "metrics.parquet"), pd.read_parquet(run / "metrics.parquet")
    )
