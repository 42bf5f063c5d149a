"""``curator worker``: claim distillation jobs from a service and run them."""
from __future__ import annotations

import os
import sys


def add_parser(sub) -> None:
    p = sub.add_parser("worker", help="claim distillation jobs from a curator service and run them",
                       description="Claim distillation jobs under a lease, train them, and report back; runs resume "
                                   "from their checkpoints when a job is taken over.")
    p.add_argument("--api", required=True, help="service URL, e.g. http://host:8000")
    p.add_argument("--token", default=os.environ.get("CURATOR_TOKEN"),
                   help="API key with the worker scope (default: $CURATOR_TOKEN)")
    p.add_argument("--work-dir", default="worker-runs",
                   help="where runs (checkpoints, students) are written (default: %(default)s)")
    p.add_argument("--name", help="worker name (default: host name + a number)")
    p.add_argument("--lease", type=float, default=60.0, help="lease seconds, renewed every third of it "
                                                              "(default: %(default)s)")
    p.add_argument("--poll", type=float, default=5.0,
                   help="seconds between claims when the queue is empty (default: %(default)s)")
    p.add_argument("--once", action="store_true", help="run at most one job, then exit")
    p.add_argument("--device", default="cpu", help="where this worker trains: cpu, cuda or cuda:N "
                                                   "(default: %(default)s)")
    p.set_defaults(run=run)


def run(args) -> int:
    from distill.worker import run_worker

    finished = run_worker(args.api, args.token, args.work_dir, name=args.name, lease=args.lease, poll=args.poll,
                          once=args.once, device=args.device)
    failed = [job for job in finished if job.state == "failed"]
    for job in failed:
        print(f"error: distillation job {job.id} failed: {job.error}", file=sys.stderr)
    return 1 if failed else 0
