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

from normexp import checkpoint, runner

RUN = "ioffe2015-fig1/smoke/data.train_size=512,train.eval_every=200,train.log_every=50,train.steps=1200,seed=0"


def command(out_dir: Path, extra: tuple[str, ...]) -> list[str]:
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
        *extra,
    ]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def default_sigint() -> None:
    """In the child: Ctrl-C's default handling, which a shell or test runner started in the background may have set
    to ignore (then Python installs no KeyboardInterrupt handler)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt(out_dir: Path, sig: signal.Signals, extra: tuple[str, ...]) -> subprocess.CompletedProcess:
    """Start the run, send ``sig`` once its first checkpoint exists, and wait for the process to end."""
    process = subprocess.Popen(
        command(out_dir, extra),
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,  # only resets a signal disposition, before exec
    )
    checkpoint = out_dir / RUN / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(sig)
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def finish(out_dir: Path, extra: tuple[str, ...]) -> dict:
    subprocess.run(command(out_dir, extra), env=ENV, check=True, capture_output=True)
    return json.loads((out_dir / RUN / "summary.json").read_text())


def weights(out_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(out_dir / RUN / "checkpoint.pt", weights_only=True)["model"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, device_overrides: tuple[str, ...]) -> Path:
    """The uninterrupted run."""
    out_dir = tmp_path_factory.mktemp("reference")
    finish(out_dir, device_overrides)
    return out_dir


STOP_SIGNALS = [signal.SIGKILL, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT]
KILLED = [pytest.param(sig, marks=[pytest.mark.equality] if sig == signal.SIGKILL else []) for sig in STOP_SIGNALS]


@pytest.mark.parametrize("sig", KILLED, ids=[sig.name for sig in STOP_SIGNALS])
def test_interrupted_run_resumes_bit_identical(
    reference: Path, tmp_path: Path, sig: signal.Signals, device_overrides: tuple[str, ...]
) -> None:
    interrupted = interrupt(tmp_path, sig, device_overrides)
    assert interrupted.returncode != 0
    summary_path = tmp_path / RUN / "summary.json"
    if sig != signal.SIGKILL:  # handled: checkpointed at the next step boundary, recorded as interrupted
        stopped = json.loads(summary_path.read_text())
        assert stopped["status"] == "interrupted" and 0 < stopped["steps"] < 1200
        assert sig.name in stopped["error"] and "relaunch the same command to resume" in interrupted.stderr
        assert "Traceback" not in interrupted.stderr
        saved = torch.load(tmp_path / RUN / "checkpoint.pt", weights_only=True)
        assert saved["step"] == stopped["steps"]
    else:  # killed outright: no summary, only the last periodic checkpoint
        assert not summary_path.exists()
    resumed = finish(tmp_path, device_overrides)
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


def test_resume_never_starts_again(reference: Path, tmp_path: Path, device_overrides: tuple[str, ...]) -> None:
    interrupt(tmp_path, signal.SIGKILL, device_overrides)
    subprocess.run([*command(tmp_path, device_overrides), "resume=never"], env=ENV, check=True, capture_output=True)
    metrics = pd.read_parquet(tmp_path / RUN / "metrics.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(reference / RUN / "metrics.parquet"), metrics)


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
    """Make the training loop call ``stop()`` right after optimizer step ``step``."""
    original = runner._Loop._train_step

    def train_step(loop: runner._Loop) -> None:
        original(loop)
        if loop.step == step:
            stop()

    monkeypatch.setattr(runner._Loop, "_train_step", train_step)


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
    assert stopped["status"] == "interrupted" and stopped["steps"] == 7 and stop.__name__ in stopped["error"]
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 5 and not is_finished(run)
    monkeypatch.undo()
    resumed = runner.train(compose(*SMOKE_RUN), run)
    assert resumed["status"] == "completed" and resumed["final"] == expected["final"]
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "reference" / "metrics.parquet"), pd.read_parquet(run / "metrics.parquet")
    )
