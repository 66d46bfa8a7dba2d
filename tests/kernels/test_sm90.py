"""Every Triton kernel compiled for sm_90 (H100 / H200): no spills, at most 128 registers, and
the memory-bound kernels issue faster than HBM3e moves their bytes.

Runs ``benchmarks/sm90_compile_check.py --ci`` once (module fixture): Triton's own compiler and
its bundled ``ptxas`` / ``cuobjdump`` / ``nvdisasm`` build and disassemble the kernels ahead of
time for ``GPUTarget("cuda", 90, 32)``; no GPU is needed. The script records every launch the
launchers make over every kind of call (dtypes, targets, weights, options, reductions,
gradients, label check, four row shapes: about 1,800 variants) and compiles a greedy 3-way
covering of their compile-key features (every pointer dtype, constexpr value, int
specialisation, warp count and shape, and every combination of three of them that occurs),
plus the float32 / bfloat16 reference variants at the roofline shape (4096 x 2048) and every
training-step variant of a memory-bound kernel there; ``--cover all`` compiles every variant
(by hand: about 12 CPU-minutes). Skipped only when triton or its bundled tools are missing.
The compile takes minutes: every test here is named ``test_sm90_*`` (select with ``-k sm90``,
leave out with ``-k "not sm90"`` or ``-m "not slow"``).

The memory-bound assertion (:data:`MEMORY_BOUND_KERNELS` in the script: the logistic kernels)
holds for the variants with a gradient at the roofline shape: instructions per element / the
H200's issue rate (132 SMs x 4 schedulers x 1.98 GHz) below bytes per element / 4.8 TB/s.
Half-precision forward-only reduced calls move 2-4 bytes per element and may be issue-bound;
the script reports them.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "sm90_compile_check.py"
KERNELS = ROOT / "src" / "marginloss" / "kernels"


@functools.cache
def _load_script():
    spec = importlib.util.spec_from_file_location("sm90_compile_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _missing() -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "needs triton"
    tools = _load_script().triton_tools()
    absent = [p for p in tools.values() if not os.access(p, os.X_OK)]
    return f"triton's bundled tools are missing: {', '.join(absent)}" if absent else None


pytestmark = [pytest.mark.slow, pytest.mark.skipif(_missing() is not None,
                                                    reason=_missing() or "")]


def _entry_kernels() -> set[str]:
    """The ``@triton.jit`` functions of marginloss.kernels that read a program id, directly or
    through a helper, and that no other jit function calls (the kernels a launcher launches;
    the others are inlined helpers), found in the source."""
    bodies = {}
    for path in KERNELS.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and any(
                    "jit" in ast.unparse(d) for d in node.decorator_list):
                bodies[node.name] = node
    calls = {name: {c.func.id for c in ast.walk(node)
                    if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)} & set(bodies)
             for name, node in bodies.items()}
    reads = {name for name, node in bodies.items() if "program_id" in ast.unparse(node)}
    while True:  # a helper that reads a program id makes its callers read one
        more = {name for name, called in calls.items() if called & reads} - reads
        if not more:
            break
        reads |= more
    called = set().union(*calls.values())
    return reads - called


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("sm90") / "report.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    jobs = str(max(1, min(4, os.cpu_count() or 1)))
    done = subprocess.run([sys.executable, str(SCRIPT), "--ci", "--jobs", jobs, "--json",
                           str(out)], capture_output=True, text=True, env=env, timeout=1500)
    if not out.exists():
        pytest.fail(f"the compile check failed (exit {done.returncode}):\n"
                    f"{done.stderr[-4000:]}\n{done.stdout[-4000:]}")
    data = json.loads(out.read_text())
    return data


def _describe(rows) -> str:
    return "\n".join(f"{r['kernel']} [{r['variant']}] ({r['workload']}): {r['regs']} registers, "
                     f"spill {r['spill_stores']}/{r['spill_loads']} B, ipe {r['ipe']:.1f}, "
                     f"memory {r['memory_ps']:.2f} ps vs issue {r['issue_ps']:.2f} ps"
                     for r in rows)


def test_sm90_covers_each_kernel(report):
    compiled = {r["kernel"] for r in report["rows"]}
    assert compiled == _entry_kernels()
    assert report["cover"] == "3"
    assert len(report["rows"]) < report["variants_total"]


def test_sm90_no_spills(report):
    spilling = [r for r in report["rows"] if r["spill_stores"] or r["spill_loads"]]
    assert not spilling, _describe(spilling)


def test_sm90_registers(report):
    assert report["max_registers"] == 128
    over = [r for r in report["rows"] if r["regs"] > 128]
    assert not over, _describe(over)


def test_sm90_memory_bound(report):
    script = _load_script()
    steps = [r for r in report["rows"] if r["memory_bound_declared"] and r["roofline_shape"]
             and r["grad"]]
    # both logistic kernels, float32 / bfloat16 / float16, every gradient variant there
    assert {r["kernel"] for r in steps} == set(script.MEMORY_BOUND_KERNELS)
    assert {r["dtype"] for r in steps} == {"float32", "bfloat16", "float16"}
    for r in steps:  # the figures are what the script's roofline says
        assert r["memory_ps"] == pytest.approx(r["bytes_per_element"] / 4.8e12 * 1e12)
        assert r["issue_ps"] == pytest.approx(
            r["ipe"] / (32 * 132 * 4 * 1.98e9) * 1e12)
    issue_bound = [r for r in steps if r["issue_ps"] >= r["memory_ps"]]
    assert not issue_bound, _describe(issue_bound)


def test_sm90_loops_mapped(report):
    """Every SASS loop maps to a source loop (else ipe counts it once)."""
    unmapped = [r for r in report["rows"] if r["unmapped_loops"]]
    assert not unmapped, "\n".join(f"{r['kernel']} [{r['variant']}]: {r['unmapped_loops']}"
                                   for r in unmapped)


def test_sm90_cover_selection():
    """The covering itself (no compile): every 3-way combination of feature values that some
    variant has is in a selected one; forced variants are kept; kernels are covered apart."""
    import itertools
    import random

    script = _load_script()
    rng = random.Random(0)
    features, kernels = [], []
    for _ in range(300):
        kernels.append(rng.choice("ab"))
        features.append({("f", j): rng.randrange(1 + j % 3) for j in range(7)}
                        | ({("g",): 1} if rng.random() < 0.3 else {}))
    keep = script.select_cover(kernels, features, forced={5, 7}, strength=3)
    assert {5, 7} <= set(keep) and len(keep) < len(features) // 2
    for kernel in "ab":
        mine = [i for i in range(len(features)) if kernels[i] == kernel]
        names = sorted({f for i in mine for f in features[i]})

        def triples(i, names=names):
            return {tuple((f, features[i].get(f)) for f in c)
                    for c in itertools.combinations(names, 3)}
        wanted = set().union(*(triples(i) for i in mine))
        got = set().union(*(triples(i) for i in keep if kernels[i] == kernel))
        assert wanted == got
