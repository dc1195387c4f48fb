"""Many small runs at once: the members of one grid cell (seeds, learning rates) trained as one vectorized model.

A micro-batch run leaves the hardware idle: its kernels are tiny and launch and dispatch costs dominate.
:class:`FusedRuns` stacks the members' parameters and buffers (``torch.func.stack_module_state``) and runs one
forward and backward for all of them through ``torch.func.vmap`` over ``functional_call``: linear layers become
batched matmuls, convolutions grouped convolutions, and every norm is computed per member, BatchNorm's batch
statistics and running estimates included (the buffers are stacked per member and updated in place).

Each member is the run it would be alone: assembled by :func:`normexp.training.assemble.assemble` from its config
(the same initialization, data and batches, augmentation included: each member draws from its own
:class:`~normexp.training.batches.Batches`), with the same loss, optimizer and lr schedule, and trained by the same
loop schedule (:mod:`normexp.training.loop`), which checkpoints each member into its own run folder in the form a
separate run's checkpoint has, and resumes the cell bit-identically. ``tests/test_fused.py`` checks the weights and
metrics against separate runs.

Members may differ in ``seed`` and ``optim.lr``. Optimizer updates are elementwise, so with one learning rate a
single optimizer over the stacked parameters updates each member exactly as its own would; with several, each
member's slices of the stacked parameters form a parameter group with the member's lr, so the arithmetic is the
separate runs' and the lr schedule applies to each group.

Switched on for a sweep by ``fuse=true`` (``normexp run -m ... fuse=true``, or ``normexp reproduce <claim> --override
fuse=true``): the sweep groups the grid's runs into cells that differ only in seed and lr and trains each with
:func:`normexp.training.runner.train_cell`, which writes every member's run folder as a separate run would (config,
metrics, checkpoint, summary with ``fused_members``), so aggregation and claims read fused runs like any others.

Not supported, and refused: probes; norms or layers that draw random numbers in the forward pass (``noisy_bn``,
``noise``, dropout > 0: vmap refuses random ops rather than silently sharing the noise).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.func import functional_call, stack_module_state, vmap
from torch.optim.lr_scheduler import LambdaLR

from normexp import norms, optim, tasks
from normexp.config import TrainConfig
from normexp.errors import ConfigError
from normexp.training.assemble import DeviceData, assemble
from normexp.training.loop import Metrics

MEMBER_KEYS = ("seed", "optim.lr")
"""Config keys whose values may differ between the members of a fused cell."""


def check_fusable(cfgs: Sequence[DictConfig]) -> None:
    """Raise a :class:`ConfigError` unless ``cfgs`` differ only in :data:`MEMBER_KEYS` and use nothing unsupported."""
    if not cfgs:
        raise ConfigError("no runs to fuse.", fix="pass the configs of one grid cell's seeds or learning rates")
    shared = [cell_key(cfg) for cfg in cfgs]
    if any(other != shared[0] for other in shared[1:]):
        raise ConfigError(
            f"fused runs may differ only in {', '.join(MEMBER_KEYS)}; these configs differ elsewhere.",
            fix="fuse the seeds or learning rates of one grid cell",
        )
    if cfgs[0].probes:
        raise ConfigError("fused runs do not call probes.", fix="run cells with probes one by one")
    if cfgs[0].fast_path != "none":
        raise ConfigError("fused runs take no fast-path switches.", fix="set fast_path=none")
    task = tasks.of(cfgs[0].data)
    if task.count is not tasks.element_count or task.label_smoothing:
        raise ConfigError(
            f"fused runs average every target element: task {task.name!r} (padding or label smoothing) is not "
            "supported.",
            fix="run this cell's runs one by one",
        )


def cell_key(cfg: DictConfig) -> str:
    """What the runs of one cell share: the config without :data:`MEMBER_KEYS`."""
    return repr(_without_member_keys(cfg))


def _without_member_keys(cfg: DictConfig) -> dict[str, Any]:
    tree = OmegaConf.to_container(cfg, resolve=True)
    del tree["seed"]
    del tree["optim"]["lr"]
    return tree


def _stacked(tensors: list[torch.Tensor]) -> torch.Tensor:
    """``tensors`` on a new first dim (a single one without a copy)."""
    return tensors[0].unsqueeze(0) if len(tensors) == 1 else torch.stack(tensors)


def _split_lists(state: dict[str, Any], member: int) -> dict[str, Any]:
    """A per-group state (a scheduler's, an optimizer group's lists) cut to member ``member``'s group."""
    return {key: [value[member]] if isinstance(value, list) else value for key, value in state.items()}


def _joined_lists(states: list[dict[str, Any]]) -> dict[str, Any]:
    """The inverse of :func:`_split_lists` over every member's state."""
    return {key: [s[key][0] for s in states] if isinstance(v, list) else v for key, v in states[0].items()}


def _map_stacked(entry: dict[str, Any], change: Callable[[str, torch.Tensor], torch.Tensor]) -> dict[str, Any]:
    """An optimizer's state of one stacked parameter with ``change(name, value)`` applied to every per-member tensor
    (those with a member dim; a scalar such as Adam's step is shared)."""
    return {name: change(name, v) if torch.is_tensor(v) and v.dim() else v for name, v in entry.items()}


class FusedRuns:
    """The members of one grid cell (configs differing in seed and optim.lr), trained together on one device: the
    stepper :mod:`normexp.training.loop` drives for a fused cell."""

    def __init__(self, cfgs: Sequence[DictConfig]) -> None:
        check_fusable(cfgs)
        shared = DeviceData()  # real data do not depend on the seed: one copy on the device
        members = [assemble(cfg, shared) for cfg in cfgs]
        first = members[0]
        self.cfg: TrainConfig = first.train
        self.size, self.device, self.task = len(members), first.device, first.task
        self.batches = [member.batches for member in members]
        distinct = {id(member.splits): member.splits for member in members}  # shared copies are one dataset
        which = [list(distinct).index(id(member.splits)) for member in members]
        self._which = torch.tensor(which, device=self.device)
        self.test_x = _stacked([splits.test_x for splits in distinct.values()])
        self.test_y = _stacked([splits.test_y for splits in distinct.values()])
        self._base = copy.deepcopy(first.model).to("meta")  # the architecture; weights come from the stacks
        self.params, self.buffers = stack_module_state([member.model for member in members])
        self._adopt_gradient_layouts()
        samples = self.cfg.batch_size * self.cfg.accumulate
        self.lrs = [optim.scaled_lr(cfg.optim, samples) for cfg in cfgs]
        self.optimizer, self.scheduler = self._build_optimizer(cfgs[0])
        self._loss_sum = torch.zeros(self.size, device=self.device)
        self._correct = torch.zeros(self.size, dtype=torch.long, device=self.device)
        self._seen = 0

    def _adopt_gradient_layouts(self) -> None:
        """Lay each stacked parameter out in memory as its gradient comes out of the vmapped backward (transposed,
        for linear layers), so autograd hands the gradient over instead of copying it, at every step.

        The layouts are read off one forward and backward on the first samples; BN's running statistics, which that
        forward moves, are restored.
        """
        saved = {name: buffer.clone() for name, buffer in self.buffers.items()}
        first = slice(0, self.cfg.batch_size)
        x = torch.stack([batches.x[first] for batches in self.batches])
        y = torch.stack([batches.y[first] for batches in self.batches])
        self._base.train()
        loss = self._member_losses(self.forward(x), y, "mean").sum()
        grads = torch.autograd.grad(loss, list(self.params.values()), allow_unused=True)  # as produced, unaccumulated
        with torch.no_grad():
            for name, buffer in self.buffers.items():
                buffer.copy_(saved[name])
            for (name, stack), grad in zip(list(self.params.items()), grads, strict=True):
                layout = stack.stride() if grad is None else grad.stride()
                relaid = torch.empty_strided(stack.shape, layout, dtype=stack.dtype, device=stack.device)
                self.params[name] = relaid.copy_(stack).requires_grad_()

    def _build_optimizer(self, cfg: DictConfig) -> tuple[torch.optim.Optimizer, LambdaLR]:
        """One parameter group over the stacks when every member has the same lr; else one group per member,
        holding views of its slices of the stacks (their gradients are set before each step)."""
        stacks = list(self.params.values())
        if len(set(self.lrs)) == 1:
            groups = [{"params": stacks, "lr": self.lrs[0]}]
            self._member_views: list[list[torch.Tensor]] = []
        else:
            self._member_views = [[stack.detach()[i] for stack in stacks] for i in range(self.size)]
            groups = [{"params": views, "lr": lr} for views, lr in zip(self._member_views, self.lrs, strict=True)]
        optimizer = optim.OPTIMIZERS[cfg.optim.name](groups, cfg.optim)
        return optimizer, LambdaLR(optimizer, optim.lr_factor(cfg.schedule, self.cfg.steps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's output for its inputs ``x`` of shape (members, batch, ...)."""

        def member(params: dict, buffers: dict, inputs: torch.Tensor) -> torch.Tensor:
            return functional_call(self._base, (params, buffers), (inputs,))

        return vmap(member, randomness="error")(self.params, self.buffers, x)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each member's next training batch from its own batches: (members, batch, ...) inputs and targets."""
        xs, ys = zip(*(batches.next() for batches in self.batches), strict=True)
        return _stacked(list(xs)), _stacked(list(ys))

    def train_step(self, step: int) -> list[list[Metrics]]:
        """Optimizer step ``step`` of every member, as :class:`normexp.training.loop.SingleRun` does it for one run."""
        cfg = self.cfg
        norms.set_global_step(self._base, step)
        for stack in self.params.values():  # not optimizer.zero_grad: with one group per member it holds views
            stack.grad = None
        self._base.train()
        samples = cfg.batch_size * cfg.accumulate
        for _ in range(cfg.accumulate):
            x, y = self.next_batch()
            chunk = cfg.norm_batch or cfg.batch_size
            for xs, ys in zip(x.split(chunk, dim=1), y.split(chunk, dim=1), strict=True):
                logits = self.forward(xs)
                losses = self._member_losses(logits, ys, "mean")
                (losses * ys.shape[1] / samples).sum().backward()  # members' losses are independent terms
                self._accumulate(losses, logits, ys)
        self._set_member_grads()
        self.optimizer.step()
        self.scheduler.step()
        return [[] for _ in range(self.size)]

    def _member_losses(self, output: torch.Tensor, target: torch.Tensor, reduction: str) -> torch.Tensor:
        """Each member's loss (``mean`` or ``sum`` over its targets' elements), from the task's elementwise loss:
        under vmap, torch runs cross-entropy as a slow Python decomposition."""
        per_element = self.task.loss(output, target, reduction="none").view(self.size, -1)
        return per_element.mean(1) if reduction == "mean" else per_element.sum(1)

    @torch.no_grad()
    def _accumulate(self, losses: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        count = targets[0].numel()
        self._loss_sum += losses.detach() * count
        if self.task.predict is not None:
            self._correct += vmap(self.task.correct)(logits, targets)
        self._seen += count

    def _set_member_grads(self) -> None:
        for i, views in enumerate(self._member_views):
            for view, stack in zip(views, self.params.values(), strict=True):
                view.grad = None if stack.grad is None else stack.grad[i]

    def training_metrics(self) -> list[Metrics]:
        """Each member's mean training loss (and accuracy) since the last call, and its current lr."""
        loss, correct = (self._loss_sum / self._seen).tolist(), (self._correct / self._seen).tolist()
        lrs = [group["lr"] for group in self.optimizer.param_groups]
        lrs = lrs * self.size if len(lrs) == 1 else lrs
        self._loss_sum.zero_()
        self._correct.zero_()
        self._seen = 0
        return [
            {"train/loss": loss[i], "lr": lrs[i]} | ({"train/acc": correct[i]} if self.task.predict else {})
            for i in range(self.size)
        ]

    @torch.no_grad()
    def evaluate(self, step: int) -> list[Metrics]:
        """Each member's mean test loss (and accuracy) per target, in eval mode and in batches, as a separate run's."""
        self._base.eval()
        loss, correct = torch.zeros(self.size, device=self.device), torch.zeros_like(self._correct)
        batch = self.cfg.eval_batch_size
        for start in range(0, self.test_x.shape[1], batch):
            x, y = self.test_x[self._which, start : start + batch], self.test_y[self._which, start : start + batch]
            logits = self.forward(x)
            loss += self._member_losses(logits, y, "sum")
            if self.task.predict is not None:
                correct += vmap(self.task.correct)(logits, y)
        targets = self.test_y[0].numel()
        losses, accuracies = (loss / targets).tolist(), (correct / targets).tolist()
        return [
            {"test/loss": losses[i]} | ({"test/acc": accuracies[i]} if self.task.predict else {})
            for i in range(self.size)
        ]

    def member_state_dict(self, member: int) -> dict[str, torch.Tensor]:
        """Member ``member``'s parameters and buffers under the model's own names (a ``state_dict`` of the net)."""
        return {name: stack[member].detach().clone() for name, stack in (self.params | self.buffers).items()}

    def member_state(self, member: int) -> dict[str, Any]:
        """Member ``member``'s share of the cell's state, in the form of a separate run's (its model's state dict,
        its optimizer's and scheduler's, its batches', its accumulated metrics)."""
        optimizer, scheduler = self.optimizer.state_dict(), self.scheduler.state_dict()
        if self._member_views:  # one group per member: its group, its parameters' states renumbered from 0
            group = optimizer["param_groups"][member]
            keys = group["params"]
            state = {index: optimizer["state"][key] for index, key in enumerate(keys) if key in optimizer["state"]}
            groups, scheduler = [{**group, "params": list(range(len(keys)))}], _split_lists(scheduler, member)
        else:  # one group over the stacks: each state tensor sliced (a scalar, Adam's step, is every member's)
            state = {
                key: _map_stacked(entry, lambda name, v: v[member].clone()) for key, entry in optimizer["state"].items()
            }
            groups = optimizer["param_groups"]
        return {
            "model": self.member_state_dict(member),
            "optimizer": {"state": state, "param_groups": groups},
            "scheduler": scheduler,
            "batches": self.batches[member].state_dict(),
            "probes": [],
            "accumulated": {
                "loss_sum": self._loss_sum[member].clone(),
                "correct": self._correct[member].clone(),
                "seen": self._seen,
            },
        }

    @torch.no_grad()
    def load_member_states(self, states: list[dict[str, Any]]) -> None:
        """Continue from every member's :meth:`member_state`."""
        for name, stack in (self.params | self.buffers).items():
            stack.copy_(torch.stack([state["model"][name] for state in states]))
        optimizers = [state["optimizer"] for state in states]
        if self._member_views:
            count = len(self.params)
            merged = {m * count + i: entry for m, o in enumerate(optimizers) for i, entry in o["state"].items()}
            renumbered = [[m * count + i for i in range(count)] for m in range(self.size)]
            groups = [{**o["param_groups"][0], "params": keys} for o, keys in zip(optimizers, renumbered, strict=True)]
            scheduler = _joined_lists([state["scheduler"] for state in states])
        else:
            entries = [o["state"] for o in optimizers]
            merged = {
                key: _map_stacked(entry, lambda name, v, key=key: torch.stack([e[key][name] for e in entries]))
                for key, entry in entries[0].items()
            }
            groups, scheduler = optimizers[0]["param_groups"], states[0]["scheduler"]
        self.optimizer.load_state_dict({"state": merged, "param_groups": groups})
        self.scheduler.load_state_dict(scheduler)
        for batches, state in zip(self.batches, states, strict=True):
            batches.load_state_dict(state["batches"])
        self._loss_sum.copy_(torch.stack([state["accumulated"]["loss_sum"] for state in states]))
        self._correct.copy_(torch.stack([state["accumulated"]["correct"] for state in states]))
        self._seen = states[0]["accumulated"]["seen"]
        norms.set_global_step(self._base, states[0]["step"])
