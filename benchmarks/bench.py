"""The benchmark: marginloss vs torch eager vs torch.compile, on CPU or CUDA.

    python benchmarks/bench.py [options]       # = marginloss bench [options]
    python benchmarks/bench.py --help          # every option

How to run it and how to read the columns: benchmarks/README.md and the docstring of
:mod:`marginloss.benchmark`. Runs the checkout's ``src/marginloss`` when there is one.
"""

import sys
from pathlib import Path

_SRC = Path(__file__).resolve().parents[1] / "src"
if (_SRC / "marginloss").is_dir():
    sys.path.insert(0, str(_SRC))

from marginloss.benchmark import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
