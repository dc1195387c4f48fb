"""Sensitivity maps on synthetic results that pass at one setting and fail at another, and on real configs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf
from torch import nn

from normexp import claims, models, reproduce
from normexp.claims import Check, Results, sensitivity
from normexp.config import compose_config, validate
from normexp.errors import UserError
from tests.test_claims import fast, fig1_runs, slow

LR = sensitivity.Axis("ioffe2015-fig1", "optim.lr", 1.0, (3.0,), "test axis")


def two_settings() -> Results:
    """BN faster at the primary lr 1.0 (the claim holds), slower at lr 3.0 (it fails)."""
    holds = fig1_runs(fast, slow, bn_drift=0.0001, none_drift=0.003).assign(**{"optim.lr": 1.0})
    fails = fig1_runs(slow, fast, bn_drift=0.0001, none_drift=0.003).assign(**{"optim.lr": 3.0})
    fails["run_id"] = fails["run_id"] + "-lr3"
    runs = pd.concat([holds, fails], ignore_index=True)
    summary = runs[["run_id", "optim.lr"]].drop_duplicates().assign(experiment_name="ioffe2015-fig1")
    return Results(runs, summary)


def test_the_verdict_is_judged_on_the_primary_runs_and_the_map_on_each_setting() -> None:
    verdict = sensitivity.judge(claims.get("ioffe2015-fig1"), two_settings(), "test", [LR])
    assert verdict.verdict == "reproduced" and verdict.n_runs == 6
    [entry] = verdict.sensitivity
    assert entry.setting == {"experiment": "ioffe2015-fig1", "key": "optim.lr", "value": 3.0, "primary": 1.0}
    assert entry.verdict == "not reproduced" and entry.n_runs == 6
    margins = {check.name: check.margin for check in entry.checks}
    assert margins["1a: BN more accurate at the end"] == pytest.approx(slow(1000) - fast(1000), abs=0.002)
    assert all(check.margin > 0 for check in verdict.checks)


def test_map_table_marks_each_criterion_at_each_setting() -> None:
    verdict = sensitivity.judge(claims.get("ioffe2015-fig1"), two_settings(), "test", [LR])
    table = sensitivity.map_table(verdict).splitlines()
    assert table[0] == "| criterion | primary | optim.lr=3 |"
    assert table[2] == "|  | reproduced | not reproduced |"
    end = next(line for line in table if line.startswith("| 1a: BN more accurate at the end"))
    assert end.count("✅") == 1 and end.count("❌") == 1
    assert "optim.lr=3" in sensitivity.map_table(verdict, markdown=False).splitlines()[0]


def test_a_primary_left_unset_selects_the_runs_without_the_key_and_reads_null() -> None:
    """A knob added later with default null (the VGG's width_factor): the runs made before it have no column or
    NaN, and those are the primary's."""
    results = two_settings()
    summary = results.summary.assign(**{"optim.lr": results.summary["optim.lr"].where(lambda lr: lr != 1.0)})
    unset = sensitivity.Axis("ioffe2015-fig1", "optim.lr", None, (3.0,), "a knob whose default is null")
    verdict = sensitivity.judge(claims.get("ioffe2015-fig1"), Results(results.runs, summary), "test", [unset])
    assert verdict.verdict == "reproduced" and verdict.n_runs == 6
    assert verdict.sensitivity[0].verdict == "not reproduced"
    assert sensitivity._primary_label(verdict) == "lr=null"


def test_a_choice_of_another_experiment_shows_the_primarys_cells_as_such(tmp_path: Path) -> None:
    """A claim that reads two experiments (Santurkar's VGG and DLN) maps each one's choices: a column for the other
    experiment's choice judges this experiment's criteria on the primary's very runs, and says so instead of
    repeating the primary's margins as if measured again."""
    other = sensitivity.Axis("santurkar2018-dln", "model.init_gain", 1.0, (1.2,), "another experiment's choice")
    verdict = sensitivity.judge(claims.get("ioffe2015-fig1"), two_settings(), "test", [LR, other])
    table = sensitivity.map_table(verdict).splitlines()
    assert table[0] == "| criterion | primary | optim.lr=3 | model.init_gain=1.2 |"
    cells = {line.strip("| ").split(" | ")[0]: line.strip("| ").split(" | ")[1:] for line in table[3:]}
    assert cells and all(row[2] == sensitivity.SAME_AS_PRIMARY for row in cells.values())
    assert [cell[0] for cell in cells["1a: BN more accurate at the end"][:2]] == ["✅", "❌"]  # measured at each lr
    assert sensitivity.plot_map(verdict, tmp_path)


def test_map_figure_is_drawn_only_for_claims_with_open_choices(tmp_path: Path) -> None:
    verdict = sensitivity.judge(claims.get("ioffe2015-fig1"), two_settings(), "test", [LR])
    assert [p.name for p in sensitivity.plot_map(verdict, tmp_path)] == ["sensitivity.png", "sensitivity.pdf"]
    assert (
        sensitivity.plot_map(sensitivity.judge(claims.get("ioffe2015-fig1"), two_settings(), "test", []), tmp_path)
        == []
    )


def test_a_wide_maps_labels_and_cells_do_not_overlap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nine settings beside the primary (as Santurkar's maps have): no column label runs into another, and no
    cell's text into its neighbour's, in the drawn figure."""
    from normexp import plotting

    many = sensitivity.Axis("ioffe2015-fig1", "optim.lr", 1.0, (3.0, 4.0, 5.0, 6.0, 7.0), "not all run")
    other = sensitivity.Axis("santurkar2018-dln", "model.init_gain", 1.0, (0.8, 0.9, 1.1, 1.2), "another's choice")
    verdict = sensitivity.judge(claims.get("ioffe2015-fig1"), two_settings(), "test", [many, other])
    drawn = []
    monkeypatch.setattr(plotting, "save", lambda fig, *_, **__: drawn.append(fig) or [])
    sensitivity.plot_map(verdict, tmp_path)
    [fig] = drawn
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    for texts in (ax.get_xticklabels(), ax.texts):
        boxes = [text.get_window_extent(renderer) for text in texts if text.get_text()]
        assert len(boxes) > 9
        overlapping = [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :] if a.overlaps(b)]
        assert not overlapping


def test_a_setting_without_runs_is_insufficient_data_in_the_map_only() -> None:
    missing = sensitivity.Axis("ioffe2015-fig1", "optim.lr", 1.0, (10.0,), "not run")
    verdict = sensitivity.judge(claims.get("ioffe2015-fig1"), two_settings(), "test", [missing])
    assert verdict.verdict == "reproduced" and verdict.sensitivity[0].verdict == "insufficient data"


def test_axes_read_the_primary_from_the_composed_config() -> None:
    axes = {axis.key: axis for axis in sensitivity.axes_of("ioffe2015-fig1", "cpu")}
    assert axes["train.steps"].primary == 50000 and 50000 not in axes["train.steps"].others
    assert axes["optim.lr"].overrides() == [[f"optim.lr={v}"] for v in axes["optim.lr"].others]
    assert sensitivity.axes_of("ioffe2015-fig1", "smoke") == ()


def test_a_companion_key_follows_each_value_and_is_labelled_beside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`with` sets another key beside each value (GN's groups following the width); the primary's value is dropped
    with its companion, and the map labels both, the primary with the companion's composed value."""
    path = tmp_path / "cpu.yaml"
    path.write_text("optim.lr:\n  values: [1.0, 2.0, 3.0]\n  with: {train.batch_size: [30, 60, 90]}\n")
    monkeypatch.setattr(sensitivity, "axes_file", lambda experiment, scale: path)
    sensitivity.axes_of.cache_clear()
    [axis] = sensitivity.axes_of("ioffe2015-fig1", "cpu")
    sensitivity.axes_of.cache_clear()
    assert axis.others == (1.0, 3.0) and axis.keys == {"optim.lr", "train.batch_size"}
    assert axis.overrides() == [["optim.lr=1.0", "train.batch_size=30"], ["optim.lr=3.0", "train.batch_size=90"]]
    verdict = sensitivity.judge(claims.get("ioffe2015-fig1"), two_settings(), "test", [axis])
    assert [entry.verdict for entry in verdict.sensitivity] == ["reproduced", "not reproduced"]  # by the lr alone
    assert sensitivity.map_table(verdict).splitlines()[0] == (
        "| criterion | primary | optim.lr=1, train.batch_size=30 | optim.lr=3, train.batch_size=90 |"
    )
    assert sensitivity._primary_label(verdict) == "lr=2\n+ batch_size=60"
    assert reproduce.open_choices(claims.get("ioffe2015-fig1"), "cpu", ["train.batch_size=8"]) == []


@pytest.mark.parametrize("companion", ["{optim.nonsense: [1, 2]}", "{train.batch_size: [30]}", "{train.batch_size: 8}"])
def test_a_malformed_companion_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, companion: str) -> None:
    path = tmp_path / "cpu.yaml"
    path.write_text(f"optim.lr:\n  values: [0.3, 3.0]\n  with: {companion}\n")
    monkeypatch.setattr(sensitivity, "axes_file", lambda experiment, scale: path)
    sensitivity.axes_of.cache_clear()
    with pytest.raises(UserError, match=r"one value per value of 'optim\.lr'"):
        sensitivity.axes_of("ioffe2015-fig1", "cpu")
    sensitivity.axes_of.cache_clear()


def test_a_malformed_sensitivity_file_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "cpu.yaml"
    path.write_text("optim.nonsense:\n  values: [1, 2]\n")
    monkeypatch.setattr(sensitivity, "axes_file", lambda experiment, scale: path)
    sensitivity.axes_of.cache_clear()
    with pytest.raises(UserError, match="must be a config key"):
        sensitivity.axes_of("ioffe2015-fig1", "cpu")
    sensitivity.axes_of.cache_clear()


def test_an_untestable_criterion_makes_a_distinct_verdict() -> None:
    passed, failed, untested = Check("a", True, ""), Check("b", False, ""), Check("c", None, "needs 40 h")
    assert claims.verdict_of([passed, untested]) == "not testable at this scale"
    assert claims.verdict_of([passed, untested, failed]) == "not reproduced"
    assert claims.verdict_of([passed]) == "reproduced"
    assert [claims.mark(c) for c in (passed, failed, untested)] == ["✅", "❌", "⏸"]


def test_reproduce_runs_the_grid_once_more_per_other_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, out_dir: Path
) -> None:
    axis = sensitivity.Axis("ioffe2015-fig1", "optim.lr", 0.1, (0.3,), "test axis")
    monkeypatch.setattr(sensitivity, "axes_of", lambda experiment, scale: (axis,))
    verdict, status = reproduce.reproduce("ioffe2015-fig1", "smoke", str(out_dir), ["optim.lr=0.1"], tmp_path)
    assert status == 0 and verdict.sensitivity == []  # the user set the open choice: no map is run
    verdict, status = reproduce.reproduce("ioffe2015-fig1", "smoke", str(out_dir), [], tmp_path)
    folders = [p.name for p in (out_dir / "ioffe2015-fig1" / "smoke").iterdir() if p.is_dir()]
    assert status == 0 and sum("optim.lr=0.3" in name for name in folders) == 6
    assert sum("optim.lr" not in name for name in folders) == 6  # the primary grid, as before
    assert [entry.setting["value"] for entry in verdict.sensitivity] == [0.3]
    assert (reproduce.results_dir("ioffe2015-fig1", "smoke", tmp_path) / "sensitivity.png").exists()


def mapped_settings() -> list[tuple[str, str]]:
    """(experiment, overrides) for every other value of every open choice of every claim at the cpu scale."""
    experiments = dict.fromkeys(e for claim in claims.CLAIMS.values() for e in claim.experiments)
    return [(e, o) for e in experiments for axis in sensitivity.axes_of(e, "cpu") for o in axis.overrides()]


@pytest.mark.parametrize(("experiment", "overrides"), mapped_settings())
def test_every_mapped_setting_composes_and_validates(experiment: str, overrides: list[str]) -> None:
    """Each map column is a config the runner accepts: a typo in a sensitivity file fails here, not in its grid."""
    cfg = compose_config([f"experiment={experiment}", "scale=cpu", *overrides], return_hydra_config=True)
    validate(cfg)
    for override in overrides:
        key, value = override.split("=", 1)
        assert str(OmegaConf.select(cfg, key)) == value


def test_qiaos_width_map_keeps_the_papers_channels_per_group() -> None:
    """Qiao et al. run GN with 32 groups on VGG-11's 64-512 channels; each width of the map, the primary's included,
    keeps those channels per group at every GN layer."""
    vgg11 = [64, 128, 256, 256, 512, 512, 512, 512]
    [width] = [
        axis for axis in sensitivity.axes_of("qiao2019-ws-smoothness", "cpu") if axis.key == "model.width_factor"
    ]
    for overrides in [[], *width.overrides()]:
        cfg = compose_config(["experiment=qiao2019-ws-smoothness", "scale=cpu", *overrides])
        model = models.from_config(cfg, (1, 28, 28), 10)
        per_group = [m.num_channels // m.num_groups for m in model.modules() if isinstance(m, nn.GroupNorm)]
        assert per_group == [channels // 32 for channels in vgg11], overrides
