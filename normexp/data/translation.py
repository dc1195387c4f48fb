"""Translation pairs for the encoder–decoder Transformer: IWSLT14 De-En as ``scripts/prepare_iwslt14.py`` leaves it.

The prepared folder (``<data.root>/iwslt14``) holds ``{train,valid,test}.{de,en}``, one lowercased, tokenized
sentence per line, and ``vocab.txt``, the joint vocabulary, one token per line. Token ids: :data:`PAD`,
:data:`BOS`, :data:`EOS`, :data:`UNK`, then the vocabulary in file order. Each pair becomes

* x (2, L): row 0 the source followed by EOS, row 1 BOS followed by the target (the decoder's input), PAD-filled;
* y (L,): the target followed by EOS, :data:`IGNORE` at padding (cross-entropy skips it).

Training pairs longer than L − 1 tokens on either side are dropped (fairseq drops them too); test pairs are
truncated, so BLEU is always over the whole test set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from normexp.data.splits import Splits
from normexp.errors import DataError
from normexp.tasks import IGNORE

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
SOURCE, TARGET = "de", "en"


def prepared_dir(cfg: Any) -> Path:
    """Where ``scripts/prepare_iwslt14.py`` writes the prepared corpus by default."""
    return Path(cfg.root).expanduser() / "iwslt14"


def check_iwslt14(cfg: Any) -> None:
    """Raise a :class:`DataError` with the fix when the prepared corpus is missing."""
    folder = prepared_dir(cfg)
    missing = [name for name in ("vocab.txt", f"train.{SOURCE}", f"test.{TARGET}") if not (folder / name).exists()]
    if missing:
        raise DataError(
            f"IWSLT14 De-En is not prepared: {', '.join(missing)} missing in {folder}.",
            fix=f"run `python scripts/prepare_iwslt14.py --out {folder}` on a machine with internet",
        )


def read_vocab(path: Path) -> dict[str, int]:
    """Token -> id, the special tokens first."""
    tokens = [*SPECIALS, *path.read_text(encoding="utf-8").split("\n")]
    return {token: i for i, token in enumerate(t for t in tokens if t)}


def to_ids(line: str, vocab: dict[str, int]) -> list[int]:
    """The ids of a tokenized line, UNK for tokens outside the vocabulary."""
    return [vocab.get(token, UNK) for token in line.split()]


def pack(pairs: list[tuple[list[int], list[int]]], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs of id lists -> x (N, 2, L) and y (N, L) as the module docstring lays them out (truncating to fit)."""
    x = torch.full((len(pairs), 2, length), PAD, dtype=torch.long)
    y = torch.full((len(pairs), length), IGNORE, dtype=torch.long)
    for i, (source, target) in enumerate(pairs):
        source, target = [*source[: length - 1], EOS], target[: length - 1]
        x[i, 0, : len(source)] = torch.tensor(source)
        x[i, 1, : len(target) + 1] = torch.tensor([BOS, *target])
        y[i, : len(target) + 1] = torch.tensor([*target, EOS])
    return x, y


def read_pairs(folder: Path, split: str, vocab: dict[str, int]) -> list[tuple[list[int], list[int]]]:
    """The id pairs of ``<split>.de`` / ``<split>.en``."""
    sides = [(folder / f"{split}.{lang}").read_text(encoding="utf-8").splitlines() for lang in (SOURCE, TARGET)]
    return [(to_ids(s, vocab), to_ids(t, vocab)) for s, t in zip(*sides, strict=True)]


def load_iwslt14(cfg: Any) -> Splits:
    """Train and test pairs of the prepared corpus (test: ``data.test_split``, ``test`` or ``valid``)."""
    check_iwslt14(cfg)
    folder = prepared_dir(cfg)
    vocab = read_vocab(folder / "vocab.txt")
    train = [p for p in read_pairs(folder, "train", vocab) if max(map(len, p)) < cfg.seq_len]
    test = read_pairs(folder, cfg.test_split, vocab)
    return Splits(*pack(train, cfg.seq_len), *pack(test, cfg.seq_len), len(vocab))


def synthesize_pairs(cfg: Any, train_size: int, test_size: int, seed: int) -> Splits:
    """Generated stand-in: random "sentences" over 60 words; the "translation" is the reversed sentence with
    every word replaced by a fixed other word (learnable, needs attention over the source)."""
    generator = torch.Generator().manual_seed(seed)
    words = 60
    dictionary = (torch.randperm(words, generator=generator) + len(SPECIALS)).tolist()
    pairs = []
    for _ in range(train_size + test_size):
        count = int(torch.randint(2, cfg.seq_len - 1, (1,), generator=generator))
        source = (torch.randint(words, (count,), generator=generator) + len(SPECIALS)).tolist()
        pairs.append((source, [dictionary[w - len(SPECIALS)] for w in reversed(source)]))
    x, y = pack(pairs, cfg.seq_len)
    return Splits(x[:train_size], y[:train_size], x[train_size:], y[train_size:], words + len(SPECIALS))
