"""The in-memory train/test tensors every dataset loads into."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch


@dataclass
class Splits:
    """A dataset's train and test tensors; ``x`` is float, ``y`` holds class indices.

    ``augment``, when set, maps a batch of training inputs and a ``generator`` (keyword) to an augmented batch on
    the same device (e.g. CIFAR's pad-crop-flip, :func:`normexp.data.augment.pad_crop_flip`). Training batches get it
    from :class:`normexp.training.batches.Batches`, the one source every training loop draws from, with the run's
    own generator; evaluation data are never augmented.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample."""
        return tuple(self.train_x.shape[1:])

    def to(self, device: torch.device) -> Splits:
        """The same splits on ``device`` (data resident there: no loader between the data and the model)."""
        tensors = ("train_x", "train_y", "test_x", "test_y")
        return replace(self, **{name: getattr(self, name).to(device) for name in tensors})
