"""Checkpoints: everything a run needs to continue bit-identically, saved atomically, loaded safely.

A checkpoint holds the model, optimizer and scheduler states, the loop's state (step, metric accumulators, data
sampler position) and every RNG state (Python, NumPy, torch CPU and CUDA). It is loaded with
``torch.load(weights_only=True)``: only tensors and plain containers, never pickled code.

A stop signal (:func:`stop_signals`: a cluster's preemption or time-out warning, or Ctrl-C) does not kill a run
mid-step: :func:`preemption_flag` notes it, the loop checkpoints at the next step boundary and stops, and the signal
is then handed on to the handler installed before (submitit's requeues the job, the default ends the process). The
same signal arriving twice is handed on at once: Ctrl-C twice stops without waiting for the step.
"""

from __future__ import annotations

import os
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
SUBMITIT_SIGNAL_ENV = "SUBMITIT_PREEMPT_SIGNAL"
"""submitit's preemption and time-out signal is SIGUSR2 unless this variable names another (``USR1``, ...)."""


def stop_signals() -> tuple[signal.Signals, ...]:
    """The signals that stop a run at the next step boundary, checkpointed: SLURM's SIGTERM (sent on preemption and
    at the time limit) and SIGUSR1 (``--signal``), submitit's preemption signal (SIGUSR2 unless
    ``SUBMITIT_PREEMPT_SIGNAL`` names another) and SIGINT (Ctrl-C)."""
    submitit = getattr(signal, "SIG" + os.environ.get(SUBMITIT_SIGNAL_ENV, "USR2"), None)
    candidates = (signal.SIGTERM, signal.SIGUSR1, submitit, signal.SIGINT)
    return tuple(dict.fromkeys(sig for sig in candidates if sig is not None))


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


def stored_config_hash(path: Path) -> str | None:
    """The config hash a checkpoint was saved with (None for older checkpoints), without reading its tensors."""
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("config_hash")


def load(path: Path, device: torch.device) -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``) onto ``device`` and restore its RNG states."""
    state = torch.load(path, map_location=device, weights_only=True)
    state["rng"]["torch"] = state["rng"]["torch"].cpu()
    state["rng"]["numpy"]["keys"] = state["rng"]["numpy"]["keys"].cpu()
    set_rng_state(state["rng"])
    return state


class Preemption(threading.Event):
    """Set when a stop signal arrives; remembers which ones, in order, to hand them on once the checkpoint is saved."""

    def __init__(self) -> None:
        super().__init__()
        self.signals: list[int] = []

    def forward(self) -> None:
        """Deliver the caught signals again to the handlers installed before, in the order they came: under submitit
        SIGTERM is only logged and SIGUSR2 requeues the job, which then resumes from the checkpoint; the default
        handlers end the process (SIGINT's raises KeyboardInterrupt)."""
        for sig in self.signals:
            signal.raise_signal(sig)


@contextmanager
def preemption_flag() -> Iterator[Preemption]:
    """A :class:`Preemption` set when one of :func:`stop_signals` arrives, so the loop checkpoints at the next step
    boundary; the same signal a second time goes straight to the previous handler.

    A signal the process ignores stays ignored (e.g. SIGINT in a background job). Outside the main thread (where
    Python cannot install handlers) the flag is never set.
    """
    event = Preemption()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return

    def catch(signum: int, frame: object) -> None:
        if signum in event.signals:  # asked twice: stop now, as if we had never caught it
            signal.signal(signum, previous[signum])
            signal.raise_signal(signum)
            return
        event.signals.append(signum)
        event.set()

    watched = [sig for sig in stop_signals() if signal.getsignal(sig) is not signal.SIG_IGN]
    previous = {sig: signal.signal(sig, catch) for sig in watched}
    try:
        yield event
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
