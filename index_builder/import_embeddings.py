"""``--embeddings DIR``: index vectors someone already computed instead of re-embedding images.

Two layouts are read:

* clip-retrieval's, as LAION publishes it: ``img_emb/img_emb_N.npy`` beside
  ``metadata/metadata_N.parquet`` (``url``/``image_path`` and ``caption`` columns; row i of the
  parquet is row i of the npy);
* curator's own: a build folder's ``shards/ID.npy`` + ``shards/ID.parquet``.

``DIR`` may be an fsspec URL (``s3://``, ``gs://``, ``hf://``, ... wherever fsspec has the driver
installed, or ``file://``): each npy file is then downloaded into ``shards/`` (and converted there if
it must be) instead of linked, and its metadata read from where it is.

Each npy file becomes one shard task. Importing a shard links (or, when it must be
converted, copies) its vectors to ``shards/ID.npy`` as unit-norm float16 and writes the item
table in curator's schema; the done-marker comes last, as for embedded shards, so imports
resume. Items known only by URL have ``size`` 0: their bytes are not stored here, and
anything that needs them (thumbnails, sets by reference) says so rather than fetching.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curator import atomic
from curator.errors import CuratorError
from curator.formats import ITEM_SCHEMA, ShardDone, ShardTask, save_doc

from .embed_images import shard_paths
from .vectors import releasing_arrow_memory

#: Tolerance on |v| - 1 for vectors linked as they are (float16 rounding is ~1e-3).
NORM_TOLERANCE = 1e-2
BLOCK_ROWS = 262_144


def _number(path: Path) -> int:
    found = re.findall(r"\d+", path.stem)
    return int(found[-1]) if found else -1


def plan_embedding_tasks(root: str) -> list[ShardTask]:
    """One task per embeddings file of ``root`` (either layout, a folder or an fsspec URL), in file-number order."""
    fs, base = _filesystem(root)
    if not fs.isdir(base):
        raise CuratorError(f"--embeddings {root}: not a folder")
    if fs.isdir(f"{base}/img_emb"):
        pairs = [(p, f"{base}/metadata/metadata_{_number(Path(p))}.parquet")
                 for p in sorted(fs.glob(f"{base}/img_emb/*.npy"), key=lambda p: _number(Path(p)))]
    elif fs.isdir(f"{base}/shards"):
        pairs = [(p, p[:-len(".npy")] + ".parquet") for p in sorted(fs.glob(f"{base}/shards/*.npy"))
                 if not Path(p).name.startswith(".")]
    else:
        raise CuratorError(f"--embeddings {root}: expected img_emb/*.npy with metadata/*.parquet (clip-retrieval, "
                           f"LAION) or shards/*.npy with shards/*.parquet (a curator build folder)")
    if not pairs:
        raise CuratorError(f"--embeddings {root}: no .npy embeddings files found")
    for npy, meta in pairs:
        if not fs.exists(meta):
            raise CuratorError(f"--embeddings {root}: {Path(npy).name} has no metadata file "
                               f"{meta[len(base):].lstrip('/')}")
    return [ShardTask(shard_id=f"{i:05d}", kind="embeddings", source=_locator(fs, npy, root),
                      files=[_locator(fs, meta, root)]) for i, (npy, meta) in enumerate(pairs)]


def _filesystem(root: str):
    """(filesystem, path) of a folder or URL; a URL whose scheme has no fsspec driver here is a clear error."""
    import fsspec

    if "://" not in root:
        return fsspec.filesystem("file"), str(Path(root).resolve())
    try:
        fs, path = fsspec.core.url_to_fs(root)
    except (ImportError, ValueError) as exc:
        raise CuratorError(f"--embeddings {root}: no fsspec driver for it here ({exc})") from None
    return fs, path.rstrip("/")


def _locator(fs, path: str, root: str) -> str:
    """What a task records: a local path as it is, anything else as a full URL."""
    return path if "://" not in root else fs.unstrip_protocol(path)


def _pairs(npys: list[Path], meta_dir: Path, pattern: str) -> list[tuple[Path, Path]]:
    return [(p, meta_dir / pattern.format(n=str(_number(p)))) for p in npys]


@releasing_arrow_memory
def import_shard(task: ShardTask, out: Path, dim: int, encoder: str) -> ShardDone:
    """Bring one embeddings file and its metadata into ``out/shards`` (atomic, marker last)."""
    t0 = time.perf_counter()
    paths = shard_paths(out, task.shard_id)
    paths["npy"].parent.mkdir(parents=True, exist_ok=True)
    remote = "://" in task.source
    local = _download(task.source, paths["npy"]) if remote else Path(task.source)
    try:
        try:
            vectors = np.load(local, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise CuratorError(f"{task.source}: cannot read as a .npy array ({exc})") from None
        if vectors.ndim != 2 or vectors.shape[1] != dim:
            raise CuratorError(f"{task.source}: embeddings of shape {vectors.shape}, but --encoder gives {dim}-d "
                               f"vectors; pass the --encoder that computed them")
        meta = _read_metadata(task.files[0])
        if meta.num_rows != len(vectors):
            raise CuratorError(f"{task.files[0]}: {meta.num_rows} rows for {len(vectors)} embeddings in {task.source}")
        _place_vectors(vectors, local, paths["npy"], move=remote)
    finally:
        if remote:
            local.unlink(missing_ok=True)
    atomic.write_with(paths["parquet"], lambda p: pq.write_table(items_table(meta, task.files[0]), p))
    done = ShardDone(shard_id=task.shard_id, task_digest=task.digest(), encoder=encoder, dim=dim, n_items=meta.num_rows,
                     n_skipped=0, embeddings_file=paths["npy"].name, metadata_file=paths["parquet"].name,
                     seconds=round(time.perf_counter() - t0, 3))
    save_doc(paths["done"], done)
    return done


def _download(url: str, dest: Path) -> Path:
    """A remote npy file copied beside ``dest`` (hidden until placed), in blocks."""
    import fsspec

    tmp = dest.with_name(f".{dest.name}.download")
    try:
        with fsspec.open(url, "rb") as src, open(tmp, "wb") as out:
            while block := src.read(16 << 20):
                out.write(block)
    except (OSError, ValueError) as exc:
        tmp.unlink(missing_ok=True)
        raise CuratorError(f"--embeddings: cannot read {url}: {exc}") from None
    return tmp


def _read_metadata(where: str) -> pa.Table:
    import fsspec

    try:
        with fsspec.open(where, "rb") as fh:
            return pq.read_table(fh)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise CuratorError(f"--embeddings: cannot read metadata {where}: {exc}") from None


def _place_vectors(vectors: np.ndarray, source: Path, dest: Path, move: bool = False) -> None:
    """Link float16 unit vectors as they are (``move``: a downloaded file is renamed in place instead);
    convert anything else in blocks (bounded memory)."""
    sample = np.asarray(vectors[: min(len(vectors), 4096)], dtype=np.float32)
    unit = not len(sample) or float(np.abs(np.linalg.norm(sample, axis=1) - 1).max()) < NORM_TOLERANCE
    if vectors.dtype == np.float16 and unit and move:
        os.replace(source, dest)
        return
    if vectors.dtype == np.float16 and unit:
        tmp = dest.with_name(f".{dest.name}.link")
        tmp.unlink(missing_ok=True)
        os.symlink(source, tmp)
        os.replace(tmp, dest)
        return

    def convert(path: Path) -> None:
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=vectors.shape)
        for s in range(0, len(vectors), BLOCK_ROWS):
            block = np.asarray(vectors[s:s + BLOCK_ROWS], dtype=np.float32)
            norms = np.linalg.norm(block, axis=1, keepdims=True)
            out[s:s + BLOCK_ROWS] = block / np.where(norms > 0, norms, 1)
        out.flush()
        del out
    atomic.write_with(dest, convert)


def items_table(meta: pa.Table, where: str) -> pa.Table:
    """The metadata in curator's item schema: curator's own columns as they are, or clip-retrieval's
    ``url``/``image_path``/``caption``/``key`` mapped (size 0: the bytes are not stored here)."""
    names = set(meta.column_names)
    if {"key", "source", "offset", "size"} <= names:
        return meta.select(ITEM_SCHEMA.names).cast(ITEM_SCHEMA)
    n = meta.num_rows
    locator = next((c for c in ("url", "image_path") if c in names), None)
    if locator is None:
        raise CuratorError(f"{where}: metadata needs a 'url' or 'image_path' column (clip-retrieval's), or "
                           f"curator's key/source/offset/size; it has {sorted(names)}")
    source = meta.column(locator).cast(pa.string())
    key = meta.column("key").cast(pa.string()) if "key" in names else pa.array([str(i) for i in range(n)])

    def col(name: str, typ, fill):
        return meta.column(name).cast(typ) if name in names else pa.array([fill] * n, typ)
    return pa.table({
        "key": key, "source": source, "offset": pa.array(np.zeros(n, np.int64)), "size": pa.array(np.zeros(n, np.int64)),
        "sha256": col("sha256", pa.string(), ""), "width": col("width", pa.int32(), 0),
        "height": col("height", pa.int32(), 0), "caption": col("caption", pa.string(), None),
        "meta": pa.array([None] * n, pa.string()),
    }, schema=ITEM_SCHEMA)
