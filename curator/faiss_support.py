"""Import faiss with an actionable error: it comes from the ``cpu`` or ``gpu`` extra."""
from __future__ import annotations

from .errors import CuratorError


def import_faiss():
    try:
        import faiss
    except ImportError:
        raise CuratorError("faiss is not installed: pip install 'curator[cpu]' "
                           "(or 'curator[gpu]' on a CUDA 12 host)") from None
    return faiss
