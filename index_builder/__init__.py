"""The offline index builder wing: pool -> shards + embeddings -> FAISS index.

Imports the core (``curator``) only; the CLI loads it lazily for ``curator build-index``.
Names load lazily too, so a spawned fill process that unpickles ``index_builder.ondisk``
does not import torch.
"""
from curator.formats import BuildConfig

__all__ = ["BuildConfig", "build_index"]


def __getattr__(name: str):
    if name == "build_index":
        from .build import build_index
        return build_index
    raise AttributeError(name)
