"""Make torchvision importable on the CPU-only torch build; import before smp/timm.

Why: the only torchvision wheel matching torch 2.13.0 is a CUDA build whose
import fails on CPU torch ("operator torchvision::nms does not exist").
segmentation-models-pytorch imports torchvision through its encoders, so we
declare the two operator schemas torchvision registers meta kernels for. We
need neither op; declaring them only when missing keeps a real torchvision
(e.g. on a GPU machine) untouched. This is the single place that does it.
"""

from __future__ import annotations

import torch

_SCHEMA = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"

if not hasattr(torch.ops.torchvision, "nms"):
    _LIB = torch.library.Library("torchvision", "FRAGMENT")
    _LIB.define("nms" + _SCHEMA)
    _LIB.define("qnms" + _SCHEMA)
