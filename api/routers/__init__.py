"""One router per resource; ``api.app.create_app`` includes them all."""
from . import curate, distill_jobs, jobs, ops, search, transfer_sets

ROUTERS = (curate.router, jobs.router, distill_jobs.router, transfer_sets.router, search.router, ops.router)
