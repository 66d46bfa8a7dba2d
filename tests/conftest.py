import os

import pytest
import torch

# Triton kernels are tested on CPU tensors through Triton's interpreter when there is no GPU.
# The variable must be set before anything imports triton.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
