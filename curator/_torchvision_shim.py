"""Make ``import torchvision`` work beside a CPU-only torch.

PyPI only ships CUDA builds of torchvision. Next to the CPU torch wheel its compiled ops
cannot load, and torchvision then crashes at import while registering fake kernels for
``torchvision::nms``. Defining the two op schemas first lets the import finish; only the
C++ ops (nms, roi_align, video/image decoding) stay unavailable, and curator decodes with
PIL anyway. Where the ops load (a matching CUDA torch), this does nothing.

It must run before anything imports torchvision: timm and open_clip both do.
"""
from __future__ import annotations

import sys

_LIBRARY = None  # the op definitions vanish when the Library object is collected


def import_torchvision():
    """Import torchvision, patching in the missing op schemas if the first try fails."""
    global _LIBRARY
    try:
        import torchvision

        return torchvision
    except RuntimeError as exc:
        if "torchvision::nms" not in str(exc):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    import torch

    _LIBRARY = torch.library.Library("torchvision", "DEF")
    _LIBRARY.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIBRARY.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import torchvision

    return torchvision
