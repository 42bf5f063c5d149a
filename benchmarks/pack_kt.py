"""Pack a `curator bench kt` folder small enough to travel to a GPU machine (64 MiB limit).

Keeps what the distillation runs read, shrunk: the split (labelled images re-encoded as JPEG at
``--side`` px, alpha on white as curator decodes it) and both transfer sets (every image
re-encoded the same way, shards re-written with fresh sha256s in the manifest). The index, the
pool and the caches stay behind: `curator bench kt --out PACKED` then resumes after curation.
Every arm sees the same shrunk images, so the comparison stays fair; absolute accuracy may move.

    python benchmarks/pack_kt.py bench-out/kt-bench .gpu/kt --side 192 --quality 85
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import shutil
import sys
import tarfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curator import atomic  # noqa: E402
from curator.images import decode_image  # noqa: E402


def shrink(data: bytes, side: int, quality: int) -> bytes:
    img = decode_image(data)
    img.thumbnail((side, side))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def pack_set(src: Path, dst: Path, side: int, quality: int) -> None:
    manifest = json.loads((src / "manifest.json").read_text())
    dst.mkdir(parents=True)
    for shard in manifest["shardlist"]:
        out = dst / shard["url"]
        with tarfile.open(src / shard["url"]) as tin, tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as tout:
            for member in tin.getmembers():
                data = tin.extractfile(member).read()
                name = member.name
                if not name.endswith(".json"):
                    data, name = shrink(data, side, quality), name.rsplit(".", 1)[0] + ".jpg"
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), 0o444
                tout.addfile(info, io.BytesIO(data))
        raw = out.read_bytes()
        shard.update(filesize=len(raw), sha256=hashlib.sha256(raw).hexdigest(), md5sum=hashlib.md5(raw).hexdigest())
    manifest["packed"] = {"side": side, "quality": quality, "from": str(src)}
    atomic.write_json(dst / "manifest.json", manifest)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--side", type=int, default=192)
    ap.add_argument("--quality", type=int, default=85)
    args = ap.parse_args()
    shutil.rmtree(args.dst, ignore_errors=True)
    (args.dst / "labelled").mkdir(parents=True)
    with open(args.src / "split.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for n, row in enumerate(rows):
        rel = f"labelled/{n:05d}.jpg"
        (args.dst / rel).write_bytes(shrink(Path(row["path"]).read_bytes(), args.side, args.quality))
        row["path"] = rel
    with open(args.dst / "split.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "label", "split"])
        w.writeheader()
        w.writerows(rows)
    for name in ("retrieved", "random"):
        pack_set(args.src / "sets" / name, args.dst / "sets" / name, args.side, args.quality)
    size = sum(p.stat().st_size for p in args.dst.rglob("*") if p.is_file())
    print(f"packed {len(rows)} labelled images and 2 transfer sets into {args.dst}: {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
