"""Regenerate README's claims section from the stored results: the verdict table, each claim's checks with the
measured numbers, its figures and its tables (``results/<claim>/<scale>/*.md``, written by the claim's plot). Every
number in that section comes from ``normexp verify``; nothing is typed.

    python scripts/update_readme.py            # rewrite the blocks between the claims and the bench markers
    python scripts/update_readme.py --check    # exit 1 if README is not up to date

The bench block summarizes ``results/bench/*.csv`` (written by ``scripts/bench.py``) the same way, and the
norms-bench block ``results/bench/norms/*.csv`` (written by ``scripts/bench_norms.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from normexp import analysis, bench, claims, plotting, reproduce, tables
from normexp.claims import sensitivity
from normexp.config import compose_config

ROOT = Path(__file__).resolve().parents[1]
CLAIMS_BLOCK = ("<!-- claims:start -->", "<!-- claims:end -->")
BENCH_BLOCK = ("<!-- bench:start -->", "<!-- bench:end -->")
NORMS_BENCH_BLOCK = ("<!-- norms-bench:start -->", "<!-- norms-bench:end -->")


def claims_section(scale: str = "cpu") -> str:
    """The Markdown of the claims section for ``scale``."""
    verdicts = [
        reproduce.judge(c, reproduce.load(c.id, scale, ROOT / "results"), scale) for c in claims.CLAIMS.values()
    ]
    lines = [
        f"Verdicts at the `{scale}` scale, computed by `normexp verify` from the committed results in `results/`.",
        "",
        "| claim | paper | paper's figure | the paper's result | our verdict | n runs |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| [{v.claim}](#{v.claim}) | {claims.get(v.claim).paper} | {claims.get(v.claim).paper_figure} | "
        f"{claims.get(v.claim).paper_result or '–'} | **{v.verdict}** | {v.n_runs} |"
        for v in verdicts
    ]
    lines += ["", *protocol_table(scale), "", *time_table(scale)]
    for verdict in verdicts:
        claim = claims.get(verdict.claim)
        lines += [
            "",
            f"### {claim.id}",
            "",
            f"*{claim.title}* ({claim.paper}, {claim.paper_figure}). "
            f"Verdict: **{verdict.verdict}**" + (f" ({verdict.note})." if verdict.note else "."),
            "",
        ]
        if claim.paper_result:
            lines += [f"The paper: {claim.paper_result}. Ours, by the pass criteria:", ""]
        lines += [f"- {claims.mark(c)} {c.name}: {c.measured}" for c in verdict.checks]
        lines += earlier_protocol(claim.id, scale)
        if verdict.sensitivity:
            lines += [
                "",
                "Sensitivity map: each criterion at every value of the choices the paper left open (one changed at a "
                "time, the others at their primary value); ✅ pass, ❌ fail, ⏸ untestable, the number is the "
                "criterion's margin (> 0 passes).",
                "",
                sensitivity.map_table(verdict),
            ]
        for figure in reproduce.figures_of(claim.id, scale, ROOT / "results"):
            lines += ["", f"![{claim.id} {figure.stem}]({figure.relative_to(ROOT)})"]
            caption = figure.with_name(figure.stem + plotting.CAPTION_SUFFIX)
            lines += ["", caption.read_text().strip()] if caption.exists() else []
        folder = reproduce.results_dir(claim.id, scale, ROOT / "results")
        tables = sorted(p for p in folder.glob("*.md") if not p.name.endswith(plotting.CAPTION_SUFFIX))
        lines += [line for path in tables for line in ["", path.read_text().strip()]]
    return "\n".join(lines)


EARLIER_VERDICT = "verdict-before-issue-13.json"
"""The verdict of the CPU protocol before the faithful protocols of issue 13, kept beside the results."""


def earlier_protocol(claim_id: str, scale: str) -> list[str]:
    """One line on what the protocol before issue 13 gave, from its stored verdict."""
    path = reproduce.results_dir(claim_id, scale, ROOT / "results") / EARLIER_VERDICT
    if not path.exists():
        return []
    earlier = json.loads(path.read_text())
    failed = [check["name"] for check in earlier["checks"] if check["passed"] is False]
    return [
        "",
        f"Before issue 13's faithful protocol, the earlier `{scale}` protocol gave: **{earlier['verdict']}** "
        f"({earlier['n_runs']} runs" + (f"; failed: {'; '.join(failed)})." if failed else ")."),
    ]


PROTOCOL_FIELDS = {
    "data": lambda c: c.data.name + (f" ({c.data.train_size} train)" if c.data.get("train_size") else ""),
    "model": lambda c: f"resnet-{2 * sum(c.model.blocks) + 2}" if c.model.name == "resnet" else c.model.name,
    "steps × batch": lambda c: (
        f"{c.train.images} images at every batch"
        if c.train.get("images")
        else f"{c.train.steps} × {c.train.batch_size}"
    ),
    "optimizer, lr": lambda c: (
        f"{c.optim.name} {c.optim.lr:g}"
        + (f", momentum {c.optim.momentum:g}" if c.optim.name == "sgd" and c.optim.momentum else "")
    ),
    "schedule": lambda c: c.schedule.name + (f", warm-up {c.schedule.warmup_steps}" if c.schedule.warmup_steps else ""),
    "evaluated every": lambda c: "at the end" if c.train.eval_every >= c.train.steps else f"{c.train.eval_every} steps",
}
"""The protocol columns README shows per experiment, read from its composed config."""


def protocol_table(scale: str) -> list[str]:
    """Each experiment's protocol at the ``paper`` scale (the paper's setup) beside ``scale``'s, from the composed
    configs, with the open choices its sensitivity map varies; the reasons for every deviation are the comments of
    ``normexp/configs/at_scale/<experiment>/<scale>.yaml``."""
    header = ["experiment", "scale", *PROTOCOL_FIELDS, "mapped (open choices)"]
    rows = []
    for experiment in dict.fromkeys(e for claim in claims.CLAIMS.values() for e in claim.experiments):
        for each in ("paper", scale):
            cfg = compose_config([f"experiment={experiment}", f"scale={each}"])
            mapped = ", ".join(a.key for a in sensitivity.axes_of(experiment, each)) or "–"
            rows.append(
                [experiment if each == "paper" else "", each, *(f(cfg) for f in PROTOCOL_FIELDS.values()), mapped]
            )
    intro = (
        f"Protocols: the paper's setup (`paper` scale) beside ours (`{scale}`), read from the composed configs; why "
        "each deviation remains, and what it costs, is written in "
        f"`normexp/configs/at_scale/<experiment>/{scale}.yaml`."
    )
    return [intro, "", tables.markdown(header, rows)]


def time_table(scale: str) -> list[str]:
    """What reproducing each claim cost, in all and for its primary grid alone (the runs its verdict reads; the rest
    are its sensitivity map): its runs' summed wall time (each run, or fused cell, is one training process, so two
    cores finish about twice as fast; a fused cell's wall time is shared by its members); the totals count a run
    that several claims read once."""
    rows, seconds_of_run, primary_runs = [], {}, set()
    for claim in claims.CLAIMS.values():
        results = reproduce.load(claim.id, scale, ROOT / "results")
        summary = results.summary
        if summary.empty or "wall_time_s" not in summary:
            continue
        seconds = pd.Series(analysis.run_seconds(summary).to_numpy(), index=summary["run_id"])
        primary = sensitivity.select(results, sensitivity.claim_axes(claim, scale)).summary["run_id"]
        seconds_of_run |= seconds.to_dict()
        primary_runs |= set(primary)
        rows.append([claim.id, *_cost(len(summary), seconds.sum()), *_cost(len(primary), seconds[primary].sum())])
    primary_seconds = sum(seconds_of_run[run] for run in primary_runs)
    rows.append(
        [
            "all (a run several claims read counts once)",
            *_cost(len(seconds_of_run), sum(seconds_of_run.values())),
            *_cost(len(primary_runs), primary_seconds),
        ]
    )
    header = ["claim", "runs", "Σ run time (min)", "≈ minutes on 2 cores"]
    return [
        f"Reproduction time at the `{scale}` scale, from the stored runs' wall times: primary grids and sensitivity "
        "maps, and the primary grids alone (what the verdicts read):",
        "",
        tables.markdown([*header, *(f"primary grid: {column}" for column in header[1:])], rows),
    ]


def _cost(runs: int, seconds: float) -> list[str]:
    return [str(runs), f"{seconds / 60:.1f}", f"{seconds / 120:.1f}"]


def bench_section(folder: Path = ROOT / bench.RESULTS_DIR) -> str:
    """Markdown tables of every benchmark CSV in ``folder``: the runner against the bare loop (per batch size when
    it holds several), fused against serial, and the paper-scale cost tables (``normexp.costs``' ``.md``)."""
    lines = []
    for path in sorted(folder.glob("*.csv")):
        frame = pd.read_csv(path)
        shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
        if "impl" not in frame:  # the cells of a paper-scale cost table: its Markdown says it all
            lines += [path.with_suffix(".md").read_text().strip(), ""]
            continue
        fused = "fused" in frame["impl"].unique()
        by = ["experiment", "norm", "batch_size"] if fused else ["experiment"]
        varying = ("model", "seeds" if fused else "batch_size")  # within an experiment: a column of the table
        by += [c for c in varying if c in frame and frame.groupby("experiment")[c].nunique().max() > 1]
        table = bench.format_table(bench.summary_table(frame, by), by, "speedup" if fused else "ratio", markdown=True)
        device, threads, version = frame["device"].iloc[0], frame["threads"].iloc[0], frame["torch"].iloc[0]
        cuda = f", CUDA {frame['cuda'].iloc[0]}" if "cuda" in frame and device != "cpu" else ""
        lines += [f"`{shown}` ({device}, {threads} thread(s), torch {version}{cuda}):", "", table, ""]
    return "\n".join(lines).strip()


def norms_bench_section() -> str:
    """Markdown tables of every stored norm benchmark: our forward+backward time beside torch's own."""
    lines = []
    for path in sorted((ROOT / "results" / "bench" / "norms").glob("*.csv")):
        frame = pd.read_csv(path)
        shape, device, version = frame.iloc[0][["shape", "device", "torch"]]
        header = ["norm", "ours ms", "torch ms", "ours / torch (IQR)", "torch reference"]
        rows = [[r.norm, f"{r.ours_ms:.2f}", *_against_torch(r), r.reference] for r in frame.itertuples()]
        lines += [
            f"`{path.relative_to(ROOT)}` (forward+backward on {shape}, {device}, torch {version}):",
            "",
            tables.markdown(header, rows),
            "",
        ]
    return "\n".join(lines).strip()


def _against_torch(row: object) -> list[str]:
    if pd.isna(row.torch_ms):
        return ["", ""]
    return [f"{row.torch_ms:.2f}", f"{row.ratio:.2f} ({row.ratio_q25:.2f}–{row.ratio_q75:.2f})"]


def replace_block(text: str, block: tuple[str, str], body: str) -> str:
    """``text`` with the lines between the ``block`` markers replaced by ``body``."""
    start, end = block
    head, rest = text.split(start)
    _, tail = rest.split(end)
    return f"{head}{start}\n{body}\n{end}{tail}"


def main() -> int:
    """Rewrite README (or check it)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--scale", default="cpu")
    parser.add_argument("--bench-of", type=Path, default=None, help="only print the bench tables of this folder's CSVs")
    args = parser.parse_args()
    if args.bench_of:
        print(bench_section(args.bench_of.resolve()))
        return 0
    readme = ROOT / "README.md"
    text = readme.read_text()
    updated = replace_block(text, CLAIMS_BLOCK, claims_section(args.scale))
    updated = replace_block(updated, BENCH_BLOCK, bench_section())
    updated = replace_block(updated, NORMS_BENCH_BLOCK, norms_bench_section())
    if args.check:
        return int(updated != text)
    readme.write_text(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
