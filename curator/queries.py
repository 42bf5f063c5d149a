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
from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np
from PIL import Image

from .errors import BadImageError, CuratorError
from .formats import SkippedItem
from .images import DEFAULT_MAX_PIXELS, is_image_name
from .pipeline import ImagePipeline, OnBad, Ref, Skip


@dataclass
class Query:
    """A query image: its bytes, or the file that holds them. A file is read when the image is
    decoded, so a job over many large images holds one at a time, not all of them."""
    id: str                       # stable name: relative path, or the uploaded file name
    data: bytes = b""
    label: Optional[str] = None
    path: Optional[Path] = None

    @property
    def ref(self) -> Ref:
        """Where the image pipeline reads it from."""
        return self.data if self.path is None else str(self.path)

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


class EmbeddedQueries(NamedTuple):
    vectors: np.ndarray            # every view's embedding
    owner: np.ndarray              # per view, the position of its query in ``kept``
    kept: list[Query]              # the queries whose images decoded, in order
    skipped: list[SkippedItem]     # the others (only when bad images are skipped)


def embed_queries(encoder, queries: Sequence[Query], *, crops: int = 0, seed: int = 0,
                  max_pixels: int = DEFAULT_MAX_PIXELS, batch_size: int = 64, on_bad: OnBad = "raise",
                  source: str = "query", cancelled: Callable[[], bool] = lambda: False) -> EmbeddedQueries:
    """Embeddings of every view of every query, each image decoded once through the image pipeline.
    ``on_bad``: ``raise`` names the first bad query (queries given one by one); ``skip`` leaves bad
    ones out and names them in ``skipped`` (a folder of queries). ``cancelled`` is asked between
    images and batches: a cancelled job stops embedding at once."""
    import torch

    pipeline = ImagePipeline(max_pixels=max_pixels, min_side=2 * encoder.image_size, on_bad=on_bad)
    pixels, owner, kept, skipped = [], [], [], []
    for query in queries:
        if cancelled():
            raise InterruptedError("cancelled")
        decoded = pipeline.decode(query.ref, f"{source} {query.id}")
        if isinstance(decoded, Skip):
            skipped.append(SkippedItem(key=query.id, source=source, reason=decoded.reason, detail=decoded.detail))
            continue
        for view in query_views(decoded[0], crops, seed + len(kept)):
            pixels.append(encoder.preprocess(view))
            owner.append(len(kept))
        kept.append(query)
    out = [np.zeros((0, encoder.dim), dtype=np.float32)]
    for start in range(0, len(pixels), batch_size):
        if cancelled():
            raise InterruptedError("cancelled")
        out.append(encoder.encode_images(torch.stack(pixels[start:start + batch_size])))
    return EmbeddedQueries(np.concatenate(out), np.asarray(owner, dtype=np.int64), kept, skipped)


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
