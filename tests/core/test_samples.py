"""Arranging a Debian sample package into labelled folders."""
from pathlib import Path

from curator.pool import list_folder_images
from curator.samples import SAMPLE_SETS


def test_openclipart_links_resolve_when_the_cache_is_given_relative_and_then_moved(tmp_path, monkeypatch):
    """A cache given as a relative path made links relative to the wrong folder: every image vanished."""
    art = tmp_path / "work" / "raw" / "usr/share/openclipart/png"
    for category in ("animals", "food"):
        (art / category).mkdir(parents=True)
        (art / category / f"{category}1.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    monkeypatch.chdir(tmp_path)
    SAMPLE_SETS["openclipart"].arrange(Path("work/raw"), Path("work/set"))
    assert list_folder_images("work/set") == ["animals/animals1.png", "food/food1.png"]
    (tmp_path / "work").rename(tmp_path / "moved")
    assert list_folder_images(str(tmp_path / "moved" / "set")) == ["animals/animals1.png", "food/food1.png"]
