"""scripts/gpu_check.sh end to end on CPU at its tiny settings (the dry run of the GPU check): every phase passes
and writes its tables into one flat folder of few files; wrong invocations stop before any work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
ENV = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("gpu-check")
    env = {**ENV, "TMPDIR": str(out.parent)}
    done = subprocess.run(
        [SCRIPT, str(out), "--device", "cpu", "--tiny"], env=env, cwd=ROOT, capture_output=True, text=True
    )
    return done, out


@pytest.mark.e2e
def test_the_dry_run_passes_every_phase_into_one_flat_folder(dry_run) -> None:
    done, out = dry_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    files = {"gpu-check.log", "cpu.csv", "cpu-fused-resnet8.csv", "cpu-fused-resnet18.csv", "summary.md"}
    files |= {"cpu-paper-costs.csv", "cpu-paper-costs.md"}
    assert {p.name for p in out.iterdir()} == files  # at most 8 plain files: what a GPU tool brings back
    log = (out / "gpu-check.log").read_text()
    for phase in ("tests", "bench", "fused resnet8", "fused resnet18", "costs"):
        assert f"== {phase}: exit 0" in log
    assert "1 passed" in log


@pytest.mark.e2e
def test_the_dry_run_writes_every_table(dry_run) -> None:
    _, out = dry_run
    bench = pd.read_csv(out / "cpu.csv")
    impls = {"runner", "bare", "bare+bf16", "bare+channels_last"}
    assert set(zip(bench["impl"], bench["batch_size"], strict=True)) == {(i, b) for i in impls for b in (4, 8)}
    for model in ("resnet8", "resnet18"):  # the batch-size grid's CPU-scale net, and its paper-scale one
        fused = pd.read_csv(out / f"cpu-fused-{model}.csv")
        assert set(fused["model"]) == {"resnet"} and set(fused["norm"]) == {"bn", "gn+ws"}
        assert set(zip(fused["impl"], fused["seeds"], strict=True)) == {
            (impl, seeds) for impl in ("serial", "fused") for seeds in (2, 3)
        }
    costs = pd.read_csv(out / "cpu-paper-costs.csv")
    assert costs["cell"].tolist() == ["norm=none", "norm=bn"] and (costs["status"] == "completed").all()
    assert (costs["run_s"] > costs["start_s"]).all()
    summary = (out / "summary.md").read_text()
    assert summary.count("| impl |") == 3 and "| santurkar2018-dln | 6 | 2/2 |" in summary


@pytest.mark.parametrize(
    "args, message", [([], "no output folder"), (["out", "--frobnicate"], "unknown option --frobnicate")]
)
def test_a_wrong_invocation_stops_with_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    env = {k: v for k, v in ENV.items() if k != "OUT"}
    done = subprocess.run([SCRIPT, *args], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 2 and message in done.stderr and not (tmp_path / "out").exists()
