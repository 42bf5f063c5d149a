"""The distill wing: task-oriented knowledge transfer from a VFM to a small student.

Stages (Vemulapalli et al., ICML 2024): (a) adapt the teacher on the labelled target set,
(b) distil it into the student by matching task predictions on the same augmented views of
an unlabelled transfer set, (c) finetune the student on the labelled set. Imports the core
only; transfer sets come from a local folder or from the service through curator.client.
"""
from curator._torchvision_shim import import_torchvision

import_torchvision()  # before anything below imports torchvision, timm or open_clip

from curator.formats import DistillConfig  # noqa: E402

from .methods import METHODS, register_method  # noqa: E402
from .run import run_distill  # noqa: E402

__all__ = ["DistillConfig", "METHODS", "register_method", "run_distill"]
