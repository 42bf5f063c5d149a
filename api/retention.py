"""Keeping the data directory bounded: transfer sets (and the rows of the jobs that made them) older than
--keep-sets-days go, and while the directory holds more than --max-data-bytes the oldest sets go, then the
thumbnail cache. Run at start-up and as each job ends; one pass at a time. Uploads need no rule of their
own: a job's inputs are removed as it ends, whatever its outcome, and start-up removes any left by a kill."""
from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from pathlib import Path

from .settings import Settings
from .store import Store

log = logging.getLogger(__name__)
_LOCK = threading.Lock()


def folder_bytes(root: Path) -> int:
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                continue  # removed while we looked
    return total


def remove_set(store: Store, sets_dir: Path, set_id: str) -> None:
    """The row first, so a set is never listed half-deleted; then the folder, renamed out of its name at once."""
    store.delete_transfer_set(set_id)
    folder = sets_dir / set_id
    trash = folder.with_name(f".{set_id}.tmp-deleted")
    if folder.exists():
        folder.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)


def prune(settings: Settings, store: Store) -> list[str]:
    """Apply both rules; returns the ids of the sets removed."""
    with _LOCK:
        gone = []
        if settings.keep_sets_days is not None:
            before = time.time() - settings.keep_sets_days * 86400
            for set_id in store.old_transfer_sets(before):
                remove_set(store, settings.sets_dir, set_id)
                gone.append(set_id)
            store.delete_old_jobs(before)
        if settings.max_data_bytes is not None:
            gone += _shrink(settings, store)
        if gone:
            log.info("retention removed %d transfer set(s): %s", len(gone), ", ".join(gone[:10]))
        return gone


def _shrink(settings: Settings, store: Store) -> list[str]:
    gone = []
    used = folder_bytes(settings.data_dir)
    for set_id in store.old_transfer_sets(float("inf")):  # oldest first
        if used <= settings.max_data_bytes:
            break
        size = folder_bytes(settings.sets_dir / set_id)
        remove_set(store, settings.sets_dir, set_id)
        gone.append(set_id)
        used -= size
    if used > settings.max_data_bytes:
        shutil.rmtree(settings.data_dir / "thumbnails", ignore_errors=True)  # a cache: rebuilt on demand
    return gone
