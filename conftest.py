"""Root pytest configuration, loaded before anything is collected (tests and doctests alike)."""

import importlib.util
import os

import pytest
import torch

# Triton kernels are tested on CPU tensors through Triton's interpreter when there is no GPU.
# The variable must be set before anything imports triton (doctest collection imports the kernels).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Without triton (e.g. macOS), the kernel modules cannot be imported for their doctests.
collect_ignore_glob = [] if importlib.util.find_spec("triton") else ["src/marginloss/kernels/*"]


@pytest.fixture(autouse=True)
def _doctest_torch(doctest_namespace):
    """Docstring examples use ``torch`` without importing it, as torch's own docs do."""
    doctest_namespace["torch"] = torch
