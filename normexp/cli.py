"""The ``normexp`` command line: run, reproduce, verify, figures, collect, list, sync.

``normexp run`` is a Hydra app: its arguments go to Hydra unchanged (:func:`normexp.sweep.hydra_app`). User errors
(unknown names, impossible values, missing data) print one paragraph and exit with status 2, without a traceback;
a sweep in which some run failed exits with status 1 after listing the failed runs.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from normexp import __version__, claims, reproduce, sweep, tables
from normexp.analysis import aggregate, load_runs, varying_columns
from normexp.claims import sensitivity
from normexp.config import CONFIG_DIR
from normexp.errors import UserError
from normexp.rundir import CONFIG_FILE, atomic_write

SCALES = ("smoke", "cpu", "paper")
SHELL_COMPLETION = ("-sc", "--shell-completion")


def cmd_run(argv: list[str]) -> int:
    """Train one run, or a grid with ``-m``: Hydra's app, with every Hydra flag (``--cfg``, ``--info``, ``-sc``...)."""
    jobs = sweep.hydra_app(argv)
    return sweep.report(jobs) if jobs else 0


def complete(argv: list[str]) -> int:
    """Answer the shell's completion query (``normexp -sc query=bash``, installed by ``normexp run -sc
    install=bash``): Hydra completes a ``normexp run`` line as its app's line; otherwise the commands."""
    line = os.environ.get("COMP_LINE", "")
    words = line.split()
    if len(words) > 1 and words[1] == "run" and (len(words) > 2 or line.endswith(" ")):
        os.environ["COMP_LINE"] = line.replace(" run", "", 1)  # the line as a Hydra app's completion reads it
        return cmd_run(argv)
    print(" ".join(COMMANDS))
    return 0


def _claim_ids(names: Sequence[str]) -> list[str]:
    if not names or list(names) == ["all"]:
        return sorted(claims.CLAIMS)
    _refuse_positional_overrides([name for name in names if "=" in name])
    for name in names:
        claims.get(name)
    return list(names)


def _refuse_positional_overrides(overrides: Sequence[str]) -> None:
    """``normexp run`` takes Hydra overrides as arguments, the claim commands after ``--override``: say so."""
    if overrides:
        raise UserError(
            f"{' '.join(overrides)}: a claim command takes claim ids as arguments, and Hydra overrides (reproduce "
            "only) after --override.",
            fix=" ".join(f"--override {override}" for override in overrides),
        )


def cmd_reproduce(args: argparse.Namespace) -> int:
    """Run each claim's grid, then store, draw and judge it."""
    verdicts, status = [], 0
    for claim_id in _claim_ids(args.claims):
        verdict, claim_status = reproduce.reproduce(claim_id, args.scale, args.out_dir, args.overrides, args.results)
        verdicts.append(verdict)
        status = max(status, claim_status)
    _print_verdicts(verdicts, args.results, as_json=False)
    return status


def cmd_verify(args: argparse.Namespace) -> int:
    """Judge claims from stored results only."""
    verdicts = [
        reproduce.judge(claims.get(claim_id), reproduce.load(claim_id, args.scale, args.results), args.scale)
        for claim_id in _claim_ids(args.claims)
    ]
    _print_verdicts(verdicts, args.results, as_json=args.json, markdown=args.markdown)
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    """Redraw each claim's figures from stored results only."""
    for claim_id in _claim_ids(args.claims):
        claim = claims.get(claim_id)
        target = reproduce.results_dir(claim_id, args.scale, args.results)
        for path in reproduce.draw(claim, reproduce.load(claim_id, args.scale, args.results), target, args.scale):
            print(path)
    return 0


def _print_verdicts(verdicts: list[claims.Verdict], root: Path, as_json: bool, markdown: bool = False) -> None:
    if as_json:
        print(json.dumps([v.to_dict() for v in verdicts], indent=2, default=str))
        return
    rows = [
        (
            v.claim,
            claims.get(v.claim).paper_figure,
            ", ".join(str(p) for p in reproduce.figures_of(v.claim, v.scale, root)) or "-",
            v.verdict,
            str(v.n_runs),
        )
        for v in verdicts
    ]
    header = ("claim", "paper's figure", "our figure", "verdict", "n runs")
    print(tables.render(header, rows, markdown))
    bullet = "- " if markdown else "  "
    for v in verdicts:
        print(
            f"\n{'**' if markdown else ''}{v.claim}{'**' if markdown else ''} [{v.scale}]: {v.verdict}"
            + (f" ({v.note})" if v.note else "")
            + ("\n" if markdown else "")
        )
        for check in v.checks:
            print(f"{bullet}{claims.mark(check, markdown)} {check.name}: {check.measured}")
        if v.sensitivity:
            print(f"\nsensitivity map of {v.claim} (each criterion at every setting; number: its margin):\n")
            print(sensitivity.map_table(v, markdown))


def run_folders(paths: Sequence[Path]) -> list[Path]:
    """The run folders (those holding a ``config.yaml``) among ``paths`` and under them, e.g. a sweep's folder."""
    found = []
    for path in map(Path, paths):
        if not path.exists():
            raise UserError(f"{path} does not exist.", fix="give run folders or the folders that hold them")
        found += [path] if (path / CONFIG_FILE).exists() else sorted(p.parent for p in path.rglob(CONFIG_FILE))
    return list(dict.fromkeys(found))


def cmd_collect(args: argparse.Namespace) -> int:
    """Any sweep's run folders into the tidy Parquet table, and its seed-aggregated table in the terminal."""
    folders = run_folders(args.run_dirs)
    runs, summary = load_runs(folders)
    if summary.empty:
        raise UserError(f"no run folders under {' '.join(map(str, args.run_dirs))}.", fix="give a sweep's folder")
    atomic_write(args.out, lambda f: runs.to_parquet(f, index=False), mode="wb")
    metric = f"final/{args.metric}"
    if metric not in summary:
        choices = sorted(c.removeprefix("final/") for c in summary if c.startswith("final/"))
        raise UserError(f"the runs recorded no {args.metric}.", choices=choices, fix="pass --metric <one of them>")
    cells = [column for column in varying_columns(summary) if column != "seed"]
    table = aggregate(summary, cells, metric) if cells else aggregate(summary.assign(cell="all"), ["cell"], metric)
    print(f"{len(summary)} run(s) -> {args.out} (tidy: run_id, config columns, step, metric, value)")
    print(f"{args.metric} across seeds:")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    """Upload the offline W&B runs under the output folder (``wandb sync``)."""
    offline = sorted(Path(args.out_dir).glob("**/wandb/offline-run-*"))
    print(f"{len(offline)} offline W&B run(s) under {args.out_dir}")
    for folder in offline:
        print(f"  {folder}")
    if offline and not args.dry_run:
        return subprocess.run(["wandb", "sync", *map(str, offline)], check=False).returncode
    return 0


def _first_line(obj: object) -> str:
    return (inspect.getdoc(obj) or "").split("\n")[0]


def _yaml_comment(path: Path) -> str:
    for line in path.read_text().splitlines():
        if line.startswith("#") and "@package" not in line:
            return line.lstrip("# ").strip()
    return ""


def _config_choices(group: str) -> list[tuple[str, str]]:
    """The values ``<group>=`` accepts (the group's config files) with their first comment line."""
    return [(path.stem, _yaml_comment(path)) for path in sorted((CONFIG_DIR / group).glob("*.yaml"))]


def cmd_list(args: argparse.Namespace) -> int:
    """Print the claims, experiments, norms, models and datasets."""
    from normexp import data, norms, probes

    sections: dict[str, Callable[[], list[tuple[str, str]]]] = {
        "claims": lambda: [(c.id, f"{c.paper}, {c.paper_figure}: {c.title}") for c in claims.CLAIMS.values()],
        "experiments": lambda: _config_choices("experiment"),
        "norms": lambda: [(n, _first_line(f)) for n, f in {**norms.NORMS, **norms.WEIGHT_NORMS}.items()],
        "models": lambda: _config_choices("model"),
        "datasets": lambda: [(n, info.description) for n, info in data.DATASETS.items()],
        "probes": lambda: [(n, _first_line(f)) for n, f in probes.PROBES.items()],
    }
    for section in [args.what] if args.what != "all" else list(sections):
        print(f"{section}:")
        for name, text in sections[section]():
            print(f"  {name:<24} {text}")
    return 0


def parser() -> argparse.ArgumentParser:
    """The ``normexp`` argument parser."""
    main = argparse.ArgumentParser(prog="normexp", description=__doc__.split("\n")[0])
    main.add_argument("--version", action="version", version=f"normexp {__version__}")
    sub = main.add_subparsers(dest="command", required=True)

    # `run` is dispatched to Hydra before parsing (see main); listed here for `normexp --help`
    sub.add_parser("run", add_help=False, help="train one run (or a grid with -m): Hydra's app, see run --help")

    def claims_command(name: str, func: Callable, help_text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text)
        command.add_argument("claims", nargs="*", help="claim ids, or 'all' (default: all)")
        command.add_argument("--scale", choices=SCALES, default="cpu")
        command.add_argument("--results", type=Path, default=reproduce.RESULTS_DIR, help="results root")
        command.set_defaults(func=func)
        return command

    rep = claims_command("reproduce", cmd_reproduce, "run claims' grids, store results, draw figures, judge")
    rep.add_argument("--out-dir", default="runs", help="where run folders go")
    rep.add_argument("--override", dest="overrides", action="append", default=[], help="extra Hydra override")
    ver = claims_command("verify", cmd_verify, "judge claims from stored results only")
    ver.add_argument("--json", action="store_true", help="print the verdicts as JSON")
    ver.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    claims_command("figures", cmd_figures, "redraw claims' figures from stored results only")

    col = sub.add_parser("collect", help="run folders (any sweep's) -> tidy Parquet and a seed-aggregated table")
    col.add_argument("run_dirs", nargs="+", type=Path, help="run folders, or folders holding them (a sweep's)")
    col.add_argument("--out", type=Path, default=Path("runs.parquet"), help="the tidy table (default runs.parquet)")
    col.add_argument("--metric", default="test/acc", help="final metric to aggregate across seeds")
    col.set_defaults(func=cmd_collect)

    syn = sub.add_parser("sync", help="upload offline W&B runs (wandb sync)")
    syn.add_argument("--out-dir", default="runs", help="where run folders are")
    syn.add_argument("--dry-run", action="store_true", help="list the offline runs only")
    syn.set_defaults(func=cmd_sync)

    lst = sub.add_parser("list", help="list claims, experiments, norms, models, datasets, probes")
    lst.add_argument(
        "what",
        nargs="?",
        default="all",
        choices=("all", "claims", "experiments", "norms", "models", "datasets", "probes"),
    )
    lst.set_defaults(func=cmd_list)
    return main


COMMANDS = ("run", "reproduce", "verify", "figures", "collect", "list", "sync")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``normexp`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["run"]:
            return cmd_run(argv[1:])
        if argv[:1] and argv[0] in SHELL_COMPLETION:
            return complete(argv)
        command_line = parser()
        args, unknown = command_line.parse_known_args(argv)
        if unknown:  # argparse's own message, unless they look like Hydra overrides after the options
            _refuse_positional_overrides([arg for arg in unknown if "=" in arg and not arg.startswith("-")])
            command_line.error(f"unrecognized arguments: {' '.join(unknown)}")
        return args.func(args)
    except UserError as error:
        print(f"normexp: error: {error.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
