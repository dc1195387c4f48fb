"""Projected GPU-hours of every paper-scale claim grid, from short slices on generated files: see :mod:`normexp.costs`.

.venv/bin/python scripts/paper_costs.py --device cuda   # -> results/bench/paper-costs-<device>.csv and .md
"""

import sys

from normexp.costs import main

if __name__ == "__main__":
    sys.exit(main())
