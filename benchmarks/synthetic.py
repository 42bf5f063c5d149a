"""CLIP-like synthetic embeddings for index benchmarks (peers-measured.md §1.2).

A mixture of 4,096 Gaussian clusters with log-normal weights in a 64-d latent space,
mapped into ``d`` dims by a random orthonormal map, plus a shared mean direction (two
random vectors have cosine ~0.31, as CLIP's do) and a little isotropic noise; within a
cluster the cosine is ~0.80. Queries are fresh draws from the same mixture.
"""
from __future__ import annotations

import numpy as np

MEAN_W2, CLUSTER_W2, SPREAD_W2 = 0.31, 0.49, 0.15   # squared weights of the components
LATENT = 64


class ClusteredVectors:
    def __init__(self, d: int = 512, clusters: int = 4096, seed: int = 0, cluster_w2: float = CLUSTER_W2,
                 spread_w2: float = SPREAD_W2):
        """``cluster_w2``/``spread_w2`` trade cluster identity for within-cluster spread: lowering the first
        and raising the second gives broad, overlapping clusters (a harder index)."""
        rng = np.random.default_rng(seed)
        self.d, self.cluster_w2, self.spread_w2 = d, cluster_w2, spread_w2
        self.mean = rng.standard_normal(d).astype(np.float32)
        self.mean /= np.linalg.norm(self.mean)
        self.latent = latent = min(LATENT, d)
        q, _ = np.linalg.qr(rng.standard_normal((d, latent)))
        self.basis = q.T.astype(np.float32)                        # (64, d) orthonormal rows
        centres = rng.standard_normal((clusters, latent)).astype(np.float32)
        self.centres = centres / np.linalg.norm(centres, axis=1, keepdims=True)
        w = rng.lognormal(0.0, 1.0, clusters)
        self.weights = w / w.sum()
        self.noise = np.sqrt((1 - MEAN_W2 - cluster_w2 - spread_w2) / d)

    def sample(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        out = np.empty((n, self.d), dtype=np.float32)
        for start in range(0, n, 100_000):
            m = min(100_000, n - start)
            c = rng.choice(len(self.centres), size=m, p=self.weights)
            spread = rng.standard_normal((m, self.latent)).astype(np.float32) / np.sqrt(self.latent)
            latent = np.sqrt(self.cluster_w2) * self.centres[c] + np.sqrt(self.spread_w2) * spread
            x = np.sqrt(MEAN_W2) * self.mean + latent @ self.basis
            x += self.noise * rng.standard_normal((m, self.d)).astype(np.float32)
            out[start:start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out


if __name__ == "__main__":
    gen = ClusteredVectors()
    x = gen.sample(50_000, seed=1)
    r = np.random.default_rng(2).integers(0, len(x), (2, 2000))
    print("random-pair cosine", float((x[r[0]] * x[r[1]]).sum(1).mean()))
    import faiss
    d, _ = faiss.knn(x[:1000], x, 2, metric=faiss.METRIC_INNER_PRODUCT)
    print("nearest-neighbour cosine", float(d[:, 1].mean()))
