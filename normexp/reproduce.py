"""From a claim to stored results, figures and a verdict under ``results/<claim>/<scale>/``.

``reproduce`` runs the claim's grid (finished runs are skipped), then :func:`store` writes the tidy tables,
:func:`analyse` computes what the claim needs from the finished runs (its loss surfaces), :func:`draw` the figures
and :func:`judge` the verdict. ``verify`` and ``figures`` read stored results only: they never train or evaluate.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from normexp import claims, sweep, tracking
from normexp.analysis import load_runs
from normexp.claims import Claim, Results, Verdict, sensitivity
from normexp.config import compose_config
from normexp.errors import UserError
from normexp.grids import SURFACES, Grid, SurfaceSettings
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
    """Run every experiment of ``claim`` at ``scale``, then its sensitivity grids (the same grid once per other
    value of each open choice, :mod:`normexp.claims.sensitivity`); return the jobs and 1 if any run failed."""
    jobs = []
    for experiment in claim.experiments:
        overrides = [f"experiment={experiment}", f"scale={scale}", f"out_dir={out_dir}", *extra]
        jobs += sweep.launch(overrides, multirun=True)
        for axis in open_choices(claim, scale, extra):
            if axis.experiment == experiment:
                jobs += [job for column in axis.overrides() for job in sweep.launch([*overrides, *column], True)]
    return jobs, sweep.report(jobs)


def check_stored_surfaces(claim: Claim, scale: str, extra: list[str], target: Path) -> None:
    """Before any run: a stored surface made with other settings than the claim's experiments set now
    (``probes.surface``) is a :class:`UserError` here, not once the grid has trained and the surface is recomputed."""
    folder = target / SURFACES
    if claim.surfaces is None or not folder.is_dir():
        return
    probes = [override for override in extra if override.lstrip("+~").startswith("probes.")]
    settings = [
        SurfaceSettings.of(compose_config([f"experiment={experiment}", f"scale={scale}", *probes]))
        for experiment in claim.experiments
    ]
    for path in sorted(folder.glob("*.npz")):
        meta = Grid.read(path).meta
        departures = [setting.departures(meta) for setting in settings]
        if all(departures):
            raise UserError(
                f"{path} holds a surface made with other settings than {claim.id} sets at scale {scale} "
                f"({'; '.join(departures[0])}).",
                fix=f"delete it (rm {path}) to compute it with the current settings after the runs",
            )


def open_choices(claim: Claim, scale: str, extra: list[str]) -> list[sensitivity.Axis]:
    """The claim's open choices that ``extra`` leaves open: a choice the user overrides is theirs to set, so its
    map is neither run nor judged."""
    given = {override.split("=", 1)[0].lstrip("+~") for override in extra}
    return [axis for axis in sensitivity.claim_axes(claim, scale) if not axis.keys & given]


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


def judge(
    claim: Claim, results: Results, scale: str, target: Path | None = None, axes: list[sensitivity.Axis] | None = None
) -> Verdict:
    """The claim's verdict on ``results`` at its primary setting, with its sensitivity map over ``axes`` (default:
    all its open choices); written to ``target/verdict.json`` when ``target`` is given."""
    verdict = sensitivity.judge(claim, results, scale, axes)
    if target is not None:
        write_json(target / VERDICT_FILE, verdict.to_dict())
    return verdict


def analyse(claim: Claim, results: Results, target: Path) -> None:
    """The post-training step: the claim's loss surfaces computed (or completed) from its runs' final checkpoints
    into ``target``, where its figures read them."""
    if claim.surfaces is not None and not results.summary.empty:
        from normexp import landscapes  # loads and evaluates models: only when a claim needs it

        landscapes.complete(claim.surfaces(results.summary), target)


def draw(
    claim: Claim, results: Results, target: Path, scale: str, axes: list[sensitivity.Axis] | None = None
) -> list[Path]:
    """The claim's figures from ``results`` at the primary setting, and its sensitivity map over ``axes`` (default:
    all its open choices), saved in ``target``."""
    if results.summary.empty:
        return []
    axes = sensitivity.claim_axes(claim, scale) if axes is None else axes
    primary = sensitivity.select(results, axes)
    figures = claim.plot(primary, target) if not primary.summary.empty else []
    return figures + sensitivity.plot_map(sensitivity.judge(claim, results, scale, axes), target)


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
    target = results_dir(claim_id, scale, root)
    check_stored_surfaces(claim, scale, extra, target)
    jobs, status = run_claim(claim, scale, out_dir, extra)
    results = store([job.run_dir for job in jobs], target)
    analyse(claim, results, target)
    axes = open_choices(claim, scale, extra)
    figures = draw(claim, results, target, scale, axes)
    verdict = judge(claim, results, scale, target, axes)
    logger = OmegaConf.to_container(jobs[0].cfg.logger, resolve=True) if jobs else {"name": "none"}
    tracking.log_claim(logger, claim_id, scale, figures, verdict.to_dict(), target, Path(out_dir))
    return verdict, status
