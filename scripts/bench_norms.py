"""Forward+backward time of every norm in normexp.norms on a CIFAR-sized feature map, next to torch's own.

    .venv/bin/python scripts/bench_norms.py --device cpu --repeats 20   # -> results/bench/norms/cpu.csv

Each row times ``y = norm(x); y.backward(g)`` and reports the median over ``--repeats`` runs after warm-up; ours
and the torch reference are run alternately, so load on a shared machine affects both alike, and the ratio is the
median of the paired per-repeat ratios (with its IQR). The torch column is the same computation where torch has
one (ratio = ours / torch; > 1 means ours is slower), the plain layer for weight reparametrizations (the ratio is
then the overhead), and blank otherwise. ``python scripts/update_readme.py`` puts the CSV's table into README.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from normexp.norms import make, reparametrize
from normexp.rundir import atomic_write

RESULTS_DIR = Path("results/bench/norms")


class ChannelsFirst(nn.Module):
    """Run a channels-last torch module (LayerNorm(C), RMSNorm(C)) on channels-first input, as ln_c/rms do."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.movedim(1, -1)).movedim(-1, 1)


@dataclass(frozen=True)
class Row:
    """One line of the table: how to build ours and torch's module, and the input they take."""

    label: str
    ours: Callable[[int], nn.Module]
    torch: Callable[[int], nn.Module] | None
    reference: str
    layout: str = "channels_first"  # or "channels_last" (N, H·W, C) for the Transformer path

    def input(self, shape: tuple[int, int, int, int]) -> torch.Tensor:
        n, c, h, w = shape
        return torch.randn(n, h * w, c) if self.layout == "channels_last" else torch.randn(shape)


def conv(channels: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, padding=1, bias=False)


def rows(spatial: tuple[int, int]) -> list[Row]:
    """Every norm and weight reparametrization, with torch's equivalent where one exists."""
    return [
        Row("bn", lambda c: make("bn", c), nn.BatchNorm2d, "nn.BatchNorm2d"),
        Row("sync_bn (1 process)", lambda c: make("sync_bn", c), nn.BatchNorm2d, "nn.BatchNorm2d"),
        Row("gn (32 groups)", lambda c: make("gn", c), lambda c: nn.GroupNorm(32, c), "nn.GroupNorm(32, C)"),
        Row("in", lambda c: make("in", c), lambda c: nn.InstanceNorm2d(c, affine=True), "nn.InstanceNorm2d"),
        Row("ln / ln_chw", lambda c: make("ln", c), lambda c: nn.LayerNorm([c, *spatial]), "nn.LayerNorm((C,H,W))"),
        Row("ln_c", lambda c: make("ln_c", c), lambda c: ChannelsFirst(nn.LayerNorm(c)), "nn.LayerNorm(C), permuted"),
        Row("rms", lambda c: make("rms", c), lambda c: ChannelsFirst(nn.RMSNorm(c)), "nn.RMSNorm(C), permuted"),
        Row(
            "rms eps_inside",
            lambda c: make("rms", c, eps_inside=True),
            lambda c: ChannelsFirst(nn.RMSNorm(c)),
            "nn.RMSNorm(C), permuted",
        ),
        Row(
            "ln_c channels_last",
            lambda c: make("ln_c", c, channels_last=True),
            nn.LayerNorm,
            "nn.LayerNorm(C)",
            "channels_last",
        ),
        Row(
            "rms channels_last",
            lambda c: make("rms", c, channels_last=True),
            nn.RMSNorm,
            "nn.RMSNorm(C) (eps inside)",
            "channels_last",
        ),
        Row("brn", lambda c: make("brn", c), None, "-"),
        Row("noisy_bn", lambda c: make("noisy_bn", c), None, "-"),
        Row("noise", lambda c: make("noise", c), None, "-"),
        Row("bcn", lambda c: make("bcn", c), None, "-"),
        Row("conv3x3 + ws", lambda c: reparametrize(conv(c), "ws"), conv, "plain conv3x3 (overhead)"),
        Row("conv3x3 + wn", lambda c: reparametrize(conv(c), "wn"), conv, "plain conv3x3 (overhead)"),
    ]


def step_time(module: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> float:
    """Seconds for one forward+backward, synchronized on CUDA."""
    if x.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    module(x).backward(grad)
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def bench(row: Row, shape: tuple[int, int, int, int], device: torch.device, repeats: int, warmup: int) -> np.ndarray:
    """Seconds per repeat (rows) of ours and of torch's module, if any (columns), measured alternately."""
    torch.manual_seed(0)
    x = row.input(shape).to(device).requires_grad_()
    modules = [row.ours(shape[1])] + ([row.torch(shape[1])] if row.torch else [])
    modules = [m.to(device).train() for m in modules]
    grad = torch.randn_like(modules[0](x))
    times = [[step_time(module, x, grad) for module in modules] for _ in range(warmup + repeats)]
    return np.array(times[warmup:])


def measure(row: Row, times: np.ndarray, context: dict[str, object]) -> dict[str, object]:
    """One CSV row: median milliseconds of each module and the paired ratio ours / torch (median and IQR)."""
    measured = {"norm": row.label, "reference": row.reference, **context, "ours_ms": 1e3 * np.median(times[:, 0])}
    if times.shape[1] == 1:
        return measured
    ratios = times[:, 0] / times[:, 1]
    quartiles = np.quantile(ratios, [0.25, 0.5, 0.75])
    return measured | {"torch_ms": 1e3 * np.median(times[:, 1]), **dict(zip(RATIO_COLUMNS, quartiles, strict=True))}


RATIO_COLUMNS = ("ratio_q25", "ratio", "ratio_q75")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per module (median reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first")
    parser.add_argument("--shape", type=int, nargs=4, default=(128, 64, 32, 32), metavar=("N", "C", "H", "W"))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=None, help=f"CSV path (default: {RESULTS_DIR}/<device>.csv)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    shape = tuple(args.shape)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"forward+backward, input {shape} float32, {where}, torch {torch.__version__}, median of {args.repeats}")
    print(f"{'norm':<22} {'ours ms':>9} {'torch ms':>9} {'ratio':>6}  torch reference")
    context = {"device": where, "shape": "×".join(map(str, shape)), "torch": torch.__version__}
    measured = []
    for row in rows(shape[2:]):
        measured.append(measure(row, bench(row, shape, device, args.repeats, args.warmup), context))
        m = measured[-1]
        theirs = f"{m['torch_ms']:9.2f} {m['ratio']:6.2f}" if "ratio" in m else f"{'':>9} {'':>6}"
        print(f"{row.label:<22} {m['ours_ms']:9.2f} {theirs}  {row.reference}")
    out = args.out or RESULTS_DIR / f"{device.type}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda f: pd.DataFrame(measured).to_csv(f, index=False, float_format="%.4g"))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
