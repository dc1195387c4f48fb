"""The probe interface shared by every probe."""

from __future__ import annotations

import torch
from torch import nn


class Probe:
    """Base probe: both hooks measure nothing. Subclasses override what they measure."""

    during_training = True
    """False for a probe evaluated after training (from the final checkpoint): the training loop never calls it."""

    def on_batch(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: int, lr: float) -> dict[str, float]:
        """Measure on a training batch of optimizer step ``step`` (learning rate ``lr``) before the update.

        Called for every batch drawn: a probe that measures less often checks ``step`` itself.
        """
        return {}

    def on_eval(self, model: nn.Module, step: int) -> dict[str, float]:
        """Measure at an evaluation step."""
        return {}

    def state_dict(self) -> dict:
        """What the probe must carry across a checkpoint (nothing, for a stateless probe)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
