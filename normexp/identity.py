"""What names a run and what it computes, in one place: its folder's name, from the run's resolved values in one
normal form; the config keys that do not change a run; the run's identity (its resolved config without them) and
the hash of that identity.

A run folder is named by the keys the command line (or the experiment's grid) sets, each with the value the run
*resolved* for it, written in one normal form (:func:`normal_form`): ``optim.lr=1e-3`` and ``optim.lr=0.001``
name the same folder, and so do ``1`` and ``1.0`` where the key is a float. Planning, training, skipping and
collecting all read the folder from the composed config's ``hydra.run.dir`` or ``hydra.sweep.subdir``, which call
:func:`run_name` through the ``${run_name:}`` resolver, so they cannot disagree. The keys that do not change what a
run computes (``exclude_keys`` in ``normexp/configs/config.yaml``: out_dir, logger, device, seed, which the folder
name holds anyway, ...) name no folder and are left out of the identity alike. A run's summary and checkpoint hold
:func:`config_hash`, so a relaunch notices when the experiment's YAML changed under it; the hash is computed once
per job and handed on (planning, the runner, its checkpoints and summary).
"""

from __future__ import annotations

import hashlib
import json
import math
from functools import cache
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

ROOT_CONFIG = Path(__file__).resolve().parent / "configs" / "config.yaml"
"""The root of the Hydra config tree (shipped inside the package), where ``exclude_keys`` is set."""


@cache
def folder_excluded_keys() -> tuple[str, ...]:
    """The keys that name no run folder because they do not change what a run computes (``exclude_keys`` in
    ``normexp/configs/config.yaml``)."""
    root = OmegaConf.load(ROOT_CONFIG)
    return tuple(root.hydra.job.config.override_dirname.exclude_keys)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 0.1}}`` -> ``{"optim.lr": 0.1}``; lists become their string form (one column each)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat |= flatten(value, f"{name}.")
        else:
            flat[name] = str(value) if isinstance(value, list) else value
    return flat


def identity(resolved: dict[str, Any]) -> dict[str, Any]:
    """What a run computes, as flat ``key: value`` pairs: its resolved config without :func:`folder_excluded_keys`."""
    excluded = folder_excluded_keys()
    return {
        key: value
        for key, value in flatten(resolved).items()
        if not any(key == name or key.startswith(name + ".") for name in excluded)
    }


def config_hash(resolved: dict[str, Any]) -> str:
    """A short hash of :func:`identity`: equal for two configs exactly when they train the same run. Keys set to
    ``None`` are left out: a knob added later whose default ``None`` leaves runs as they were does not change the
    hash of the runs made before it existed."""
    settings = {key: value for key, value in identity(resolved).items() if value is not None}
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def normal_form(value: Any) -> str:
    """``value`` as a folder name writes it: floats in Python's shortest round-trip form (``0.001``, ``1.0``,
    ``1e-05``), booleans and None as in YAML (``true``, ``null``), lists and mappings bracketed with their items
    in normal form; anything else as ``str``."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(normal_form(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{key}:{normal_form(item)}" for key, item in value.items()) + "}"
    return str(value)


def _resolved(root: DictConfig, key: str, written: str) -> str:
    """The normal form of what ``key`` resolved to in ``root``: a config group's chosen option, or the value;
    the override as ``written`` when the key names neither (it could not be composed)."""
    choices = root.hydra.runtime.choices
    if key in choices:
        return str(choices[key])
    value = OmegaConf.select(root, key, default=None, throw_on_missing=False)
    if isinstance(value, DictConfig) or OmegaConf.is_list(value):
        value = OmegaConf.to_container(value, resolve=True)
    return written if value is None and written != "null" else normal_form(value)


def run_name(_root_: DictConfig) -> str:
    """A run folder's name (the ``${run_name:}`` resolver): the task overrides outside ``exclude_keys``, as
    ``key=value`` with the resolved value in :func:`normal_form`, sorted as Hydra sorts ``override_dirname``, then
    the seed, which every run has. A deletion is named ``~key``. A ``/`` in a value (a path) is written ``%2F``, so
    the name stays one folder."""
    hydra = _root_.hydra
    excluded = set(hydra.job.config.override_dirname.exclude_keys)
    parts = []
    for override in OverridesParser.create().parse_overrides(list(hydra.overrides.task)):
        if override.key_or_group in excluded:
            continue
        key = override.get_key_element()
        if override.is_delete():
            parts.append(key)
            continue
        written = override.get_value_element_as_str()
        parts.append(f"{key}={_resolved(_root_, override.key_or_group, written)}")
    names = sorted(part.replace("/", "%2F") for part in parts)
    return ",".join([*names, f"seed={_root_.seed}"])
