"""Pool inputs: discover items in folders and webdataset tars, and read them back.

Every pool item is addressed by ``(source, offset, size)``: the original bytes are one
ranged read away, from a local disk or any fsspec URL. That is what lets the index
point at items instead of copying them, and the curation step copy originals verbatim.
"""
from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path
from typing import Iterable, NamedTuple, Optional

from .errors import CuratorError
from .formats import ShardTask
from .images import is_image_name
from .remote import no_ranges, open_remote, read_remote_range, whole_copy

CAPTION_EXTENSIONS = ("txt", "caption")
META_EXTENSIONS = ("json",)
URL_LIST_SUFFIXES = (".csv", ".parquet", ".tsv")


class PoolItem(NamedTuple):
    key: str
    source: str
    offset: int
    size: int
    caption: Optional[str] = None
    meta: Optional[str] = None


def input_kind(spec: str) -> str:
    """Classify one ``--input``: ``folder``, ``tar`` (a path, URL or brace pattern) or ``urls``."""
    lowered = spec.lower()
    if "://" in lowered:  # a URL's query string is not part of its name; in a path, "?" is a glob
        lowered = lowered.split("?")[0]
    if lowered.endswith(URL_LIST_SUFFIXES):
        return "urls"
    if lowered.endswith(".tar"):
        return "tar"
    if os.path.isdir(spec):
        return "folder"
    if lowered.endswith((".tar.gz", ".tgz")):
        raise CuratorError(f"{spec}: compressed tars cannot be read by byte range; repack as plain .tar")
    raise CuratorError(f"{spec}: not a folder, a .tar shard (or brace pattern), or a .csv/.parquet URL list")


def expand_tar_spec(spec: str) -> list[str]:
    """Expand ``pool-{00000..00099}.tar`` and globs into concrete shard URLs."""
    import braceexpand

    urls: list[str] = []
    for url in braceexpand.braceexpand(spec):
        if any(ch in url for ch in "*?[") and "://" not in url:
            urls.extend(sorted(str(p) for p in Path().glob(url)) if not os.path.isabs(url)
                        else sorted(str(p) for p in Path("/").glob(url.lstrip("/"))))
        else:
            urls.append(url)
    return urls


def list_folder_images(root: str) -> list[str]:
    """Image files under ``root`` (recursive, symlinked folders followed once), relative and
    sorted so plans are stable."""
    found, visited = [], set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in visited:  # a symlink loop, or two links to one folder
            dirnames[:] = []
            continue
        visited.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if is_image_name(name) and not name.startswith("."):
                found.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(found)


def plan_tasks(inputs: Iterable[str], shard_size: int) -> list[ShardTask]:
    """Split folders and tars into shard tasks with stable ids (``00000``, ``00001``...)."""
    tasks: list[ShardTask] = []
    for spec in inputs:
        kind = input_kind(spec)
        if kind == "urls":
            raise CuratorError(f"{spec}: URL lists must be downloaded first (curator build-index does this)")
        if kind == "folder":
            root = os.path.abspath(spec)
            files = list_folder_images(root)
            if not files:
                raise CuratorError(f"{spec}: no .jpg/.jpeg/.png/.webp images found")
            for start in range(0, len(files), shard_size):
                tasks.append(ShardTask(shard_id="", kind="folder", source=root, files=files[start:start + shard_size]))
        else:
            for url in expand_tar_spec(spec):
                local = "://" not in url
                tasks.append(ShardTask(shard_id="", kind="tar", source=os.path.abspath(url) if local else url))
    if not tasks:
        raise CuratorError("no inputs given")
    for i, task in enumerate(tasks):
        task.shard_id = f"{i:05d}"
    return tasks


def list_items(task: ShardTask) -> list[PoolItem]:
    if task.kind == "folder":
        items = []
        for rel in task.files or []:
            path = os.path.join(task.source, rel)
            try:
                size = os.path.getsize(path)
            except OSError:
                size = -1  # vanished since planning; the reader reports it as missing
            items.append(PoolItem(rel, path, 0, size, caption=_caption_beside(path)))
        return items
    return scan_tar(task.source)


def _caption_beside(path: str, limit: int = 4096) -> Optional[str]:
    """The caption of a folder image: the first line of ``NAME.txt`` (or ``.caption``) beside it, as
    img2dataset and Tux Paint write them (Tux Paint's next lines are ``lang.utf8=`` translations), or the
    ``caption`` (or ``text``) of a ``NAME.json``; None when there is none."""
    stem = os.path.splitext(path)[0]
    for ext in CAPTION_EXTENSIONS + META_EXTENSIONS:
        try:
            with open(f"{stem}.{ext}", "rb") as fh:
                raw = fh.read(limit if ext != "json" else 1 << 20)
        except OSError:
            continue
        text = _json_caption(raw) if ext == "json" else _first_line(raw.decode("utf-8", errors="replace"))
        if text and text.strip():
            return text.strip()[:limit]
    return None


def _first_line(text: str) -> str:
    return next((line for line in text.splitlines() if line.strip()), "")


def _json_caption(raw: bytes) -> Optional[str]:
    try:
        meta = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None  # a broken sidecar is no caption, not a failed build
    if not isinstance(meta, dict):
        return None
    value = meta.get("caption", meta.get("text"))
    return value if isinstance(value, str) else None


def scan_tar(url: str) -> list[PoolItem]:
    """Group a webdataset tar's members into samples and record each image's byte range.

    Members of one sample are adjacent and share a key: the member name up to the first
    dot of its basename (webdataset's rule). Captions and json are small and read here.
    """
    try:
        samples, order = _scan(url)
    except ValueError as exc:
        if not no_ranges(exc):
            raise CuratorError(f"{url}: cannot read as a tar shard ({exc})") from None
        samples, order = _scan(whole_copy(url))  # the server offers no ranges: scan a whole local copy
    return [PoolItem(k, url, *samples[k]["image"], samples[k].get("caption"), samples[k].get("meta"))
            for k in order if "image" in samples[k]]


def _scan(url: str) -> tuple[dict[str, dict], list[str]]:
    samples: dict[str, dict] = {}
    order: list[str] = []
    try:
        with (open(url, "rb") if "://" not in url else open_remote(url)) as fh:
            mode = "r:" if fh.seekable() else "r|"
            with tarfile.open(fileobj=fh, mode=mode) as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    folder, _, base = member.name.rpartition("/")
                    stem, dot, ext = base.partition(".")
                    if not dot:
                        continue
                    key = f"{folder}/{stem}" if folder else stem
                    if key not in samples:
                        samples[key] = {}
                        order.append(key)
                    ext = ext.lower()
                    if is_image_name(base) and "image" not in samples[key]:
                        samples[key]["image"] = (member.offset_data, member.size)
                    elif ext in CAPTION_EXTENSIONS or ext in META_EXTENSIONS:
                        data = tar.extractfile(member).read().decode("utf-8", "replace")
                        samples[key]["caption" if ext in CAPTION_EXTENSIONS else "meta"] = data
    except (tarfile.TarError, OSError) as exc:
        raise CuratorError(f"{url}: cannot read as a tar shard ({type(exc).__name__}: {exc})") from None
    return samples, order


def read_range(source: str, offset: int, size: int) -> bytes:
    """One ranged read of ``size`` bytes at ``offset`` from a local path or fsspec URL."""
    if size < 0:
        raise FileNotFoundError(source)
    if "://" not in source:  # pread: no file object, no read-ahead buffer (this runs once per sample)
        fd = os.open(source, os.O_RDONLY)
        try:
            data = os.pread(fd, size, offset)
        finally:
            os.close(fd)
    else:
        data = read_remote_range(source, offset, size)
    if len(data) != size:
        raise OSError(f"{source}: short read ({len(data)} of {size} bytes at {offset})")
    return data
