"""The one source of training batches: a resumable shuffled sampler, the dataset's augmentation, the memory format.

Every training loop asks :class:`Batches` for the next batch and gets it drawn, augmented, laid out and on the
device (airbench's loader does this), so no loop can forget a step. The data stay resident on the run's device
as tensors: a batch is one gather, and CIFAR's pad-crop-flip one batched op there.

The augmentation draws from a generator of the run's own, on the data's device, seeded by the run's seed and saved
with the sampler's position in :meth:`Batches.state_dict`: a resumed run draws what it would have drawn, and the
members of a fused cell draw what their separate runs draw (the global RNG is left to the model and the probes).

:class:`LoaderBatches` is the usual input pipeline instead (a ``DataLoader`` with worker processes over host
tensors), which the benchmark measures against resident data.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

from normexp import accel
from normexp.data.splits import Splits
from normexp.errors import ConfigError

Batch = tuple[torch.Tensor, torch.Tensor]


class EpochSampler:
    """Shuffled mini-batches of indices, epoch after epoch, reproducible from (seed, epoch) and resumable.

    Each epoch is a fresh permutation seeded by ``seed + epoch``; a trailing partial batch is dropped so every
    step sees ``batch_size`` samples (batch statistics of a norm depend on it). The permutation is drawn on the CPU
    (the same on every device) and kept on ``device``, so indexing data resident there copies nothing per step.
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int, device: torch.device | str = "cpu") -> None:
        if batch_size > num_samples:
            raise ConfigError(
                f"train.batch_size={batch_size} exceeds the {num_samples} training samples.",
                fix="lower train.batch_size or raise data.train_size",
            )
        self.num_samples, self.batch_size, self.seed, self.device = num_samples, batch_size, seed, device
        self.epoch, self.position = 0, 0
        self._order = self._permutation()

    def _permutation(self) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(self.num_samples, generator=generator).to(self.device)

    def next(self) -> torch.Tensor:
        """The indices of the next batch."""
        if self.position + self.batch_size > self.num_samples:
            self.epoch, self.position = self.epoch + 1, 0
            self._order = self._permutation()
        indices = self._order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return indices

    def state_dict(self) -> dict[str, int]:
        """Where the sampler stands: enough to resume at the same batch."""
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume at the batch recorded by :meth:`state_dict`."""
        self.epoch, self.position = state["epoch"], state["position"]
        self._order = self._permutation()


class _Prepared:
    """What every batch source does to a gathered batch on the device: the dataset's augmentation, drawn from a
    generator seeded by the run, then the memory format."""

    def __init__(self, splits: Splits, seed: int, device: torch.device, fmt: torch.memory_format) -> None:
        self.augment, self.fmt = splits.augment, fmt
        self.generator = torch.Generator(device).manual_seed(seed) if self.augment is not None else None

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if self.augment is None:
            return x
        return accel.to_memory_format(self.augment(x, generator=self.generator), self.fmt)


class Batches(_Prepared):
    """A run's training batches from data resident on the device: the next ``batch_size`` samples of its
    :class:`EpochSampler`, augmented by ``splits.augment`` (when the dataset has one) and in memory format ``fmt``."""

    def __init__(
        self, splits: Splits, batch_size: int, seed: int, fmt: torch.memory_format = torch.contiguous_format
    ) -> None:
        self.x, self.y = accel.to_memory_format(splits.train_x, fmt), splits.train_y  # once: gathers keep it
        super().__init__(splits, seed, self.x.device, fmt)
        self.sampler = EpochSampler(len(self.x), batch_size, seed, self.x.device)

    def next(self) -> Batch:
        """The next training batch ``(x, y)``."""
        indices = self.sampler.next()
        return self._prepare(self.x[indices]), self.y[indices]

    def state_dict(self) -> dict[str, Any]:
        """The sampler's position and the augmentation generator's state: enough to draw the same next batch."""
        generator = None if self.generator is None else self.generator.get_state()
        return {"sampler": self.sampler.state_dict(), "augment_rng": generator}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`."""
        self.sampler.load_state_dict(state["sampler"])
        if self.generator is not None:
            self.generator.set_state(state["augment_rng"].cpu())


class LoaderBatches(_Prepared):
    """Shuffled batches from a ``DataLoader`` with two worker processes over host tensors, copied to ``device``
    (from pinned memory on CUDA), then augmented and laid out as :class:`Batches` does: the input pipeline that
    resident data replace, for the benchmark. Not resumable."""

    def __init__(
        self, splits: Splits, batch_size: int, seed: int, device: torch.device, fmt: torch.memory_format
    ) -> None:
        loader = DataLoader(
            TensorDataset(splits.train_x.cpu(), splits.train_y.cpu()),
            batch_size=batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=2,
            persistent_workers=True,
            pin_memory=device.type == "cuda",
            generator=torch.Generator().manual_seed(seed),
        )
        self._batches: Iterator[Batch] = itertools.chain.from_iterable(itertools.repeat(loader))
        super().__init__(splits, seed, device, fmt)
        self.device = device

    def next(self) -> Batch:
        """The next training batch ``(x, y)`` on the device."""
        x, y = next(self._batches)
        x = accel.to_memory_format(x.to(self.device, non_blocking=True), self.fmt)
        return self._prepare(x), y.to(self.device, non_blocking=True)
