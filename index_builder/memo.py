"""Exact duplicates cost no forward pass: a batch's vectors, encoding each content once.

Web pools repeat files byte for byte (18% of the public protocol's openclipart + Oxygen pool), and the
encoder's forward pass is most of an index build's time. The build still finds and drops duplicates after
embedding (``vectors.keep_masks``); this only saves the work, so the outputs are the same: a repeated item
gets its first copy's vector.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Optional, Sequence

import numpy as np
import torch

from curator.encoders import Encoder


class VectorMemo:
    """The vectors of the last ``limit`` distinct contents embedded, by sha256. Bounded because a loader
    group holds up to 100,000 items (at 1,280-d in float16, 50,000 vectors are 128 MB); a duplicate further
    back than that is encoded again, which costs time, never correctness."""

    def __init__(self, limit: int):
        self.limit = max(0, limit)
        self.vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self.reused = 0

    def encode(self, encoder: Encoder, pixels: torch.Tensor, keys: Sequence[Optional[str]]) -> list[np.ndarray]:
        """``encoder.encode_images(pixels)`` row by row, running the encoder only on rows whose key is new
        (not remembered, and not already earlier in this batch). A row without a key is always encoded, and
        so is every row when ``limit`` is 0 (benchmarks of the pipeline itself)."""
        if not self.limit:
            return list(encoder.encode_images(pixels))
        first: dict[object, int] = {}
        for row, key in enumerate(keys):
            if key is None or key not in self.vectors:
                first.setdefault(key if key is not None else ("row", row), row)
        rows = sorted(first.values())
        fresh = dict(zip(rows, encoder.encode_images(pixels[rows]))) if rows else {}
        out = []
        for row, key in enumerate(keys):
            if row in fresh:
                out.append(fresh[row])
            elif key in first:            # repeated within this batch
                out.append(fresh[first[key]])
            else:                         # seen in an earlier batch
                self.vectors.move_to_end(key)
                out.append(self.vectors[key])
        self.reused += len(keys) - len(rows)
        for row in rows:
            self._remember(keys[row], fresh[row])
        return out

    def _remember(self, key: Optional[str], vector: np.ndarray) -> None:
        if key is None:
            return
        self.vectors[key] = np.asarray(vector, dtype=np.float16)
        if len(self.vectors) > self.limit:
            self.vectors.popitem(last=False)
