"""Claims judged on synthetic stored results: each criterion passes and fails where docs/claims.md says it must."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from normexp import claims, reproduce
from normexp.claims import Results
from normexp.claims.ioffe2015 import tick_labels

STEPS = np.arange(0, 1001, 100)


def fig1_runs(bn_acc, none_acc, bn_drift: float, none_drift: float) -> pd.DataFrame:
    """Three seeds per norm; accuracy curves and p15/p50/p85 whose centre drifts by ``drift`` per step."""
    rows = []
    for norm, acc, drift in (("bn", bn_acc, bn_drift), ("none", none_acc, none_drift)):
        for seed in range(3):
            run = f"{norm}-{seed}"
            for step in STEPS:
                noise = 0.001 * seed
                centre, spread = drift * step, 1 + drift * step
                values = {
                    "test/acc": acc(step) + noise,
                    "probe/p15": centre - spread,
                    "probe/p50": centre,
                    "probe/p85": centre + spread,
                }
                rows += [(run, norm, seed, step, metric, value) for metric, value in values.items()]
    return pd.DataFrame(rows, columns=["run_id", "norm.name", "seed", "step", "metric", "value"])


def fast(step: float) -> float:
    return 0.9 - 0.5 * math.exp(-step / 100)


def slow(step: float) -> float:
    return 0.1 + 0.6 * step / STEPS[-1]


def verdict(claim_id: str, runs: pd.DataFrame, summary: pd.DataFrame) -> claims.Verdict:
    return claims.get(claim_id).verify(Results(runs, summary), "test")


def summary_of(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[["run_id"]].drop_duplicates()


def test_fig1_reproduced_when_bn_is_faster_and_stable() -> None:
    runs = fig1_runs(fast, slow, bn_drift=0.0001, none_drift=0.003)
    result = verdict("ioffe2015-fig1", runs, summary_of(runs))
    assert result.verdict == "reproduced", result.checks
    assert len(result.checks) == 5 and result.n_runs == 6


def test_fig1_not_reproduced_when_bn_is_slower() -> None:
    runs = fig1_runs(slow, fast, bn_drift=0.0001, none_drift=0.003)
    result = verdict("ioffe2015-fig1", runs, summary_of(runs))
    assert result.verdict == "not reproduced"
    failed = {c.name for c in result.checks if not c.passed}
    assert failed == {
        "1a: BN more accurate at 20% of the steps",
        "1a: BN more accurate at the end",
        "1a: BN reaches no-BN's final accuracy within 0.5× the steps",
    }


def test_fig1_stability_fails_when_bn_inputs_drift_more() -> None:
    runs = fig1_runs(fast, slow, bn_drift=0.003, none_drift=0.0001)
    checks = {c.name: c.passed for c in verdict("ioffe2015-fig1", runs, summary_of(runs)).checks}
    assert not checks["1b: range of p50 smaller with BN"]
    assert not checks["1b: range of p85 − p15 smaller with BN"]


def test_fig1_without_bn_runs_is_insufficient_data() -> None:
    runs = fig1_runs(fast, slow, 0.0, 0.0)
    runs = runs[runs["norm.name"] == "none"]
    assert verdict("ioffe2015-fig1", runs, summary_of(runs)).verdict == "insufficient data"


def lr_summary(cells: dict[tuple[str, float], list[float | None]]) -> pd.DataFrame:
    """One row per run; None stands for a diverged run."""
    rows = [
        {
            "run_id": f"{norm}-{lr}-{i}",
            "norm.name": norm,
            "optim.lr": lr,
            "status": "diverged" if acc is None else "completed",
            "final/test/acc": acc,
        }
        for (norm, lr), accs in cells.items()
        for i, acc in enumerate(accs)
    ]
    return pd.DataFrame(rows)


BASE = 0.3
GOOD = {
    ("none", BASE / 2): [0.80] * 3,
    ("none", BASE): [0.85] * 3,
    ("none", 5 * BASE): [0.5, None, None],
    ("none", 30 * BASE): [None] * 3,
    ("bn", BASE): [0.86] * 3,
    ("bn", 5 * BASE): [0.87] * 3,
    ("bn", 30 * BASE): [0.85, 0.86, 0.84],
}


def test_lr_reproduced_when_bn_tolerates_5x_and_30x() -> None:
    result = verdict("ioffe2015-lr", pd.DataFrame(), lr_summary(GOOD))
    assert result.verdict == "reproduced", result.checks


@pytest.mark.parametrize(
    ("change", "failing"),
    [
        ({("bn", 30 * BASE): [0.5, None, 0.6]}, "1c: BN at 30× ≥ no-BN at 1× (its best lr)"),
        ({("none", 5 * BASE): [0.85] * 3}, "1c: no-BN at 5× diverges or ends worse than at 1×"),
    ],
)
def test_lr_not_reproduced_when_a_criterion_fails(change: dict, failing: str) -> None:
    result = verdict("ioffe2015-lr", pd.DataFrame(), lr_summary(GOOD | change))
    assert result.verdict == "not reproduced"
    assert [c.name for c in result.checks if not c.passed] == [failing]


def test_lr_best_no_bn_lr_without_its_multiples_on_the_grid_is_insufficient_data() -> None:
    cells = GOOD | {("none", BASE / 2): [0.9] * 3}  # best is now BASE/2; BN at 2.5× and 15× were not run
    assert verdict("ioffe2015-lr", pd.DataFrame(), lr_summary(cells)).verdict == "insufficient data"


def test_stored_results_round_trip_to_the_same_verdict(tmp_path: Path) -> None:
    runs = fig1_runs(fast, slow, 0.0001, 0.003)
    folder = reproduce.results_dir("ioffe2015-fig1", "test", tmp_path)
    folder.mkdir(parents=True)
    runs.to_parquet(folder / reproduce.RUNS_TABLE)
    summary_of(runs).to_csv(folder / reproduce.SUMMARY_TABLE, index=False)
    stored = reproduce.load("ioffe2015-fig1", "test", tmp_path)
    assert claims.get("ioffe2015-fig1").verify(stored, "test").verdict == "reproduced"
    assert [p.name for p in reproduce.draw(claims.get("ioffe2015-fig1"), stored, folder, "test")] == [
        "fig1.png",
        "fig1.pdf",
    ]


def test_figure_set_verifies_as_figures_only_without_failing(cli, tmp_path: Path) -> None:
    """A claim without criteria (li2018-landscape): "figures only" once runs are stored, exit status 0."""
    status, out, _ = cli("verify", "li2018-landscape", "--results", str(tmp_path), "--json")
    assert status == 0 and json.loads(out)[0]["verdict"] == "insufficient data"
    folder = reproduce.results_dir("li2018-landscape", "cpu", tmp_path)
    folder.mkdir(parents=True)
    runs = pd.DataFrame({"run_id": ["a", "b"], "step": [1, 1], "metric": ["train/loss"] * 2, "value": [1.0, 2.0]})
    runs.to_parquet(folder / reproduce.RUNS_TABLE)
    summary_of(runs).to_csv(folder / reproduce.SUMMARY_TABLE, index=False)
    status, out, _ = cli("verify", "li2018-landscape", "--results", str(tmp_path), "--json")
    assert status == 0 and json.loads(out)[0] == {
        "claim": "li2018-landscape",
        "scale": "cpu",
        "verdict": "figures only",
        "n_runs": 2,
        "checks": [],
        "note": "no pass criterion was pre-registered",
        "setting": {},
        "sensitivity": [],
    }
    status, out, _ = cli("verify", "li2018-landscape", "--results", str(tmp_path))
    assert status == 0 and "li2018-landscape [cpu]: figures only (no pass criterion was pre-registered)" in out


@pytest.mark.parametrize("claim_id", sorted(claims.CLAIMS))
def test_committed_verdicts_are_what_verify_computes_from_the_committed_results(claim_id: str) -> None:
    computed = reproduce.judge(claims.get(claim_id), reproduce.load(claim_id, "cpu"), "cpu").to_dict()
    assert json.loads(json.dumps(computed)) == reproduce.stored_verdict(claim_id, "cpu")


def test_close_lrs_keep_their_ticks_but_not_overlapping_labels() -> None:
    grid = [0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.3, 0.5, 0.6, 1, 1.5, 3, 6]
    assert tick_labels(grid) == ["0.01", "0.02", "0.05", "0.1", "0.2", "", "", "0.5", "", "1", "", "3", "6"]
