"""``python -m normexp`` runs the command line."""

import sys

from normexp.cli import main

sys.exit(main())
