"""Reference losses a model's test loss is read against.

:class:`UnigramLoss` is the plateau of Xiong et al.'s failure mode (docs/claims.md criterion 4a): a language model that
learns only how often each token occurs, ignoring its context, ends at the unigram entropy.
"""

from __future__ import annotations

import torch
from torch import nn

from normexp.data.splits import Splits
from normexp.probes.base import Probe
from normexp.tasks import IGNORE


class UnigramLoss(Probe):
    """The unigram plateau ``probe/unigram_loss``, recorded at step 0.

    The test cross-entropy, in nats per token, of the training targets' token frequencies (add-one smoothed, so a
    token unseen in training costs a finite loss; padding left out).
    """

    def __init__(self, model: nn.Module, splits: Splits) -> None:
        train, test = splits.train_y.flatten(), splits.test_y.flatten()
        counts = torch.bincount(train[train != IGNORE], minlength=splits.num_classes).double() + 1
        log_p = counts.log() - counts.sum().log()
        self.value = -log_p[test[test != IGNORE]].mean().item()

    def on_eval(self, model: nn.Module, step: int) -> dict[str, float]:
        """The unigram loss at step 0; nothing later (it does not change)."""
        return {"probe/unigram_loss": self.value} if step == 0 else {}
