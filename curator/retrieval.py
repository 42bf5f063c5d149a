"""Open a built pool index and search it: the read side of ``curator build-index``.

The faiss index is memory-mapped (IVF lists and flat codes stay on disk until touched)
and the item table is an Arrow IPC file, also memory-mapped, so opening a 100M-item
index costs seconds and little RAM, and every hit resolves to its original bytes with
one ranged read.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pyarrow as pa

from .errors import CuratorError
from .formats import IndexManifest, load_doc
from .images import DEFAULT_MAX_PIXELS, decode_image
from .pool import read_range

MANIFEST_NAME = "index.json"


@dataclass
class Hit:
    id: int
    score: float
    key: str
    source: str
    offset: int
    size: int
    caption: Optional[str]

    def as_dict(self) -> dict:
        return self.__dict__.copy()


class PoolIndex:
    def __init__(self, root: Path, manifest: IndexManifest, index, items: pa.Table):
        self.root, self.manifest, self.index, self.items = root, manifest, index, items
        self._encoder = None

    @classmethod
    def open(cls, root: str | Path, *, mmap: bool = True) -> "PoolIndex":
        import faiss

        root = Path(root)
        manifest = load_doc(root / MANIFEST_NAME, IndexManifest)
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
        index = faiss.read_index(str(root / manifest.index_file), flags)
        if manifest.nprobe:
            faiss.extract_index_ivf(index).nprobe = manifest.nprobe
        items = pa.ipc.open_file(pa.memory_map(str(root / manifest.items_file), "r")).read_all()
        if index.ntotal != manifest.ntotal or items.num_rows != manifest.ntotal:
            raise CuratorError(f"{root}: index has {index.ntotal} vectors and {items.num_rows} items, "
                               f"manifest says {manifest.ntotal}; the index folder is damaged, rebuild it")
        return cls(root, manifest, index, items)

    @property
    def ntotal(self) -> int:
        return self.manifest.ntotal

    def encoder(self, device: str = "cpu"):
        """The encoder the pool was embedded with (built once, on first use)."""
        if self._encoder is None:
            from .encoders import create_encoder

            enc = self.manifest.encoder
            self._encoder = create_encoder(enc.spec, device=device, precision=enc.precision)
        return self._encoder

    def embed_images(self, blobs: Sequence[bytes], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """Embed query images exactly as the pool was (same decode rules and preprocessing)."""
        import torch

        enc = self.encoder()
        pixels = [enc.preprocess(decode_image(b, max_pixels=max_pixels, min_side=2 * enc.image_size)) for b in blobs]
        return enc.encode_images(torch.stack(pixels))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.manifest.dim:
            raise CuratorError(f"queries must be (n, {self.manifest.dim}), got {queries.shape}")
        return self.index.search(queries, min(k, self.ntotal))

    def hits(self, scores: np.ndarray, ids: np.ndarray) -> list[Hit]:
        keep = ids >= 0
        rows = self.items.take(pa.array(ids[keep])).to_pydict()
        return [Hit(int(i), float(s), rows["key"][n], rows["source"][n], rows["offset"][n], rows["size"][n],
                    rows["caption"][n]) for n, (i, s) in enumerate(zip(ids[keep], scores[keep]))]

    def fetch(self, item_id: int) -> bytes:
        """The original bytes of pool item ``item_id``: one ranged read."""
        if not 0 <= item_id < self.ntotal:
            raise CuratorError(f"item id {item_id} out of range 0..{self.ntotal - 1}")
        row = self.items.slice(item_id, 1).to_pylist()[0]
        return read_range(row["source"], row["offset"], row["size"])
