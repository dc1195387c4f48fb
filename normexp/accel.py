"""The GPU fast path of a training step, one switch per technique, each measured by ``scripts/bench.py``.

* ``bf16``: the forward pass and the loss under ``torch.autocast`` in bfloat16 (weights and optimizer stay fp32).
* ``channels_last``: the model and every image batch in NHWC, the layout cuDNN's tensor-core convolutions prefer.
  PyTorch's GroupNorm on CUDA computes in NCHW, so a GN/WS net pays a layout conversion around every norm: the
  benchmark measures whether the switch pays for a given norm rather than assuming it.
* ``compile``: ``nn.Module.compile`` (TorchInductor), in place, so state-dict keys and checkpoints are unchanged.
* ``cuda_graphs``: the training forward and backward replayed as CUDA graphs
  (``torch.cuda.make_graphed_callables``), which removes per-kernel launch cost, what small batches are made of.
  The optimizer step and the lr schedule stay eager, so every optimizer and schedule works unchanged.

Each switch is off by default; :class:`FastPath` names a combination (``"bf16+cuda_graphs"``). Data resident on the
device (``Splits.to``) with batched on-device augmentation (``normexp.data.augment.pad_crop_flip``) needs no switch:
it is how every run loads its data.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, fields

import torch
from torch import nn

from normexp.errors import ConfigError


@dataclass(frozen=True)
class FastPath:
    """Which fast-path techniques a training step uses; see the module docstring for what each one does."""

    bf16: bool = False
    channels_last: bool = False
    compile: bool = False
    cuda_graphs: bool = False

    @classmethod
    def parse(cls, spec: str) -> FastPath:
        """``"bf16+channels_last"`` -> FastPath(bf16=True, channels_last=True); ``""`` or ``"none"``: all off."""
        names = {name.strip() for name in spec.split("+") if name.strip() and name.strip() != "none"}
        known = [f.name for f in fields(cls)]
        unknown = sorted(names - set(known))
        if unknown:
            raise ConfigError(
                f"unknown fast-path switch {', '.join(unknown)}.", choices=known, fix="join switches with +"
            )
        return cls(**{name: True for name in names})

    @property
    def name(self) -> str:
        """The switches that are on, joined with ``+`` (``none`` when none is)."""
        return "+".join(f.name for f in fields(self) if getattr(self, f.name)) or "none"

    def check(self, device: torch.device) -> None:
        """Refuse what cannot run on ``device`` (CUDA graphs without CUDA) with the fix."""
        if self.cuda_graphs and device.type != "cuda":
            raise ConfigError(f"cuda_graphs needs a CUDA device, got {device}.", fix="drop cuda_graphs on this device")


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` when ``enabled``, else a no-op context.

    The weight-cast cache is off: it only pays when a weight is used twice in one forward, and CUDA graph capture
    requires it off.
    """
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)


def memory_format(fast: FastPath) -> torch.memory_format:
    """The memory format of models and image batches under ``fast``."""
    return torch.channels_last if fast.channels_last else torch.contiguous_format


def to_memory_format(batch: torch.Tensor, fmt: torch.memory_format) -> torch.Tensor:
    """``batch`` in ``fmt`` when it is a batch of images (N, C, H, W); other inputs (tokens, vectors) unchanged."""
    return batch.contiguous(memory_format=fmt) if batch.dim() == 4 and fmt != torch.contiguous_format else batch


def compile_model(model: nn.Module, mode: str | None = None) -> nn.Module:
    """``model`` compiled in place by TorchInductor (``mode``: None, ``"max-autotune"``, ...); returns ``model``.

    In place (``nn.Module.compile``), not ``torch.compile(model)``: the module keeps its state-dict keys, so
    checkpoints and probes see the same names. The compilation itself happens at the first call.
    """
    model.compile(mode=mode)
    return model


def graph_training_step(model: nn.Module, sample: torch.Tensor, bf16: bool = False) -> nn.Module:
    """``model`` whose training-mode forward and backward replay CUDA graphs captured for batches like ``sample``.

    ``torch.cuda.make_graphed_callables`` runs a few warm-up iterations on ``sample`` before capturing; they would
    move BatchNorm's running statistics, so the buffers are restored afterwards (in place, keeping the addresses the
    graphs read). Every later batch must have ``sample``'s shape, dtype and memory format (the sampler drops a
    partial last batch). In eval mode the module runs its ordinary forward. Run the training step inside
    :func:`autocast` with the same ``bf16`` setting.
    """
    if sample.device.type != "cuda":
        raise ConfigError(f"CUDA graphs need a CUDA device, got {sample.device}.", fix="drop cuda_graphs")
    model.train()
    saved = {name: buffer.clone() for name, buffer in model.named_buffers()}
    with autocast(sample.device, bf16):
        graphed = torch.cuda.make_graphed_callables(model, (sample,), num_warmup_iters=3)
    with torch.no_grad():
        for name, buffer in graphed.named_buffers():
            buffer.copy_(saved[name])
    return graphed
