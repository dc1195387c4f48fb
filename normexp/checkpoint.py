"""Checkpoints: everything a run needs to continue bit-identically, saved atomically, loaded safely.

A checkpoint holds the model, optimizer and scheduler states, the loop's state (step, metric accumulators, data
sampler position) and every RNG state (Python, NumPy, torch CPU and CUDA). It is loaded with
``torch.load(weights_only=True)``: only tensors and plain containers, never pickled code.
"""

from __future__ import annotations

import random
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from normexp.rundir import atomic_write

CHECKPOINT_FILE = "checkpoint.pt"
PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
"""SLURM sends SIGTERM (and, with --signal, SIGUSR1) before it preempts or times out a job."""


def rng_state() -> dict[str, Any]:
    """Every RNG state, as tensors and plain values (safe for ``weights_only`` loading)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": position,
            "has_gauss": has_gauss,
            "cached": cached,
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the RNG states captured by :func:`rng_state`."""
    random.setstate(state["python"])
    numpy = state["numpy"]
    np.random.set_state(
        (numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["position"], numpy["has_gauss"], numpy["cached"])
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (with the current RNG states) atomically to ``path``."""
    atomic_write(path, lambda f: torch.save({**state, "rng": rng_state()}, f), mode="wb")


def load(path: Path, device: torch.device) -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``) onto ``device`` and restore its RNG states."""
    state = torch.load(path, map_location=device, weights_only=True)
    state["rng"]["torch"] = state["rng"]["torch"].cpu()
    state["rng"]["numpy"]["keys"] = state["rng"]["numpy"]["keys"].cpu()
    set_rng_state(state["rng"])
    return state


class Preemption(threading.Event):
    """Set when a preemption signal arrives; remembers which one, to hand it on once the checkpoint is saved."""

    signal: int | None = None

    def forward(self) -> None:
        """Deliver the caught signal again to the handler that was installed before (the default handler ends the
        process; submitit's requeues the job, which then resumes from the checkpoint)."""
        if self.signal is not None:
            signal.raise_signal(self.signal)


@contextmanager
def preemption_flag() -> Iterator[Preemption]:
    """A :class:`Preemption` set when SIGTERM/SIGUSR1 arrives, so the loop checkpoints at the next step boundary.

    Outside the main thread (where Python cannot install handlers) it is never set.
    """
    event = Preemption()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return

    def catch(signum: int, frame: object) -> None:
        event.signal = signum
        event.set()

    previous = {sig: signal.signal(sig, catch) for sig in PREEMPTION_SIGNALS}
    try:
        yield event
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
