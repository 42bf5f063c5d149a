"""One module per ``curator`` subcommand, each with ``add_parser(sub)`` and a ``run(args)``.

A subcommand imports its wing only inside ``run``, so ``curator --help`` stays instant and a
machine without a wing's extras can still use the others.
"""
from . import bench, build_index, curate, demo, distill, encoders, materialize, report, samples, search, serve, worker

#: In the order ``curator --help`` lists them.
COMMANDS = (demo, build_index, search, curate, materialize, report, serve, distill, worker, bench, samples, encoders)
