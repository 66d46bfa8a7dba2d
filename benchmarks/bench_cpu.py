"""Kept for the commands recorded in RESULTS.md: ``python benchmarks/bench.py --device cpu``."""

import runpy
import sys
from pathlib import Path

sys.argv[1:1] = ["--device", "cpu"]
runpy.run_path(str(Path(__file__).with_name("bench.py")), run_name="__main__")
