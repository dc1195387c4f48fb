"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009) through torchvision, with the standard augmentation.

The files are torchvision's: the python pickles of the official archives (``cifar-10-batches-py/`` or
``cifar-100-python/``) under ``data.root``; ``data.download: true`` fetches them with torchvision. torchvision
checks every file's md5 against the official archive's on each load, so an offline copy of the official files loads
and altered or truncated files are refused (as a :class:`~normexp.errors.DataError` here).

Images become float32 ``(N, 3, 32, 32)``, standardized per channel with the training set's mean and std. With
``data.augment: true`` training batches get the augmentation of He et al. 2016 (§4.2), the standard for CIFAR
(:mod:`normexp.data.augment`): 4 pixels of zero padding on each side, a random 32×32 crop, and a horizontal flip with
probability 1/2.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision import datasets

from normexp.data.augment import PADDING, pad_crop_flip
from normexp.data.images import read_torchvision
from normexp.data.splits import Splits
from normexp.errors import DataError


@dataclass(frozen=True)
class CifarSource:
    """A torchvision CIFAR class and its number of classes."""

    description: str
    torchvision_class: type[datasets.CIFAR10]
    num_classes: int

    @property
    def files(self) -> list[str]:
        """The pickles torchvision reads, relative to ``data.root``."""
        cls = self.torchvision_class
        names = [name for name, _md5 in cls.train_list + cls.test_list] + [cls.meta["filename"]]
        return [f"{cls.base_folder}/{name}" for name in names]


CIFAR_SOURCES: dict[str, CifarSource] = {
    "cifar10": CifarSource("CIFAR-10, 50k/10k 32×32 colour images, 10 classes", datasets.CIFAR10, 10),
    "cifar100": CifarSource("CIFAR-100, 50k/10k 32×32 colour images, 100 classes", datasets.CIFAR100, 100),
}

FIX = "set data.download=true on a machine with internet, or point data.root (or NORMEXP_DATA) at a folder holding it"


def check_cifar(cfg: Any) -> None:
    """Raise a :class:`DataError` naming the missing files when ``cfg.name`` is neither present nor downloadable."""
    if cfg.download:
        return
    root = Path(cfg.root).expanduser()
    missing = [name for name in CIFAR_SOURCES[cfg.name].files if not (root / name).exists()]
    if missing:
        raise DataError(f"{cfg.name} not found: {', '.join(missing)} missing in {root}.", fix=FIX)


def load_cifar(cfg: Any) -> Splits:
    """``cfg.name`` as standardized float tensors ``(N, 3, 32, 32)``, with pad-crop-flip when ``cfg.augment``."""
    source = CIFAR_SOURCES[cfg.name]
    check_cifar(cfg)
    train, test = read_torchvision(source.torchvision_class, cfg, FIX, " (torchvision checks each file's md5)")
    train_x, test_x = _channels_first(train.data), _channels_first(test.data)
    mean, std = train_x.mean((0, 2, 3)), train_x.std((0, 2, 3))
    augment = partial(pad_crop_flip, padding=PADDING, fill=(-mean / std).tolist()) if cfg.augment else None
    return Splits(
        _standardize(train_x, mean, std),
        torch.as_tensor(train.targets),
        _standardize(test_x, mean, std),
        torch.as_tensor(test.targets),
        source.num_classes,
        augment,
    )


def _channels_first(images: np.ndarray) -> torch.Tensor:
    """torchvision's uint8 ``(N, H, W, C)`` array as floats in [0, 1], ``(N, C, H, W)``."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)


def _standardize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return images.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1)).contiguous()
