"""README's generated sections (claims, benchmarks) are what the scripts compute from the committed results."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_is_regenerated_from_the_committed_results() -> None:
    check = subprocess.run([sys.executable, "scripts/update_readme.py", "--check"], cwd=ROOT, check=False)
    assert check.returncode == 0, "README is stale: run `python scripts/update_readme.py` and commit it"
