"""Dataset files in their real on-disk formats, with generated contents: what the tests and the paper-scale slices
of ``scripts/paper_costs.py`` load through the real readers (torchvision, the IWSLT14 reader) without a download.

* MNIST-like IDX files (:func:`write_idx`, :func:`write_mnist`), in torchvision's ``<root>/<Class>/raw`` layout;
* CIFAR python pickles (:func:`write_cifar`), with :func:`cifar_checksums`: torchvision checks every file's md5
  against the official archive's, so generated files load only once its table lists theirs;
* the prepared IWSLT14 corpus that ``scripts/prepare_iwslt14.py`` leaves (:func:`write_iwslt14`).

Pixel values, labels and words are uniform random draws from a seeded generator: the files have the shapes, types
and sizes of the real ones, not their statistics.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from torchvision import datasets

from normexp.data.images import IDX_FILES
from normexp.data.translation import SOURCE, TARGET, prepared_dir


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file (the MNIST format: magic 0x0000080N, big-endian dims, uint8 data), gzipped if ``path`` ends
    in ``.gz``."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with (gzip.open if path.suffix == ".gz" else open)(path, "wb") as file:
        file.write(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, cls: type = datasets.MNIST, sizes: tuple[int, int] = (60000, 10000), seed: int = 0) -> None:
    """The four IDX files of ``cls`` (a torchvision MNIST-like class) in ``<root>/<Class>/raw``, ``sizes`` images."""
    raw = Path(root) / cls.__name__ / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images, labels = [name for name in IDX_FILES if "images" in name], [name for name in IDX_FILES if "labels" in name]
    for image_file, label_file, n in zip(images, labels, sizes, strict=True):
        write_idx(raw / image_file, rng.integers(0, 256, (n, 28, 28)))
        write_idx(raw / label_file, rng.integers(0, 10, n))


def write_cifar(root: Path, cls: type[datasets.CIFAR10], per_file: int, test_size: int, seed: int = 0) -> dict:
    """The python pickles of ``cls`` (torchvision's layout: ``data`` rows of 3072 channel-planar uint8 values),
    ``per_file`` images in each training file and ``test_size`` in the test file; returns the pickled entries by
    file name. torchvision accepts them once its md5 table is :func:`cifar_checksums`'s."""
    folder = Path(root) / cls.base_folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    label_key, classes = ("labels", 10) if cls is datasets.CIFAR10 else ("fine_labels", 100)
    entries = {}
    for name, size in [(n, per_file) for n, _ in cls.train_list] + [(n, test_size) for n, _ in cls.test_list]:
        labels = rng.integers(0, classes, size).tolist()
        entries[name] = {"data": rng.integers(0, 256, (size, 3072), dtype=np.uint8), label_key: labels}
        (folder / name).write_bytes(pickle.dumps(entries[name]))
    (folder / cls.meta["filename"]).write_bytes(pickle.dumps({cls.meta["key"]: [f"class{i}" for i in range(classes)]}))
    return entries


def cifar_checksums(root: Path, cls: type[datasets.CIFAR10]) -> dict[str, Any]:
    """``cls``'s md5 table (the class attributes ``train_list``, ``test_list``, ``meta``) for the files under
    ``root``: set them on ``cls`` (``unittest.mock.patch.multiple``, pytest's ``monkeypatch.setattr``) to load them."""
    folder = Path(root) / cls.base_folder

    def md5(name: str) -> str:
        return hashlib.md5((folder / name).read_bytes()).hexdigest()

    return {
        "train_list": [[n, md5(n)] for n, _ in cls.train_list],
        "test_list": [[n, md5(n)] for n, _ in cls.test_list],
        "meta": {**cls.meta, "md5": md5(cls.meta["filename"])},
    }


IWSLT14_SIZES = {"train": 160239, "valid": 7283, "test": 6750}
"""Pairs per split of fairseq's IWSLT14 De-En recipe (what ``scripts/prepare_iwslt14.py`` follows)."""


def write_iwslt14(
    root: Path,
    sizes: dict[str, int] = IWSLT14_SIZES,
    vocab_size: int = 32000,
    words: tuple[int, int] = (3, 50),
    seed: int = 0,
) -> Path:
    """The prepared corpus in ``<root>/iwslt14``: ``{train,valid,test}.{de,en}``, sentences of ``words`` tokens
    (uniform, both ends included) drawn from a ``vocab_size``-token ``vocab.txt``; returns the folder."""
    folder = prepared_dir(SimpleNamespace(root=str(root)))
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(vocab_size)]
    (folder / "vocab.txt").write_text("".join(f"{token}\n" for token in vocab), encoding="utf-8")
    for split, n in sizes.items():
        for lang in (SOURCE, TARGET):
            lengths = rng.integers(words[0], words[1] + 1, n)
            tokens = rng.integers(0, vocab_size, lengths.sum())
            lines = (" ".join(vocab[t] for t in sentence) for sentence in np.split(tokens, np.cumsum(lengths)[:-1]))
            (folder / f"{split}.{lang}").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return folder
