"""URL lists -> webdataset shards, through img2dataset (the ``ingest`` extra).

img2dataset is the field's downloader; curator calls it with safe settings (a pixel cap, a bounded
thread count that a small server survives, resize of oversized images only) in a child process, so
its worker pools and global state never leak into the caller. Its per-shard status parquet (one row
per URL: success or the error) is kept beside the tars. Re-running resumes: img2dataset's incremental
mode skips finished shards. Both the index builder (a pool given as URLs) and ``curator materialize``
(a transfer set of URL-only pool items) download through here.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from .errors import CuratorError


def download_url_list(url_list: str, dest: Path, *, max_pixels: int, processes: int = 2,
                      threads: int = 8, image_size: int = 768, timeout: int = 10,
                      extra_columns: Sequence[str] = ()) -> list[str]:
    """Download every URL of ``url_list`` into ``dest/*.tar``; returns the tar paths. ``extra_columns``
    of the list are kept in each sample's json (img2dataset's ``save_additional_columns``)."""
    try:
        import img2dataset  # noqa: F401  (present, or the one-line error below)
    except ImportError:
        raise CuratorError(f"{url_list} is a URL list; downloading it needs img2dataset: "
                           "pip install 'curator[ingest]'") from None
    fmt = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}[Path(url_list).suffix.lower()]
    _check_url_column(url_list, fmt)
    dest.mkdir(parents=True, exist_ok=True)
    args = dict(url_list=str(url_list), output_folder=str(dest), input_format=fmt, url_col="url",
                caption_col="caption" if _has_column(url_list, fmt, "caption") else None,
                output_format="webdataset", processes_count=processes, thread_count=threads,
                image_size=image_size, resize_mode="keep_ratio_largest", resize_only_if_bigger=True,
                max_image_area=float(max_pixels), timeout=timeout, number_sample_per_shard=1000,
                distributor="multiprocessing", enable_wandb=False, incremental_mode="incremental",
                save_additional_columns=list(extra_columns) or None)
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", WANDB_MODE="disabled")
    code = "import json,sys; from img2dataset import download; download(**json.loads(sys.argv[1]))"
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(args)], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise CuratorError(f"img2dataset failed on {url_list} (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    tars = sorted(str(p) for p in dest.glob("*.tar"))
    if not tars:
        raise CuratorError(f"img2dataset downloaded nothing from {url_list}; see {dest}/*.parquet for per-URL errors")
    return tars


def _has_column(url_list: str, fmt: str, column: str) -> bool:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return column in pq.read_schema(url_list).names
    sep = "\t" if fmt == "tsv" else ","
    with open(url_list, encoding="utf-8") as fh:
        return column in [c.strip() for c in fh.readline().split(sep)]


def _check_url_column(url_list: str, fmt: str) -> None:
    if not _has_column(url_list, fmt, "url"):
        raise CuratorError(f"{url_list} has no 'url' column (an optional 'caption' column is kept)")
