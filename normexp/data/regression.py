"""Synthetic linear regression: the task of Santurkar et al. (2018)'s deep linear network (arXiv 1805.11604, §3).

Inputs x ~ N(0, I₁₀), targets y = Ax with one random A (entries N(0, 1)); the paper trains on a full batch of 1000
such inputs. A and the inputs are drawn from ``data.task_seed``, independent of the run's seed, so every run of a
grid fits the same task. The data are generated, so ``data.synthetic: true`` changes nothing but the sizes.
"""

from __future__ import annotations

from typing import Any

import torch

from normexp.data.splits import Splits

DIM = 10
"""Input and output size: the paper's 10×10 layers."""


def linear_regression(train_size: int, test_size: int, task_seed: int) -> Splits:
    """``train_size`` + ``test_size`` pairs (x, Ax); ``num_classes`` holds the output size."""
    generator = torch.Generator().manual_seed(task_seed)
    matrix = torch.randn(DIM, DIM, generator=generator)
    x = torch.randn(train_size + test_size, DIM, generator=generator)
    y = x @ matrix.T
    return Splits(x[:train_size], y[:train_size], x[train_size:], y[train_size:], DIM)


def load_linear_regression(cfg: Any) -> Splits:
    """The task of ``normexp/configs/data/linear_regression.yaml``."""
    return linear_regression(cfg.train_size, cfg.test_size, cfg.task_seed)


def synthesize_linear_regression(cfg: Any, train_size: int, test_size: int, seed: int) -> Splits:
    """The same task at the sizes a smoke run asks for (the data are generated either way)."""
    return linear_regression(train_size, test_size, cfg.task_seed)
