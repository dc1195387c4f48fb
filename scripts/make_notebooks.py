"""Write ``notebooks/<claim>.ipynb`` for every registered claim, and ``notebooks/loading-runs.ipynb``, executed, with
their outputs, so that GitHub shows their tables and figures.

Each claim's notebook tells its claim's story: what the paper found, what the criteria ask, then the stored results
(no training) aggregated over the claim's own grid axes, the claim's own quantity plotted with seaborn (figure-level
objects a reader can restyle), what to look for, and the verdict. ``loading-runs`` shows how to load your own
``runs/`` folders, and W&B runs, into the same frames. A notebook's own cells live in ``notebooks/src/<name>.py``
(percent format); the shared first and last cells (loading the results, the verdict) are written here.

    python scripts/make_notebooks.py            # regenerate and execute every notebook (a few minutes)
    python scripts/make_notebooks.py ioffe2015-lr

The test suite checks that the committed sources match this generator and that the notebooks execute to the same
printed outputs on the committed results (stale outputs fail it).
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from normexp import claims, reproduce

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
RESULTS = NOTEBOOKS.parent / "results"
SOURCES = NOTEBOOKS / "src"
"""Each notebook's own cells as a percent-format script (``# %%``), read and reviewed as code."""
LOADING = "loading-runs"
NOTEBOOK_METADATA = {"kernelspec": {"name": "python3", "display_name": "Python 3"}}

SETUP = """\
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

import normexp
from normexp import analysis, claims, plotting, reproduce
from normexp.claims import sensitivity

%matplotlib inline
pd.set_option("display.precision", 4)
sns.set_theme(style="whitegrid", context="paper", rc=plotting.RC)
CLAIM, SCALE = {claim!r}, "cpu"  # SCALE = "paper" for paper-scale results
RESULTS = Path(normexp.__file__).resolve().parents[1] / "results"
claim = claims.get(CLAIM)
stored = reproduce.load(CLAIM, SCALE, RESULTS)  # the primary setting's runs and the sensitivity map's
results = sensitivity.select(stored, sensitivity.claim_axes(claim, SCALE))  # the primary setting's alone
runs, summary = results.runs, results.summary
axes = [c for c in analysis.varying_columns(summary) if c != "seed"]
print(f"{{len(summary)}} runs at the primary setting ({{len(stored.summary)}} stored with the map's), "
      f"{{len(runs)}} metric rows; config columns that vary: {{axes}}")
"""

VERDICT = """\
verdict = reproduce.judge(claim, stored, SCALE)  # at the primary setting, with the map over the open choices
print(verdict.verdict, verdict.note)
for check in verdict.checks:
    print(claims.mark(check, markdown=False), check.name, "-", check.measured)
if verdict.sensitivity:
    print("\\nsensitivity map (each criterion at every setting; number: its margin; "
          "'= primary': what it measured at the primary setting):\\n")
    print(sensitivity.map_table(verdict, markdown=False))
"""


def story(name: str) -> list[nbformat.NotebookNode]:
    """The cells of ``notebooks/src/<name>.py``, a percent-format script: ``# %%`` starts a code cell,
    ``# %% [markdown]`` a Markdown cell whose lines are comments."""
    cells = []
    for chunk in re.split(r"^# %%", (SOURCES / f"{name}.py").read_text(), flags=re.M)[1:]:
        header, _, body = chunk.partition("\n")
        if header.strip() == "[markdown]":
            text = "\n".join(re.sub(r"^# ?", "", line) for line in body.strip().splitlines())
            cells.append(new_markdown_cell(text))
        else:
            cells.append(new_code_cell(body.strip()))
    return cells


def notebook(claim: claims.Claim) -> nbformat.NotebookNode:
    """The notebook of one claim: its story, the stored results along its own axes, its quantity, its verdict."""
    intro, *analysis = story(claim.id)
    if reproduce.load(claim.id, "cpu", RESULTS).summary.empty:  # a protocol changed, its grid not yet run
        analysis = [
            new_markdown_cell(
                f"No stored results at the `cpu` scale yet: `normexp reproduce {claim.id}` runs its grid, and this "
                "notebook's analysis comes back with them."
            )
        ]
    cells = [
        new_markdown_cell(f"# {claim.id}: {claim.title}\n\n{claim.paper}, {claim.paper_figure}. {intro.source}"),
        new_markdown_cell(
            "The stored results of `normexp reproduce` (no training); lines are medians over seeds, bands the "
            "min–max, as in the tables and verdicts. Setups, criteria and deviations: `docs/claims.md`."
        ),
        new_code_cell(SETUP.format(claim=claim.id)),
        *analysis,
        new_markdown_cell("## Verdict, from the stored results, by the pre-registered criteria"),
        new_code_cell(VERDICT),
    ]
    return _finish(cells, claim.id)


def loading_notebook() -> nbformat.NotebookNode:
    """The notebook that loads your own run folders (and W&B runs) into the frames the claims use."""
    return _finish(story(LOADING), LOADING)


def _finish(cells: list[nbformat.NotebookNode], name: str) -> nbformat.NotebookNode:
    for index, cell in enumerate(cells):  # stable ids: regenerating an unchanged notebook changes no byte
        cell.id = f"{name}-{index}"
    return new_notebook(cells=cells, metadata=NOTEBOOK_METADATA)


def notebooks() -> dict[str, nbformat.NotebookNode]:
    """Every notebook by name, unexecuted."""
    return {LOADING: loading_notebook()} | {claim.id: notebook(claim) for claim in claims.CLAIMS.values()}


def execute(named: dict[str, nbformat.NotebookNode], timeout: int = 900) -> dict[str, nbformat.NotebookNode]:
    """The notebooks executed one after the other in one kernel (one start and one import of torch, not one per
    notebook; each notebook's first cell sets up everything it uses), in a scratch folder, with stable outputs (no
    execution timings)."""
    cells = [(name, index) for name, nb in named.items() for index in range(len(nb.cells))]
    combined = new_notebook(cells=[named[name].cells[index] for name, index in cells], metadata=NOTEBOOK_METADATA)
    with tempfile.TemporaryDirectory() as scratch:
        client = NotebookClient(
            combined, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": scratch}}
        )
        client.execute()
    for cell in combined.cells:
        cell.metadata.pop("execution", None)
    executed = {name: _finish([], name) for name in named}
    for (name, _), cell in zip(cells, combined.cells, strict=True):
        executed[name].cells.append(cell)
    return executed


def printed(nb: nbformat.NotebookNode) -> list[str]:
    """The text a notebook printed or displayed, per output: what the staleness test compares."""
    return [
        re.sub(r" at 0x[0-9a-f]+", "", output.get("text") or output.get("data", {}).get("text/plain", ""))
        for cell in nb.cells
        for output in cell.get("outputs", [])
        # figures (pixels differ between library versions) and warnings are not what a notebook reports
        if output.get("output_type") != "display_data" and output.get("name") != "stderr"
    ]


def main() -> None:
    """Write every notebook (or those named), executed with its outputs."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="notebooks to write (default: all)")
    parser.add_argument("--out", type=Path, default=NOTEBOOKS)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    chosen = {name: nb for name, nb in notebooks().items() if not args.names or name in args.names}
    for name, nb in execute(chosen).items():
        path = args.out / f"{name}.ipynb"
        nbformat.write(nb, path)
        print(path)


if __name__ == "__main__":
    main()
