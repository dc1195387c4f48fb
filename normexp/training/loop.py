"""The one loop schedule, driving a stepper: a single run (:class:`SingleRun`) or a fused cell's members
(:class:`normexp.training.fused.FusedRuns`).

A plain loop a reader can hold in mind: step, and every ``log_every`` steps record the training metrics, every
``eval_every`` steps evaluate on the test set (and the probes), every ``checkpoint_every`` steps, at the end and
when a stop signal arrives (SIGTERM, SIGUSR1, submitit's SIGUSR2, Ctrl-C: :func:`normexp.checkpoint.stop_signals`)
checkpoint. A run whose training loss turns non-finite or exceeds ``train.diverge_loss`` ends ``diverged`` at that
step and is recorded no more; a fused cell's other members go on. Metrics accumulate on the device and are read
back only when recorded, so a GPU is not synchronized every step.

A stepper advances ``size`` runs by one optimizer step at a time and keeps each run's share of its state apart
(:meth:`Stepper.member_state`): every run gets a checkpoint of the same form, fused or not, and resumes
bit-identically (on CPU) from it.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable
from typing import Any, Protocol

import torch
from omegaconf import DictConfig
from torch import nn
from tqdm import tqdm

from normexp import accel, checkpoint, norms, tasks, tracking
from normexp.config import TrainConfig
from normexp.rundir import MetricsLog, resolved_config
from normexp.training.assemble import Run

Metrics = dict[str, float]


class Interrupted(Exception):
    """A stop signal arrived; the runs were checkpointed and can resume."""

    def __init__(self, message: str, preemption: checkpoint.Preemption) -> None:
        super().__init__(message)
        self.preemption = preemption


class Stepper(Protocol):
    """What the loop drives: ``size`` runs advanced one optimizer step at a time, each run's metrics and state."""

    size: int
    cfg: TrainConfig  # the loop's knobs, shared by a fused cell's members
    device: torch.device

    def train_step(self, step: int) -> list[list[Metrics]]:
        """Optimizer step ``step`` of every run; per run, the measurements (probes) to record at ``step``."""

    def training_metrics(self) -> list[Metrics]:
        """Per run, the mean training loss (and accuracy) since the last call, and the lr."""

    def evaluate(self, step: int) -> list[Metrics]:
        """Per run, the test metrics (and the probes') at ``step``."""

    def member_state(self, member: int) -> dict[str, Any]:
        """Run ``member``'s share of the state: model, optimizer, scheduler, batches, probes, accumulated metrics."""

    def load_member_states(self, states: list[dict[str, Any]]) -> None:
        """Continue from every run's :meth:`member_state`."""


def divergence(loss: float, step: int, bound: float) -> str | None:
    """Why a run with training loss ``loss`` at ``step`` has diverged (non-finite, or above ``bound``), or None."""
    if math.isfinite(loss) and loss <= bound:
        return None
    return f"training loss {loss:.4g} at step {step} (bound train.diverge_loss={bound})"


BEST = {"test/acc": max, "test/loss": min}
"""Metrics whose best value over training is kept, and what "best" means for each."""


class Record:
    """What a run records: every metric to its log and tracker, and the last value of each, the best test metrics
    and the first evaluation step with ``test/acc >= target_acc`` for its summary."""

    def __init__(self, target_acc: float | None) -> None:
        self.target_acc = target_acc
        self.log: MetricsLog | None = None
        self.tracker: tracking.Tracker = tracking.Tracker()
        self.last_metrics: Metrics = {}
        self.best: Metrics = {}
        self.steps_to_target: int | None = None

    def open(self, cfg: DictConfig, run_dir: Any) -> None:
        """Start writing to ``run_dir``'s metrics log (appending) and to the tracker ``cfg.logger`` names."""
        self.log = MetricsLog(run_dir)
        self.tracker = tracking.build(resolved_config(cfg), run_dir)

    def write(self, metrics: Metrics, step: int) -> None:
        """Record ``metrics`` measured at ``step``."""
        if not metrics:
            return
        self.log.write(step, metrics)
        self.tracker.log(metrics, step)
        finite = {k: v for k, v in metrics.items() if math.isfinite(v)}
        self.last_metrics |= finite
        for name in BEST.keys() & finite.keys():
            self.best[name] = BEST[name](self.best.get(name, finite[name]), finite[name])
        target = self.target_acc
        if target is not None and self.steps_to_target is None and finite.get("test/acc", -math.inf) >= target:
            self.steps_to_target = step

    def state_dict(self) -> dict[str, Any]:
        """The summary's state, for a checkpoint."""
        return {"last_metrics": self.last_metrics, "best": self.best, "steps_to_target": self.steps_to_target}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`."""
        self.last_metrics, self.best = dict(state["last_metrics"]), dict(state["best"])
        self.steps_to_target = state["steps_to_target"]


class Loop:
    """The schedule's state: the step, each run's record, which runs diverged (at which step, and why)."""

    def __init__(self, stepper: Stepper, records: list[Record]) -> None:
        self.stepper, self.cfg, self.records = stepper, stepper.cfg, records
        self.step = self.trained_steps = 0
        self.elapsed = 0.0  # wall seconds spent training, over every segment of a resumed run
        self.diverged: dict[int, tuple[int, str]] = {}  # run -> (step, why)

    def run(self, save_checkpoint: Callable[[], None], preempted: checkpoint.Preemption) -> None:
        """Evaluate at step 0 (unless resuming), then train up to ``train.steps`` steps or until every run diverged;
        raise :class:`Interrupted` after checkpointing when a stop signal arrived."""
        cfg, size = self.cfg, self.stepper.size
        bar = tqdm(
            total=cfg.steps,
            initial=self.step,
            disable=not cfg.progress or None,
            dynamic_ncols=True,
            unit="step",
            desc=f"{size} runs" if size > 1 else None,
        )
        started = time.perf_counter() - self.elapsed
        with bar:
            if self.step == 0:
                self._write(self.stepper.evaluate(0), bar)
            while self.step < cfg.steps and len(self.diverged) < size:
                step = self.step + 1
                for member, measured in enumerate(self.stepper.train_step(step)):
                    for metrics in measured:
                        self._write_member(member, metrics, step)
                self.step, self.trained_steps = step, self.trained_steps + 1
                bar.update()
                due: list[Metrics] = [{} for _ in range(size)]
                if step % cfg.log_every == 0 or step == cfg.steps:
                    due = self._training_metrics(step)
                if len(self.diverged) < size and (step % cfg.eval_every == 0 or step == cfg.steps):
                    due = [mine | tested for mine, tested in zip(due, self.stepper.evaluate(step), strict=True)]
                self._write(due, bar)
                self.elapsed = time.perf_counter() - started
                if len(self.diverged) == size:
                    break
                periodic = cfg.checkpoint_every and step % cfg.checkpoint_every == 0
                if step == cfg.steps or preempted.is_set() or periodic:
                    save_checkpoint()
                if preempted.is_set():  # even after the last step: the signal is still handed on
                    names = "+".join(signal.Signals(sig).name for sig in preempted.signals)
                    raise Interrupted(f"{names} at step {self.step}; checkpoint saved", preempted)

    def _training_metrics(self, step: int) -> list[Metrics]:
        """Each run's training metrics; a run that diverges now has them recorded, and then nothing more."""
        metrics = self.stepper.training_metrics()
        for member, mine in enumerate(metrics):
            why = divergence(mine["train/loss"], step, self.cfg.diverge_loss)
            if why and member not in self.diverged:
                self._write_member(member, mine, step)
                self.diverged[member] = (step, why)
        return metrics

    def _write(self, metrics: list[Metrics], bar: tqdm) -> None:
        """Record each run's ``metrics`` at the current step, except runs that diverged; show a single run's."""
        if not any(metrics):  # most steps: nothing is due
            return
        for member, mine in enumerate(metrics):
            self._write_member(member, mine, self.step)
        last = self.records[0].last_metrics
        if self.stepper.size == 1 and "train/loss" in last:
            bar.set_postfix(loss=f"{last['train/loss']:.3f}", acc=f"{last.get('test/acc', 0):.3f}")

    def _write_member(self, member: int, metrics: Metrics, step: int) -> None:
        if member not in self.diverged:
            self.records[member].write(metrics, step)

    def steps(self, member: int) -> int:
        """The steps run ``member`` has trained: the loop's, or those up to its divergence."""
        return self.diverged[member][0] if member in self.diverged else self.step

    def status(self, member: int) -> tuple[str, str | None]:
        """Run ``member``'s status once the loop has returned, and why it diverged."""
        return ("diverged", self.diverged[member][1]) if member in self.diverged else ("completed", None)

    def member_checkpoint(self, member: int) -> dict[str, Any]:
        """Everything run ``member`` needs to continue exactly where it stands."""
        return {
            "step": self.step,
            "elapsed": self.elapsed,
            "diverged": self.diverged.get(member),  # (step, why), for a fused cell's member that stopped
            **self.stepper.member_state(member),
            **self.records[member].state_dict(),
        }

    def load_member_checkpoints(self, states: list[dict[str, Any]]) -> None:
        """Continue from every run's :meth:`member_checkpoint` (RNG states: :func:`normexp.checkpoint.load`)."""
        self.step, self.elapsed = states[0]["step"], states[0]["elapsed"]
        self.diverged = {member: tuple(state["diverged"]) for member, state in enumerate(states) if state["diverged"]}
        self.stepper.load_member_states(states)
        for record, state in zip(self.records, states, strict=True):
            record.load_state_dict(state)


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, task: tasks.Task = tasks.CLASSIFICATION
) -> Metrics:
    """Mean loss, and accuracy when the task has one, per scored target over ``(x, y)`` in eval mode, in batches."""
    loss, correct = torch.zeros((), device=x.device), torch.zeros((), device=x.device)
    for start in range(0, len(x), batch_size):
        logits = model(x[start : start + batch_size])
        target = y[start : start + batch_size]
        loss += task.loss(logits, target, reduction="sum")
        if task.predict:
            correct += task.correct(logits, target)
    scored = float(task.count(y))
    metrics = {"test/loss": loss.item() / scored}
    return metrics | ({"test/acc": correct.item() / scored} if task.predict else {})


PENDING_OUTPUTS = 1 << 22
"""How many output elements (16 MB of float32) a run keeps for its training accuracy before counting them."""


class SingleRun:
    """The stepper of one assembled run: its probes called on every batch and evaluation, metrics accumulated on
    the device between records."""

    size = 1

    def __init__(self, run: Run) -> None:
        self.run, self.model, self.optimizer, self.scheduler = run, run.model, run.optimizer, run.scheduler
        self.cfg, self.batches, self.task, self.probes = run.train, run.batches, run.task, run.probes
        self.bf16, self.device = run.fast.bf16, run.device
        self._counts_steps = any(callable(getattr(m, "set_global_step", None)) for m in self.model.modules())
        self._loss_sum = torch.zeros((), device=self.device)
        self._correct = torch.zeros((), dtype=torch.long, device=self.device)  # a count: no float promotion per step
        # Each forward's (outputs, targets), predicted and compared when read, in one op for the whole interval: an
        # argmax a step weighs ~1.4% of the 3×100 MLP's step. The count is an integer, so when it is taken does not
        # change it; more than PENDING_OUTPUTS elements waiting (a large vocabulary's logits) are counted at once.
        self._outputs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._pending = 0
        # A CUDA graph (fast_path cuda_graphs, or a compile mode that captures one) replays into the same output
        # buffer every step, so off the CPU the kept outputs are copies.
        self._copy_outputs = self.device.type != "cpu"
        self._seen = 0
        self.model.train()

    def train_step(self, step: int) -> list[list[Metrics]]:
        """One optimizer step over ``accumulate`` draws of ``batch_size`` samples, forwarded ``norm_batch`` at a time
        (the samples that share a norm's batch statistics); returns the probes' measurements."""
        cfg, measured = self.cfg, []
        if self._counts_steps:
            norms.set_global_step(self.model, step)
        self.optimizer.zero_grad(set_to_none=True)
        samples = cfg.batch_size * cfg.accumulate
        for _ in range(cfg.accumulate):
            x, y = self.batches.next()
            if self.probes:
                lr = self.optimizer.param_groups[0]["lr"]
                measured += [m for probe in self.probes if (m := probe.on_batch(self.model, x, y, step, lr))]
                self.model.train()  # a probe may have evaluated the model
            drawn = x.shape[0]  # not len(x): a tensor's __len__ is a Python call, and this runs every step
            chunk = cfg.norm_batch or drawn
            for xs, ys in zip(x.split(chunk), y.split(chunk), strict=True) if chunk < drawn else [(x, y)]:
                with accel.autocast(self.device, self.bf16):
                    logits = self.model(xs)
                    loss = self.task.training_loss(logits, ys)
                share = ys.shape[0]
                (loss if share == samples else loss * (share / samples)).backward()
                scored = self.task.count(ys)  # an int, or a tensor of the scored tokens on the device
                if isinstance(scored, int):
                    self._loss_sum.add_(loss.detach(), alpha=scored)  # one op: this runs every step
                else:
                    self._loss_sum.add_(loss.detach() * scored)
                if self.task.predict:
                    output = logits.detach()
                    self._keep_output(output.clone() if self._copy_outputs else output, ys)
                self._seen += scored
        self.optimizer.step()
        self.scheduler.step()
        return [measured]

    def training_metrics(self) -> list[Metrics]:
        """The mean training loss (and accuracy) since the last call, and the lr."""
        seen = float(self._seen)  # an int, or a tensor when the task counts scored tokens on the device
        metrics = {"train/loss": self._loss_sum.item() / seen, "lr": self.optimizer.param_groups[0]["lr"]}
        if self.task.predict:
            metrics["train/acc"] = self._count_predicted().item() / seen
        self._loss_sum.zero_()
        self._correct.zero_()
        self._seen = 0
        return [metrics]

    def _keep_output(self, output: torch.Tensor, target: torch.Tensor) -> None:
        self._outputs.append((output, target))
        self._pending += output.numel()
        if self._pending > PENDING_OUTPUTS:
            self._count_predicted()

    def _count_predicted(self) -> torch.Tensor:
        """The right predictions since the last reset: those of the outputs pending added to the count."""
        if self._outputs:
            outputs, targets = zip(*self._outputs, strict=True)
            predicted = self.task.predict(torch.cat([output.flatten(0, -2) for output in outputs]))
            self._correct.add_(tasks.hits(predicted, torch.cat([target.flatten() for target in targets])))
            self._outputs.clear()
            self._pending = 0
        return self._correct

    def evaluate(self, step: int) -> list[Metrics]:
        """The test metrics in eval mode, and the probes'."""
        self.model.eval()
        splits = self.run.splits
        with accel.autocast(self.device, self.bf16):
            metrics = evaluate(self.model, splits.test_x, splits.test_y, self.cfg.eval_batch_size, self.task)
        for probe in self.probes:
            metrics |= probe.on_eval(self.model, step)
        self.model.train()
        return [metrics]

    def member_state(self, member: int) -> dict[str, Any]:
        """The run's state (``member`` is 0)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "batches": self.batches.state_dict(),
            "probes": [probe.state_dict() for probe in self.probes],
            "accumulated": {"loss_sum": self._loss_sum, "correct": self._count_predicted(), "seen": self._seen},
        }

    def load_member_states(self, states: list[dict[str, Any]]) -> None:
        """Continue from :meth:`member_state`."""
        (state,) = states
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.batches.load_state_dict(state["batches"])
        for probe, probe_state in zip(self.probes, state["probes"], strict=True):
            probe.load_state_dict(probe_state)
        accumulated = state["accumulated"]
        self._loss_sum.copy_(accumulated["loss_sum"])
        self._correct.copy_(accumulated["correct"])
        self._outputs.clear()
        self._pending = 0
        self._seen = accumulated["seen"]
        norms.set_global_step(self.model, state["step"])
