"""``curator samples``: real labelled sample images from Debian packages."""
from __future__ import annotations


def add_parser(sub) -> None:
    from ..samples import DEFAULT_SAMPLES, SAMPLE_SETS, default_cache

    p = sub.add_parser("samples", help="real labelled sample images, fetched from Debian packages",
                       description="Fetch real labelled images (Debian packages, unpacked without root) into a cache.")
    ssub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    f = ssub.add_parser("fetch", help="download and unpack the sample sets (no root, no system changes)")
    f.add_argument("--dest", default=str(default_cache()), help="cache folder (default: %(default)s)")
    f.add_argument("--which", nargs="+", default=list(DEFAULT_SAMPLES), choices=sorted(SAMPLE_SETS),
                   help="which sets (default: %(default)s)")
    f.set_defaults(run=run_fetch)


def run_fetch(args) -> int:
    from ..samples import fetch_samples

    for name, path in fetch_samples(args.which, args.dest).items():
        print(f"{name}: {path}")
    return 0
