"""Runner vs bare-loop throughput, GPU fast path and fused runs: see :mod:`normexp.bench`.

.venv/bin/python scripts/bench.py --quick   # < 1 min on CPU; the last line is the runner's overhead ratio
"""

import sys

from normexp.bench import main

if __name__ == "__main__":
    sys.exit(main())
