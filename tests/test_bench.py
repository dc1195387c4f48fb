"""The benchmark: its clock marks the right steps, windows hold whole logging periods, ratios pair the right windows,
FLOPs match a hand count, and a tiny run writes a tidy CSV. Nothing here asserts how fast anything is."""

from __future__ import annotations

import math
import os
import signal
from pathlib import Path

import pandas as pd
import pytest
import torch

from normexp import bench
from normexp.training.loop import Interrupted, SingleRun

SMOKE = ("--scale", "smoke", "--warmup", "2", "--steps", "5", "--repeats", "2")


def test_step_clock_marks_the_end_of_the_warmup_and_of_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    steps = {"begun": 0}
    monkeypatch.setattr(bench.time, "perf_counter", lambda: steps["begun"])  # a clock that reads the step count
    parameter = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([parameter], lr=0.1)
    with bench.StepClock(start=3, stop=8, device=torch.device("cpu")) as clock:
        for _ in range(10):
            steps["begun"] += 1
            parameter.grad = torch.ones(1)
            optimizer.step()
    window = clock.window()
    assert (window.steps, window.seconds, window.warmup_seconds) == (5, 5, 3)


def test_step_clock_refuses_a_window_that_did_not_end() -> None:
    with bench.StepClock(start=1, stop=5, device=torch.device("cpu")) as clock:
        pass
    with pytest.raises(RuntimeError, match="only 0 optimizer steps ran"):
        clock.window()


@pytest.mark.parametrize(
    "rate, seconds, log_every, checkpoint_every, expected",
    [
        (100, 1, 30, 1000, 120),  # 100 steps -> 4 logging periods of 30
        (1000, 2.5, 250, 1000, 3000),  # 2500 steps >= a checkpoint period -> 3 whole periods of lcm(250, 1000)
        (1000, 1, 300, 0, 1200),  # no periodic checkpoints: logging periods only
        (0.1, 1, 50, 1000, 50),  # slower than one period: one period
        (100, 1, 10**6, 10**6, 100),  # periods longer than the run (10k steps) never recur: time alone
    ],
)
def test_window_holds_whole_logging_and_checkpoint_periods(
    rate: float, seconds: float, log_every: int, checkpoint_every: int, expected: int
) -> None:
    assert bench.window_steps(rate, seconds, log_every, checkpoint_every, run_steps=10_000) == expected


def test_an_optional_implementation_that_fails_is_dropped_and_a_required_one_stops_the_case(capsys) -> None:
    window = bench.Window(steps=1, seconds=1.0, cpu_seconds=1.0, warmup_seconds=0.0)
    calls = {"bare": 0, "broken": 0}

    def works() -> bench.Window:
        calls["bare"] += 1
        return window

    def fails() -> bench.Window:
        calls["broken"] += 1
        raise RuntimeError("no graphs here")

    measured = list(bench.alternate({"bare": works, "broken": fails}, repeats=3, optional=["broken"]))
    assert [(repeat, impl) for repeat, impl, _ in measured] == [(0, "bare"), (1, "bare"), (2, "bare")]
    assert (
        calls == {"bare": 3, "broken": 1} and "broken: dropped, RuntimeError: no graphs here" in capsys.readouterr().err
    )
    with pytest.raises(RuntimeError, match="no graphs here"):
        list(bench.alternate({"bare": works, "broken": fails}, repeats=1))


def test_ratios_divide_by_the_baseline_of_the_same_case_and_repeat() -> None:
    frame = pd.DataFrame(
        {
            "experiment": ["a", "a", "a", "a", "b", "b"],
            "impl": ["runner", "bare", "bare", "runner", "bare", "fused"],
            "repeat": [0, 0, 1, 1, 0, 0],
            "steps": [10, 10, 10, 10, 40, 10],
            "members": [1, 1, 1, 1, 1, 4],
            "seconds": [2.2, 2.0, 1.0, 1.5, 4.0, 2.0],
            "cpu_seconds": [2.0, 2.0, 1.0, 1.0, 4.0, 2.0],
        }
    )
    result = bench.with_ratios(frame, ["experiment"], "bare")
    assert result["ratio"].tolist() == pytest.approx([1.1, 1.0, 1.0, 1.5, 1.0, 0.5])
    assert result["cpu_ratio"].tolist() == pytest.approx([1.0, 1.0, 1.0, 1.0, 1.0, 0.5])
    assert result["speedup"].iloc[-1] == pytest.approx(2.0)  # 40 run-steps in 2 s against 40 in 4 s


def test_flops_per_step_are_the_matmuls_of_forward_and_backward() -> None:
    cfg = bench.bench_config("ioffe2015-fig1", "smoke", "cpu", overrides=["norm=bn"])
    batch = cfg.train.batch_size
    layers = [(784, 100), (100, 100), (100, 100), (100, 10)]
    # forward 2·B·in·out per layer; backward the weight gradient, and the input gradient except for the first layer
    expected = sum(2 * batch * fan_in * fan_out * (2 if i == 0 else 3) for i, (fan_in, fan_out) in enumerate(layers))
    assert bench.flops_per_step(cfg) == expected


def test_bench_writes_a_tidy_csv_and_ends_with_the_overhead_ratio(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.csv"
    assert bench.main([*SMOKE, "--experiments", "ioffe2015-fig1", "--device", "cpu", "--out", str(out)]) == 0
    frame = pd.read_csv(out)
    columns = {"experiment", "scale", "impl", "repeat", "steps", "seconds", "steps_per_s", "samples_per_s", "ratio"}
    assert columns <= set(frame.columns)
    assert sorted(zip(frame["impl"], frame["repeat"], strict=True)) == [
        ("bare", 0),
        ("bare", 1),
        ("runner", 0),
        ("runner", 1),
    ]
    assert (frame["steps"] == 5).all() and (frame["seconds"] > 0).all()
    assert frame["samples_per_s"].tolist() == pytest.approx((frame["steps_per_s"] * 60).tolist())
    assert (frame.loc[frame["impl"] == "bare", "ratio"] == 1).all()
    assert frame["peak_bf16_fraction"].isna().all()  # no known peak for a CPU
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("overhead ratio (runner / bare time per step")
    ratio = float(last.split(": ")[1].split()[0])
    assert math.isclose(ratio, frame.loc[frame["impl"] == "runner", "ratio"].median(), rel_tol=1e-3)


def test_a_stop_signal_ends_the_bench_and_leaves_its_table_as_it_was(tmp_path: Path, monkeypatch) -> None:
    """SIGTERM in the runner's window checkpoints the run and raises; the benchmark must stop there (not skip to the
    next experiment) and must not replace the table it would have written."""
    out = tmp_path / "bench.csv"
    out.write_text("the table of an earlier benchmark\n")
    train_step = SingleRun.train_step

    def signalled_step(self, *args, **kwargs):
        measured = train_step(self, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
        return measured

    monkeypatch.setattr(SingleRun, "train_step", signalled_step)
    handed_on = []  # the runner hands the signal on to the handler it found: record it instead of dying
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: handed_on.append(signum))
    try:
        with pytest.raises(Interrupted, match="SIGTERM"):
            bench.main([*SMOKE, "--experiments", "ioffe2015-fig1", "batchsize", "--device", "cpu", "--out", str(out)])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert out.read_text() == "the table of an earlier benchmark\n"


def test_fused_bench_pairs_fused_and_serial_windows(tmp_path: Path, capsys) -> None:
    out = tmp_path / "fused.csv"
    args = [*SMOKE, "--fused", "--experiments", "ioffe2015-fig1", "--members", "2", "--batches", "4", "--out", str(out)]
    assert bench.main([*args, "--device", "cpu"]) == 0
    frame = pd.read_csv(out)
    fused, serial = frame[frame["impl"] == "fused"], frame[frame["impl"] == "serial"]
    assert len(fused) == len(serial) == 2 and (fused["members"] == 2).all() and (serial["members"] == 1).all()
    assert (serial["steps"] == 2 * fused["steps"].to_numpy()).all()  # the same number of run-steps
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("fused speedup over serial")


@pytest.mark.gpu
def test_gpu_variants_run(tmp_path: Path) -> None:
    out = tmp_path / "gpu.csv"
    variants = "bf16,channels_last,cuda_graphs,bf16+cuda_graphs,loader"
    args = [*SMOKE, "--experiments", "santurkar2018-vgg", "--device", "cuda", "--variants", variants]
    assert bench.main([*args, "--out", str(out)]) == 0
    frame = pd.read_csv(out)
    assert set(frame["impl"]) == {"runner", "bare", *(f"bare+{v}" for v in variants.split(","))}
    assert frame["peak_bf16_fraction"].notna().all() or frame["peak_bf16_fraction"].isna().all()
