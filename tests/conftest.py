"""Shared fixtures: composing configs, a scratch output folder, and running the CLI in-process; the ``gpu`` marker."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from normexp.cli import main
from normexp.config import compose_config
from normexp.data import images

# Tests use tiny tensors: one thread avoids per-op thread overhead that dominates on a loaded 2-core machine.
torch.set_num_threads(1)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--device",
        default=None,
        help="run the composed configs on this device (cuda: with deterministic kernels); scripts/gpu_check.sh "
        "reruns the tests marked 'equality' with --device cuda",
    )


@pytest.fixture(scope="session")
def device_overrides(request: pytest.FixtureRequest) -> tuple[str, ...]:
    """The overrides that put a test's runs on ``--device`` (none without the option: the configs' ``auto``)."""
    device = request.config.getoption("--device")
    if device is None:
        return ()
    return (f"device={device}", *(["deterministic=true"] if device.startswith("cuda") else []))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``@pytest.mark.gpu``: the test needs a CUDA device and is skipped without one."""
    if torch.cuda.is_available():
        return
    needs_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(needs_gpu)


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    """A scratch folder for run folders."""
    return tmp_path / "runs"


@pytest.fixture
def compose(out_dir: Path, device_overrides: tuple[str, ...]):
    """Compose a smoke-scale config with extra overrides, writing runs under ``out_dir`` (on ``--device``)."""

    def _compose(*overrides: str) -> DictConfig:
        return compose_config(["scale=smoke", f"out_dir={out_dir}", *device_overrides, *overrides])

    return _compose


@pytest.fixture
def cli(capsys: pytest.CaptureFixture):
    """Run ``normexp <args>``; return (exit status, stdout, stderr)."""

    def _cli(*args: str) -> tuple[int, str, str]:
        status = main(list(args))
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    return _cli


@pytest.fixture
def patch_source(monkeypatch: pytest.MonkeyPatch):
    """Change where/what an image dataset's offline files are, e.g. ``patch_source("fashion_mnist", sizes=...)``."""

    def _patch(name: str, **changes) -> None:
        monkeypatch.setitem(images.IMAGE_SOURCES, name, dataclasses.replace(images.IMAGE_SOURCES[name], **changes))

    return _patch
