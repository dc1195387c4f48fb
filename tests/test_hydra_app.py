"""``normexp run`` is a Hydra app: Hydra's flags in any position, grids expanded by Hydra's sweeper machinery, run
folders named from resolved values in one normal form, edits of ``config.yaml`` taking effect, every knob
validated before any run, fused cells dispatched through the configured launcher."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from normexp import config, sweep
from normexp.config import CONFIG_DIR, compose_config, expand_grid

SMOKE = ("experiment=adhoc", "scale=smoke", "train.steps=2")


def folders(out_dir: Path) -> list[str]:
    """The run folders' names under ``out_dir``'s smoke-scale ad-hoc experiment."""
    return sorted(p.name for p in (out_dir / "adhoc" / "smoke").iterdir() if p.is_dir())


def status_of(run_dir: Path) -> str:
    return json.loads((run_dir / "summary.json").read_text())["status"]


# --- folder names: resolved values, one normal form -----------------------------------------------------------------


def test_a_scientific_notation_sweep_finds_the_folder_it_trained(cli, out_dir: Path) -> None:
    status, out, err = cli("run", "-m", *SMOKE, f"out_dir={out_dir}", "optim.lr=1e-3", "norm=bn", "seed=0")
    assert status == 0 and "runs: 1 completed" in out, err
    assert folders(out_dir) == ["norm=bn,optim.lr=0.001,train.steps=2,seed=0"]
    for spelling in ("optim.lr=0.001", "optim.lr=1e-3", "optim.lr=1.0e-3"):  # a relaunch, a single run
        status, out, _ = cli("run", *SMOKE, f"out_dir={out_dir}", spelling, "norm=bn")
        assert status == 0 and "1 already finished, 0 to run" in out


@pytest.mark.parametrize(
    ("written", "named"),
    [
        (("optim.lr=1", "train.diverge_loss=50"), "optim.lr=1.0,train.diverge_loss=50.0"),  # float keys
        (("optim.lr=5e-4",), "optim.lr=0.0005"),
        (("optim.lr=1e-5",), "optim.lr=1e-05"),  # Python's shortest round-trip form
        (("train.target_acc=null", "train.norm_batch=4"), "train.norm_batch=4,train.target_acc=null"),
        (("~probes",), "~probes"),
    ],
)
def test_folder_names_hold_resolved_values_in_one_normal_form(written: tuple[str, ...], named: str) -> None:
    for mode in ([], ["hydra.mode=MULTIRUN"]):
        cfg = compose_config([*written, *mode], return_hydra_config=True)
        run_dir = cfg.hydra.sweep.subdir if mode else Path(cfg.hydra.run.dir).name
        assert run_dir == f"{named},seed=0"


# --- Hydra's flags in any position ----------------------------------------------------------------------------------


def test_multirun_flag_after_the_overrides(cli, out_dir: Path) -> None:
    status, out, err = cli("run", *SMOKE, f"out_dir={out_dir}", "seed=0,1", "-m")
    assert status == 0 and "runs: 2 completed" in out, err
    assert folders(out_dir) == ["train.steps=2,seed=0", "train.steps=2,seed=1"]


@pytest.mark.parametrize("flags_first", [True, False])
def test_cfg_job_in_any_position(cli, flags_first: bool) -> None:
    overrides, flags = ["experiment=batchsize", "scale=smoke", "optim.lr=1e-3"], ["--cfg", "job", "--resolve"]
    status, out, _ = cli("run", *(flags + overrides if flags_first else overrides + flags))
    assert status == 0 and "experiment_name: batchsize" in out and "lr: 0.001" in out and "hydra:" not in out


def test_info_help_and_version_are_hydras(cli, capsys: pytest.CaptureFixture) -> None:
    status, out, _ = cli("run", "--info", "searchpath")
    assert status == 0 and str(CONFIG_DIR) in out
    with pytest.raises(SystemExit) as stop:
        cli("run", "--help")
    out = capsys.readouterr().out
    assert stop.value.code == 0 and "== Configuration groups ==" in out
    assert "norm: bcn, bcn+ws, bn" in out and "experiment: adhoc, batchsize" in out
    with pytest.raises(SystemExit):
        cli("run", "--version")
    assert capsys.readouterr().out.startswith("Hydra 1.3")


def test_shell_completion_installs_for_normexp_and_completes_run_lines(cli, monkeypatch) -> None:
    status, out, _ = cli("run", "-sc", "install=bash")
    assert status == 0 and out.rstrip().endswith("-F hydra_bash_completion normexp")
    monkeypatch.setenv("COMP_LINE", "normexp run experiment=adhoc nor")
    status, out, _ = cli("-sc", "query=bash")  # what the installed function runs
    assert status == 0 and set(out.split()) == {"norm.", "norm="}
    monkeypatch.setenv("COMP_LINE", "normexp ")
    assert "reproduce" in cli("-sc", "query=bash")[1].split()


def test_config_dir_and_name_flags(cli, tmp_path: Path) -> None:
    own = tmp_path / "my_configs"
    own.mkdir()
    (own / "mine.yaml").write_text("defaults:\n  - config\n  - _self_\nseed: 7\n")
    status, out, _ = cli("run", "--cfg", "job", "-cd", str(own), "-cn", "mine", "scale=smoke")
    assert status == 0 and "seed: 7" in out


# --- Hydra's sweep syntax -------------------------------------------------------------------------------------------


def test_glob_range_and_choice_are_expanded_by_hydra() -> None:
    jobs = expand_grid(["scale=smoke", "norm=glob(bn*)", "seed=range(2)", "optim.lr=choice(0.1,1e-3)"])
    expected_norms = sorted(p.stem for p in (CONFIG_DIR / "norm").glob("bn*.yaml"))
    assert expected_norms == ["bn", "bn+ws"]
    assert sorted(tuple(job[1:]) for job in jobs) == sorted(
        (f"norm={norm}", f"seed={seed}", f"optim.lr={lr}")
        for norm in expected_norms
        for seed in (0, 1)
        for lr in (0.1, 0.001)
    )


def test_a_glob_sweep_trains_every_matching_norm(cli, out_dir: Path) -> None:
    status, out, err = cli("run", "-m", *SMOKE, f"out_dir={out_dir}", "norm=glob([none,bn+*],exclude=bn+ws)")
    assert status == 0 and "runs: 1 completed" in out, err
    assert folders(out_dir) == ["norm=none,train.steps=2,seed=0"]


@pytest.mark.parametrize(
    ("override", "said"),
    [
        ("optim.lr=interval(0.01,1)", "hydra/sweeper=optuna"),
        ("hydra/sweeper=optuna", "pip install hydra-optuna-sweeper"),
    ],
)
def test_a_sweep_the_grid_cannot_enumerate_stops_with_a_paragraph(cli, out_dir: Path, override, said) -> None:
    status, _, err = cli("run", "-m", *SMOKE, f"out_dir={out_dir}", override)
    assert status == 2 and said in err and len(err.strip().splitlines()) == 1
    assert not out_dir.exists()


# --- config.yaml edits take effect ----------------------------------------------------------------------------------


@pytest.fixture
def edited_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the config tree whose ``config.yaml`` sets ``threads: 3`` and ``resume: never``."""
    copy = tmp_path / "configs"
    shutil.copytree(CONFIG_DIR, copy)
    monkeypatch.setattr(config, "CONFIG_DIR", copy)
    monkeypatch.setattr(sweep, "CONFIG_DIR", copy)
    root = copy / "config.yaml"
    text = root.read_text()
    root.write_text(text.replace("\nthreads: 1 ", "\nthreads: 3 ").replace("\nresume: auto ", "\nresume: never "))
    assert root.read_text() != text
    return copy


def test_an_edited_config_yaml_takes_effect(cli, edited_root: Path) -> None:
    cfg = compose_config(["scale=smoke"])
    assert (cfg.threads, cfg.resume) == (3, "never")
    status, out, _ = cli("run", "--cfg", "job", "scale=smoke")
    assert status == 0 and "threads: 3" in out and "resume: never" in out


# --- every knob validated before any run ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "said"),
    [
        ("device=cuda", "device=cuda is not present on this machine"),
        ("device=cuda:3", "device=cuda:3 is not present on this machine"),
        ("device=tpu", "unknown device 'tpu'"),
        ("seed=-1", "seed=-1 is out of range"),
        ("seed=4294967296", "out of range"),
    ],
)
@pytest.mark.parametrize("multirun", [False, True])
def test_a_bad_device_or_seed_stops_before_any_run(cli, out_dir, monkeypatch, override, said, multirun) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same on a GPU machine
    grid = ["-m", "norm=bn,none"] if multirun else []
    status, out, err = cli("run", *grid, *SMOKE, f"out_dir={out_dir}", override)
    assert status == 2 and said in err and "Fix:" in err and len(err.strip().splitlines()) == 1
    assert "to run" not in out and not list(out_dir.glob("**/config.yaml")) and not list(out_dir.glob("**/seed=*"))


def test_a_device_is_checked_on_the_node_with_slurm(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a login node
    config.validate(compose_config(["scale=smoke", "launcher=slurm", "device=cuda"], return_hydra_config=True))


def test_paper_data_that_cannot_be_had_fails_once_before_the_grid(cli, out_dir, tmp_path, monkeypatch) -> None:
    from normexp import data
    from normexp.errors import DataError

    attempts = []

    def unreachable(cfg, seed: int = 0):
        attempts.append(cfg.name)
        raise DataError(f"could not download {cfg.name}: no network.", fix="set data.root to a folder holding it")

    monkeypatch.setattr(data, "load", unreachable)
    grid = ("-m", "experiment=adhoc", "scale=smoke", "data=cifar10", "data.synthetic=false", "data.download=true")
    status, out, err = cli("run", *grid, f"data.root={tmp_path}", "norm=bn,none", "seed=0,1", f"out_dir={out_dir}")
    assert status == 2 and "could not download cifar10" in err
    assert attempts == ["cifar10"] and "to run" not in out


# --- fused cells through the launcher -------------------------------------------------------------------------------


def test_fused_cells_are_dispatched_as_launcher_jobs(cli, out_dir: Path) -> None:
    """``fuse=true launcher=submitit_local``: one submitit job per grid cell (2 norms), each training its 2 seeds."""
    grid = ("-m", *SMOKE, "norm=bn,none", "seed=0,1", "fuse=true", "launcher=submitit_local")
    status, out, err = cli("run", *grid, f"out_dir={out_dir}")
    assert status == 0 and "runs: 4 completed" in out, err
    submitted = sorted((out_dir / "adhoc" / "smoke" / ".submitit").glob("*/*_result.pkl"))
    assert len(submitted) == 2
    for norm in ("bn", "none"):
        for seed in (0, 1):
            summary = json.loads(
                (out_dir / "adhoc" / "smoke" / f"norm={norm},train.steps=2,seed={seed}" / "summary.json").read_text()
            )
            assert summary["status"] == "completed" and summary["fused_members"] == 2
