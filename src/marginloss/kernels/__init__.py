"""Triton kernels: each loss and its input gradient in one read of the inputs.

One module per loss family (:mod:`.soft_margin`, :mod:`.multi_margin`,
:mod:`.multilabel_margin`); each states its math and memory traffic at the top and exposes
launchers with the torch backend's ``(loss, grad)`` contract. They are imported lazily by
:mod:`marginloss._dispatch`, only when a call runs on the Triton backend: this package imports
nothing itself, so ``import marginloss`` never imports triton.
"""
