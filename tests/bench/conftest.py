"""Lets the tests import bench/ modules: bench/ is a directory of scripts, not a package."""

import sys
from pathlib import Path

_BENCH = str(Path(__file__).resolve().parents[2] / "bench")
if _BENCH not in sys.path:
    sys.path.insert(0, _BENCH)
