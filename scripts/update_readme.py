"""Regenerate README's claims section from the stored results: the verdict table, each claim's checks with the
measured numbers, and its figures. Every number in that section comes from ``normexp verify``; nothing is typed.

    python scripts/update_readme.py            # rewrite the block between the claims markers
    python scripts/update_readme.py --check    # exit 1 if README is not up to date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from normexp import claims, reproduce

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- claims:start -->", "<!-- claims:end -->"


def claims_section(scale: str = "cpu") -> str:
    """The Markdown of the claims section for ``scale``."""
    verdicts = [
        reproduce.judge(c, reproduce.load(c.id, scale, ROOT / "results"), scale) for c in claims.CLAIMS.values()
    ]
    lines = [
        f"Verdicts at the `{scale}` scale, computed by `normexp verify` from the committed results in `results/`.",
        "",
        "| claim | paper | paper's figure | verdict | n runs |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| [{v.claim}](#{v.claim}) | {claims.get(v.claim).paper} | {claims.get(v.claim).paper_figure} | "
        f"**{v.verdict}** | {v.n_runs} |"
        for v in verdicts
    ]
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
        lines += [f"- {'✅' if c.passed else '❌'} {c.name}: {c.measured}" for c in verdict.checks]
        figures = reproduce.figures_of(claim.id, scale, ROOT / "results")
        lines += [""] + [f"![{claim.id} {path.stem}]({path.relative_to(ROOT)})" for path in figures]
    return "\n".join(lines)


def main() -> int:
    """Rewrite README (or check it)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--scale", default="cpu")
    args = parser.parse_args()
    readme = ROOT / "README.md"
    text = readme.read_text()
    head, rest = text.split(START)
    _, tail = rest.split(END)
    updated = f"{head}{START}\n{claims_section(args.scale)}\n{END}{tail}"
    if args.check:
        return int(updated != text)
    readme.write_text(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
