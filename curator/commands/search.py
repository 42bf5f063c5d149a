"""``curator search``: the nearest pool images of query images."""
from __future__ import annotations

import json

from ..errors import CuratorError
from ..formats import Limits


def add_parser(sub) -> None:
    p = sub.add_parser("search", help="show the nearest pool images of a query image",
                       description="Embed query images with the index's own encoder and print their nearest pool items.")
    p.add_argument("--index", required=True, help="a folder written by build-index")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--image", nargs="+", help="query image file(s)")
    what.add_argument("--text", nargs="+", help="query text(s), embedded by the index's text tower (open_clip encoders)")
    p.add_argument("-k", type=int, default=10, help="neighbours per query (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the hits as JSON")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..retrieval import PoolIndex

    max_k = Limits.model_fields["max_k"].default
    if not 1 <= args.k <= max_k:
        raise CuratorError(f"-k must be between 1 and {max_k}, got {args.k}")
    index = PoolIndex.open(args.index)
    if args.text:
        from ..queries import text_queries

        return show(args, args.text, index, text_queries(index.encoder(), args.text)[1])
    blobs = []
    for path in args.image:
        try:
            with open(path, "rb") as fh:
                blobs.append(fh.read())
        except OSError as exc:
            raise CuratorError(f"cannot read query image {path}: {exc.strerror}") from None
    from ..errors import BadImageError

    vectors = []
    for path, blob in zip(args.image, blobs):
        try:
            vectors.append(index.embed_images([blob]))
        except BadImageError as exc:
            raise CuratorError(f"query image {path}: {exc}") from None
    import numpy as np

    return show(args, args.image, index, np.concatenate(vectors))


def show(args, names: list[str], index, vectors) -> int:
    scores, ids = index.search(vectors, args.k)
    results = [{"query": name, "hits": [h.as_dict() for h in index.hits(s, i)]}
               for name, s, i in zip(names, scores, ids)]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for res in results:
        print(res["query"])
        for h in res["hits"]:
            print(f"  {h['id']:>8}  {h['score']:.3f}  {h['key']}  ({h['source']})")
    return 0
