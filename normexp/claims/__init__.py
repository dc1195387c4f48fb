"""The claim registry: each paper claim, the experiment that measures it, its pass criteria and its figures.

A claim turns stored results into a verdict with :meth:`Claim.verify` and into figures with its ``plot``
function. Criteria are fixed in advance (``docs/claims.md``) and implemented as written; a claim whose criteria
fail is "not reproduced", with the measured numbers in each :class:`Check`. A claim for which docs/claims.md fixes no
criterion (``criteria=None``) is a figure set: its verdict is "figures only" once its runs are stored.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from normexp.errors import UserError
from normexp.grids import SurfaceJob
from normexp.rundir import FINAL_STATUSES, atomic_write

VERDICTS = ("reproduced", "not reproduced", "not testable at this scale", "insufficient data", "figures only")
"""Every verdict; only "not reproduced" says that a criterion failed. "not testable at this scale": no criterion
failed, but one could not be tested within the scale's budget (its check says what it would cost)."""


class InsufficientData(Exception):
    """The stored results lack a cell that a criterion needs."""


@dataclass(frozen=True)
class Results:
    """A claim's stored results: tidy ``runs`` (run × step × metric) and per-run ``summary``."""

    runs: pd.DataFrame
    summary: pd.DataFrame


@dataclass(frozen=True)
class Check:
    """One pass criterion with what was measured.

    ``passed`` is None when the criterion cannot be tested at this scale (``measured`` then says why and what it
    would cost). ``margin`` is the criterion's slack in its own units, > 0 when it passes and < 0 when it fails
    (e.g. BN's accuracy minus no-BN's for "BN more accurate"), so a sensitivity map shows how close each call was.
    """

    name: str
    passed: bool | None
    measured: str
    margin: float | None = None

    def __post_init__(self) -> None:
        # criteria compare numpy scalars; a numpy bool would reach verdict.json as the string "False"
        if self.passed is not None:
            object.__setattr__(self, "passed", bool(self.passed))
        if self.margin is not None:  # an infinite margin (a diverged run's −inf accuracy) says no more than passed
            object.__setattr__(self, "margin", float(self.margin) if math.isfinite(self.margin) else None)


@dataclass(frozen=True)
class Verdict:
    """A claim's verdict on one scale's results."""

    claim: str
    scale: str
    verdict: str  # one of VERDICTS
    n_runs: int
    checks: list[Check] = field(default_factory=list)
    note: str = ""
    setting: dict[str, Any] = field(default_factory=dict)  # a sensitivity map's non-primary value; {}: primary
    sensitivity: list[Verdict] = field(default_factory=list)  # the map: the same criteria at every other setting

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``verdict.json``."""
        return asdict(self)


@dataclass(frozen=True)
class Claim:
    """A paper claim: its id (also its experiment's name), source, criteria and figures."""

    id: str
    title: str
    paper: str
    paper_figure: str
    criteria: Callable[[Results], list[Check]] | None  # None: no criterion was pre-registered, figures only
    plot: Callable[[Results, Path], list[Path]]
    experiments: tuple[str, ...] = ()
    paper_result: str = ""  # the paper's own numbers (docs/claims.md), shown beside ours
    surfaces: Callable[[pd.DataFrame], list[SurfaceJob]] | None = None  # loss surfaces its figures read, per summary

    def __post_init__(self) -> None:
        if not self.experiments:
            object.__setattr__(self, "experiments", (self.id,))

    def verify(self, results: Results, scale: str) -> Verdict:
        """Apply the criteria to ``results``."""
        n_runs = len(results.summary)
        if n_runs == 0:
            return Verdict(self.id, scale, "insufficient data", 0, note="no stored runs")
        if self.criteria is None:
            return Verdict(self.id, scale, "figures only", n_runs, note="no pass criterion was pre-registered")
        try:
            checks = self.criteria(results)
        except InsufficientData as why:
            return Verdict(self.id, scale, "insufficient data", n_runs, note=str(why))
        return Verdict(self.id, scale, verdict_of(checks), n_runs, checks)


def verdict_of(checks: list[Check]) -> str:
    """ "not reproduced" if a check failed, else "not testable at this scale" if one could not be tested, else
    "reproduced"."""
    if any(check.passed is False for check in checks):
        return "not reproduced"
    if any(check.passed is None for check in checks):
        return "not testable at this scale"
    return "reproduced"


def mark(check: Check, markdown: bool = True) -> str:
    """✅/❌/⏸ (PASS/FAIL/UNTESTED in plain text) for a check's outcome."""
    marks = ("✅", "❌", "⏸") if markdown else ("PASS", "FAIL", "UNTESTED")
    return marks[0] if check.passed else marks[2] if check.passed is None else marks[1]


MIN_SEEDS = 3
"""docs/claims.md: "Seeds" means at least 3 seeds per cell."""


def finished(summary: pd.DataFrame) -> pd.DataFrame:
    """The runs of ``summary`` that are over: completed or diverged (failed and interrupted runs are not results)."""
    return summary[summary["status"].isin(FINAL_STATUSES)]


def seeded_cell(frame: pd.DataFrame, where: pd.Series, name: str, min_seeds: int = MIN_SEEDS) -> pd.DataFrame:
    """The rows of one grid cell (``frame[where]``, called ``name`` in messages); :class:`InsufficientData` with
    fewer than ``min_seeds`` seeds."""
    runs = frame[where]
    if runs["seed"].nunique() < min_seeds:
        raise InsufficientData(f"{name}: {runs['seed'].nunique()} seeds, {min_seeds} needed")
    return runs


def median_range(values: pd.Series, digits: int) -> str:
    """``median [min–max]`` of a cell's values over seeds, for result tables."""
    return f"{values.median():.{digits}f} [{values.min():.{digits}f}–{values.max():.{digits}f}]"


def save_table(text: str, out: Path, name: str) -> Path:
    """Write ``text`` to ``out/<name>.md``."""
    path = out / f"{name}.md"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(text))
    return path


CLAIMS: dict[str, Claim] = {}


def register(claim: Claim) -> Claim:
    """Add ``claim`` to :data:`CLAIMS`."""
    CLAIMS[claim.id] = claim
    return claim


def get(claim_id: str) -> Claim:
    """The claim ``claim_id``, or a :class:`UserError` naming the valid ids."""
    if claim_id not in CLAIMS:
        raise UserError(f"unknown claim {claim_id!r}.", choices=sorted(CLAIMS), fix="`normexp list claims`")
    return CLAIMS[claim_id]


def _load_all() -> None:
    from normexp.claims import (  # noqa: F401 - each registers its claims
        ioffe2015,
        li2018,
        qiao2019,
        santurkar2018,
        wu2018,
        xiong2020,
    )


_load_all()
