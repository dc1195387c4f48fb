"""README's generated sections (claims, benchmarks) are what the scripts compute from the committed results, and
README and docs/ refer only to what the repository holds."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from normexp import claims, reproduce
from normexp.claims import sensitivity

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import update_readme  # noqa: E402  (a script, importable from scripts/)


def test_readme_is_regenerated_from_the_committed_results() -> None:
    check = subprocess.run([sys.executable, "scripts/update_readme.py", "--check"], cwd=ROOT, check=False)
    assert check.returncode == 0, "README is stale: run `python scripts/update_readme.py` and commit it"


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", markdown, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("page", ["README.md", "docs/claims.md"])
def test_links_resolve_inside_the_repository(page: str) -> None:
    text = (ROOT / page).read_text()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        linked = (ROOT / page).parent / path if path else ROOT / page
        assert linked.exists(), f"{page} links to {target}, which is not in the repository"
        if anchor and linked.suffix == ".md":
            assert anchor in _anchors(linked.read_text()), f"{page} links to a missing heading: {target}"


def test_nothing_cites_a_file_outside_the_repository() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    citing = [
        name
        for name in tracked.split()
        if (ROOT / name).suffix in {".py", ".md", ".yaml", ".json", ".ipynb"}
        and "PAPERS.md" in (ROOT / name).read_text(errors="ignore")
        and name != "tests/test_readme.py"
    ]
    assert not citing, f"these files cite PAPERS.md, which is not in the repository: {citing}"


def test_the_time_table_shares_a_fused_cells_wall_time_and_parts_the_primary_grid_from_the_map(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    only = next(iter(claims.CLAIMS))
    axis, *others = sensitivity.claim_axes(claims.CLAIMS[only], "cpu")
    at_primary = {"experiment_name": axis.experiment} | {each.key: each.primary for each in [axis, *others]}
    runs = pd.DataFrame(
        [
            {"run_id": "a", "wall_time_s": 120.0, "fused_members": 2, **at_primary},
            {"run_id": "b", "wall_time_s": 120.0, "fused_members": 2, **at_primary},
            {"run_id": "c", "wall_time_s": 30.0, "fused_members": None, **at_primary, axis.key: axis.others[0]},
        ]
    )
    monkeypatch.setattr(
        reproduce,
        "load",
        lambda claim_id, *_: claims.Results(pd.DataFrame(), runs if claim_id == only else pd.DataFrame()),
    )
    table = "\n".join(update_readme.time_table("cpu"))
    # 120 s shared by two members, plus 30 s alone (the map's run): 150 s in all, 120 s of them the primary grid's
    assert f"| {only} | 3 | 2.5 | 1.2 | 2 | 2.0 | 1.0 |" in table
    assert "| all (a run several claims read counts once) | 3 | 2.5 | 1.2 | 2 | 2.0 | 1.0 |" in table
