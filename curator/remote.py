"""Remote shard inputs (any fsspec URL), read by byte range where the server offers ranges, and whole
where it does not.

A pool item is one ranged read away (``curator.pool``). Object stores and most web servers answer
``Range`` requests; a plain server (``python -m http.server``) does not, and fsspec then refuses to
seek. Such a shard is fetched once, whole, into a local cache, and every later read of it is a local
``pread``. Every failure is one line that names the URL.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

import fsspec

from .errors import CuratorError

#: What fsspec raises when a server answers no byte ranges (its message says so).
NO_RANGES = "range requests"
#: URLs whose server answered no byte ranges, in this process.
_RANGELESS: set[str] = set()


def cache_dir() -> Path:
    """Where whole copies of range-less remote shards go: ``$CURATOR_REMOTE_CACHE``, else a folder of
    this user's in the system's temporary directory."""
    return Path(os.environ.get("CURATOR_REMOTE_CACHE", Path(tempfile.gettempdir()) / f"curator-remote-{os.getuid()}"))


def no_ranges(exc: BaseException) -> bool:
    return isinstance(exc, ValueError) and NO_RANGES in str(exc)


def _needs_driver(url: str, exc: ImportError) -> CuratorError:
    return CuratorError(f"{url}: reading this URL needs a package that is not installed ({exc}); "
                        f"pip install 'curator[ingest]' installs aiohttp and requests for http(s)")


@contextmanager
def open_remote(url: str) -> Iterator[BinaryIO]:
    """An fsspec file, with one-line errors for a missing driver or an unreachable URL (for a shard
    being listed: a build cannot go on without it)."""
    try:
        with fsspec.open(url, "rb") as fh:
            yield fh
    except ImportError as exc:
        raise _needs_driver(url, exc) from None
    except FileNotFoundError:
        raise CuratorError(f"{url}: not found (HTTP 404, or no such object)") from None


def whole_copy(url: str) -> str:
    """A local copy of the remote file, fetched once (streamed, written atomically) and reused."""
    _RANGELESS.add(url)
    path = cache_dir() / (hashlib.sha256(url.encode()).hexdigest()[:40] + Path(url.split("?")[0]).suffix)
    if path.exists():
        return str(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with fsspec.open(url, "rb", block_size=0) as src, open(tmp, "wb") as dst:  # block_size 0: streamed
            shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(tmp, path)
    except ImportError as exc:
        raise _needs_driver(url, exc) from None
    except OSError as exc:  # still an OSError: a reader counts the item unreadable and goes on
        raise OSError(f"{url}: cannot fetch ({type(exc).__name__}: {exc})") from None
    finally:
        tmp.unlink(missing_ok=True)
    return str(path)


def read_remote_range(url: str, offset: int, size: int) -> bytes:
    """``size`` bytes at ``offset``: one ranged request, or a read of the whole copy where ranges are refused
    (remembered per process, so each later read is local at once). A missing file stays an OSError: one
    item's read, where the reader counts the item unreadable and goes on."""
    if url not in _RANGELESS:
        try:
            with fsspec.open(url, "rb") as fh:
                fh.seek(offset)
                return fh.read(size)
        except ImportError as exc:
            raise _needs_driver(url, exc) from None
        except ValueError as exc:
            if not no_ranges(exc):
                raise
    fd = os.open(whole_copy(url), os.O_RDONLY)
    try:
        return os.pread(fd, size, offset)
    finally:
        os.close(fd)
