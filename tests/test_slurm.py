"""The SLURM path on a real SLURM: the one-node cluster of ``scripts/local_slurm.sh`` (``.ci/run`` starts it).

A grid is one job array whose failing run is reported failed while the others finish; a run requeued mid-way
(``scontrol requeue``, as a preemption does) and later sent submitit's time-out signal is requeued both times,
resumes from its checkpoints and ends bit-identical to the same run trained locally, which also checks that a run
computes the same numbers under every launcher; a fused cell (``fuse=true``) is one SLURM job. Jobs are small: one
CPU and 1 GB each. Without a cluster these tests are skipped, unless ``NORMEXP_REQUIRE_SLURM=1`` (CI) makes that a
failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from normexp.config import compose_config

pytestmark = pytest.mark.slurm

SLURM = (
    "launcher=slurm",
    "gpus=0",
    "hydra.launcher.partition=debug",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=5",
)
"""A job of the local cluster: no GPU, one CPU, 1 GB, five minutes (more than any test's run needs)."""


def cluster_problem() -> str | None:
    """Why the SLURM cluster cannot run the tests (no node taking jobs, no accounting), or None."""
    checks = {
        "no SLURM node takes jobs": ["sinfo", "--noheader", "--responding", "--states=idle,mixed", "--format=%N"],
        "sacct (job accounting) does not answer": ["sacct", "--noheader", "--allocations", "--starttime=now"],
    }
    for problem, command in checks.items():
        try:
            answer = subprocess.run(command, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return f"{problem} ({command[0]} is not installed or hangs)"
        if answer.returncode != 0 or (command[0] == "sinfo" and not answer.stdout.strip()):
            return f"{problem}: {answer.stderr.strip() or 'no idle node'}"
    return None


@pytest.fixture(scope="module", autouse=True)
def cluster() -> None:
    problem = cluster_problem()
    if problem is None:
        return
    message = f"{problem}; start one with `scripts/local_slurm.sh start` (as root)"
    if os.environ.get("NORMEXP_REQUIRE_SLURM") == "1":
        pytest.fail(message)
    pytest.skip(message)


def sweep_dir(out_dir: Path, experiment: str = "adhoc") -> Path:
    return out_dir / experiment / "smoke"


def run_folders(out_dir: Path, key: str) -> dict[Any, Path]:
    """The run folders of a smoke-scale sweep by the value of ``key`` in their configs (their names are the
    launcher's business; submitit's logs in ``.submitit/`` are not runs)."""
    configs = sweep_dir(out_dir).glob("*/config.yaml")
    return {OmegaConf.select(OmegaConf.load(path), key): path.parent for path in sorted(configs)}


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def slurm_jobs(out_dir: Path) -> list[str]:
    """The SLURM job ids of a sweep's runs (``<array job>_<task>``; a lone run is a plain job), from submitit's
    folders: one per job, holding its pickled call and its logs."""
    return sorted(path.parent.name for path in (sweep_dir(out_dir) / ".submitit").glob("*/*_submitted.pkl"))


def sbatch_scripts(out_dir: Path) -> str:
    """The sbatch scripts submitit wrote for a sweep."""
    return "".join(path.read_text() for path in (sweep_dir(out_dir) / ".submitit").glob("*/*_submission.sh"))


ACTIVE = {"PENDING", "RUNNING", "COMPLETING"}


def accounting(job: str) -> list[str]:
    """The states SLURM's accounting recorded for ``job``, one per attempt (a requeued job has several), once the
    job has ended: its result file, which tells submitit it is done, is written a moment before the job ends."""
    command = ["sacct", "--noheader", "--parsable2", "--allocations", "--duplicates", "-o", "State", "-j", job]
    for _ in range(60):
        states = subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()
        if states and states[-1] not in ACTIVE:
            break
        time.sleep(0.5)
    return states


def job_log(out_dir: Path, job: str) -> str:
    """The stdout and stderr of a job's attempts, as submitit saved them."""
    folder = sweep_dir(out_dir) / ".submitit" / job
    return "".join(path.read_text() for path in sorted(folder.glob("*_log.*")))


def assert_same_runs(expected: Path, actual: Path) -> None:
    """Two run folders hold bit-identical results: metrics at every step, final summary metrics and weights (where
    the run keeps a checkpoint; a fused cell keeps none)."""
    pd.testing.assert_frame_equal(
        pd.read_parquet(expected / "metrics.parquet"), pd.read_parquet(actual / "metrics.parquet")
    )
    assert summary(actual)["final"] == summary(expected)["final"]
    if not (expected / "checkpoint.pt").exists():
        return
    weights, reference = (torch.load(d / "checkpoint.pt", weights_only=True)["model"] for d in (actual, expected))
    assert weights.keys() == reference.keys()
    assert all(torch.equal(weights[name], reference[name]) for name in reference)


def test_every_launcher_computes_with_the_same_threads() -> None:
    threads = {name: compose_config([f"launcher={name}"]).threads for name in ("basic", "joblib", "slurm")}
    assert threads == dict.fromkeys(threads, 1)


GRID = ("scale=smoke", "norm=bn", "train.norm_batch=1,60")
"""BN on one sample per forward fails at run time (one value per channel); on the whole batch of 60 it trains, with
weights that differ in the last digits between 1 and 2 torch threads."""


def test_grid_is_one_job_array_and_a_failing_run_does_not_stop_it(
    cli, out_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    activated = tmp_path / "activated"  # `setup` runs on the node before the run: where an environment is activated
    setup = f"hydra.launcher.setup=['touch {activated}']"
    status, out, _err = cli("run", "-m", *GRID, f"out_dir={out_dir}", *SLURM, setup)
    assert status == 1 and "runs: 1 completed, 1 failed" in out
    assert activated.exists()
    runs = run_folders(out_dir, "train.norm_batch")
    assert {norm_batch: summary(run)["status"] for norm_batch, run in runs.items()} == {1: "failed", 60: "completed"}
    assert "Expected more than 1 value per channel" in summary(runs[1])["error"]
    jobs = slurm_jobs(out_dir)
    assert len(jobs) == 2 and len({job.split("_")[0] for job in jobs}) == 1  # two tasks of one array job
    assert "#SBATCH --array=0-1" in sbatch_scripts(out_dir)
    assert all(accounting(job) == ["COMPLETED"] for job in jobs)  # a failed run is a result, not a lost job
    assert not [record for record in caplog.records if "sacct" in record.getMessage()]  # status polls answered

    local = tmp_path / "local"
    assert cli("run", "-m", *GRID, f"out_dir={local}")[0] == 1
    assert_same_runs(run_folders(local, "train.norm_batch")[60], runs[60])


LONG_RUN = ("scale=smoke", "train.steps=1500", "train.log_every=100", "train.eval_every=500", "data.train_size=512")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The long run trained locally (basic launcher, in this process), never interrupted."""
    from normexp.cli import main

    out_dir = tmp_path_factory.mktemp("uninterrupted")
    assert main(["run", "-m", *LONG_RUN, f"out_dir={out_dir}"]) == 0
    (run,) = run_folders(out_dir, "seed").values()
    return run


def trained_steps(out_dir: Path) -> int:
    """The last step the sweep's one run has logged so far (0 before its first record)."""
    lines = [line for log in sweep_dir(out_dir).glob("*/metrics.jsonl") for line in log.read_text().splitlines()]
    return max((json.loads(line)["step"] for line in lines if line.endswith("}")), default=0)


INTERRUPTIONS = {
    # What a preemption does to a job: SIGTERM to the run, then back to the queue under the same job id.
    300: ["scontrol", "requeue"],
    # SLURM's time-out warning: SIGUSR2 signal_delay_s before the limit (the --signal submitit asks for), here at a
    # known step rather than by the limit itself; with timeout_min=5 submitit counts it a time-out and requeues.
    900: ["scancel", "--signal=USR2"],
}
"""Each interruption's command (the job id appended), by the step the run has logged when it is sent."""


def test_interrupted_run_is_requeued_and_resumes_bit_identical(uninterrupted: Path, out_dir: Path) -> None:
    overrides = ("hydra.launcher.signal_delay_s=60", "hydra.launcher.max_num_timeout=2")
    launch = subprocess.Popen(
        [sys.executable, "-m", "normexp", "run", "-m", *LONG_RUN, f"out_dir={out_dir}", *SLURM, *overrides],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for step, command in INTERRUPTIONS.items():
            deadline = time.monotonic() + 180
            while trained_steps(out_dir) < step and launch.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            assert launch.poll() is None and trained_steps(out_dir) < 1500, f"the run ended before {command}"
            (job,) = slurm_jobs(out_dir)
            subprocess.run([*command, job], check=True)
        _out, err = launch.communicate(timeout=300)
    finally:  # a launch left waiting on a lost job would outlive the test
        launch.kill()
    assert launch.returncode == 0, err

    assert accounting(job) == ["REQUEUED", "REQUEUED", "COMPLETED"]
    (run_dir,) = run_folders(out_dir, "seed").values()
    assert summary(run_dir)["status"] == "completed"
    assert_same_runs(uninterrupted, run_dir)
    log = job_log(out_dir, job)
    assert log.count("interrupted and checkpointed") == 2 and log.count("resumes from its checkpoint at step") == 2
    assert "this job is timed-out" in log and "Requeued job" in log and "(1 remaining timeouts)" in log
    assert "#SBATCH --signal=USR2@60" in sbatch_scripts(out_dir)


def test_fused_cell_is_one_slurm_job(cli, out_dir: Path, tmp_path: Path) -> None:
    cell = ("scale=smoke", "seed=0,1", "fuse=true")  # one grid cell: two seeds trained together
    status, _out, err = cli("run", "-m", *cell, f"out_dir={out_dir}", *SLURM)
    assert status == 0, err
    runs = run_folders(out_dir, "seed")
    assert {seed: summary(run)["status"] for seed, run in runs.items()} == {0: "completed", 1: "completed"}
    (job,) = slurm_jobs(out_dir)
    assert accounting(job) == ["COMPLETED"]

    local = tmp_path / "local"
    assert cli("run", "-m", *cell, f"out_dir={local}")[0] == 0
    for seed, run in run_folders(local, "seed").items():
        assert_same_runs(run, runs[seed])
