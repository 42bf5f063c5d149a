"""Import faiss with an actionable error: it comes from the ``cpu`` or ``gpu`` extra."""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

from .errors import CuratorError


def import_faiss():
    try:
        import faiss
    except ImportError:
        raise CuratorError("faiss is not installed: pip install 'curator[cpu]' "
                           "(or 'curator[gpu]' on a CUDA 12 host)") from None
    return faiss


@contextlib.contextmanager
def native_stdout_to_stderr() -> Iterator[None]:
    """Send what faiss's C++ prints on stdout ("resizing ...", on-disk list notices) to stderr for a
    while: stdout is where ``--json`` output goes, and it must stay parseable."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
