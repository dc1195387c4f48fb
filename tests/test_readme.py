"""README's generated sections (claims, benchmarks) are what the scripts compute from the committed results, and
README and docs/ refer only to what the repository holds."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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
