"""Activation probes.

:class:`InputPercentiles` is Ioffe & Szegedy (2015), Fig. 1b/c: the 15th, 50th and 85th percentiles, over a fixed
set of test inputs, of the input to one nonlinearity, i.e. the output of the module before it (the norm, which is
the linear layer's output itself when the norm is ``none``). With BN this is y = γx̂ + β, as PAPERS.md asks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from normexp.data.splits import Splits
from normexp.errors import ConfigError
from normexp.probes.base import Probe


class InputPercentiles(Probe):
    """Percentiles of unit ``unit`` of ``module``'s output over the first ``samples`` test inputs, in eval mode.

    Metrics: ``probe/p<q>`` for each percentile q.
    """

    def __init__(
        self,
        model: nn.Module,
        splits: Splits,
        module: str = "hidden.2.norm",
        unit: int = 0,
        samples: int = 1000,
        percentiles: Sequence[float] = (15, 50, 85),
    ) -> None:
        names = dict(model.named_modules())
        if module not in names:
            raise ConfigError(
                f"probe input_percentiles: the model has no module {module!r}.",
                choices=[name for name in names if name][:40],
                fix="set probes.input_percentiles.module to one of these names",
            )
        self.module, self.unit = names[module], unit
        self.inputs = splits.test_x[:samples]
        self.quantiles = torch.tensor([q / 100 for q in percentiles], device=self.inputs.device)
        self.names = [f"probe/p{q:g}" for q in percentiles]

    def on_eval(self, model: nn.Module, step: int) -> dict[str, float]:
        """The percentiles of the unit's values over the probe inputs."""
        captured: list[torch.Tensor] = []
        handle = self.module.register_forward_hook(lambda _m, _i, output: captured.append(output[:, self.unit]))
        try:
            with torch.no_grad():
                model(self.inputs)
        finally:
            handle.remove()
        values = torch.quantile(captured[0].float(), self.quantiles).tolist()
        return dict(zip(self.names, values, strict=False))
