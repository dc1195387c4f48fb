"""Text data for language modelling: the fortunes reader on a generated fortunes folder, next-token windows, the
fixed split, vocabularies, user files, the missing-package error, the generated stand-in and the unigram plateau."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from normexp import data
from normexp.data import text
from normexp.data.splits import Splits
from normexp.errors import DataError
from normexp.probes.baselines import UnigramLoss


def text_cfg(**options) -> OmegaConf:
    base = {
        "name": "text",
        "root": "unused",
        "text_file": None,
        "download": False,
        "vocab": "byte",
        "seq_len": 4,
        "test_fraction": 0.25,
        "synthetic": False,
        "train_size": None,
        "test_size": None,
    }
    return OmegaConf.create(base | options)


@pytest.fixture
def fortunes_dir(tmp_path: Path, monkeypatch) -> Path:
    """Two fortune files as Debian lays them out: text with % separators, a .dat index and a .u8 link."""
    folder = tmp_path / "fortunes"
    folder.mkdir()
    (folder / "b").write_bytes(b"Second file.\n%\n")
    (folder / "a").write_bytes(b"One.\n%\nTwo\nlines.\n%\n")
    (folder / "a.dat").write_bytes(b"\x00\x02binary index")
    (folder / "a.u8").symlink_to(folder / "a")
    monkeypatch.setattr(text, "FORTUNES_DIR", folder)
    return folder


def test_fortunes_are_joined_by_blank_lines_without_separators_indexes_or_links(fortunes_dir: Path) -> None:
    assert text.fortunes_text(fortunes_dir) == b"One.\n\nTwo\nlines.\n\nSecond file.\n"


def test_windows_pair_each_token_with_the_next() -> None:
    x, y = text.windows(torch.arange(11), 3)
    assert x.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert y.tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]


def test_split_is_fixed_disjoint_and_complete() -> None:
    x, y = text.windows(torch.arange(401), 4)
    first, second = text.split(x, y, 0.25, 401), text.split(x, y, 0.25, 401)
    assert torch.equal(first.test_x, second.test_x)
    assert len(first.test_x) == 25 and len(first.train_x) == 75
    starts = set(first.train_x[:, 0].tolist()) | set(first.test_x[:, 0].tolist())
    assert starts == set(range(0, 400, 4))


def test_byte_and_char_vocabularies() -> None:
    ids, size = text.encode("héé".encode(), "byte")
    assert size == 256 and ids.tolist() == list("héé".encode())
    ids, size = text.encode("héé".encode(), "char")
    assert size == 2 and ids.tolist() == [0, 1, 1]


def test_offline_fortunes_load_as_byte_windows(fortunes_dir: Path) -> None:
    splits = data.load(text_cfg())
    stream = b"One.\n\nTwo\nlines.\n\nSecond file.\n"
    assert splits.num_classes == 256 and splits.input_shape == (4,)
    windows = {bytes(row) for row in torch.cat([splits.train_x, splits.test_x]).tolist()}
    assert windows == {stream[i : i + 4] for i in range(0, len(stream) - 4, 4)}


def test_a_user_text_file_replaces_the_fortunes(tmp_path: Path) -> None:
    path = tmp_path / "mine.txt"
    path.write_text("abcabcabcabcabcabc")
    splits = data.load(text_cfg(text_file=str(path), vocab="char"))
    assert splits.num_classes == 3
    assert torch.equal((splits.train_x[:, 1:] - splits.train_x[:, :-1]) % 3, torch.ones(len(splits.train_x), 3).long())


def test_missing_fortunes_say_how_to_install_them(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(text, "FORTUNES_DIR", tmp_path / "nothing")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataError, match="apt-get install fortunes"):
        data.check_available(text_cfg())
    with pytest.raises(DataError, match="not a file"):
        data.check_available(text_cfg(text_file=str(tmp_path / "absent.txt")))


def test_download_path_is_tiny_shakespeare_under_root(tmp_path: Path) -> None:
    cfg = text_cfg(download=True, root=str(tmp_path))
    assert text.corpus_path(cfg) == tmp_path / "tinyshakespeare" / "input.txt"
    assert "tinyshakespeare/input.txt" in text.SHAKESPEARE_URL
    data.check_available(cfg)  # a download is allowed to be pending


@pytest.mark.skipif(not text.FORTUNES_DIR.is_dir(), reason="Debian's fortunes package is not installed")
def test_the_installed_fortunes_corpus() -> None:
    splits = data.load(text_cfg(seq_len=64, test_fraction=0.1))
    assert len(splits.train_x) > 30000 and splits.train_x.dtype == torch.long
    assert b"%\n" not in bytes(splits.train_x[:100].flatten().tolist())


def test_synthetic_text_has_the_configured_shapes_and_bigram_structure() -> None:
    splits = data.load(text_cfg(synthetic=True, seq_len=16, train_size=32, test_size=8), seed=3)
    assert splits.train_x.shape == (32, 16) and splits.test_y.shape == (8, 16) and splits.num_classes == 256
    assert torch.equal(splits.train_x[:, 1:], splits.train_y[:, :-1])
    successors: dict[int, set[int]] = {}
    for a, b in zip(splits.train_x.flatten().tolist(), splits.train_y.flatten().tolist(), strict=True):
        successors.setdefault(a, set()).add(b)
    assert max(map(len, successors.values())) <= 4


def test_unigram_loss_is_the_test_cross_entropy_of_smoothed_train_frequencies() -> None:
    train_y = torch.tensor([[0, 0, 0, 1]])
    test_y = torch.tensor([[0, 1, 2, -100]])  # -100: padding, left out
    splits = Splits(train_y, train_y, test_y, test_y, num_classes=3)
    probe = UnigramLoss(model=None, splits=splits)
    p = {0: 4 / 7, 1: 2 / 7, 2: 1 / 7}  # add-one counts (3+1, 1+1, 0+1) over 4 + 3
    expected = -(math.log(p[0]) + math.log(p[1]) + math.log(p[2])) / 3
    assert probe.on_eval(None, 0) == {"probe/unigram_loss": pytest.approx(expected)}
    assert probe.on_eval(None, 25) == {}
