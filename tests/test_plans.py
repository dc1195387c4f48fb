"""Every experiment plans at every scale: its grid composes and every job validates (names, values, the model and
norm built on tiny data, the probes attached) before any work starts, as ``normexp run -m`` and ``reproduce`` do.

Data files stand in generated data of the same shapes (a test machine need not hold CIFAR or IWSLT14), and one
seed stands for every seed (a seed never makes a job invalid), so the test stays fast.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from normexp import sweep
from normexp.cli import SCALES
from normexp.config import CONFIG_DIR, compose_config, expand_grid

EXPERIMENTS = sorted(path.stem for path in (CONFIG_DIR / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_plans_at_every_scale(experiment: str, scale: str, tmp_path: Path) -> None:
    overrides = [f"experiment={experiment}", f"scale={scale}", f"out_dir={tmp_path}", "data.synthetic=true", "seed=0"]
    jobs = sweep.plan(expand_grid(overrides), lambda job: compose_config([*job, "hydra.mode=MULTIRUN"], True))
    assert jobs and {(job.cfg.experiment_name, job.cfg.scale_name) for job in jobs} == {(experiment, scale)}
    assert len({job.run_dir for job in jobs}) == len(jobs)  # every job has a folder of its own
