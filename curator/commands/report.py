"""``curator report``: a transfer set as a self-contained HTML gallery."""
from __future__ import annotations

import argparse

from .flags import add_set_dir

DESCRIPTION = """Write one HTML file that shows a transfer set: each query's image, then the images it pulled in
(rank order, scores, captions), then what near-duplicate and contamination rules left out. Thumbnails are
embedded, so the file opens offline with no server."""


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="write a self-contained HTML gallery of a transfer set",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_set_dir(p)
    p.add_argument("--out", required=True, help="the HTML file to write (e.g. gallery.html)")
    p.set_defaults(run=run)


def run(args) -> int:
    from .. import atomic
    from ..gallery import render

    page = render(args.set_dir)  # checked and rendered before anything is written
    atomic.write_text(args.out, page)
    print(f"wrote {args.out} ({len(page) / 1e6:.1f} MB)")
    return 0
