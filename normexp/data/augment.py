"""The standard image augmentation of He et al. 2016 (§4.2) as one batched op on the batch's device: pixels of
padding on each side, a random crop back to the image's size and a horizontal flip with probability 1/2
(torchvision's ``RandomCrop(H, padding)`` then ``RandomHorizontalFlip()``). CIFAR uses it with ``data.augment``, and
so does Fashion-MNIST, whose clothes keep their class when flipped (Li et al. 2018's CPU protocol trains with it).
"""

from __future__ import annotations

import torch

PADDING = 4
"""Pixels of padding before the random crop (He et al. 2016, §4.2)."""


def pad_crop_flip(
    images: torch.Tensor, padding: int, fill: list[float], generator: torch.Generator | None = None
) -> torch.Tensor:
    """Each image of ``(N, C, H, W)`` padded by ``padding`` pixels of ``fill`` (one value per channel), cropped back
    to H×W at a random offset and flipped left-right with probability 1/2: torchvision's
    ``RandomCrop(H, padding)`` then ``RandomHorizontalFlip()`` for a whole batch in one gather, on its device.

    Offsets and flips come from ``generator`` (on the batch's device; torch's global RNG when None): the training
    batches (:class:`normexp.training.batches.Batches`) pass the run's own, seeded by the run and saved by its
    checkpoints. ``fill`` is the padding value per channel: zero (black) pixels after standardization, ``−mean/std``.
    """
    n = len(images)
    offsets = torch.randint(0, 2 * padding + 1, (2, n), device=images.device, generator=generator)
    flips = torch.rand(n, device=images.device, generator=generator) < 0.5
    return crop_flip(images, padding, fill, offsets[0], offsets[1], flips)


def crop_flip(
    images: torch.Tensor, padding: int, fill: list[float], top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor
) -> torch.Tensor:
    """The deterministic part of :func:`pad_crop_flip`: per image, the H×W window at (``top``, ``left``) of the padded
    image, its columns reversed where ``flip``."""
    n, channels, height, width = images.shape
    fill_values = torch.tensor(fill, dtype=images.dtype, device=images.device).view(1, channels, 1, 1)
    padded = fill_values.expand(n, channels, height + 2 * padding, width + 2 * padding).clone()
    padded[:, :, padding : padding + height, padding : padding + width] = images
    rows = top[:, None] + torch.arange(height, device=images.device)  # (N, H)
    columns = left[:, None] + torch.arange(width, device=images.device)  # (N, W)
    columns = torch.where(flip[:, None], columns.flip(1), columns)  # a flipped crop reads its columns backwards
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    channel = torch.arange(channels, device=images.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], columns[:, None, None, :]]
