"""Shared test helpers: generated images and shards, and a real server process on loopback.

Test modules import these from here (never from each other or from conftest)."""
from __future__ import annotations

import io
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import httpx
import numpy as np
import webdataset as wds
from PIL import Image

from curator.specs import SMALL_ENCODER

REPO = Path(__file__).resolve().parents[1]
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


# real ImageNet features: an untrained model maps these images to nearly one direction
REAL_ENCODER = SMALL_ENCODER

CURATE = "curate-key-0123456789abcdef"
READ = "read-key-0123456789abcdef"
WORKER = "worker-key-0123456789abcdef"
ADMIN = "admin-key-0123456789abcdef"


def png_bytes(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def pattern_image(seed: int, size: int = 48) -> Image.Image:
    """A distinct image per seed: a colour field with a seeded block pattern."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, 3)
    arr = np.tile(base, (size, size, 1)).astype(np.uint8)
    for _ in range(4):
        x, y = rng.integers(0, size - 8, 2)
        arr[y:y + 8 + seed % 8, x:x + 8] = rng.integers(0, 256, 3)
    return Image.fromarray(arr)


def make_image_folder(root: Path, n: int, *, classes: int = 3, seed: int = 0) -> list[Path]:
    paths = []
    for i in range(n):
        path = root / f"class{i % classes}" / f"img{i:04d}.{'jpg' if i % 2 else 'png'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        pattern_image(seed * 100_000 + i).save(path)
        paths.append(path)
    return paths


def write_tar(path, n, start=0, with_text=True):
    blobs = {}
    with wds.TarWriter(str(path)) as sink:
        for i in range(start, start + n):
            data = png_bytes(pattern_image(i), "PNG")
            sample = {"__key__": f"{i:06d}", "png": data, "json": {"i": i}}
            if with_text:
                sample["txt"] = f"caption {i}"
            sink.write(sample)
            blobs[f"{i:06d}"] = data
    return blobs


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (a decompression bomb's first bytes)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, index_dir, data_dir, *extra, preexec=None):
        self.index_dir, self.data_dir, self.extra, self.preexec = index_dir, data_dir, extra, preexec
        self.keys = data_dir.parent / "keys.txt"
        self.keys.write_text(f"alice:curate:{CURATE}\nbob:read:{READ}\nroot:admin:{ADMIN}\nfleet:worker:{WORKER}\n")
        self.proc = None

    def start(self):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "curator.cli", "serve", "--index", str(self.index_dir), "--data",
             str(self.data_dir), "--port", str(self.port), "--api-keys", str(self.keys), *self.extra],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=str(REPO)),
            preexec_fn=self.preexec)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(self.proc.stderr.read().decode()[-3000:])
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("server did not come up")

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)




def build_tiny_index(root: Path, encoder: str, n: int, *, classes: int = 2, seed: int = 0, **config) -> Path:
    """``root/pool`` of ``n`` generated images and ``root/index`` built over it with ``encoder`` (tests
    take it through the session-cached ``tiny_index`` fixture)."""
    from index_builder import BuildConfig, build_index

    make_image_folder(root / "pool", n, classes=classes, seed=seed)
    build_index([str(root / "pool")], root / "index", BuildConfig(encoder=encoder, workers=0, progress=False, **config))
    return root / "index"


def tiny_server(index: Path, root: Path, *flags: str) -> "Server":
    """A started ``curator serve`` process over ``index``, its state in ``root/state`` (stop it when done)."""
    return Server(index, root / "state", *flags).start()


# Precomputed-embedding pools (clip-retrieval's layout), for the web-scale and links tests.
def write_embeddings(root: Path, counts: list[int], *, d: int = 32, seed: int = 0, name: str = "x",
                     dtype=np.float16, unit: bool = True) -> Path:
    """A clip-retrieval style folder: img_emb/img_emb_N.npy + metadata/metadata_N.parquet."""
    (root / "img_emb").mkdir(parents=True, exist_ok=True)
    (root / "metadata").mkdir(exist_ok=True)
    import pyarrow as pa
    import pyarrow.parquet as pq

    if str(REPO / "benchmarks") not in sys.path:
        sys.path.insert(0, str(REPO / "benchmarks"))
    from synthetic import ClusteredVectors

    gen = ClusteredVectors(d=d, clusters=256, seed=7)
    for f, n in enumerate(counts):
        x = gen.sample(n, seed=seed * 100 + f)
        np.save(root / "img_emb" / f"img_emb_{f}.npy", (x if unit else 3 * x).astype(dtype))
        pq.write_table(pa.table({"url": [f"https://example.com/{name}/{f}/{i}.jpg" for i in range(n)],
                                 "caption": [f"{name} {f} {i}" for i in range(n)], "similarity": [0.3] * n}),
                       root / "metadata" / f"metadata_{f}.parquet")
    return root


def opts(spec: str, **kw):
    """A quiet, single-process build config for tests."""
    from curator.formats import BuildConfig

    return BuildConfig(encoder=spec, workers=0, progress=False, recall_queries=200, **kw)


def distill_report(teacher_test: float = 0.625, student_test: float = 0.5) -> dict:
    """A distill report as a worker sends it (a valid DistillReport), for tests of the service's side."""
    from curator.formats import DistillConfig, DistillReport, dump_doc

    def scores(acc: float) -> dict:
        return {"accuracy": acc, "mean_per_class_accuracy": acc, "n": 40}
    stage = {"steps": 6, "seconds": 1.0, "images": 48, "resumed_from": 0}
    report = DistillReport(
        config=DistillConfig(labelled="/data/target", out="/runs/x"), data={"classes": ["a", "b"]},
        stages={"a": stage, "b": stage, "c": stage},
        teacher={"spec": "t", "mode": "linear", "val": scores(0.7), "test": scores(teacher_test)},
        student={"name": "s", "size": 64, "params": 1, "flops": 1, "latency_ms_cpu_batch1": 1.0,
                 "after_b": {"test": scores(0.4)}, "final": {"val": scores(0.55), "test": scores(student_test)}})
    return dump_doc(report)


# The in-process service's keys (tests/api/conftest.py's client).
INPROC_KEY = "inproc-key-0123456789abcdef"
INPROC_OTHER = "other-key-0123456789abcdef"
INPROC_ROOT = "root-key-0123456789abcdefgh"
INPROC_WORKER = "fleet-key-0123456789abcdefgh"
INPROC_WORKER2 = "fleet2-key-0123456789abcdefg"
#: Headers of the in-process service's worker key: only it claims and reports on distill jobs.
AS_WORKER = {"Authorization": f"Bearer {INPROC_WORKER}"}


def curate_json(client, **body):
    return client.post("/curate", json=body)
