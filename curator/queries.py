"""Target-task query images: loading them, with labels, and making crop queries.

Queries come from a folder (one sub-folder per class gives labels), a CSV/parquet with
``path[,label]`` columns, or in-memory blobs (uploads). ``--crops N`` adds N seeded random
crops per image, the paper's "image crop retrieval": scene-like images then pull in
neighbours of their parts, not only of the whole.
"""
from __future__ import annotations

import csv
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from PIL import Image

from .errors import BadImageError, CuratorError
from .formats import SkippedItem
from .images import DEFAULT_MAX_PIXELS, decode_image, is_image_name


@dataclass
class Query:
    """A query image: its bytes, or the file that holds them. A file is read when the image is
    decoded, so a job over many large images holds one at a time, not all of them."""
    id: str                       # stable name: relative path, or the uploaded file name
    data: bytes = b""
    label: Optional[str] = None
    path: Optional[Path] = None

    def read(self) -> bytes:
        if self.path is None:
            return self.data
        try:
            return self.path.read_bytes()
        except OSError as exc:  # gone since it was listed: this image is bad, not the whole job
            raise BadImageError("unreadable", f"{self.id}: {exc.strerror}") from None


def load_queries(path: str | Path) -> list[Query]:
    """Queries from a folder (sub-folders are labels) or a CSV/parquet of ``path,label``."""
    path = Path(path)
    if not path.exists():
        raise CuratorError(f"{path} does not exist")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and is_image_name(p.name))
        if not files:
            raise CuratorError(f"{path}: no query images (.jpg/.jpeg/.png/.webp) found")
        return [Query(str(f.relative_to(path)), label=f.relative_to(path).parts[0]
                      if len(f.relative_to(path).parts) > 1 else None, path=f) for f in files]
    rows = _read_table(path)
    if not rows or "path" not in rows[0]:
        raise CuratorError(f"{path}: needs a 'path' column (and optionally 'label')")
    base = path.parent
    queries = []
    for row in rows:
        file = Path(row["path"]) if os.path.isabs(row["path"]) else base / row["path"]
        if not os.access(file, os.R_OK) or not file.is_file():
            raise CuratorError(f"{path}: cannot read query image {file}")
        queries.append(Query(str(row["path"]), label=row.get("label") or None, path=file))
    return queries


def _read_table(path: Path) -> list[dict]:
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if path.suffix.lower() in (".csv", ".tsv"):
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh, delimiter="\t" if path.suffix.lower() == ".tsv" else ","))
    raise CuratorError(f"{path}: queries must be a folder, .csv, .tsv, .parquet or (embeddings) .npy")


def query_views(img: Image.Image, crops: int, seed: int) -> list[Image.Image]:
    """The image itself plus ``crops`` seeded random crops covering 30-70% of its area."""
    views = [img]
    rng = random.Random(seed)
    w, h = img.size
    for _ in range(crops):
        scale = rng.uniform(0.3, 0.7)
        aspect = rng.uniform(3 / 4, 4 / 3)
        cw = max(1, min(w, int(round((scale * w * h * aspect) ** 0.5))))
        ch = max(1, min(h, int(round((scale * w * h / aspect) ** 0.5))))
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        views.append(img.crop((x, y, x + cw, y + ch)))
    return views


def embed_queries(encoder, queries: Sequence[Query], *, crops: int = 0, seed: int = 0,
                  max_pixels: int = DEFAULT_MAX_PIXELS, batch_size: int = 64,
                  cancelled: Callable[[], bool] = lambda: False) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of every view and, per view, the index of its query; bad images name the query.
    ``cancelled`` is asked between images and batches: a cancelled job stops embedding at once."""
    import torch

    pixels, owner = [], []
    for qi, query in enumerate(queries):
        if cancelled():
            raise InterruptedError("cancelled")
        try:
            img = decode_image(query.read(), max_pixels=max_pixels, min_side=2 * encoder.image_size)
        except BadImageError as exc:
            raise BadImageError(exc.reason, f"query {query.id}: {exc.detail}") from None
        for view in query_views(img, crops, seed + qi):
            pixels.append(encoder.preprocess(view))
            owner.append(qi)
    out = []
    for start in range(0, len(pixels), batch_size):
        if cancelled():
            raise InterruptedError("cancelled")
        out.append(encoder.encode_images(torch.stack(pixels[start:start + batch_size])))
    return np.concatenate(out), np.asarray(owner, dtype=np.int64)


def load_query_input(path: str | Path) -> tuple[list[Query], Optional[np.ndarray]]:
    """``--queries``: image queries (folder or table), or a ``.npy`` of precomputed embeddings
    (one row per query, returned as the vectors beside placeholder queries)."""
    if str(path).endswith(".npy"):
        try:
            vectors = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise CuratorError(f"--queries {path}: not a readable .npy array ({exc})") from None
        return [Query(f"embedding-{i}", b"") for i in range(len(vectors))], vectors
    return load_queries(path), None


def decodable(queries: Sequence[Query], *, min_side: int = 0,
              max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[list[Query], list[SkippedItem]]:
    """The queries whose images decode, and the others as skipped items (named, with the reason):
    a curation over a folder goes on without the one bad image instead of aborting."""
    good, skipped = [], []
    for q in queries:
        try:
            decode_image(q.read(), max_pixels=max_pixels, min_side=min_side)
            good.append(q)
        except BadImageError as exc:
            skipped.append(SkippedItem(key=q.id, source="query", reason=exc.reason, detail=exc.detail))
    return good, skipped


def text_queries(encoder, texts: Sequence[str], labels: Optional[Sequence[Optional[str]]] = None
                 ) -> tuple[list[Query], np.ndarray]:
    """Text queries (REACT / SuS-X style retrieval by class prompts), embedded by the encoder's text
    tower: placeholder queries named ``text:PROMPT`` beside their vectors."""
    if not encoder.has_text:
        raise CuratorError(f"encoder {encoder.spec} has no text tower: text queries need an open_clip encoder "
                           f"(query with images instead)")
    labels = list(labels) if labels is not None else [None] * len(texts)
    return [Query(f"text:{t}", label=lab) for t, lab in zip(texts, labels)], encoder.encode_text(list(texts))


def class_prompts(template: str, classes: Sequence[str]) -> list[str]:
    """``--text "a photo of a {}"`` over class names (underscores read as spaces)."""
    if "{}" not in template:
        raise CuratorError(f"--text {template!r} needs a '{{}}' where the class name goes")
    return [template.replace("{}", c.replace("_", " ")) for c in classes]
