"""The offline index builder wing: pool -> shards + embeddings -> FAISS index.

Imports the core (``curator``) only; the CLI loads it lazily for ``curator build-index``.
"""
from .build import BuildConfig, build_index

__all__ = ["BuildConfig", "build_index"]
