"""Gradient probes.

:class:`GradientNorms` is Xiong et al. (2020), §3.3 and Fig. 3: the gradient norms of the FFN weights of a
Transformer at initialization, over several mini-batches. Measured at step 0, before any update, so an experiment
that only wants the initialization runs ``train.steps: 1``.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from normexp.data.splits import Splits
from normexp.errors import ConfigError
from normexp.probes.base import Probe
from normexp.tasks import cross_entropy


class GradientNorms(Probe):
    """Gradient norms of each FFN's second weight W² at initialization (Xiong et al. 2020, Fig. 3), at step 0.

    Per weight matching ``weights`` (a regex on parameter names, in registration order: layer 0 is the first),
    over ``batches`` training mini-batches of ``batch_size`` samples:

    * ``grad/norm/<layer>``: the mean over batches of ‖∇W‖_F (Fig. 3a plots it for the last layer's W²);
    * ``grad/expected_norm/<layer>``: ‖E_batches[∇W]‖_F, the norm of the mean gradient (Fig. 3b/c).

    The batches come from the probe's own generator (``seed``) and the model is in eval mode (no dropout, as in the
    paper's analysis), so the run's weights, gradients and RNG streams are untouched.
    """

    def __init__(
        self,
        model: nn.Module,
        splits: Splits,
        weights: str = r"(layers|encoder|decoder)\.\d+\.linear2\.weight",
        batches: int = 8,
        batch_size: int = 16,
        seed: int = 0,
    ) -> None:
        pattern = re.compile(weights)
        self.names = [name for name, _ in model.named_parameters() if pattern.fullmatch(name)]
        if not self.names:
            raise ConfigError(
                f"probe grad_norms: no parameter matches {weights!r}.",
                choices=[name for name, _ in model.named_parameters()][:40],
                fix="set probes.grad_norms.weights to a regex matching some of these names",
            )
        generator = torch.Generator().manual_seed(seed)
        self.batches = torch.randint(len(splits.train_x), (batches, batch_size), generator=generator)
        self.splits = splits

    def on_eval(self, model: nn.Module, step: int) -> dict[str, float]:
        """At step 0 (initialization), the two norms of each matched weight; nothing later."""
        if step != 0:
            return {}

        parameters = dict(model.named_parameters())
        weights = [parameters[name] for name in self.names]
        total = [torch.zeros_like(w) for w in weights]
        norms = torch.zeros(len(weights), device=weights[0].device)
        training = model.training
        model.eval()
        try:
            with torch.enable_grad():
                for indices in self.batches.to(self.splits.train_x.device):
                    x, y = self.splits.train_x[indices], self.splits.train_y[indices]
                    grads = torch.autograd.grad(cross_entropy(model(x), y), weights)
                    for running, grad in zip(total, grads, strict=True):
                        running += grad
                    norms += torch.stack([grad.norm() for grad in grads])
        finally:
            model.train(training)
        count = len(self.batches)
        metrics = {f"grad/norm/{layer}": value / count for layer, value in enumerate(norms.tolist())}
        return metrics | {f"grad/expected_norm/{layer}": (s / count).norm().item() for layer, s in enumerate(total)}
