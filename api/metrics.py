"""Prometheus metrics for the service, in a registry of its own (no global state)."""
from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .store import STATES


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram("curator_http_request_duration_seconds", "HTTP request latency",
                                 ["method", "route", "status"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.jobs = Gauge("curator_jobs", "Jobs by state", ["state"], registry=self.registry)
        self.index_items = Gauge("curator_index_items", "Vectors in the served index", registry=self.registry)
        self.items_served = Counter("curator_search_hits_served", "Search hits returned", registry=self.registry)
        self.shards_served = Counter("curator_shard_downloads", "Transfer-set shard downloads started",
                                     registry=self.registry)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.latency.labels(method, route, str(status)).observe(seconds)

    def set_jobs(self, counts: dict[str, int]) -> None:
        for state in STATES:
            self.jobs.labels(state).set(counts.get(state, 0))

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
