"""The probe interface shared by every probe."""

from __future__ import annotations

import torch
from torch import nn


class Probe:
    """Base probe: both hooks measure nothing. Subclasses override what they measure."""

    def on_batch(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: int) -> dict[str, float]:
        """Measure on the training batch of ``step`` before the update."""
        return {}

    def on_eval(self, model: nn.Module, step: int) -> dict[str, float]:
        """Measure at an evaluation step."""
        return {}
