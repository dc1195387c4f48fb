"""Evaluating a model at other parameter values without touching it: what the landscape and ICS probes share.

Probing is measurement only (docs/claims.md §3): it must leave the weights, the norms' running statistics and the RNG
streams exactly as training left them. :class:`FunctionalModel` evaluates the loss and its gradient at any
parameter values through ``torch.func.functional_call``: the model's parameters are never written, each call runs
on fresh copies of the buffers (a BN forward in training mode updates the copies, not the model), and each call
replays the RNG state captured when the probe began, so a noisy norm draws the *same* noise at every point — the
noise the training step itself will draw on this batch. :func:`untouched` restores the model's mode and the RNG
streams when the probe ends.

Parameter sets are plain ``{name: tensor}`` dicts in ``model.named_parameters()`` order (the forward order of the
sequential models here); :func:`axpy`, :func:`norm` and :func:`flat` are the vector algebra the probes need.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn
from torch.func import functional_call

from normexp.errors import ConfigError
from normexp.probes.base import Probe

Params = dict[str, torch.Tensor]


def _cuda_devices(model: nn.Module) -> list[torch.device]:
    return sorted({p.device for p in model.parameters() if p.device.type == "cuda"}, key=str)


@contextmanager
def untouched(model: nn.Module) -> Iterator[None]:
    """Within the block the probe may switch modes and draw random numbers: on exit, ``model.training`` and the
    torch RNG streams (CPU, and the CUDA devices the model lives on) are what they were on entry."""
    was_training = model.training
    try:
        with torch.random.fork_rng(devices=_cuda_devices(model)):
            yield
    finally:
        model.train(was_training)


class FunctionalModel:
    """``model`` as a function of its parameters on one batch ``(x, y)``, in the mode the model is in.

    ``loss(output, target)`` is the training loss (a :class:`normexp.tasks.Task`'s ``loss``). :attr:`params` holds
    the current trainable parameters (detached views: never modify them in place).
    """

    def __init__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: Callable[..., torch.Tensor] | None = None
    ) -> None:
        self.model, self.x, self.y, self.loss = model, x, y, loss
        self.params: Params = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
        self.buffers: Params = dict(model.named_buffers())
        self._devices = _cuda_devices(model)
        self._rng = torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in self._devices]

    def _replay_rng(self) -> None:
        cpu, cuda = self._rng
        torch.set_rng_state(cpu)
        for device, state in zip(self._devices, cuda, strict=True):
            torch.cuda.set_rng_state(state, device)

    def forward(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The model's output on ``x`` at ``params`` (gradients flow to ``params``)."""
        self._replay_rng()
        buffers = {name: b.clone() for name, b in self.buffers.items()}
        return functional_call(self.model, {**params, **buffers}, (self.x,))

    def loss_and_grad(
        self, params: Mapping[str, torch.Tensor], wrt: Iterable[str] | None = None
    ) -> tuple[float, Params]:
        """The loss at ``params`` and its gradient with respect to the parameters ``wrt`` (default: all)."""
        wrt = list(params if wrt is None else wrt)
        leaves = {name: params[name].detach().requires_grad_(True) for name in wrt}
        loss = self.loss(self.forward({**params, **leaves}), self.y)
        grads = torch.autograd.grad(loss, list(leaves.values()))
        return loss.item(), dict(zip(wrt, grads, strict=True))


def axpy(alpha: float, x: Mapping[str, torch.Tensor], y: Mapping[str, torch.Tensor]) -> Params:
    """``alpha·x + y`` entry by entry, over ``y``'s entries (entries missing from ``x`` are copied from ``y``)."""
    return {name: y[name] + alpha * x[name] if name in x else y[name] for name in y}


def flat(params: Mapping[str, torch.Tensor], names: Iterable[str] | None = None) -> torch.Tensor:
    """The entries ``names`` (default: all) concatenated into one float64 vector."""
    names = list(params if names is None else names)
    return torch.cat([params[name].detach().reshape(-1).double() for name in names])


def norm(params: Mapping[str, torch.Tensor]) -> float:
    """The ℓ2 norm of a parameter set taken as one vector."""
    return flat(params).norm().item()


class PeriodicProbe(Probe):
    """A probe that measures on the first batch of steps 1, 1 + every, 1 + 2·every, ... (step 1: at init)."""

    def __init__(self, every: int) -> None:
        if every < 1:
            raise ConfigError(f"a probe's `every` must be a positive number of steps, got {every}.", fix="every: 100")
        self.every = every
        self._last = 0

    def due(self, step: int) -> bool:
        """Whether to measure on this batch (only the first batch of a step when gradients accumulate)."""
        if (step - 1) % self.every or step == self._last:
            return False
        self._last = step
        return True
