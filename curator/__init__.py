"""curator: retrieval-augmented transfer sets and task-oriented knowledge transfer.

The core package: encoders, on-disk formats, image decoding, retrieval and the CLI.
Heavy dependencies (torch, timm, open_clip, faiss) are imported lazily by the modules
that need them, so ``curator --help`` stays fast.
"""
__version__ = "0.1.0"
