"""Sensitivity maps: a claim's criteria judged at every value of each choice its paper left open.

A paper leaves some choices open (Ioffe's learning rate, the deep linear network's init gain, the CPU budget
itself). The primary value of each is fixed, by a rule tied to the paper and before the grid runs, in the
experiment's ``normexp/configs/at_scale/<experiment>/<scale>.yaml``;
``normexp/configs/sensitivity/<experiment>/<scale>.yaml`` names the choice (a config key), the other values tried
beside the primary, and why:

    optim.lr:
      values: [0.1, 0.3, 3.0]
      why: the paper gives no lr; the primary is ...

A choice that another key must follow by a rule (GroupNorm's group count keeping the paper's channels per group as
the width changes) lists that key's value beside each of its own under ``with``:

    model.width_factor:
      values: [0.25, 0.5]
      with: {norm.groups: [1, 2]}

``reproduce`` runs the experiment's grid once more per other value, with that override and its companions
(:meth:`Axis.overrides`).
:func:`select` keeps the runs at one setting, every other axis at its primary value, so the claim's verdict is
judged on the primary runs and each map entry on its own runs: the map says where a claim holds and where it stops.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from functools import cache
from numbers import Number
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import yaml
from omegaconf import DictConfig, OmegaConf

from normexp.claims import Check, Claim, Results, Verdict, mark
from normexp.errors import UserError
from normexp.identity import normal_form

SENSITIVITY_DIR = "sensitivity"
"""The config folder (beside ``at_scale``) that holds each experiment's open choices per scale."""


class Companion(NamedTuple):
    """A key that follows an open choice: its primary value, and its value beside each of the choice's others."""

    key: str
    primary: Any
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Axis:
    """One open choice of an experiment: its config ``key``, the ``primary`` value and the ``others`` tried; each
    key of ``together`` takes its listed value beside the other value at the same position."""

    experiment: str
    key: str
    primary: Any
    others: tuple[Any, ...]
    why: str
    together: tuple[Companion, ...] = ()

    @property
    def keys(self) -> set[str]:
        """The config keys a map column sets: the choice's and its companions'."""
        return {self.key, *(companion.key for companion in self.together)}

    def companions(self, value: Any) -> dict[str, Any]:
        """The companion keys' values beside ``value`` (one of ``others``)."""
        position = self.others.index(value)
        return {companion.key: companion.values[position] for companion in self.together}

    def overrides(self) -> list[list[str]]:
        """The Hydra overrides of each other value: the value and its companions."""
        return [
            [f"{key}={each}" for key, each in {self.key: value, **self.companions(value)}.items()]
            for value in self.others
        ]


def axes_file(experiment: str, scale: str) -> Path:
    """Where an experiment's open choices at ``scale`` are listed."""
    from normexp.config import CONFIG_DIR

    return CONFIG_DIR / SENSITIVITY_DIR / experiment / f"{scale}.yaml"


@cache
def axes_of(experiment: str, scale: str) -> tuple[Axis, ...]:
    """The experiment's open choices at ``scale``, each with the primary value its composed config sets."""
    path = axes_file(experiment, scale)
    if not path.exists():
        return ()
    from normexp.config import compose_config

    spec = yaml.safe_load(path.read_text()) or {}
    cfg = compose_config([f"experiment={experiment}", f"scale={scale}"])
    axes = []
    for key, entry in spec.items():
        primary = OmegaConf.select(cfg, key, default="<missing>")
        if primary == "<missing>" or not isinstance(entry, dict) or not entry.get("values"):
            raise UserError(
                f"{path}: {key!r} must be a config key of experiment {experiment} with a list of `values`.",
                fix="write `<config key>: {values: [...], why: ...}`, one entry per open choice",
            )
        values = entry["values"]
        kept = [i for i, value in enumerate(values) if not _same(value, primary)]
        companions = tuple(
            Companion(
                companion,
                _companion_primary(cfg, path, key, companion, len(values), each),
                tuple(each[i] for i in kept),
            )
            for companion, each in (entry.get("with") or {}).items()
        )
        axes.append(
            Axis(experiment, key, primary, tuple(values[i] for i in kept), str(entry.get("why", "")), companions)
        )
    return tuple(axes)


def _companion_primary(cfg: DictConfig, path: Path, key: str, companion: str, expected: int, listed: Any) -> Any:
    """The primary value of ``key``'s companion, once its entry is checked: a config key with one value per value."""
    primary = OmegaConf.select(cfg, companion, default="<missing>")
    if primary == "<missing>" or not isinstance(listed, list) or len(listed) != expected:
        raise UserError(
            f"{path}: {key!r}'s `with` key {companion!r} must be a config key with a list of one value per value of "
            f"{key!r} ({expected}; got {listed!r}).",
            fix=f"write `with: {{<config key>: [...]}}`, a list as long as {key!r}'s `values`",
        )
    return primary


def claim_axes(claim: Claim, scale: str) -> list[Axis]:
    """The open choices of every experiment the claim reads."""
    return [axis for experiment in claim.experiments for axis in axes_of(experiment, scale)]


def _same(value: Any, other: Any) -> bool:
    if isinstance(value, Number) and isinstance(other, Number) and not isinstance(value, bool):
        return bool(np.isclose(float(value), float(other), rtol=1e-9, atol=0.0))
    return value == other


def _matches(column: pd.Series, value: Any) -> pd.Series:
    if isinstance(value, Number) and not isinstance(value, bool):
        numbers = pd.to_numeric(column, errors="coerce")
        return pd.Series(np.isclose(numbers, float(value), rtol=1e-9, atol=0.0), index=column.index)
    if value is None:
        return column.isna()
    return column.astype(str) == str(value)


def select(results: Results, axes: list[Axis], axis: Axis | None = None, value: Any = None) -> Results:
    """The runs at one setting: ``axis`` at ``value`` and every other axis at its primary value (all at the
    primary when ``axis`` is None). Runs of experiments an axis does not belong to are kept."""
    summary = results.summary
    if summary.empty or not axes:
        return results
    keep = pd.Series(True, index=summary.index)
    for each in axes:
        wanted = value if each == axis else each.primary
        column = summary[each.key] if each.key in summary else pd.Series(np.nan, index=summary.index)
        keep &= (summary["experiment_name"] != each.experiment) | _matches(column, wanted)
    kept = summary[keep]
    runs = results.runs[results.runs["run_id"].isin(kept["run_id"])] if not results.runs.empty else results.runs
    return Results(runs, kept)


def judge(claim: Claim, results: Results, scale: str, axes: list[Axis] | None = None) -> Verdict:
    """The claim's verdict at its primary setting, carrying the map: the same criteria at every other value of
    ``axes`` (default: the claim's open choices at ``scale``)."""
    axes = claim_axes(claim, scale) if axes is None else axes
    verdict = claim.verify(select(results, axes), scale)
    entries = [
        Verdict(**{**vars(claim.verify(select(results, axes, axis, value), scale)), "setting": _setting(axis, value)})
        for axis in axes
        for value in axis.others
    ]
    return Verdict(**{**vars(verdict), "sensitivity": entries})


def _setting(axis: Axis, value: Any) -> dict[str, Any]:
    setting = {"experiment": axis.experiment, "key": axis.key, "value": value, "primary": axis.primary}
    if not axis.together:
        return setting
    primaries = {companion.key: companion.primary for companion in axis.together}
    return {**setting, "with": axis.companions(value), "with_primary": primaries}


def map_table(verdict: Verdict, markdown: bool = True) -> str:
    """The map as a table: one row per criterion, one column per setting (the primary first), each cell the
    criterion's outcome and margin, or ``= primary`` where it measured exactly what it measured at the primary
    setting (as for a choice of another of the claim's experiments); empty when the claim has no open choice."""
    if not verdict.sensitivity:
        return ""
    columns = [("primary", verdict)] + [(_column_label(entry.setting), entry) for entry in verdict.sensitivity]
    names = list(dict.fromkeys(check.name for _, v in columns for check in v.checks))
    header = ["criterion", *(label for label, _ in columns)]
    rows = [header, ["", *(v.verdict for _, v in columns)]]
    for name in names:
        primary = _check(verdict, name)
        rows.append(
            [name, *(_cell(_check(v, name), primary if v is not verdict else None, markdown) for _, v in columns)]
        )
    if markdown:
        lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows[1:]])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _column_label(setting: dict[str, Any], short: bool = False, joiner: str = ", ") -> str:
    """``key=value``, then its companions' (``with``) after ``joiner``; ``short``: each key's last part
    (``init_gain=0.8``), for a figure's narrow columns."""
    pairs = {setting["key"]: setting["value"], **setting.get("with", {})}
    return joiner.join(f"{key.rsplit('.', 1)[-1] if short else key}={_shown(value)}" for key, value in pairs.items())


def _shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else normal_form(value)


SAME_AS_PRIMARY = "= primary"
"""A map cell whose criterion measured exactly what it measured at the primary setting: where the setting is a choice
of another of the claim's experiments (the DLN's init gain for the VGG's criteria), the criterion reads the primary's
very runs, and repeating its margins would pass them off as measured again."""


def _check(verdict: Verdict, name: str) -> Check | None:
    return next((c for c in verdict.checks if c.name == name), None)


def _repeats(check: Check | None, primary: Check | None) -> bool:
    """Whether a map cell's ``check`` is the primary's to the last digit of its margin and of what it measured."""
    return check is not None and check == primary


def _cell(check: Check | None, primary: Check | None, markdown: bool) -> str:
    if check is None:
        return "–"
    if _repeats(check, primary):
        return SAME_AS_PRIMARY
    margin = f" {check.margin:+.3g}" if check.margin is not None else ""
    return f"{mark(check, markdown)}{margin}"


UPRIGHT_COLUMNS = 6
"""A map figure with more settings than this beside the primary sets their labels upright, as they would overlap."""

COMPANION_LINE = "\n+ "
"""How a figure's column label sets a companion key (``with``) under its choice's."""


def plot_map(verdict: Verdict, out: Path) -> list[Path]:
    """The map as a figure: criteria × settings, green where a criterion passes, red where it fails, grey where it
    is untested, each cell annotated with its margin."""
    if not verdict.sensitivity:
        return []
    from normexp import plotting

    upright = len(verdict.sensitivity) > UPRIGHT_COLUMNS  # too narrow for horizontal labels: each reads upwards
    columns = [("primary\n" + _primary_label(verdict), verdict)] + [
        (_column_label(e.setting, short=True, joiner=COMPANION_LINE).replace("=", "=" if upright else "=\n", 1), e)
        for e in verdict.sensitivity
    ]
    names = list(dict.fromkeys(check.name for _, v in columns for check in v.checks))
    outcome = np.full((len(names), len(columns)), np.nan)
    fig, axes = plotting.figure(width="text", height=1.4 + 0.35 * len(names))
    ax = axes[0]
    for j, (_, v) in enumerate(columns):
        if not v.checks:  # a setting whose runs are missing or incomplete: say so in its column
            said, rotation = (v.verdict, 90) if upright else (v.verdict.replace(" ", "\n"), 0)
            ax.text(j, (len(names) - 1) / 2, said, ha="center", va="center", fontsize=7, rotation=rotation)
        for i, name in enumerate(names):
            check = _check(v, name)
            if check is None:
                continue
            if j > 0 and _repeats(check, _check(verdict, name)):  # left white: no measurement of its own
                same = SAME_AS_PRIMARY.replace(" ", "\n") if upright else SAME_AS_PRIMARY  # within a narrow cell
                ax.text(j, i, same, ha="center", va="center", fontsize=7, color="0.45")
                continue
            outcome[i, j] = 0.5 if check.passed is None else float(check.passed)
            text = f"{check.margin:+.3g}" if check.margin is not None else mark(check, markdown=False)
            ax.text(j, i, text, ha="center", va="center", fontsize=7)
    from matplotlib.colors import ListedColormap

    colours = ListedColormap(["#e8a0a0", "#d0d0d0", "#9fd39f"]).with_extremes(bad="white")
    ax.imshow(outcome, cmap=colours, vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(columns)), [label for label, _ in columns], fontsize=7)
    primary_tick, *ticks = ax.get_xticklabels()
    for tick in ticks if upright else []:
        tick.set_rotation(90)
    if upright:  # the primary's label lies flat, leftwards under the row labels, clear of its upright neighbour's
        primary_tick.set(horizontalalignment="right", multialignment="right")
    ax.set_yticks(range(len(names)), [_wrapped(name) for name in names], fontsize=7)
    ax.grid(False)
    ax.set_title(
        f"{verdict.claim}: each criterion at each setting\n(green pass, red fail, grey untestable; number: margin;\n"
        f"white '{SAME_AS_PRIMARY}': measured exactly as at the primary)",
        fontsize=8,
    )
    text = plotting.Caption(
        "the sensitivity map: each pre-registered criterion (rows) judged at the primary setting and at each other "
        "value of the choices the paper left open (columns, one changed at a time); the number is the criterion's "
        "margin in its own units (> 0 passes); a column without runs says so; a white cell reads "
        f"'{SAME_AS_PRIMARY}' where the criterion measured exactly what it measured at the primary setting, as where "
        "the setting is a choice of another of the claim's experiments and the criterion reads the primary's runs",
        band="no bands: each cell is one criterion's outcome on the medians over seeds",
    )
    return plotting.save(fig, out, "sensitivity", text)


def _primary_label(verdict: Verdict) -> str:
    primaries = {
        e.setting["key"]: {**e.setting, "value": e.setting["primary"], "with": e.setting.get("with_primary", {})}
        for e in verdict.sensitivity
    }
    return "\n".join(_column_label(setting, short=True, joiner=COMPANION_LINE) for setting in primaries.values())


def _wrapped(name: str, width: int = 48) -> str:
    """A criterion's whole name on lines of at most ``width`` characters: the row labels of the map."""
    return textwrap.fill(name, width)
