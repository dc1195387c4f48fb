"""Write ``notebooks/<claim>.ipynb`` for every registered claim, without outputs.

Each notebook loads the claim's stored results through ``normexp`` (no training), shows the per-run table and
the seed statistics per grid cell (``normexp.analysis``), re-judges the claim and draws the same figures as
``normexp figures``. Regenerate after adding a claim: ``python scripts/make_notebooks.py``; the test suite executes
every notebook on the committed results.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from normexp import claims

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def notebook(claim: claims.Claim) -> nbformat.NotebookNode:
    """The notebook of one claim."""
    cells = [
        new_markdown_cell(
            f"# {claim.id}: {claim.title}\n\n{claim.paper}, {claim.paper_figure}. Loads the stored results of "
            "`normexp reproduce` (CPU scale by default), re-judges the claim by its fixed criteria and redraws its "
            'figures. Set `SCALE = "paper"` for paper-scale results.'
        ),
        new_code_cell(
            "from pathlib import Path\n\nfrom IPython.display import Image, display\n\n"
            "import normexp\nfrom normexp import claims, reproduce\n\n"
            f'CLAIM, SCALE = {claim.id!r}, "cpu"\n'
            'RESULTS = Path(normexp.__file__).resolve().parents[1] / "results"\n'
            "claim = claims.get(CLAIM)\nresults = reproduce.load(CLAIM, SCALE, RESULTS)\n"
            'print(f"{len(results.summary)} runs, {len(results.runs)} metric rows")'
        ),
        new_markdown_cell("## Runs: one row per run (config columns, status, final metrics)"),
        new_code_cell(
            'columns = [c for c in results.summary.columns if c == "status" or c.startswith("final/")]\n'
            'results.summary.set_index("run_id")[columns] if not results.summary.empty else "no stored runs"'
        ),
        new_markdown_cell(
            "## Seeds aggregated per grid cell (`normexp.analysis.aggregate`: n, median, IQR, min–max, mean ± std, "
            "diverged and failed runs counted)"
        ),
        new_code_cell(
            "from normexp import analysis\n\n"
            'grid = [c for c in results.runs.columns if c not in ("run_id", "seed", "step", "metric", "value")]\n'
            'finals = ("final/test/acc", "final/test/loss", "final/train/loss")\n'
            "metric = next((m for m in finals if m in results.summary), None)\n"
            'analysis.aggregate(results.summary, grid, metric) if metric and grid else "no final metric per cell"'
        ),
        new_markdown_cell("## Verdict, from the stored results"),
        new_code_cell(
            "from normexp.claims import mark, sensitivity\n\n"
            "verdict = reproduce.judge(claim, results, SCALE)\nprint(verdict.verdict, verdict.note)\n"
            "for check in verdict.checks:\n"
            '    print(mark(check, markdown=False), check.name, "-", check.measured)\n'
            "print(sensitivity.map_table(verdict, markdown=False))"
        ),
        new_markdown_cell("## Figures (the same code as `normexp figures`, drawn into a scratch folder)"),
        new_code_cell(
            "import tempfile\n\nfor path in reproduce.draw(claim, results, Path(tempfile.mkdtemp()), SCALE):\n"
            '    if path.suffix == ".png":\n        display(Image(filename=str(path)))'
        ),
    ]
    for index, cell in enumerate(cells):  # stable ids: regenerating an unchanged notebook changes no byte
        cell.id = f"{claim.id}-{index}"
    return new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}})


def main() -> None:
    """Write (or, with --check, compare) every claim's notebook."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=NOTEBOOKS)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for claim in claims.CLAIMS.values():
        path = args.out / f"{claim.id}.ipynb"
        nbformat.write(notebook(claim), path)
        print(path)


if __name__ == "__main__":
    main()
