"""The notebooks: committed with their outputs (GitHub shows them), their sources in sync with their generator,
and executing on the committed results to the very outputs committed (stale outputs fail)."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

from normexp import reproduce

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from make_notebooks import execute, notebooks, printed  # noqa: E402 - the generator script, imported as a module

EXPECTED = notebooks()


def committed(name: str) -> nbformat.NotebookNode:
    path = ROOT / "notebooks" / f"{name}.ipynb"
    assert path.exists(), f"run: python scripts/make_notebooks.py {name}"
    return nbformat.read(path, as_version=4)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_is_current_and_committed_with_outputs(name: str) -> None:
    notebook = committed(name)
    assert [c.source for c in notebook.cells] == [c.source for c in EXPECTED[name].cells], (
        f"stale: run python scripts/make_notebooks.py {name}"
    )
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.outputs for cell in code), "every code cell shows its output"
    assert not [o for cell in code for o in cell.outputs if o.output_type == "error"]


def test_claim_notebooks_analyse_different_things() -> None:
    sources = {name: "".join(c.source for c in nb.cells if c.cell_type == "code") for name, nb in EXPECTED.items()}
    assert len(set(sources.values())) == len(sources)
    assert "test/acc" not in sources["santurkar2018-ics"] and "ics/" in sources["santurkar2018-ics"]
    assert "layer_norms" in sources["xiong2020-gradnorm"]
    # a claim whose new protocol has not run yet has nothing to analyse: its notebook says so instead
    warmup_results = reproduce.load("xiong2020-warmup", "cpu", ROOT / "results").summary
    assert "test/loss" in sources["xiong2020-warmup"] or warmup_results.empty


def test_notebooks_execute_to_their_committed_outputs() -> None:
    """All notebooks in one kernel (one start, one import of torch): their printed outputs are the committed ones."""
    stored = {name: committed(name) for name in EXPECTED}  # the order the generator executes them in
    fresh = execute({name: nbformat.from_dict(notebook) for name, notebook in stored.items()})
    stale = [name for name in stored if printed(fresh[name]) != printed(stored[name])]
    assert not stale, f"outputs are stale: run python scripts/make_notebooks.py {' '.join(stale)}"
