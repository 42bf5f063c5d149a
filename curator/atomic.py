"""Atomic file writes: write to a temp file in the same folder, fsync, then rename.

A reader (or a resumed job) therefore sees either the old file or the complete new one,
never a torn write. Done-markers rely on this: they are written last, atomically.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

#: The process umask, read once at import (reading it means setting it; doing so later could race
#: with threads creating files). Temp files are created 0600; the final file gets the mode a
#: plain ``open()`` would have given it, so a service running as another user can read it.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``dest``; on success rename it over ``dest``."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # keep the real suffix last: some writers (torch.export) insist on it
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp" + dest.suffix, dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, FILE_MODE)
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(dest: str | os.PathLike, data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def write_text(dest: str | os.PathLike, text: str) -> None:
    write_bytes(dest, text.encode("utf-8"))


def write_json(dest: str | os.PathLike, obj: Any) -> None:
    write_text(dest, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_with(dest: str | os.PathLike, writer: Callable[[Path], None]) -> None:
    """Atomically create ``dest`` with a library writer that takes a path (np.save, faiss)."""
    with atomic_path(dest) as tmp:
        writer(tmp)


def write_npy(dest: str | os.PathLike, array) -> None:
    """Atomically save a numpy array (through a file handle: a path would get ".npy" appended)."""
    import numpy as np

    def save(path: Path) -> None:
        with open(path, "wb") as fh:
            np.save(fh, array)
    write_with(dest, save)
