"""Triton kernels: each loss and its input gradient in one read of the inputs.

One module per loss, named with the loss's one name (``marginloss.kernels.<loss>``, e.g.
:mod:`.multi_margin_loss`), plus :mod:`._common` for the Triton helpers several kernels share.
Each module states its math, layout and memory traffic at the top and exposes
``launch(call) -> Result``, the contract of the loss's ``torch_compute`` (see
:mod:`marginloss.losses._spec`). Every launch goes through ``torch.library.wrap_triton``, and
``launch`` reads no tensor values, so it runs on FakeTensors and inside ``triton_op`` operators.

The modules are imported lazily by :mod:`marginloss.backends.triton`, only when a call runs on
the Triton backend: this package imports nothing itself, so ``import marginloss`` never imports
triton.
"""
