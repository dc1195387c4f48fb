"""The paper-scale translation path on a tiny generated parallel corpus: IWSLT14 preparation (fairseq's recipe),
the (source, target) packing, BLEU against sacrebleu on the words, and the encoder-decoder training end to end."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import sacrebleu
import torch
from omegaconf import OmegaConf

from normexp import data
from normexp.data.splits import Splits
from normexp.data.translation import BOS, EOS, PAD, UNK, pack
from normexp.errors import DataError
from normexp.probes.translation import Bleu
from normexp.tasks import IGNORE
from normexp.training.runner import train

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "prepare_iwslt14.py"


def load_script():
    spec = importlib.util.spec_from_file_location("prepare_iwslt14", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GERMAN = ["Das ist gut.", "Ich sehe dich!", "Wir gehen heim", "Ein sehr sehr langer Satz hier", "Hallo Welt"]
ENGLISH = ["That is good.", "I see you!", "We go home", "Short", "Hello world"]


@pytest.fixture
def raw_corpus(tmp_path: Path) -> Path:
    """The layout of de-en.tgz: tagged training transcripts and the five XML test sets, German and English."""
    raw = tmp_path / "de-en"
    raw.mkdir()
    prepare = load_script()
    for lang, sentences in (("de", GERMAN), ("en", ENGLISH)):
        lines = ["<url>http://ted.com/x</url>", "<talkid>1</talkid>", "<title>Titel</title>"]
        (raw / f"train.tags.de-en.{lang}").write_text("\n".join(lines + sentences * 10) + "\n")
        for name in prepare.TEST_SETS:
            segs = "\n".join(f'<seg id="{i}"> {s} </seg>' for i, s in enumerate(sentences[:2], start=1))
            (raw / f"IWSLT14.{name}.de-en.{lang}.xml").write_text(f"<mteval>\n<doc>\n{segs}\n</doc>\n</mteval>\n")
    return raw


def test_prepare_follows_fairseqs_recipe(raw_corpus: Path, tmp_path: Path) -> None:
    prepare = load_script()
    out = tmp_path / "iwslt14"
    counts = prepare.prepare(raw_corpus, out, vocab_size=12, max_tokens=5)
    # 1 title + 50 sentences per side; the 5-vs-1-token pair (ratio > 1.5, and > 5 tokens) is dropped: 41 pairs,
    # every 23rd held out as valid; the five test sets give 2 pairs each.
    assert counts == {"train": 40, "valid": 1, "test": 10}
    train_de = (out / "train.de").read_text().splitlines()
    assert train_de[0] == "titel" and train_de[1] == "das ist gut ."
    assert (out / "test.en").read_text().splitlines()[:2] == ["that is good .", "i see you !"]
    vocab = (out / "vocab.txt").read_text().split()
    assert len(vocab) == 12 and vocab[0] in {".", "!"}
    assert prepare.tokenize("Don’t, 3.5 Äpfel!") == ["don", "'", "t", ",", "3", ".", "5", "äpfel", "!"]


def test_prepared_corpus_loads_as_packed_pairs(raw_corpus: Path, tmp_path: Path) -> None:
    load_script().prepare(raw_corpus, tmp_path / "iwslt14", vocab_size=100, max_tokens=175)
    cfg = OmegaConf.create({"name": "iwslt14", "root": str(tmp_path), "seq_len": 8, "test_split": "test",
                            "synthetic": False, "train_size": None, "test_size": None})  # fmt: skip
    splits = data.load(cfg)
    assert splits.train_x.shape[1:] == (2, 8) and splits.test_y.shape == (10, 8)
    x, y = splits.test_x[0], splits.test_y[0]  # "das ist gut ." -> "that is good ."
    assert x[0, 4].item() == EOS and x[0, 5:].tolist() == [PAD] * 3
    assert x[1, 0].item() == BOS and torch.equal(x[1, 1:5], y[:4])
    assert y[4].item() == EOS and y[5:].tolist() == [IGNORE] * 3
    missing = OmegaConf.merge(cfg, {"root": str(tmp_path / "elsewhere")})
    with pytest.raises(DataError, match=r"prepare_iwslt14\.py"):
        data.check_available(missing)


def test_pack_truncates_to_the_window() -> None:
    x, y = pack([([5, 6, 7, 8], [9, UNK, 10, 11])], length=3)
    assert x.tolist() == [[[5, 6, EOS], [BOS, 9, UNK]]]
    assert y.tolist() == [[9, UNK, EOS]]


class Replay(torch.nn.Module):
    """A "model" whose greedy translations are fixed rows of ids."""

    def __init__(self, outputs: torch.Tensor) -> None:
        super().__init__()
        self.outputs = outputs

    def greedy(self, source: torch.Tensor, bos: int, eos: int, max_len: int) -> torch.Tensor:
        return self.outputs[: len(source)]


def test_bleu_on_ids_equals_sacrebleu_on_the_words() -> None:
    words = {4: "the", 5: "cat", 6: "sat", 7: "on", 8: "mat", 9: "a"}
    references = [[4, 5, 6, 7, 4, 8], [9, 5, 6]]
    hypotheses = [[4, 5, 6, 7, 9, 8], [9, 5, 7]]
    _, y = pack([([4], ref) for ref in references], length=8)
    splits = Splits(y, y, torch.zeros(2, 2, 8, dtype=torch.long), y, 10)
    rows = torch.full((2, 8), PAD)
    for i, hyp in enumerate(hypotheses):
        rows[i, : len(hyp) + 1] = torch.tensor([*hyp, EOS])
    measured = Bleu(Replay(rows), splits).on_eval(Replay(rows), step=0)["probe/bleu"]
    expected = sacrebleu.corpus_bleu(
        [" ".join(words[i] for i in hyp) for hyp in hypotheses],
        [[" ".join(words[i] for i in ref) for ref in references]],
    ).score
    assert measured == pytest.approx(expected) and 0 < measured < 100
    perfect = torch.cat([y[:, :-1].clamp(min=PAD), torch.full((2, 1), PAD)], dim=1)
    assert Bleu(Replay(perfect), splits).on_eval(Replay(perfect), 0)["probe/bleu"] == pytest.approx(100)


def test_encoder_decoder_trains_on_a_generated_corpus_and_reports_bleu(compose, tmp_path: Path) -> None:
    cfg = compose(
        "model=transformer_seq2seq", "norm=ln", "model.depth=1", "model.width=32", "model.ffn=64", "model.dropout=0.0",
        "data=iwslt14", "data.synthetic=true", "data.seq_len=10", "optim=adam", "optim.lr=3e-3",
        "train.steps=30", "train.batch_size=16", "+probes={bleu: {samples: 32}, unigram_loss: {}}",
    )  # fmt: skip
    summary = train(cfg, tmp_path / "run")
    assert summary["status"] == "completed"
    final = summary["final"]
    assert final["test/loss"] < final["probe/unigram_loss"] and 0 <= final["probe/bleu"] <= 100
