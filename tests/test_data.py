"""Datasets: the offline lookup in torchvision's layout on generated IDX files, the sampler, synthetic data."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from normexp import data
from normexp.data.generated import write_idx
from normexp.errors import ConfigError, DataError


@pytest.fixture
def offline_fashion(tmp_path: Path, patch_source) -> Path:
    """Generated Fashion-MNIST files where Debian's package would put them."""
    folder = tmp_path / "debian"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("t10k", 5)):
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    patch_source("fashion_mnist", offline_dirs=(str(folder),), sizes=(12, 5))
    return folder


def data_cfg(root: Path, **extra):
    return OmegaConf.create(
        {
            "name": "fashion_mnist",
            "root": str(root),
            "download": False,
            "synthetic": False,
            "train_size": None,
            "test_size": None,
            **extra,
        }
    )


def test_offline_files_load_through_torchvision(offline_fashion: Path, tmp_path: Path) -> None:
    splits = data.load(data_cfg(tmp_path / "root"))
    assert splits.train_x.shape == (12, 1, 28, 28) and splits.test_x.shape == (5, 1, 28, 28)
    assert splits.train_x.dtype == torch.float32 and splits.train_x.min() >= 0 and splits.train_x.max() <= 1
    with gzip.open(offline_fashion / "train-images-idx3-ubyte.gz") as raw:
        first = np.frombuffer(raw.read()[16 : 16 + 784], dtype=np.uint8)
    np.testing.assert_allclose(splits.train_x[0].flatten().numpy(), first / 255, rtol=1e-6)
    assert (tmp_path / "root" / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").exists()


def test_fashion_augment_pads_with_background_crops_and_flips_only_training_batches(
    offline_fashion: Path, tmp_path: Path
) -> None:
    """Pad-crop-flip with black (0) padding, torchvision's RandomCrop(28, 4) then RandomHorizontalFlip: an image
    cropped at the offset of no shift and not flipped comes back as it was, and every output is a window of the
    zero-padded image, flipped or not."""
    assert data.load(data_cfg(tmp_path / "root")).augment is None
    splits = data.load(data_cfg(tmp_path / "root", augment=True))
    assert splits.augment is not None and splits.augment.keywords == {"padding": 4, "fill": [0.0]}
    images = splits.train_x
    out = splits.augment(images, generator=torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    windows = {
        (top, left, flip): (lambda crop, f: crop.flip(-1) if f else crop)(
            padded[..., top : top + 28, left : left + 28], flip
        )
        for top in range(9)
        for left in range(9)
        for flip in (False, True)
    }
    for i in range(len(images)):
        assert any(torch.equal(out[i], window[i]) for window in windows.values()), i
    assert torch.equal(windows[(4, 4, False)], images)


def test_augment_refuses_datasets_whose_flips_change_the_class(tmp_path: Path) -> None:
    cfg = data_cfg(tmp_path / "root", augment=True)
    cfg.name = "mnist"
    with pytest.raises(ConfigError, match="changes the class of some mnist images"):
        data.check_available(cfg)


def test_missing_files_raise_a_data_error_with_the_fix(tmp_path: Path, patch_source) -> None:
    patch_source("fashion_mnist", offline_dirs=(str(tmp_path / "nowhere"),))
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        data.load(data_cfg(tmp_path / "root"))


def test_subsets_and_synthetic_shapes(tmp_path: Path) -> None:
    splits = data.load(data_cfg(tmp_path, synthetic=True, train_size=40, test_size=8), seed=1)
    assert splits.train_x.shape == (40, 1, 28, 28) and splits.test_y.shape == (8,)
    assert splits.num_classes == 10 and splits.train_y.max() < 10


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda raw: raw.write_bytes(raw.read_bytes()[:-100]), "not the 9424 its header announces"),
        (lambda raw: raw.write_bytes(b"\x00\x00\x0c\x03" + raw.read_bytes()[4:]), "is not an IDX file"),
    ],
    ids=["truncated", "wrong format"],
)
def test_damaged_files_are_refused_with_the_fix(offline_fashion: Path, tmp_path: Path, damage, message: str) -> None:
    data.load(data_cfg(tmp_path / "root"))  # stages the files
    damage(tmp_path / "root" / "FashionMNIST" / "raw" / "train-images-idx3-ubyte")
    with pytest.raises(DataError, match=message):
        data.load(data_cfg(tmp_path / "root"))


def test_wrong_number_of_samples_is_refused(offline_fashion: Path, tmp_path: Path, patch_source) -> None:
    patch_source("fashion_mnist", sizes=(60000, 5))
    with pytest.raises(DataError, match="holds 12 items, not 60000"):
        data.load(data_cfg(tmp_path / "root"))


def test_corrupt_download_fails_its_gzip_checksum(offline_fashion: Path, tmp_path: Path) -> None:
    packed = offline_fashion / "train-labels-idx1-ubyte.gz"
    content = bytearray(packed.read_bytes())
    content[-8] ^= 0xFF  # the CRC32 in the gzip trailer
    packed.write_bytes(bytes(content))
    with pytest.raises(DataError, match="corrupt"):
        data.load(data_cfg(tmp_path / "root"))
    assert not (tmp_path / "root" / "FashionMNIST" / "raw" / "train-labels-idx1-ubyte").exists()  # nothing partial
