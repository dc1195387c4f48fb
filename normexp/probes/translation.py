"""Translation quality: corpus BLEU of greedy decoding, the metric of Xiong et al. (2020)'s IWSLT14 results.

BLEU is computed by ``sacrebleu`` on token ids written as words with ``tokenize="none"``. That equals tokenized
BLEU on the prepared (lowercased, tokenized) text, since n-gram matches do not depend on how a token is spelled;
an unknown word (UNK) counts as a word, as in fairseq's tokenized BLEU for IWSLT14.
"""

from __future__ import annotations

import torch
from torch import nn

from normexp.data.splits import Splits
from normexp.data.translation import BOS, EOS, PAD
from normexp.errors import ConfigError
from normexp.probes.base import Probe
from normexp.tasks import IGNORE


def as_words(ids: torch.Tensor) -> str:
    """A row of token ids as a sentence: the ids before the first EOS, padding left out, joined by spaces."""
    words = []
    for token in ids.tolist():
        if token == EOS:
            break
        if token not in (PAD, IGNORE):
            words.append(str(token))
    return " ".join(words)


class Bleu(Probe):
    """Corpus BLEU of greedy translations (``probe/bleu``, 0-100), at every evaluation.

    Over the first ``samples`` test sources; decoding stops at EOS or after the test window's length.
    """

    def __init__(self, model: nn.Module, splits: Splits, samples: int = 1000, batch_size: int = 100) -> None:
        try:
            import sacrebleu
        except ImportError:
            raise ConfigError("probe bleu needs the package sacrebleu.", fix="pip install sacrebleu") from None
        if not callable(getattr(model, "greedy", None)):
            raise ConfigError(
                f"probe bleu needs a translation model with greedy decoding, not {type(model).__name__}.",
                fix="use model.name=transformer_seq2seq, or drop probes.bleu",
            )
        self.corpus_bleu = sacrebleu.corpus_bleu
        self.sources = splits.test_x[:samples, 0]
        self.references = [as_words(row) for row in splits.test_y[:samples]]
        self.batch_size = batch_size

    def on_eval(self, model: nn.Module, step: int) -> dict[str, float]:
        """BLEU (0-100) of the model's current greedy translations."""
        max_len = self.sources.shape[1]
        hypotheses = [
            as_words(row)
            for chunk in self.sources.split(self.batch_size)
            for row in model.greedy(chunk, bos=BOS, eos=EOS, max_len=max_len)
        ]
        return {"probe/bleu": self.corpus_bleu(hypotheses, [self.references], tokenize="none").score}
