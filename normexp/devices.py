"""Pinning parallel workers to GPUs: each worker process claims one free GPU slot for its lifetime.

A slot is an exclusive ``flock`` on ``<tmp>/normexp-gpu-<uid>/<i>.lock``, held until the worker process exits, so
N joblib workers on an N-GPU machine spread one per GPU without a coordinator. The claim must happen before CUDA
initializes in that process: it sets ``CUDA_VISIBLE_DEVICES``, which every run of the worker then sees.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path
from typing import IO

_held: IO | None = None  # the lock file of this process's slot; closing it releases the slot


def pin_worker_gpu(gpus: int, lock_dir: Path | None = None) -> str | None:
    """Claim a free slot among ``gpus`` for this process (once) and return the GPU index it pinned, or None."""
    global _held
    if gpus <= 0:
        return None
    if _held is not None:
        return os.environ.get("CUDA_VISIBLE_DEVICES")
    folder = lock_dir or Path(tempfile.gettempdir()) / f"normexp-gpu-{os.getuid()}"
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(gpus):
        handle = open(folder / f"{index}.lock", "w")  # noqa: SIM115 - kept open: the lock lives with the process
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        _held = handle
        os.environ["CUDA_VISIBLE_DEVICES"] = str(index)
        return str(index)
    raise RuntimeError(f"all {gpus} GPU slots in {folder} are taken: more workers than GPUs")
