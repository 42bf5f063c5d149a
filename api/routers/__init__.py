"""One router per resource; ``api.app.create_app`` includes them all."""
from . import curate, distill_jobs, docs, items, jobs, ops, search, shards, transfer_sets, ui

#: In this order: a set's shard beside its manifest (``/transfer-sets/ID/NAME``) is matched after every
#: other route of a set.
ROUTERS = (curate.router, jobs.router, distill_jobs.router, transfer_sets.router, shards.router, search.router,
           ops.router, items.router, docs.router, ui.router)
