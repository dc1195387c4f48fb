"""Santurkar et al. 2018 / Qiao et al. 2019 / Li et al. 2018 claims: criteria on synthetic results (pass and fail;
the smoothness and ICS claims per model, VGG and DLN), every experiment at smoke scale, and the landscape surfaces
computed from runs after training, the figures drawn from the stored surfaces alone."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from normexp import claims, plotting, reproduce
from normexp.claims import Results
from normexp.config import compose_config
from normexp.grids import Grid
from normexp.rundir import read_metrics_log
from normexp.training import runner

STEPS = range(1, 102, 10)
DLN_STEPS = range(0, 1001, 50)  # a longer run: its first 20% end at step 200, the VGG's at step 20
NORM, EXPERIMENT, TRAIN_ACC = "norm.name", "experiment_name", "final/train/acc"
VGG, DLN = "santurkar2018-vgg", "santurkar2018-dln"
COLUMNS = ["run_id", EXPERIMENT, NORM, "seed", "step", "metric", "value"]


def landscape_runs(
    values: dict[str, dict[str, float]], experiment: str = VGG, steps: range = STEPS, seeds: int = 3
) -> pd.DataFrame:
    """``seeds`` seeds per norm; each line-search metric constant over steps at ``values[norm][metric]`` (± 1%)."""
    rows = []
    for norm, metrics in values.items():
        for seed in range(seeds):
            for step in steps:
                for metric, value in metrics.items():
                    run = f"{experiment}/{norm}-{seed}"
                    rows.append((run, experiment, norm, seed, step, f"landscape/{metric}", value * (1 + 0.01 * seed)))
    return pd.DataFrame(rows, columns=COLUMNS)


def both_models(vgg: dict[str, dict[str, float]], dln: dict[str, dict[str, float]]) -> pd.DataFrame:
    """The VGG's runs and the DLN's (longer) runs in one frame, as a claim's stored results hold them."""
    return pd.concat([landscape_runs(vgg, VGG), landscape_runs(dln, DLN, DLN_STEPS)], ignore_index=True)


def verdict(claim_id: str, runs: pd.DataFrame, summary: pd.DataFrame | None = None) -> claims.Verdict:
    if summary is None:
        summary = runs[[c for c in ("run_id", EXPERIMENT, NORM) if c in runs]].drop_duplicates()
    return claims.get(claim_id).verify(Results(runs, summary), "test")


def failed(result: claims.Verdict) -> set[str]:
    return {check.name for check in result.checks if not check.passed}


SMOOTH = {"loss_range": 1.0, "gpred_range": 1.0, "beta": 1.0}
ROUGH = {"loss_range": 5.0, "gpred_range": 5.0, "beta": 5.0}


def test_smoothness_reproduced_when_bn_is_smoother_by_more_than_3x_in_both_models() -> None:
    result = verdict(
        "santurkar2018-smoothness", both_models({"bn": SMOOTH, "none": ROUGH}, {"bn": SMOOTH, "none": ROUGH})
    )
    assert result.verdict == "reproduced", result.checks
    assert [check.name.split(":")[0] for check in result.checks] == [
        *("3a (VGG)", "3b (VGG)", "3c (VGG)", "3b (VGG)"),
        *("3a (DLN)", "3b (DLN)", "3c (DLN)", "3b (DLN)"),
    ]
    assert result.checks[4].measured == "bn median 1.01 [1–1.02] (n=3) vs none median 5.05 [5–5.1] (n=3); ratio 0.2"


def test_smoothness_early_factor_of_3_is_required_per_model() -> None:
    slightly = {"loss_range": 2.0, "gpred_range": 2.0, "beta": 2.0}
    result = verdict(
        "santurkar2018-smoothness", both_models({"bn": SMOOTH, "none": ROUGH}, {"bn": SMOOTH, "none": slightly})
    )
    assert result.verdict == "not reproduced"
    assert failed(result) == {"3b (DLN): gradient predictiveness ≥ 3× smaller with BN in the first 20%"}
    early = next(check for check in result.checks if not check.passed)
    assert early.measured.startswith("steps ≤ 200: bn median 1.01")


def test_smoothness_not_reproduced_when_bn_is_rougher_in_one_model() -> None:
    result = verdict(
        "santurkar2018-smoothness", both_models({"bn": ROUGH, "none": SMOOTH}, {"bn": SMOOTH, "none": ROUGH})
    )
    assert result.verdict == "not reproduced"
    assert failed(result) == {
        "3a (VGG): median loss range smaller with BN",
        "3b (VGG): median gradient-predictiveness range smaller with BN",
        "3c (VGG): median effective β smaller with BN",
        "3b (VGG): gradient predictiveness ≥ 3× smaller with BN in the first 20%",
    }


def test_smoothness_without_standard_runs_is_insufficient_data() -> None:
    result = verdict("santurkar2018-smoothness", both_models({"bn": SMOOTH, "none": ROUGH}, {"bn": SMOOTH}))
    assert result.verdict == "insufficient data" and "'none'" in result.note


def test_smoothness_without_the_dln_runs_is_insufficient_data() -> None:
    result = verdict("santurkar2018-smoothness", landscape_runs({"bn": SMOOTH, "none": ROUGH}))
    assert result.verdict == "insufficient data" and "santurkar2018-dln" in result.note


def test_ws_smoothness_pass_and_fail() -> None:
    assert verdict("qiao2019-ws-smoothness", landscape_runs({"gn+ws": SMOOTH, "gn": ROUGH})).verdict == "reproduced"
    result = verdict("qiao2019-ws-smoothness", landscape_runs({"gn+ws": ROUGH, "gn": SMOOTH}))
    assert failed(result) == {
        "3f: median gradient-predictiveness range smaller with WS",
        "3f: median effective β smaller with WS",
    }


def ics_runs(bn: tuple[float, float], none: tuple[float, float], experiment: str = VGG, seeds: int = 3) -> pd.DataFrame:
    """Three layers; the first has no ICS by definition (ℓ2 0, cos 1), the others (ℓ2, cos) per norm."""
    rows = []
    for norm, (l2, cos) in (("bn", bn), ("none", none)):
        for seed in range(seeds):
            run = f"{experiment}/{norm}-{seed}"
            for step in STEPS:
                for layer, (a, b) in (("layer0", (0.0, 1.0)), ("layer1", (l2, cos)), ("out", (2 * l2, cos))):
                    rows += [(run, experiment, norm, seed, step, f"ics/{layer}/l2", a)]
                    rows += [(run, experiment, norm, seed, step, f"ics/{layer}/cos", b)]
    return pd.DataFrame(rows, columns=COLUMNS)


def ics_verdict(vgg: dict[str, tuple[float, float]], dln: dict[str, tuple[float, float]]) -> claims.Verdict:
    """The ICS claim on VGG and DLN runs whose BN and standard nets shift by (ℓ2, cos)."""
    return verdict("santurkar2018-ics", pd.concat([ics_runs(**vgg, experiment=VGG), ics_runs(**dln, experiment=DLN)]))


SHIFTS_MORE = {"bn": (2.0, 0.1), "none": (1.0, 0.99)}  # the paper's DLN: standard cos ≈ 1, BN cos ≈ 0


def test_ics_reproduced_when_bn_shifts_more_in_both_models() -> None:
    result = ics_verdict(vgg=SHIFTS_MORE, dln=SHIFTS_MORE)
    assert result.verdict == "reproduced", result.checks
    assert [check.name for check in result.checks] == [
        "3e (VGG): BN does not have lower ICS than standard",
        "3e (DLN): BN does not have lower ICS than standard",
    ]
    assert all("ratio BN/standard 2" in c.measured and "over 2 layers" in c.measured for c in result.checks)


def test_ics_reproduced_by_the_cosine_alone() -> None:
    assert ics_verdict(vgg={"bn": (0.5, 0.9), "none": (1.0, 0.99)}, dln=SHIFTS_MORE).verdict == "reproduced"


def test_ics_not_reproduced_when_bn_shifts_less_by_both_measures_in_one_model() -> None:
    result = ics_verdict(vgg=SHIFTS_MORE, dln={"bn": (0.5, 0.999), "none": (1.0, 0.99)})
    assert result.verdict == "not reproduced"
    assert failed(result) == {"3e (DLN): BN does not have lower ICS than standard"}


def test_smoothness_and_ics_figures_have_a_panel_row_per_model(monkeypatch, tmp_path: Path) -> None:
    titles = {}
    monkeypatch.setattr(
        plotting, "save", lambda fig, _, name, *caption: titles.setdefault(name, [a.get_title() for a in fig.axes])
    )
    band = {"loss_min": 1.0, "loss_max": 2.0, "gpred_min": 1.0, "gpred_max": 2.0, "beta": 1.0}
    runs = both_models({"bn": band, "none": band}, {"bn": band, "none": band})
    runs = pd.concat([runs, ics_runs(**SHIFTS_MORE, experiment=VGG), ics_runs(**SHIFTS_MORE, experiment=DLN)])
    results = Results(runs, runs[["run_id", EXPERIMENT, NORM]].drop_duplicates())
    claims.get("santurkar2018-smoothness").plot(results, tmp_path)
    claims.get("santurkar2018-ics").plot(results, tmp_path)
    assert [title.split(":")[0] for title in titles["landscape"]] == [
        *("(a) VGG", "(b) VGG", "(c) VGG"),
        *("(d) DLN", "(e) DLN", "(f) DLN"),
    ]
    assert [title.split(":")[0] for title in titles["ics"]] == [
        *("VGG layer1", "VGG layer1", "VGG out", "VGG out"),
        *("DLN layer1", "DLN layer1", "DLN out", "DLN out"),
    ]


def noisy_summary(seeds: int = 3, **accuracy: float | str) -> pd.DataFrame:
    """``seeds`` runs per net at the given final training accuracy (± 0.5 point); "diverged" marks a diverged net."""
    rows = []
    for norm, acc in accuracy.items():
        for seed in range(seeds):
            status = "diverged" if acc == "diverged" else "completed"
            value = float("nan") if acc == "diverged" else acc + 0.005 * (seed - 1)
            rows.append({"run_id": f"{norm}-{seed}", NORM: norm, "seed": seed, "status": status, TRAIN_ACC: value})
    return pd.DataFrame(rows)


def test_noisy_bn_reproduced() -> None:
    summary = noisy_summary(bn=0.90, noisy_bn=0.87, none=0.85, noise=0.12)
    assert verdict("santurkar2018-noisy-bn", pd.DataFrame(), summary).verdict == "reproduced"


def test_noisy_bn_standard_noise_clearly_below_or_diverged_passes() -> None:
    for noise in (0.70, "diverged"):
        summary = noisy_summary(bn=0.90, noisy_bn=0.87, none=0.85, noise=noise)
        assert verdict("santurkar2018-noisy-bn", pd.DataFrame(), summary).verdict == "reproduced", noise


def test_noisy_bn_not_reproduced() -> None:
    summary = noisy_summary(bn=0.90, noisy_bn=0.70, none=0.85, noise=0.83)
    assert failed(verdict("santurkar2018-noisy-bn", pd.DataFrame(), summary)) == {
        "3d: noisy BN's final training accuracy within 5 points of BN",
        "3d: noisy BN above standard",
        "3d: standard + noise near chance or clearly below standard",
    }


def test_two_seeds_per_norm_are_insufficient_data_for_every_criterion() -> None:
    two = {  # the DLN's (or the only model's) runs with 2 seeds per norm
        "santurkar2018-smoothness": pd.concat(
            [landscape_runs({"bn": SMOOTH, "none": ROUGH}), landscape_runs({"bn": SMOOTH, "none": ROUGH}, DLN, seeds=2)]
        ),
        "qiao2019-ws-smoothness": landscape_runs({"gn+ws": SMOOTH, "gn": ROUGH}, seeds=2),
        "santurkar2018-ics": pd.concat([ics_runs(**SHIFTS_MORE), ics_runs(**SHIFTS_MORE, experiment=DLN, seeds=2)]),
    }
    for claim_id, runs in two.items():
        result = verdict(claim_id, runs)
        assert result.verdict == "insufficient data" and "2 seeds, 3 needed" in result.note, claim_id
    summary = noisy_summary(seeds=2, bn=0.90, noisy_bn=0.87, none=0.85, noise=0.12)
    result = verdict("santurkar2018-noisy-bn", pd.DataFrame(), summary)
    assert result.verdict == "insufficient data" and "2 seeds, 3 needed" in result.note


def activation_runs(norms: tuple[str, ...], modules: tuple[str, ...]) -> pd.DataFrame:
    """Accuracy curves and per-module activation mean/variance over steps, three seeds per norm."""
    metrics = ["train/acc", "test/acc", *(f"act/{module}/{stat}" for module in modules for stat in ("mean", "var"))]
    rows = [
        (f"{norm}-{seed}", "santurkar2018-noisy-bn", norm, seed, step, metric, 0.5)
        for norm in norms
        for seed in range(3)
        for step in STEPS
        for metric in metrics
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def test_noisy_bn_figure_has_no_empty_panel(monkeypatch, tmp_path: Path) -> None:
    figures = {}
    monkeypatch.setattr(plotting, "save", lambda fig, _, name, *caption: figures.setdefault(name, fig))
    runs = activation_runs(("none", "bn", "noisy_bn", "noise"), ("features.0.norm", "features.4.norm"))
    claims.get("santurkar2018-noisy-bn").plot(Results(runs, noisy_summary(bn=0.9)), tmp_path)
    axes = figures["noisy_bn"].axes
    assert len(axes) == 2 + 2 * 4  # two accuracy panels, then a panel per module and norm
    assert all(ax.axison and (ax.lines or ax.collections) for ax in axes)
    assert {"train acc", "test acc"} <= {ax.get_title() for ax in axes}


def test_landscape_figure_set_has_no_criterion() -> None:
    result = verdict("li2018-landscape", landscape_runs({"bn": SMOOTH}))
    assert result.verdict == "figures only" and result.checks == [] and result.n_runs == 3
    assert verdict("li2018-landscape", pd.DataFrame(), pd.DataFrame()).verdict == "insufficient data"


EXPERIMENTS = {
    "santurkar2018-vgg": ("norm=bn", {"landscape/beta", "ics/classifier/cos", "ics/features.2.conv/l2"}),
    "santurkar2018-noisy-bn": ("norm=noisy_bn", {"act/features.0.norm/mean", "act/features.2.norm/var"}),
    "qiao2019-ws-smoothness": ("norm=gn+ws", {"landscape/gpred_range", "landscape/beta"}),
    "li2018-norm": ("norm=none", {"test/acc"}),
    "li2018-skip": ("model.skip=false", {"test/acc"}),
}


@pytest.mark.parametrize("experiment", sorted(EXPERIMENTS))
def test_experiment_runs_at_smoke_scale(compose, tmp_path: Path, experiment: str) -> None:
    override, metrics = EXPERIMENTS[experiment]
    summary = runner.train(compose(f"experiment={experiment}", override, "train.steps=4"), tmp_path / "run")
    assert summary["status"] == "completed"
    assert metrics <= set(read_metrics_log(tmp_path / "run" / "metrics.jsonl")["metric"])


def test_deep_linear_network_runs_at_smoke_scale(compose, tmp_path: Path) -> None:
    summary = runner.train(compose("experiment=santurkar2018-dln", "norm=bn", "train.steps=4"), tmp_path / "run")
    assert summary["status"] == "completed" and "test/acc" not in summary["final"]
    assert {"landscape/beta", "ics/output/cos"} <= set(read_metrics_log(tmp_path / "run" / "metrics.jsonl")["metric"])


@pytest.mark.parametrize("experiment", [*sorted(EXPERIMENTS), "santurkar2018-dln"])
def test_paper_scale_composes(out_dir: Path, experiment: str) -> None:
    cfg = compose_config([f"experiment={experiment}", "scale=paper", f"out_dir={out_dir}"])
    assert cfg.scale_name == "paper" and cfg.train.steps >= 10000


def test_landscape_surfaces_from_runs_then_figures_from_stored_surfaces(compose, out_dir: Path, tmp_path) -> None:
    runs = out_dir / "li2018-norm" / "smoke"  # where the runner's sweep puts them: out_dir/<run_id>
    for seed in (0, 1):  # surface settings from config: smoke.yaml's, and one set on the command line
        cfg = compose("experiment=li2018-norm", "norm=bn", f"seed={seed}", "probes.surface.points_1d=7")
        runner.train(cfg, runs / f"norm=bn,seed={seed}")
    claim = claims.get("li2018-landscape")
    target = reproduce.results_dir(claim.id, "smoke", tmp_path)
    results = reproduce.store(sorted(runs.iterdir()), target)
    claim.plot(results, target)
    assert not (target / "surfaces").exists()  # figures never compute a surface
    reproduce.analyse(claim, results, target)
    figures = {f"surfaces_{kind}.{ext}" for kind in ("1d", "2d") for ext in ("png", "pdf")}
    assert {path.name for path in claim.plot(results, target)} == figures
    stored = sorted(path.name for path in (target / "surfaces").iterdir())
    assert stored == ["bn-seed0-1d.npz", "bn-seed0-2d.npz", "bn-seed0-to-seed1.npz", "bn-seed1-1d.npz"]
    grids = [Grid.read(target / "surfaces" / name) for name in stored]
    assert [len(grid.coords) for grid in grids] == [7, 3 * 3, 7, 7]  # points_2d and samples from smoke.yaml
    assert all(grid.meta["samples"] == 64 for grid in grids)
    stamps = {path: path.stat().st_mtime_ns for path in (target / "surfaces").iterdir()}
    reproduce.analyse(claim, results, target)  # complete surfaces are not recomputed
    assert stamps == {path: path.stat().st_mtime_ns for path in (target / "surfaces").iterdir()}
    shutil.rmtree(out_dir)  # as in a fresh clone: stored results only
    assert {path.name for path in claim.plot(reproduce.load(claim.id, "smoke", tmp_path), target)} == figures
