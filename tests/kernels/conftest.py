"""Set-up for the kernel tests.

**Triton < 3.7 interpreter with NumPy >= 2.4.** The interpreter implements a scalar's
``__index__`` as ``int(self.handle.data)``, and its scalars are 1-element arrays, which
NumPy 2.4 no longer converts with ``int()`` (a ``TypeError``): every kernel with a runtime
loop bound (``for c0 in range(0, n_classes, BLOCK_C)``) fails under the interpreter
(triton-lang/triton issue 9171). Upstream PR 9172 (in Triton 3.7) made it
``int(self.handle.data.squeeze())``; :func:`squeeze_interpreter_index` applies the same change
to older Triton, guarded by the version and by the patched function existing, so the kernel
tests pass under Triton 3.6's interpreter with NumPy 2.4 as well as under newer Triton (where
it does nothing). ``benchmarks/sm90_compile_check.py`` carries the same shim for its
interpreter runs.
"""

from __future__ import annotations

import importlib.util
import re


def squeeze_interpreter_index() -> bool:
    """Backport of triton-lang/triton PR 9172 for Triton < 3.7; returns whether it patched.

    The interpreter installs its ``tensor.__index__`` in ``_patch_lang_tensor`` each time it
    runs a kernel (and restores the original afterwards); the wrapper installs the squeezed
    one right after, through the same restore scope.
    """
    if importlib.util.find_spec("triton") is None:
        return False
    import triton
    from triton.runtime import interpreter

    version = tuple(int(v) for v in re.findall(r"\d+", triton.__version__)[:2])
    original = getattr(interpreter, "_patch_lang_tensor", None)
    if version >= (3, 7) or original is None or getattr(original, "_squeezed_index", False):
        return False

    def index(self):
        return int(self.handle.data.squeeze())

    def patched(tensor, *args, **kwargs):
        original(tensor, *args, **kwargs)
        scope = args[0] if args else kwargs.get("scope")
        if hasattr(scope, "set_attr"):  # Triton 3.5+: restored after the kernel runs
            scope.set_attr(tensor, "__index__", index)
        else:  # older Triton set the attributes directly
            tensor.__index__ = index

    patched._squeezed_index = True
    interpreter._patch_lang_tensor = patched
    return True


# At collection, before any kernel runs (the root conftest has set TRITON_INTERPRET by now).
squeeze_interpreter_index()
