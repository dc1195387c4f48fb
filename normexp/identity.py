"""What names a run: its folder, from the run's resolved values in one normal form.

A run folder is named by the keys the command line (or the experiment's grid) sets, each with the value the run
*resolved* for it, written in one normal form (:func:`normal_form`): ``optim.lr=1e-3`` and ``optim.lr=0.001``
name the same folder, and so do ``1`` and ``1.0`` where the key is a float. Planning, training, skipping and
collecting all read the folder from the composed config's ``hydra.run.dir`` or ``hydra.sweep.subdir``, which call
:func:`run_name` through the ``${run_name:}`` resolver, so they cannot disagree.
"""

from __future__ import annotations

import math
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf


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
