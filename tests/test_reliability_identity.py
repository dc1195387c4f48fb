"""Run identity: a run folder is named by its command-line overrides, so its summary and checkpoint hold a hash of
the resolved config; a relaunch after the experiment's or scale's YAML changed stops with a clear error instead of
skipping or resuming a stale run. Path values name one folder, and the W&B id derives from the run's name and
config, never from where its folder lies."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from normexp import config, sweep
from normexp.identity import config_hash
from normexp.rundir import resolved_config
from normexp.training.runner import train

RUN = Path("adhoc") / "smoke" / "seed=0"


@pytest.fixture
def configs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the config tree that the command line reads, to edit as a user edits a YAML file."""
    copy = tmp_path / "configs"
    shutil.copytree(config.CONFIG_DIR, copy)
    monkeypatch.setattr(config, "CONFIG_DIR", copy)
    monkeypatch.setattr(sweep, "CONFIG_DIR", copy)
    return copy


def set_smoke_steps(configs: Path, steps: int) -> None:
    """Edit the smoke scale's ``train.steps``: a change no command-line override shows."""
    path = configs / "scale" / "smoke.yaml"
    path.write_text(path.read_text().replace("steps: 20", f"steps: {steps}"))


def test_a_finished_run_of_a_changed_config_is_refused_until_resume_never(cli, out_dir: Path, configs: Path) -> None:
    args = ("run", "scale=smoke", f"out_dir={out_dir}")
    assert cli(*args)[0] == 0
    set_smoke_steps(configs, 12)
    status, _, err = cli(*args)
    assert status == 2 and "Traceback" not in err
    assert f"{out_dir / RUN} holds a finished (completed) run of another config" in err
    assert "delete the folder, or add resume=never" in err
    status, _, _ = cli(*args, "resume=never")
    summary = json.loads((out_dir / RUN / "summary.json").read_text())
    assert status == 0 and summary["status"] == "completed" and summary["total_steps"] == 12
    status, out, _ = cli(*args)
    assert status == 0 and "1 already finished" in out


def test_a_checkpointed_run_of_a_changed_config_is_refused(cli, out_dir: Path, configs: Path) -> None:
    args = ("run", "scale=smoke", f"out_dir={out_dir}", "train.checkpoint_every=5")
    cli(*args)
    (out_dir / RUN / "summary.json").unlink()  # as if killed after its last checkpoint
    set_smoke_steps(configs, 12)
    status, _, err = cli(*args)
    assert status == 2 and "holds a checkpointed run of another config" in err


def test_a_run_stored_without_a_hash_counts_as_the_same_config(cli, out_dir: Path, configs: Path) -> None:
    """Run folders and results from before hashes were stored: unknown, not a mismatch."""
    args = ("run", "scale=smoke", f"out_dir={out_dir}")
    cli(*args)
    summary_path = out_dir / RUN / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary_path.write_text(json.dumps({k: v for k, v in summary.items() if k != "config_hash"}))
    set_smoke_steps(configs, 12)
    status, out, _ = cli(*args)
    assert status == 0 and "1 already finished" in out


def test_the_hash_ignores_what_does_not_change_the_run(compose, tmp_path: Path) -> None:
    def hashed(*overrides: str) -> str:
        return config_hash(resolved_config(compose(*overrides)))

    assert hashed() == hashed("device=cpu", "threads=2", "logger=wandb", "data.root=/elsewhere", f"out_dir={tmp_path}")
    assert hashed() != hashed("train.steps=12")
    assert hashed() != hashed("train.images=4096")
    summary = train(compose("train.steps=3"), tmp_path / "run")
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert summary["config_hash"] == saved["config_hash"] == hashed("train.steps=3")


def test_a_knob_added_at_its_none_default_keeps_earlier_runs_hashes(compose) -> None:
    resolved = resolved_config(compose())
    assert resolved["train"]["images"] is None
    before_the_knob = {**resolved, "train": {k: v for k, v in resolved["train"].items() if k != "images"}}
    assert config_hash(before_the_knob) == config_hash(resolved)


def test_path_values_name_one_folder(cli, out_dir: Path) -> None:
    cfg = config.compose_config(
        ["data=text", "data.text_file=/corpora/a.txt", "norm=bn", "seed=1"], return_hydra_config=True
    )
    assert Path(cfg.hydra.run.dir).name == "data.text_file=%2Fcorpora%2Fa.txt,data=text,norm=bn,seed=1"
    status, _, _ = cli("run", "scale=smoke", f"out_dir={out_dir}", "data.root=/mnt/data/sets")  # excluded: no name
    assert status == 0 and [p.name for p in (out_dir / "adhoc" / "smoke").iterdir()] == ["seed=0"]


def test_wandb_id_derives_from_the_run_not_from_where_its_folder_lies(compose, tmp_path: Path) -> None:
    def wandb_id(where: str, *overrides: str) -> str:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            train(compose("logger=wandb", "logger.mode=offline", "train.steps=2", *overrides), tmp_path / where / "run")
        (offline,) = (tmp_path / where / "run" / "wandb").glob("offline-run-*")
        return offline.name.rsplit("-", 1)[1]

    laptop = wandb_id("laptop")
    assert laptop == wandb_id("cluster")  # the same run, its folder moved
    assert laptop != wandb_id("changed", "train.steps=3")
