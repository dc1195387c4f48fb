"""Activation probes.

:class:`InputPercentiles` is Ioffe & Szegedy (2015), Fig. 1b/c: the 15th, 50th and 85th percentiles, over a fixed
set of test inputs, of the input to one nonlinearity, i.e. the output of the module before it (the norm, which is
the linear layer's output itself when the norm is ``none``). With BN this is y = γx̂ + β, as docs/claims.md asks.

:class:`ActivationStats` is Santurkar et al. (2018, arXiv 1805.11604), Fig. 2/7: how the distribution of a unit's
activations moves over training, measured on the training batch in training mode, where noisy BN's noise acts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from normexp.data.splits import Splits
from normexp.errors import ConfigError
from normexp.probes.base import Probe
from normexp.probes.functional import FunctionalModel, PeriodicProbe, untouched


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


def _modules(model: nn.Module, names: Sequence[str], probe: str) -> dict[str, nn.Module]:
    """The modules ``names`` of ``model``, or a :class:`ConfigError` listing the valid names."""
    modules = dict(model.named_modules())
    unknown = [name for name in names if name not in modules]
    if unknown or not names:
        raise ConfigError(
            f"probe {probe}: the model has no module {unknown or names!r}.",
            choices=[name for name in modules if name][:40],
            fix=f"set probes.{probe}.modules to names such as these",
        )
    return {name: modules[name] for name in names}


class ActivationStats(PeriodicProbe):
    """Mean and variance of channel ``unit`` of each of ``modules``' outputs (over the batch and any spatial
    positions) on the training batch, in training mode, every ``every`` steps.

    Metrics: ``act/<module>/mean`` and ``act/<module>/var`` (biased). Their movement over steps is the drift the
    noisy-BN experiment looks at; the forward pass runs through
    :class:`~normexp.probes.functional.FunctionalModel`, so a noisy norm draws the noise of this very step and
    neither the running statistics nor the RNG streams of training change.
    """

    def __init__(
        self, model: nn.Module, splits: Splits, modules: Sequence[str] = (), unit: int = 0, every: int = 100
    ) -> None:
        super().__init__(every)
        self.modules, self.unit = _modules(model, list(modules), "activation_stats"), unit

    def on_batch(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: int, lr: float) -> dict[str, float]:
        """The unit's mean and variance per module on this batch (on due steps)."""
        if not self.due(step):
            return {}
        captured: dict[str, torch.Tensor] = {}

        def keep(name: str):
            return lambda _module, _inputs, output: captured.__setitem__(name, output[:, self.unit].detach())

        handles = [module.register_forward_hook(keep(name)) for name, module in self.modules.items()]
        try:
            with untouched(model), torch.no_grad():
                model.train()
                function = FunctionalModel(model, x, y)
                function.forward(function.params)
        finally:
            for handle in handles:
                handle.remove()
        metrics = {}
        for name, values in captured.items():
            var, mean = torch.var_mean(values.double(), correction=0)
            metrics |= {f"act/{name}/mean": mean.item(), f"act/{name}/var": var.item()}
        return metrics
