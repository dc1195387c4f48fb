"""CIFAR through torchvision on generated files in the official on-disk format, and the batched pad-crop-flip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torchvision import datasets
from torchvision.transforms.v2 import functional as tvf

from normexp import data
from normexp.config import CONFIG_DIR, compose_config
from normexp.data import generated
from normexp.data.augment import crop_flip, pad_crop_flip
from normexp.errors import DataError
from normexp.training.assemble import assemble
from normexp.training.batches import EpochSampler

SIZES = {datasets.CIFAR10: (10, 4), datasets.CIFAR100: (12, 5)}
"""Generated images per training file and in the test file."""


def write_cifar(root: Path, cls: type[datasets.CIFAR10], monkeypatch: pytest.MonkeyPatch) -> dict[str, dict]:
    """Generated pickles of ``cls`` that torchvision accepts (its md5 table set to theirs); the entries by name."""
    entries = generated.write_cifar(root, cls, *SIZES[cls])
    for name, value in generated.cifar_checksums(root, cls).items():
        monkeypatch.setattr(cls, name, value)
    return entries


def cifar_cfg(root: Path, name: str = "cifar10", **extra):
    defaults = {"download": False, "synthetic": False, "train_size": None, "test_size": None, "augment": False}
    return OmegaConf.create({"name": name, "root": str(root), **defaults, **extra})


@pytest.mark.parametrize(("name", "cls"), [("cifar10", datasets.CIFAR10), ("cifar100", datasets.CIFAR100)])
def test_generated_files_load_through_torchvision(tmp_path: Path, monkeypatch, name: str, cls) -> None:
    entries = write_cifar(tmp_path, cls, monkeypatch)
    splits = data.load(cifar_cfg(tmp_path, name))
    per_file, test_size = SIZES[cls]
    assert splits.train_x.shape == (per_file * len(cls.train_list), 3, 32, 32)
    assert splits.test_x.shape == (test_size, 3, 32, 32) and splits.train_x.dtype == torch.float32
    assert splits.num_classes == (10 if name == "cifar10" else 100)
    label_key = "labels" if name == "cifar10" else "fine_labels"
    assert splits.train_y.tolist() == [y for n, _ in cls.train_list for y in entries[n][label_key]]
    raw = np.concatenate([entries[n]["data"] for n, _ in cls.train_list]).reshape(-1, 3, 32, 32) / 255
    mean, std = raw.mean((0, 2, 3)), raw.std((0, 2, 3), ddof=1)
    expected = (raw - mean[None, :, None, None]) / std[None, :, None, None]
    np.testing.assert_allclose(splits.train_x.numpy(), expected, atol=1e-5)
    first_test = entries[cls.test_list[0][0]]["data"][0].reshape(3, 32, 32) / 255
    np.testing.assert_allclose(
        splits.test_x[0].numpy(), (first_test - mean[:, None, None]) / std[:, None, None], atol=1e-5
    )


def test_files_that_fail_torchvisions_md5_check_are_a_data_error(tmp_path: Path, monkeypatch) -> None:
    write_cifar(tmp_path, datasets.CIFAR10, monkeypatch)
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_3", "ab") as file:
        file.write(b"\0")
    with pytest.raises(DataError, match=r"md5.*data.download=true"):
        data.load(cifar_cfg(tmp_path))


def test_missing_files_are_a_data_error_naming_them_and_the_fix(tmp_path: Path) -> None:
    cfg = cifar_cfg(tmp_path / "empty")
    with pytest.raises(DataError, match=r"cifar-10-batches-py/data_batch_1.*data.download=true.*data.root"):
        data.check_available(cfg)
    with pytest.raises(DataError, match="cifar-10-batches-py/data_batch_1"):
        data.load(cfg)


def test_augment_is_attached_and_survives_subsetting_and_moving(tmp_path: Path, monkeypatch) -> None:
    entries = write_cifar(tmp_path, datasets.CIFAR10, monkeypatch)
    assert data.load(cifar_cfg(tmp_path)).augment is None
    splits = data.load(cifar_cfg(tmp_path, augment=True, train_size=20)).to(torch.device("cpu"))
    assert splits.augment is not None and len(splits.train_x) == 20
    assert splits.augment(splits.train_x[:8]).shape == (8, 3, 32, 32)
    raw = np.concatenate([entries[n]["data"] for n, _ in datasets.CIFAR10.train_list]).reshape(-1, 3, 32, 32) / 255
    fill = np.array(splits.augment.keywords["fill"])
    np.testing.assert_allclose(fill * raw.std((0, 2, 3), ddof=1) + raw.mean((0, 2, 3)), 0, atol=1e-5)  # black pixels


def reference_crop_flip(image: torch.Tensor, padding: int, fill: list[float], top: int, left: int, flip: bool):
    """torchvision's per-image ops: pad with a per-channel fill, crop, flip."""
    padded = torch.stack(
        [tvf.pad(channel[None], [padding], fill=value)[0] for channel, value in zip(image, fill, strict=True)]
    )
    crop = tvf.crop(padded, top, left, image.shape[1], image.shape[2])
    return tvf.horizontal_flip(crop) if flip else crop


def test_crop_flip_matches_torchvision_image_by_image() -> None:
    images = torch.randn(6, 3, 32, 32)
    fill = [-1.5, 0.25, 2.0]
    top, left = torch.tensor([0, 8, 4, 1, 7, 3]), torch.tensor([8, 0, 4, 6, 2, 5])
    flip = torch.tensor([False, True, False, True, True, False])
    out = crop_flip(images, 4, fill, top, left, flip)
    for i in range(6):
        expected = reference_crop_flip(images[i], 4, fill, int(top[i]), int(left[i]), bool(flip[i]))
        torch.testing.assert_close(out[i], expected, rtol=0, atol=0)


def test_pad_crop_flip_is_seeded_and_draws_every_offset_and_both_flips() -> None:
    images = torch.arange(16.0).view(1, 1, 4, 4).repeat(3000, 1, 1, 1)  # distinct pixels: the crop is identifiable
    torch.manual_seed(1)
    first = pad_crop_flip(images, 2, [-1.0])
    torch.manual_seed(1)
    assert torch.equal(first, pad_crop_flip(images, 2, [-1.0]))
    candidates = {
        (top, left, flip): crop_flip(
            images[:1], 2, [-1.0], torch.tensor([top]), torch.tensor([left]), torch.tensor([flip])
        )
        for top in range(5)
        for left in range(5)
        for flip in (False, True)
    }
    drawn = [next(key for key, crop in candidates.items() if torch.equal(crop[0], out)) for out in first]
    assert set(drawn) == set(candidates)  # all 25 offsets × 2 flips occur in 3000 draws
    assert abs(np.mean([flip for _, _, flip in drawn]) - 0.5) < 0.05


PAPER_AUGMENT = {
    "batchsize": True,  # He et al.'s recipe (Wu & He, Qiao et al.)
    "batchsize-budget": True,  # the batch-size grid's settings, over a ladder of budgets
    "li2018-skip": True,  # Li et al.'s CIFAR-10 training
    "li2018-norm": False,  # Santurkar et al.'s setup: no augmentation
    "qiao2019-ws-smoothness": False,
    "santurkar2018-noisy-bn": False,
    "santurkar2018-vgg": False,
}
"""Every experiment whose paper scale trains on CIFAR-10, and whether that paper augments."""


def test_every_cifar_experiment_is_listed() -> None:
    experiments = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml") if p.stem != "adhoc")
    on_cifar = [e for e in experiments if compose_config([f"experiment={e}", "scale=paper"]).data.name == "cifar10"]
    assert on_cifar == sorted(PAPER_AUGMENT)


@pytest.mark.parametrize(("experiment", "augment"), sorted(PAPER_AUGMENT.items()))
def test_paper_scale_loads_cifar10(tmp_path: Path, monkeypatch, experiment: str, augment: bool) -> None:
    write_cifar(tmp_path, datasets.CIFAR10, monkeypatch)
    cfg = compose_config([f"experiment={experiment}", "scale=paper", f"data.root={tmp_path}"])
    splits = data.load(cfg.data)
    assert splits.train_x.shape[1:] == (3, 32, 32) and splits.num_classes == 10
    assert (cfg.data.augment, splits.augment is not None) == (augment, augment)


@pytest.mark.parametrize(("experiment", "augment"), sorted(PAPER_AUGMENT.items()))
def test_paper_scale_cifar_runs_train_on_augmented_batches(
    tmp_path: Path, monkeypatch, experiment: str, augment: bool
) -> None:
    """The batches a paper-scale run trains on are pad-crop-flipped exactly where its paper augments: drawn from the
    run's assembly, compared with the same rows of the stored images."""
    write_cifar(tmp_path, datasets.CIFAR10, monkeypatch)
    overrides = [f"data.root={tmp_path}", "device=cpu", "train.batch_size=16", "train.norm_batch=null"]
    run = assemble(compose_config([f"experiment={experiment}", "scale=paper", *overrides]))
    rows = EpochSampler(len(run.splits.train_x), 16, run.cfg.seed).next()
    x, y = run.batches.next()
    assert torch.equal(y, run.splits.train_y[rows])
    assert torch.equal(x, run.splits.train_x[rows]) != augment
