"""marginloss: fast, safe, drop-in margin-family and multi-label losses for PyTorch.

``import marginloss.functional as F`` and ``from marginloss import MultiMarginLoss`` replace the
torch.nn versions of ``soft_margin_loss``, ``multilabel_soft_margin_loss``, ``multi_margin_loss``
and ``multilabel_margin_loss`` (and their modules) with the same signatures and results, computed
in one fused pass, numerically stable, with clear errors for the label-convention mistakes torch
accepts silently.

Importing the package imports no optional dependency (no Triton) and probes no device.
"""

from marginloss import functional, labels
from marginloss._dispatch import BackendUnavailableError
from marginloss._recommend import Recommendation, recommend
from marginloss._validation import DtypeError, LabelError, ShapeError
from marginloss.functional import (
    multi_margin_loss,
    multilabel_margin_loss,
    multilabel_soft_margin_loss,
    soft_margin_loss,
)
from marginloss.nn import (
    MultiLabelMarginLoss,
    MultiLabelSoftMarginLoss,
    MultiMarginLoss,
    SoftMarginLoss,
)

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "DtypeError",
    "LabelError",
    "MultiLabelMarginLoss",
    "MultiLabelSoftMarginLoss",
    "MultiMarginLoss",
    "Recommendation",
    "ShapeError",
    "SoftMarginLoss",
    "functional",
    "labels",
    "multi_margin_loss",
    "multilabel_margin_loss",
    "multilabel_soft_margin_loss",
    "recommend",
    "soft_margin_loss",
]
