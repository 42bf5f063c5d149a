"""One router per resource; ``api.app.create_app`` includes them all."""
from . import curate, distill_jobs, docs, items, jobs, ops, search, transfer_sets, ui

ROUTERS = (curate.router, jobs.router, distill_jobs.router, transfer_sets.router, search.router, ops.router,
           items.router, docs.router, ui.router)
