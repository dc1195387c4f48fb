"""Byte- or character-level language modelling on real English text, as next-token windows held in memory.

Where the text comes from (``data.text_file`` wins over ``data.download``, which wins over the offline default):

* offline default: the plain-text fortune files of Debian's ``fortunes`` package (``/usr/share/games/fortunes``,
  2.7 MB of English quips, quotes and poems); the ``.dat`` index files and the ``.u8`` links to the same files are
  skipped, and the ``%`` lines that separate fortunes become blank lines;
* ``data.text_file: PATH``: any text file;
* ``data.download: true``: tiny-shakespeare (Karpathy's char-rnn corpus, 1.1 MB), downloaded once into ``data.root``.

The token stream (UTF-8 bytes, vocabulary 256; or the text's characters, ``data.vocab: char``) is cut into
non-overlapping windows of ``seq_len + 1`` tokens: x is a window without its last token, y without its first, so
the runner's cross-entropy over the last dim is the next-token loss in nats per token. A fixed shuffle (seed 0,
independent of the run's seed) sends ``test_fraction`` of the windows to the test split, so both splits sample
every part of the corpus.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import torch

from normexp.data.splits import Splits
from normexp.errors import ConfigError, DataError

FORTUNES_DIR = Path("/usr/share/games/fortunes")
SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
BYTE_VOCAB = 256
SPLIT_SEED = 0
"""The split's shuffle seed: the same train/test windows for every run."""


def fortunes_text(folder: Path) -> bytes:
    """The fortune files of ``folder`` in name order, fortunes separated by blank lines instead of ``%`` lines."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.is_symlink() and p.suffix != ".dat")
    fortunes = []
    for path in files:
        fortunes += [f.strip(b"\n") for f in path.read_bytes().split(b"\n%\n")]
    return b"\n\n".join(f for f in fortunes if f.strip(b"\n%")) + b"\n"


def corpus_path(cfg: Any) -> Path | None:
    """The text file the config names (``text_file``, or the downloaded corpus); None for the fortunes."""
    if cfg.get("text_file"):
        return Path(cfg.text_file).expanduser()
    if cfg.download:
        return Path(cfg.root).expanduser() / "tinyshakespeare" / "input.txt"
    return None


def check_text(cfg: Any) -> None:
    """Raise a :class:`DataError` with the fix when the configured text is not at hand (a download is fine)."""
    if cfg.get("text_file"):
        if not corpus_path(cfg).is_file():
            raise DataError(f"data.text_file={cfg.text_file} is not a file.", fix="point data.text_file at a text file")
    elif not cfg.download and not any(FORTUNES_DIR.glob("*.dat")):
        raise DataError(
            f"the fortunes corpus is not installed ({FORTUNES_DIR} holds no fortune files).",
            fix="`apt-get install fortunes` (Debian/Ubuntu), or set data.text_file=PATH to any text file",
        )


def read_corpus(cfg: Any) -> bytes:
    """The raw bytes of the configured text, downloading tiny-shakespeare first when asked to."""
    check_text(cfg)
    path = corpus_path(cfg)
    if path is None:
        return fortunes_text(FORTUNES_DIR)
    if not path.exists():  # only the downloaded corpus can be missing after check_text
        _download(SHAKESPEARE_URL, path)
    return path.read_bytes()


def _download(url: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    try:
        urllib.request.urlretrieve(url, partial)
    except OSError as error:
        raise DataError(
            f"could not download {url}: {error}.", fix="check the internet connection, or set data.text_file=PATH"
        ) from None
    partial.replace(path)


def encode(raw: bytes, vocab: str) -> tuple[torch.Tensor, int]:
    """Token ids of ``raw`` and the vocabulary size: UTF-8 bytes (256) or the sorted characters of the text."""
    if vocab == "byte":
        return torch.frombuffer(bytearray(raw), dtype=torch.uint8).long(), BYTE_VOCAB
    if vocab == "char":
        text = raw.decode("utf-8", errors="replace")
        alphabet = {char: i for i, char in enumerate(sorted(set(text)))}
        return torch.tensor([alphabet[c] for c in text], dtype=torch.long), len(alphabet)
    raise ConfigError(f"unknown data.vocab {vocab!r}.", choices=["byte", "char"], fix="set data.vocab=byte")


def windows(ids: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-overlapping next-token windows: x (N, seq_len) and y = x shifted by one token."""
    count = (len(ids) - 1) // seq_len
    starts = torch.arange(count) * seq_len
    index = starts[:, None] + torch.arange(seq_len + 1)
    chunks = ids[index]
    return chunks[:, :-1], chunks[:, 1:]


def split(x: torch.Tensor, y: torch.Tensor, test_fraction: float, num_classes: int) -> Splits:
    """A fixed shuffle of the windows (seed :data:`SPLIT_SEED`), ``test_fraction`` of them to the test split."""
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(SPLIT_SEED))
    test = order[: round(test_fraction * len(x))]
    train = order[len(test) :]
    return Splits(x[train], y[train], x[test], y[test], num_classes)


def load_text(cfg: Any) -> Splits:
    """The configured corpus as next-token windows (see the module docstring)."""
    ids, num_classes = encode(read_corpus(cfg), cfg.vocab)
    if len(ids) <= cfg.seq_len:
        raise DataError(f"the text has {len(ids)} tokens, fewer than data.seq_len={cfg.seq_len}.", fix="use more text")
    return split(*windows(ids, cfg.seq_len), cfg.test_fraction, num_classes)


def synthesize_text(cfg: Any, train_size: int, test_size: int, seed: int) -> Splits:
    """Generated stand-in: windows of a random bigram Markov chain over 256 tokens, 4 likely successors each.

    Learnable like text: the unigram distribution is near-uniform (about ln 256 nats) while the next token given
    the current one has about ln 4 nats of entropy.
    """
    generator = torch.Generator().manual_seed(seed)
    successors = torch.randint(BYTE_VOCAB, (BYTE_VOCAB, 4), generator=generator).tolist()
    length = (train_size + test_size) * cfg.seq_len + 1
    ids = [0]
    for choice in torch.randint(4, (length - 1,), generator=generator).tolist():
        ids.append(successors[ids[-1]][choice])
    x, y = windows(torch.tensor(ids), cfg.seq_len)
    return Splits(x[:train_size], y[:train_size], x[train_size:], y[train_size:], BYTE_VOCAB)
