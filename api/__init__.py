"""The service wing: ``curator serve`` and ``POST /curate``.

Imports the core (``curator``) only. State lives in SQLite inside the data folder, or in a PostgreSQL
database that several replicas share (``--database``), so jobs and transfer sets survive restarts and
a replica's death; CPU-heavy work runs in a thread pool, off the event loop.
"""
from .app import create_app
from .settings import Limits, Settings

__all__ = ["create_app", "Limits", "Settings"]
