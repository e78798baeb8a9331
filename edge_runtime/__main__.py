"""``python -m edge_runtime ...`` is the ``edge-switcher`` command."""
import sys

from edge_runtime.cli import main

sys.exit(main())
