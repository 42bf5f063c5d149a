"""``curator encoders``: the encoder spec schemes."""
from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("encoders", help="list the encoder spec schemes",
                       description="List the encoder spec schemes that --encoder and --teacher accept.")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..encoders import list_encoder_schemes

    for scheme, text in sorted(list_encoder_schemes().items()):
        print(f"{scheme:10} {text}")
    return 0
