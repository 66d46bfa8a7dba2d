"""marginloss: fast, safe, drop-in margin-family and multi-label losses for PyTorch.

``import marginloss.functional as F`` and ``from marginloss import MultiMarginLoss`` replace the
torch.nn versions of ``soft_margin_loss``, ``multilabel_soft_margin_loss``, ``multi_margin_loss``
and ``multilabel_margin_loss`` (and their modules) with the same signatures and results, computed
in one fused pass, numerically stable, with clear errors for the label-convention mistakes torch
accepts silently. Each loss is also a registered operator, ``torch.ops.marginloss.<loss>``.

Importing the package imports no optional dependency (no Triton) and probes no device.
"""

from marginloss import (
    _ops,  # noqa: F401 (registers the operators torch.ops.marginloss.*)
    errors,
    functional,
    guide,
    labels,
    linear,  # the fused linear heads (registers torch.ops.marginloss.linear_*)
)
from marginloss._deferred import check_labels
from marginloss.errors import (
    BackendUnavailableError,
    DtypeError,
    LabelError,
    ShapeError,
    XCFormatError,
)
from marginloss.functional import *  # noqa: F403 (the losses, as listed in functional.__all__)
from marginloss.guide import Recommendation, recommend
from marginloss.nn import *  # noqa: F403 (the modules, as listed in nn.__all__)

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "DtypeError",
    "LabelError",
    "Recommendation",
    "ShapeError",
    "XCFormatError",
    "check_labels",
    "errors",
    "functional",
    "guide",
    "labels",
    "linear",
    "recommend",
    *functional.__all__,
    *nn.__all__,  # noqa: F405
]

