"""From a claim to stored results, figures and a verdict under ``results/<claim>/<scale>/``.

``reproduce`` runs the claim's grid (finished runs are skipped), then :func:`store` writes the tidy tables,
:func:`draw` the figures and :func:`judge` the verdict. ``verify`` and ``figures`` read the stored tables only.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from normexp import claims, sweep, tracking
from normexp.analysis import load_runs
from normexp.claims import Claim, Results, Verdict
from normexp.errors import UserError
from normexp.rundir import atomic_write, write_json

REPOSITORY_RESULTS = Path(__file__).resolve().parents[1] / "results"
RESULTS_DIR = REPOSITORY_RESULTS if REPOSITORY_RESULTS.is_dir() else Path("results")
"""Where results are stored and read: the repository's ``results/`` when normexp runs from a checkout (whatever
the working folder), else ``results/`` in the working folder; ``--results`` names another."""
RUNS_TABLE = "runs.parquet"
SUMMARY_TABLE = "summary.csv"
VERDICT_FILE = "verdict.json"


def results_dir(claim_id: str, scale: str, root: Path = RESULTS_DIR) -> Path:
    """Where a claim's results at ``scale`` are stored."""
    return Path(root) / claim_id / scale


def run_claim(claim: Claim, scale: str, out_dir: str, extra: list[str]) -> tuple[list[sweep.Job], int]:
    """Run every experiment of ``claim`` at ``scale`` (``normexp run -m`` each); return its jobs and 1 if any run
    failed."""
    jobs = []
    for experiment in claim.experiments:
        jobs += sweep.hydra_app(["-m", f"experiment={experiment}", f"scale={scale}", f"out_dir={out_dir}", *extra])
    return jobs, sweep.report(jobs)


def store(run_dirs: list[Path], target: Path) -> Results:
    """Load the runs into tidy tables and write ``runs.parquet`` and ``summary.csv`` to ``target``."""
    runs, summary = load_runs(run_dirs)
    target.mkdir(parents=True, exist_ok=True)
    atomic_write(target / RUNS_TABLE, lambda f: runs.to_parquet(f, index=False), mode="wb")
    atomic_write(target / SUMMARY_TABLE, lambda f: summary.to_csv(f, index=False))
    return Results(runs, summary)


def load(claim_id: str, scale: str, root: Path = RESULTS_DIR) -> Results:
    """A claim's stored results (empty frames when none are stored); a damaged table is a :class:`UserError`."""
    folder = results_dir(claim_id, scale, root)
    if not (folder / RUNS_TABLE).exists():
        return Results(pd.DataFrame(), pd.DataFrame())
    try:
        return Results(pd.read_parquet(folder / RUNS_TABLE), pd.read_csv(folder / SUMMARY_TABLE))
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise UserError(
            f"the stored results in {folder} are damaged ({type(error).__name__}: {error}).",
            fix=f"regenerate them from the run folders: normexp reproduce {claim_id} --scale {scale}",
        ) from None


def judge(claim: Claim, results: Results, scale: str, target: Path | None = None) -> Verdict:
    """The claim's verdict on ``results``; written to ``target/verdict.json`` when ``target`` is given."""
    verdict = claim.verify(results, scale)
    if target is not None:
        write_json(target / VERDICT_FILE, verdict.to_dict())
    return verdict


def draw(claim: Claim, results: Results, target: Path) -> list[Path]:
    """The claim's figures from ``results``, saved in ``target``."""
    return claim.plot(results, target) if not results.summary.empty else []


def figures_of(claim_id: str, scale: str, root: Path = RESULTS_DIR) -> list[Path]:
    """The PNG figures stored for a claim."""
    return sorted(results_dir(claim_id, scale, root).glob("*.png"))


def stored_verdict(claim_id: str, scale: str, root: Path = RESULTS_DIR) -> dict | None:
    """The verdict written by the last ``reproduce``, if any."""
    path = results_dir(claim_id, scale, root) / VERDICT_FILE
    return json.loads(path.read_text()) if path.exists() else None


def reproduce(
    claim_id: str, scale: str, out_dir: str, extra: list[str], root: Path = RESULTS_DIR
) -> tuple[Verdict, int]:
    """Run, store, draw and judge one claim; return its verdict and the sweep's exit status."""
    claim = claims.get(claim_id)
    jobs, status = run_claim(claim, scale, out_dir, extra)
    target = results_dir(claim_id, scale, root)
    results = store([job.run_dir for job in jobs], target)
    figures = draw(claim, results, target)
    verdict = judge(claim, results, scale, target)
    logger = OmegaConf.to_container(jobs[0].cfg.logger, resolve=True) if jobs else {"name": "none"}
    tracking.log_claim(logger, claim_id, scale, figures, verdict.to_dict(), target, Path(out_dir))
    return verdict, status
