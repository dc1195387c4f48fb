"""Many small runs at once: the members of one grid cell (seeds, learning rates) trained as one vectorized model.

A micro-batch run leaves the hardware idle: its kernels are tiny and launch and dispatch costs dominate.
:class:`FusedRuns` stacks the members' parameters and buffers (``torch.func.stack_module_state``) and runs one
forward and backward for all of them through ``torch.func.vmap`` over ``functional_call``: linear layers become
batched matmuls, convolutions grouped convolutions, and every norm is computed per member, BatchNorm's batch
statistics and running estimates included (the buffers are stacked per member and updated in place).

Each member is the run :func:`normexp.runner.train` would do with its config: the same initialization (the model
is built right after seeding with the member's seed), the same batches (its own ``EpochSampler``; its own data
when generated data depend on the seed), the same loss, optimizer and lr schedule. ``tests/test_fused.py`` checks
the weights and metrics after several steps against separate runner runs.

Members may differ in ``seed`` and ``optim.lr``. Optimizer updates are elementwise, so with one learning rate a
single optimizer over the stacked parameters updates each member exactly as its own would; with several, each
member's slices of the stacked parameters form a parameter group with the member's lr, so the arithmetic is the
separate runs' and the lr schedule applies to each group.

Switched on for a sweep by ``fuse=true`` (``normexp run -m ... fuse=true``, or ``normexp reproduce <claim> --override
fuse=true``): :func:`normexp.sweep.launch` groups the grid's runs into cells that differ only in seed and lr and
trains each with :func:`train_cell`, which writes every member's run folder as the runner would (config, metrics,
summary with ``fused_members``), so aggregation and claims read fused runs like any others.

Not supported, and refused: probes; norms or layers that draw random numbers in the forward pass (``noisy_bn``,
``noise``, dropout > 0: vmap refuses random ops rather than silently sharing the noise); data augmentation (the
draws would differ from separate runs). There are no checkpoints: a fused cell is small and an interrupted one
restarts from scratch.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from torch.optim.lr_scheduler import LambdaLR
from tqdm import tqdm

from normexp import checkpoint, data, models, norms, optim, runner, tasks
from normexp.config import TrainConfig, norm_options
from normexp.data.splits import Splits
from normexp.errors import ConfigError
from normexp.rundir import METRICS_LOG

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
    if cfgs[0].data.get("augment"):
        raise ConfigError("fused runs do not augment (draws would differ).", fix="set data.augment=false")
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


def _stacked(tensors: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """``tensors`` on a new first dim, on ``device`` (a single one without a host copy)."""
    return (tensors[0].unsqueeze(0) if len(tensors) == 1 else torch.stack(tensors)).to(device)


def _find_or_add(distinct: list[Splits], splits: Splits) -> int:
    """The index of the dataset in ``distinct`` equal to ``splits``, appending ``splits`` when there is none."""
    names = ("train_x", "train_y", "test_x", "test_y")
    for index, seen in enumerate(distinct):
        if all(torch.equal(getattr(seen, name), getattr(splits, name)) for name in names):
            return index
    distinct.append(splits)
    return len(distinct) - 1


class FusedRuns:
    """The members of one grid cell (configs differing in seed and optim.lr), trained together on one device."""

    def __init__(self, cfgs: Sequence[DictConfig]) -> None:
        check_fusable(cfgs)
        first = cfgs[0]
        self.cfg: TrainConfig = OmegaConf.to_object(first.train)
        self.size = len(cfgs)
        self.device = runner.select_device(first.device)
        if first.threads:
            torch.set_num_threads(first.threads)
        runner.set_deterministic(first.deterministic)
        member_models, distinct_data, which = [], [], []
        for cfg in cfgs:
            model, splits = self._build_member(cfg)
            member_models.append(model)
            which.append(_find_or_add(distinct_data, splits))  # real data do not depend on the seed: one copy
        self._init_data(distinct_data, which)
        self._base = copy.deepcopy(member_models[0]).to("meta")  # the architecture; weights come from the stacks
        self.params, self.buffers = stack_module_state(member_models)
        self.task = tasks.of(first.data)
        self._adopt_gradient_layouts()
        self.samplers = [
            data.EpochSampler(len(self.train_x[0]), self.cfg.batch_size, cfg.seed, self.device) for cfg in cfgs
        ]
        samples = self.cfg.batch_size * self.cfg.accumulate
        self.lrs = [optim.scaled_lr(cfg.optim, samples) for cfg in cfgs]
        self.optimizer, self.scheduler = self._build_optimizer(first)
        self.step_count = 0
        self._loss_sum = torch.zeros(self.size, device=self.device)
        self._correct = torch.zeros(self.size, dtype=torch.long, device=self.device)
        self._seen = 0

    def _build_member(self, cfg: DictConfig) -> tuple[nn.Module, Splits]:
        """One member's model (on the device) and data (on the host), built in the runner's order, so the seed
        gives the runner's initialization."""
        runner.seed_everything(cfg.seed)
        splits = data.load(cfg.data, seed=cfg.seed)
        spec = norms.NormSpec.parse(**norm_options(cfg))
        model = models.build(cfg.model, spec, splits.input_shape, splits.num_classes).to(self.device)
        norms.data_dependent_init(model, splits.train_x[: cfg.train.batch_size].to(self.device))
        return model, splits

    def _init_data(self, distinct: list[Splits], which: list[int]) -> None:
        """The distinct datasets stacked on the device, and which of them each member trains on."""
        names = ("train_x", "train_y", "test_x", "test_y")
        self.train_x, self.train_y, self.test_x, self.test_y = (
            _stacked([getattr(splits, name) for splits in distinct], self.device) for name in names
        )
        self._which = torch.tensor(which, device=self.device)

    def _adopt_gradient_layouts(self) -> None:
        """Lay each stacked parameter out in memory as its gradient comes out of the vmapped backward (transposed,
        for linear layers), so autograd hands the gradient over instead of copying it, at every step.

        The layouts are read off one forward and backward on the first samples; BN's running statistics, which that
        forward moves, are restored.
        """
        saved = {name: buffer.clone() for name, buffer in self.buffers.items()}
        x, y = self.train_x[self._which, : self.cfg.batch_size], self.train_y[self._which, : self.cfg.batch_size]
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
        """Each member's next training batch from its own sampler: (members, batch, ...) inputs and targets."""
        indices = torch.stack([sampler.next() for sampler in self.samplers])
        rows = self._which[:, None]
        return self.train_x[rows, indices], self.train_y[rows, indices]

    def train_step(self) -> None:
        """One optimizer step of every member, as the runner's ``_train_step`` does it for one run."""
        cfg, step = self.cfg, self.step_count + 1
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
        self.step_count = step

    def _member_losses(self, output: torch.Tensor, target: torch.Tensor, reduction: str) -> torch.Tensor:
        """Each member's loss (``mean`` or ``sum`` over its targets' elements), from the task's elementwise loss:
        under vmap, torch runs cross-entropy as a slow Python decomposition."""
        per_element = self.task.loss(output, target, reduction="none").view(self.size, -1)
        return per_element.mean(1) if reduction == "mean" else per_element.sum(1)

    @torch.no_grad()
    def _accumulate(self, losses: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        count = targets[0].numel()
        self._loss_sum += losses.detach() * count
        if self.task.correct is not None:
            self._correct += vmap(self.task.correct)(logits, targets)
        self._seen += count

    def _set_member_grads(self) -> None:
        for i, views in enumerate(self._member_views):
            for view, stack in zip(views, self.params.values(), strict=True):
                view.grad = None if stack.grad is None else stack.grad[i]

    def training_metrics(self) -> list[dict[str, float]]:
        """Each member's mean training loss (and accuracy) since the last call, and its current lr."""
        loss, correct = (self._loss_sum / self._seen).tolist(), (self._correct / self._seen).tolist()
        lrs = [group["lr"] for group in self.optimizer.param_groups]
        lrs = lrs * self.size if len(lrs) == 1 else lrs
        self._loss_sum.zero_()
        self._correct.zero_()
        self._seen = 0
        return [
            {"train/loss": loss[i], "lr": lrs[i]} | ({"train/acc": correct[i]} if self.task.correct else {})
            for i in range(self.size)
        ]

    @torch.no_grad()
    def evaluate(self) -> list[dict[str, float]]:
        """Each member's mean test loss (and accuracy) per target, in eval mode and in batches, as the runner's."""
        self._base.eval()
        loss, correct = torch.zeros(self.size, device=self.device), torch.zeros_like(self._correct)
        batch = self.cfg.eval_batch_size
        for start in range(0, self.test_x.shape[1], batch):
            x, y = self.test_x[self._which, start : start + batch], self.test_y[self._which, start : start + batch]
            logits = self.forward(x)
            loss += self._member_losses(logits, y, "sum")
            if self.task.correct is not None:
                correct += vmap(self.task.correct)(logits, y)
        targets = self.test_y[0].numel()
        losses, accuracies = (loss / targets).tolist(), (correct / targets).tolist()
        return [
            {"test/loss": losses[i]} | ({"test/acc": accuracies[i]} if self.task.correct else {})
            for i in range(self.size)
        ]

    def member_state_dict(self, index: int) -> dict[str, torch.Tensor]:
        """Member ``index``'s parameters and buffers under the model's own names (a ``state_dict`` of the net)."""
        return {name: stack[index] for name, stack in (self.params | self.buffers).items()}


def train_cell(cfgs: Sequence[DictConfig], run_dirs: Sequence[Path]) -> list[dict[str, Any]]:
    """Train one cell's runs together; write each one's run folder as :func:`normexp.runner.train` would (same
    records at the same steps, summary with ``fused_members``; the cell's wall time is every member's) and return
    their summaries. A member whose training loss diverges ends ``diverged`` at that step and is recorded no more;
    the others go on. A failure marks every member ``failed`` and propagates."""
    for cfg, run_dir in zip(cfgs, run_dirs, strict=True):
        runner.start(cfg, run_dir)
        for stale in (METRICS_LOG, checkpoint.CHECKPOINT_FILE):  # an earlier, unfinished separate run's
            (run_dir / stale).unlink(missing_ok=True)
    fused = FusedRuns(cfgs)
    train_cfg = fused.cfg
    records = [runner.Record(train_cfg.target_acc) for _ in cfgs]
    for record, cfg, run_dir in zip(records, cfgs, run_dirs, strict=True):
        record.open(cfg, run_dir)
    ended: dict[int, str] = {}  # member -> why it diverged
    last_step = [0] * fused.size
    status, started = "failed", time.perf_counter()
    bar = tqdm(total=train_cfg.steps, disable=not train_cfg.progress or None, unit="step", desc=f"{fused.size} runs")
    try:
        _write(records, fused.evaluate(), 0, ended)
        with bar:
            for step in range(1, train_cfg.steps + 1):
                fused.train_step()
                bar.update()
                due: list[dict[str, float]] = [{} for _ in cfgs]
                if step % train_cfg.log_every == 0 or step == train_cfg.steps:
                    for member, metrics in enumerate(fused.training_metrics()):
                        due[member] |= metrics
                        why = runner.divergence(metrics["train/loss"], step, train_cfg.diverge_loss)
                        if why and member not in ended:  # recorded as the runner does, then no more
                            records[member].write(metrics, step)
                            ended[member], last_step[member] = why, step
                if step % train_cfg.eval_every == 0 or step == train_cfg.steps:
                    for member, metrics in enumerate(fused.evaluate()):
                        due[member] |= metrics
                _write(records, due, step, ended)
                last_step = [last_step[m] if m in ended else step for m in range(fused.size)]
                if len(ended) == fused.size:
                    break
        status = "completed"
    finally:
        elapsed = time.perf_counter() - started
        errors = [ended.get(m, None if status == "completed" else "the fused cell failed") for m in range(fused.size)]
        summaries = [
            runner.finish(
                cfg,
                run_dir,
                record,
                "diverged" if member in ended else status,
                errors[member],
                last_step[member],
                elapsed,
                last_step[member],
                fused.device,
                fused_members=fused.size,
            )
            for member, (cfg, run_dir, record) in enumerate(zip(cfgs, run_dirs, records, strict=True))
        ]
    return summaries


def _write(records: list[runner.Record], metrics: list[dict[str, float]], step: int, ended: dict[int, str]) -> None:
    """Record each member's ``metrics`` at ``step``, except members that have ended."""
    for member, (record, values) in enumerate(zip(records, metrics, strict=True)):
        if values and member not in ended:
            record.write(values, step)
