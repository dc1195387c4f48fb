"""Loss surface of any trained run folder (Li et al. 2018): a 1-D or 2-D slice along filter-normalized random
directions, or the linear interpolation to a second run; stored as a resumable grid and drawn.

    .venv/bin/python scripts/landscape.py runs/li2018-norm/cpu/norm=bn,seed=0 --dims 2 --points 25
    .venv/bin/python scripts/landscape.py RUN_A --to RUN_B          # interpolation, running statistics included

The grid goes to ``<out>.npz`` and the figure to ``<out>.png``/``.pdf`` (``--out``, default: ``landscape`` inside
the first run folder). Rerunning the same command computes only the points still missing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from normexp import plotting
from normexp.claims.li2018 import plot_contour, plot_curve
from normexp.probes.surface import TrainedRun, interpolation_surface, random_surface


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a run folder with config.yaml and checkpoint.pt")
    parser.add_argument("--to", type=Path, help="a second run folder: interpolate from RUN to it")
    parser.add_argument("--dims", type=int, choices=(1, 2), default=1, help="random directions (ignored with --to)")
    parser.add_argument("--points", type=int, default=51, help="grid points per axis (Li et al.: 51)")
    parser.add_argument("--span", type=float, default=1.0, help="coordinates in [-span, span] (random directions)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first random direction")
    parser.add_argument("--samples", type=int, default=1000, help="training samples the loss is evaluated on")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, help="output path without suffix")
    args = parser.parse_args()

    run = TrainedRun.load(args.run, samples=args.samples, device=args.device)
    out = args.out or args.run / "landscape"
    path = out.with_suffix(".npz")
    fig, (ax,) = plotting.figure(width=4.5, height=4.0)
    if args.to:
        grid = interpolation_surface(run, TrainedRun.load(args.to, samples=args.samples, device=args.device), path)
        plot_curve(ax, [grid], run.name, f"α: (1 − α)·θ({run.name}) + α·θ({args.to.name})")
    elif args.dims == 1:
        grid = random_surface(run, path, 1, args.points, args.span, args.seed)
        plot_curve(ax, [grid], run.name, "α along a filter-normalized direction")
    else:
        plot_contour(ax, random_surface(run, path, 2, args.points, args.span, args.seed), run.name)
    for saved in [path, *plotting.save(fig, out.parent, out.name)]:
        print(saved)


if __name__ == "__main__":
    main()
