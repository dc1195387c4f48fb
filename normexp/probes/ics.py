"""Internal covariate shift per layer, as Santurkar et al. (2018, arXiv 1805.11604, §2.2 Def. 2.1, Fig. 5) define
it, as a probe (``probes: {ics: {...}}``).

For layer i at step t: G = ∇_{W_i} L with every layer at its step-t weights, and G′ = ∇_{W_i} L on the *same batch*
after the layers before i have taken their update (plain gradient descent with the step's lr: the paper's SGD).
The shift is ‖G − G′‖₂ (``ics/<layer>/l2``) and cos(G, G′) (``ics/<layer>/cos``); a network without ICS has
G′ = G, ℓ2 0 and cosine 1.

A layer is a module; W_i are its parameters (weight and bias; with ``ws`` the raw weight). "The layers before i"
are the parameters registered before the layer's first one in ``model.named_parameters()`` — the forward order
for the sequential models here — norm affine parameters included. Measured in training mode on the probed batch
through :class:`~normexp.probes.functional.FunctionalModel`, so training is not touched.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from normexp import tasks
from normexp.data.splits import Splits
from normexp.errors import ConfigError
from normexp.probes.functional import FunctionalModel, Params, PeriodicProbe, flat, untouched

WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
"""The modules measured when no layers are named."""


def layer_parameters(function: FunctionalModel, layer: str) -> list[str]:
    """The names of ``layer``'s parameters among ``function.params``, in order."""
    return [name for name in function.params if name.startswith(f"{layer}.")]


def shifted_gradients(function: FunctionalModel, lr: float, layers: Sequence[str]) -> dict[str, tuple[Params, Params]]:
    """Per layer, (G, G′): its gradient at the current weights, and after the layers before it took an SGD step."""
    _, grad = function.loss_and_grad(function.params)
    order = list(function.params)
    pairs = {}
    for layer in layers:
        own = layer_parameters(function, layer)
        first = order.index(own[0])
        earlier = {name: grad[name] for name in order[:first]}
        _, shifted = function.loss_and_grad(_sgd_step(function.params, earlier, lr), wrt=own)
        pairs[layer] = ({name: grad[name] for name in own}, shifted)
    return pairs


def _sgd_step(params: Params, grads: Params, lr: float) -> Params:
    """``params`` with the entries in ``grads`` moved by −lr·grad, the others unchanged."""
    return {name: p - lr * grads[name] if name in grads else p for name, p in params.items()}


def shift_metrics(layer: str, before: Params, after: Params) -> dict[str, float]:
    """``ics/<layer>/l2`` = ‖G − G′‖₂ and ``ics/<layer>/cos`` = cos(G, G′)."""
    g, g_shifted = flat(before), flat(after)
    return {
        f"ics/{layer}/l2": (g - g_shifted).norm().item(),
        f"ics/{layer}/cos": torch.nn.functional.cosine_similarity(g, g_shifted, dim=0).item(),
    }


class ICSProbe(PeriodicProbe):
    """Santurkar et al. (2018)'s ICS of each of ``layers`` (module names; default: every linear/conv layer)
    every ``every`` steps; the loss is that of the run's ``task`` (``data.task``, see :mod:`normexp.tasks`).

    The update of the earlier layers is a plain SGD step with the step's lr whatever the optimizer: with momentum
    or Adam, the measured shift is that of the gradient step, not of the optimizer's actual update.
    """

    def __init__(
        self,
        model: nn.Module,
        splits: Splits,
        task: tasks.Task,
        every: int = 100,
        layers: Sequence[str] | None = None,
    ) -> None:
        super().__init__(every)
        modules = dict(model.named_modules())
        self.layers = list(layers) if layers else [n for n, m in modules.items() if isinstance(m, WEIGHT_LAYERS)]
        trainable = {name for name, p in model.named_parameters() if p.requires_grad}
        unknown = [n for n in self.layers if n not in modules or not any(p.startswith(f"{n}.") for p in trainable)]
        if unknown:
            raise ConfigError(
                f"probe ics: {unknown} name no module with trainable parameters.",
                choices=[n for n, m in modules.items() if isinstance(m, WEIGHT_LAYERS)][:40],
                fix="set probes.ics.layers to module names such as these",
            )
        self.loss = task.loss

    def on_batch(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: int, lr: float) -> dict[str, float]:
        """ℓ2 and cosine of each layer's gradient shift on this batch, before the update (on due steps)."""
        if not self.due(step):
            return {}
        with untouched(model):
            model.train()
            pairs = shifted_gradients(FunctionalModel(model, x, y, self.loss), lr, self.layers)
        return {key: value for layer, (g, g2) in pairs.items() for key, value in shift_metrics(layer, g, g2).items()}
