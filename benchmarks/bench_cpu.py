"""CPU benchmark of the four losses: marginloss vs torch eager vs torch.compile.

    python benchmarks/bench_cpu.py            # the table recorded in benchmarks/RESULTS.md
    python benchmarks/bench_cpu.py --quick    # a smoke run

Same as ``marginloss bench --device cpu``; see :mod:`marginloss.benchmark` for what each
column means.
"""

import sys

from marginloss.benchmark import main

if __name__ == "__main__":
    sys.exit(main(["--device", "cpu", *sys.argv[1:]]))
