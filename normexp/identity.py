"""What a run computes, in one place: the config keys that do not change a run, the run's identity (its resolved
config without them) and the hash of that identity.

A run folder is named by its command-line overrides (``normexp/configs/config.yaml``), so a relaunch finds it again; its
summary and checkpoint hold :func:`config_hash`, so a relaunch notices when the experiment's YAML changed under it.
The keys that do not change what a run computes (``exclude_keys`` there: out_dir, logger, device, seed, which the
folder name holds anyway, ...) name no folder and are left out of the identity alike. The hash is computed once per
job and handed on (planning, the runner, its checkpoints and summary).
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

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
