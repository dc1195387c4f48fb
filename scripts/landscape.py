"""Loss surface of any trained run folder (Li et al. 2018): a 1-D or 2-D slice along filter-normalized random
directions, or the linear interpolation to a second run; stored as a resumable grid and drawn.

    .venv/bin/python scripts/landscape.py runs/li2018-norm/cpu/norm=bn,seed=0 --dims 2 --points-2d 25
    .venv/bin/python scripts/landscape.py RUN_A --to RUN_B          # interpolation, running statistics included

The settings are the run's config, ``probes.surface`` (the probe's defaults, Li et al.'s grid, where it sets none);
each option below overrides one of them. The grid goes to ``<out>.npz`` and the figure to ``<out>.png``/``.pdf``
(``--out``, default: ``landscape`` inside the first run folder). Rerunning the same command computes only the
points still missing.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from normexp import plotting
from normexp.claims.li2018 import contour_levels, plot_contour, plot_curve
from normexp.grids import SurfaceSettings
from normexp.landscapes import run_surface, surface_settings


def add_setting_options(parser: argparse.ArgumentParser) -> None:
    """One ``--option`` per field of :class:`SurfaceSettings` (``points_1d`` -> ``--points-1d``), default: unset."""
    for setting in dataclasses.fields(SurfaceSettings):
        flag = "--" + setting.name.replace("_", "-")
        parser.add_argument(flag, dest=setting.name, type=type(setting.default), help=setting.metadata["help"])


def settings_of(args: argparse.Namespace) -> SurfaceSettings:
    """The run's ``probes.surface`` settings with the options given on the command line."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(SurfaceSettings)}
    return dataclasses.replace(surface_settings(args.run), **{k: v for k, v in given.items() if v is not None})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a run folder with config.yaml and checkpoint.pt")
    parser.add_argument("--to", type=Path, help="a second run folder: interpolate from RUN to it")
    parser.add_argument("--dims", type=int, choices=(1, 2), default=1, help="random directions (ignored with --to)")
    add_setting_options(parser)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, help="output path without suffix")
    args = parser.parse_args()

    settings = settings_of(args)
    out = args.out or args.run / "landscape"
    path = out.with_suffix(".npz")
    kind = "interpolation" if args.to else f"{args.dims}d"
    grid = run_surface(kind, [args.run, *([args.to] if args.to else [])], path, settings, args.device)
    if args.dims == 2 and not args.to:
        fig, (ax,) = plotting.figure(width="column", height=3.0)
        fig.colorbar(plot_contour(ax, grid, args.run.name, contour_levels([grid])), ax=ax, label="training loss")
    else:
        fig, axes = plotting.figure(nrows=2, width="column", height=4.0, sharex=True)
        line = f"α: (1 − α)·θ({args.run.name}) + α·θ({args.to.name})" if args.to else "α, filter-normalized direction"
        plot_curve(axes, [grid], args.run.name, line)
    for saved in [path, *plotting.save(fig, out.parent, out.name)]:
        print(saved)


if __name__ == "__main__":
    main()
