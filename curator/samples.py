"""Real labelled sample images, from Debian packages, without touching the system.

``apt-get download`` fetches the .deb into the cache (no root needed, no install) and
``dpkg -x`` unpacks it there. Each set is then exposed as a *labelled folder*: one
sub-folder per category, which is what build-index, curate and distil all accept.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from . import atomic
from .errors import CuratorError


@dataclass(frozen=True)
class SampleSet:
    package: str
    description: str
    arrange: Callable[[Path, Path], None]   # (unpacked package root, labelled folder) -> None


def _arrange_tuxpaint(raw: Path, dest: Path) -> None:
    """15 top-level categories (symbols/ dropped: flags, letters, money); captions kept."""
    stamps = raw / "usr/share/tuxpaint/stamps"
    for png in sorted(stamps.rglob("*.png")):
        rel = png.relative_to(stamps)
        category = rel.parts[0]
        if category == "symbols" or png.name.endswith(("_mirror.png", "_back.png")):
            continue
        flat = "__".join(rel.parts[1:])  # keep sub-class and name, unique within the category
        target = dest / category / flat
        target.parent.mkdir(parents=True, exist_ok=True)
        _link(png, target)
        caption = png.with_suffix(".txt")
        if caption.exists():
            _link(caption, target.with_suffix(".txt"))


def _arrange_openclipart(raw: Path, dest: Path) -> None:
    """Already one folder per category (22 of them): link the folders."""
    root = raw / "usr/share/openclipart/png"
    dest.mkdir(parents=True, exist_ok=True)
    for category in sorted(p for p in root.iterdir() if p.is_dir()):
        link = dest / category.name
        if not link.exists():  # relative to the link: right however ``dest`` was given, and if the cache moves
            link.symlink_to(os.path.relpath(category, link.parent), target_is_directory=True)


def _arrange_icon_theme(theme: str) -> Callable[[Path, Path], None]:
    """One image per icon, labelled by its context folder (apps, devices, places, ...): the
    largest PNG size of each name, so the pool holds every icon once."""
    def arrange(raw: Path, dest: Path) -> None:
        best: dict[tuple[str, str], tuple[int, Path]] = {}
        for png in (raw / "usr/share/icons" / theme).rglob("*.png"):
            size = png.parent.parent.name.split("x")[0]
            if not size.isdigit():
                continue
            key = (png.parent.name, png.name)
            if key not in best or int(size) > best[key][0]:
                best[key] = (int(size), png)
        for (context, name), (_, png) in sorted(best.items()):
            (dest / context).mkdir(parents=True, exist_ok=True)
            _link(png, dest / context / name)
    return arrange


SAMPLE_SETS = {
    "tuxpaint": SampleSet("tuxpaint-stamps-default", "549 photo cut-outs and clip-art, 15 categories, captions",
                          _arrange_tuxpaint),
    "openclipart": SampleSet("openclipart-png", "8,121 clip-art PNGs, 22 categories", _arrange_openclipart),
    "oxygen-icons": SampleSet("oxygen-icon-theme", "2,044 KDE Oxygen icons (largest size of each), 9 contexts; "
                              "unrelated to most targets: the pool's distractors", _arrange_icon_theme("oxygen/base")),
}
DEFAULT_SAMPLES = ("tuxpaint",)


def default_cache() -> Path:
    return Path(os.environ.get("CURATOR_CACHE", Path.home() / ".cache" / "curator")) / "samples"


def fetch_samples(which: Iterable[str] = DEFAULT_SAMPLES, dest: str | Path | None = None) -> dict[str, Path]:
    """Fetch and arrange each named set (idempotent); returns its labelled folder."""
    dest = Path(dest) if dest else default_cache()
    return {name: fetch_one(name, dest) for name in which}


def fetch_one(name: str, dest: Path) -> Path:
    if name not in SAMPLE_SETS:
        raise CuratorError(f"unknown sample set {name!r}; choose from {', '.join(SAMPLE_SETS)}")
    spec = SAMPLE_SETS[name]
    folder, marker = dest / name, dest / f".{name}.done"
    if marker.exists() and folder.is_dir() and all(p.exists() for p in folder.iterdir()):
        return folder  # (a link that leads nowhere, as older versions made for a relative dest: arranged again)
    debs, raw = dest / "debs", dest / "raw" / spec.package
    debs.mkdir(parents=True, exist_ok=True)
    deb = _download_deb(spec.package, debs)
    shutil.rmtree(raw, ignore_errors=True)
    raw.parent.mkdir(parents=True, exist_ok=True)
    _run(["dpkg", "-x", str(deb), str(raw)], f"unpacking {deb.name}")
    shutil.rmtree(folder, ignore_errors=True)
    spec.arrange(raw, folder)
    atomic.write_text(marker, spec.package + "\n")
    return folder


def _download_deb(package: str, debs: Path) -> Path:
    found = sorted(debs.glob(f"{package}_*.deb"))
    if found:
        return found[-1]
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise CuratorError("sample sets come from Debian packages; this machine has no apt-get/dpkg")
    print(f"downloading the Debian package {package} into {debs} ...", file=sys.stderr, flush=True)
    try:
        _run(["apt-get", "download", package], f"apt-get download {package}", cwd=debs, show=True)
    except CuratorError:
        if hasattr(os, "geteuid") and os.geteuid() == 0:  # stale or empty package lists
            _run(["apt-get", "update", "-qq"], "apt-get update")
            _run(["apt-get", "download", package], f"apt-get download {package}", cwd=debs, show=True)
        else:
            raise
    found = sorted(debs.glob(f"{package}_*.deb"))
    if not found:
        raise CuratorError(f"apt-get download {package} produced no .deb in {debs}")
    return found[-1]


def _run(cmd: list[str], what: str, cwd: Path | None = None, show: bool = False) -> None:
    """Run a tool; ``show`` passes its progress output (apt's download meter) through to stderr."""
    proc = subprocess.run(cmd, cwd=cwd, stdout=_terminal() if show else subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
    if proc.returncode != 0:
        hint = "\nIf the package lists are missing, run 'sudo apt-get update' first." if cmd[0] == "apt-get" else ""
        raise CuratorError(f"{what} failed (exit {proc.returncode}): {proc.stderr.strip()[-800:]}{hint}")


def _terminal():
    """Our stderr as a file a child can write to, or a pipe where it is not one (captured output)."""
    try:
        sys.stderr.fileno()
        return sys.stderr
    except (AttributeError, OSError, ValueError):
        return subprocess.PIPE


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
