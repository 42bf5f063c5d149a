"""Where the build's two parallel jobs run: embedding shards and filling index parts.

Both runners call the same work units (``embed.embed_shards`` on a shard, ``ondisk.fill_part``
on a part), which write the same files with the same atomic done-markers; only the
scheduling differs. ``local`` is this process and its children; ``ray`` is a Ray cluster
(a local instance when no address is given), where encoder actors load the model once
and a killed worker's shard or part is retried.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import as_completed
from pathlib import Path
from typing import Callable, Iterator, Optional, Protocol

from curator.encoders import Encoder
from curator.errors import CuratorError
from curator.formats import BuildConfig, ShardDone, ShardTask
from curator.processes import spawn_pool

from .embed_images import EmbedOptions, embed_shards
from .ondisk import fill_part

log = logging.getLogger(__name__)
FillJob = tuple  # (trained path, Part, dest path, chunk rows)
#: Retries of a shard or part whose Ray worker died (each retry redoes the whole unit).
RAY_RETRIES = 3


class Runner(Protocol):
    def embed(self, tasks: list[ShardTask], out: Path, eopts: EmbedOptions,
              on_items: Optional[Callable[[int], None]]) -> Iterator[ShardDone]: ...

    def fill_workers(self, wanted: int) -> int: ...

    def fill(self, jobs: list[FillJob], workers: int) -> Iterator[int]: ...

    def close(self) -> None: ...


def _threads(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, workers))


class LocalRunner:
    """Shards through this process's DataLoader; index parts in spawned processes."""

    def __init__(self, encoder: Encoder):
        self.encoder = encoder

    def embed(self, tasks, out, eopts, on_items):
        return embed_shards(tasks, self.encoder, out, eopts, on_items)

    def fill_workers(self, wanted: int) -> int:
        return max(1, min(wanted, os.cpu_count() or 1))

    def fill(self, jobs: list[FillJob], workers: int) -> Iterator[int]:
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                yield fill_part(*job, threads=_threads(1))
            return
        # spawn, not fork: the parent holds faiss's OpenMP pool and maybe torch threads
        with spawn_pool(workers) as pool:
            futures = [pool.submit(fill_part, *job, threads=_threads(workers)) for job in jobs]
            for future in as_completed(futures):
                yield future.result()

    def close(self) -> None:
        pass


def import_ray():
    try:
        import ray
    except ImportError:
        raise CuratorError("--runner ray needs Ray: pip install 'curator[ray]'") from None
    return ray


class _EmbedActor:
    """Holds one encoder for its life: the model loads once per worker, not once per shard."""

    def __init__(self, spec: str, device: str, precision: str, eopts: EmbedOptions):
        from curator.encoders import create_encoder

        self.encoder = create_encoder(spec, device=device, precision=precision)
        self.eopts = eopts

    def embed(self, task: dict, out: str) -> dict:
        from .embed_images import embed_shard

        return embed_shard(ShardTask(**task), self.encoder, Path(out), self.eopts).model_dump()


class RayRunner:
    """Shards on encoder actors (``num_gpus=1`` each with --device cuda), parts as Ray tasks."""

    def __init__(self, opts: BuildConfig):
        self.ray = ray = import_ray()
        self.opts = opts
        self.started = not ray.is_initialized()
        if self.started:
            kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
            if opts.ray_address:
                kwargs["address"] = opts.ray_address
            else:
                kwargs["num_cpus"] = opts.index_workers
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise CuratorError(f"--ray-address {opts.ray_address}: cannot join the Ray cluster ({exc})") from None

    def _resources(self) -> tuple[str, int]:
        kind = "GPU" if self.opts.device.startswith("cuda") else "CPU"
        have = int(self.ray.cluster_resources().get(kind, 0))
        if have < 1:
            raise CuratorError(f"the Ray cluster has no {kind}s for --device {self.opts.device}")
        return kind, have

    def embed(self, tasks, out, eopts, on_items):
        from ray.util import ActorPool

        kind, have = self._resources()
        n = max(1, min(have, len(tasks)))
        options = dict(num_gpus=1) if kind == "GPU" else dict(num_cpus=1)
        actor = self.ray.remote(max_restarts=RAY_RETRIES, max_task_retries=RAY_RETRIES, **options)(_EmbedActor)
        o = self.opts
        actors = [actor.remote(o.encoder, o.device, o.precision, eopts) for _ in range(n)]
        pool = ActorPool(actors)
        work = pool.map_unordered(lambda a, t: a.embed.remote(t.model_dump(), str(out)), tasks)
        try:
            for raw in work:
                done = ShardDone(**raw)
                if on_items:
                    on_items(done.n_items + done.n_skipped)
                yield done
        except self.ray.exceptions.RayError as exc:
            raise CuratorError(f"a shard failed on Ray after {RAY_RETRIES} retries: {str(exc).splitlines()[0]}") from None
        finally:
            for a in actors:
                self.ray.kill(a)

    def fill_workers(self, wanted: int) -> int:
        return max(1, min(wanted, int(self.ray.cluster_resources().get("CPU", 1))))

    def fill(self, jobs: list[FillJob], workers: int) -> Iterator[int]:
        task = self.ray.remote(num_cpus=1, max_retries=RAY_RETRIES)(fill_part)
        pending, queue = [], list(jobs)
        while queue or pending:
            while queue and len(pending) < workers:  # at most ``workers`` parts in memory at once
                pending.append(task.remote(*queue.pop(0), threads=1))
            ready, pending = self.ray.wait(pending, num_returns=1)
            yield self.ray.get(ready[0])

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


def make_runner(opts: BuildConfig, encoder: Optional[Encoder]) -> Runner:
    return RayRunner(opts) if opts.runner == "ray" else LocalRunner(encoder)
