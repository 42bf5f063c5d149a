"""API keys: bearer tokens with scopes, kept only as sha256 hashes.

Keys come from a file (``--api-keys FILE``) and/or ``CURATOR_API_KEYS``; each entry is
``name:scope1,scope2:secret``. Scopes: ``read`` (search, and read what the key owns), ``curate`` (POST
jobs, cancel them, and read them), ``worker`` (claim distillation jobs, report on them, and read the
transfer sets they name: the operator's fleet), ``admin`` (all). Entries separated by newlines (file)
or ``;`` (variable).
"""
from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from curator.errors import CuratorError

SCOPES = ("read", "curate", "worker", "admin")


@dataclass(frozen=True)
class ApiKey:
    name: str
    scopes: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes

    def allows(self, scope: str) -> bool:
        return ("admin" in self.scopes or scope in self.scopes
                or (scope == "read" and bool({"curate", "worker"} & self.scopes)))

    def reads_all(self) -> bool:
        """An admin, or a worker: it reads the set of any job it claims."""
        return bool({"admin", "worker"} & self.scopes)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyRing:
    def __init__(self, entries: list[tuple[str, str]]):
        """``entries``: (where, entry) pairs; ``where`` names the entry in errors (file and line)."""
        self._keys: dict[str, ApiKey] = {}
        for where, entry in ((w, e.strip()) for w, e in entries):
            if not entry or entry.startswith("#"):
                continue
            parts = entry.split(":", 2)
            if len(parts) != 3 or not parts[2]:
                raise CuratorError(f"API key {where} must be name:scopes:secret")
            name, scopes, secret = parts
            unknown = set(scopes.split(",")) - set(SCOPES)
            if unknown:
                raise CuratorError(f"API key {name!r}: unknown scopes {sorted(unknown)}; use {', '.join(SCOPES)}")
            if len(secret) < 16:
                raise CuratorError(f"API key {name!r}: secrets must have at least 16 characters")
            self._keys[_digest(secret)] = ApiKey(name, frozenset(scopes.split(",")))

    @classmethod
    def load(cls, path: Optional[Path]) -> "KeyRing":
        entries = [(f"entry {n} of $CURATOR_API_KEYS", e)
                   for n, e in enumerate(os.environ.get("CURATOR_API_KEYS", "").split(";"), 1)]
        if path is not None:
            try:
                lines = Path(path).read_text().splitlines()
            except OSError as exc:
                raise CuratorError(f"cannot read API keys from {path}: {exc.strerror}") from None
            entries += [(f"on line {n} of {path}", line) for n, line in enumerate(lines, 1)]
        return cls(entries)

    def __len__(self) -> int:
        return len(self._keys)

    def lookup(self, secret: str) -> Optional[ApiKey]:
        digest = _digest(secret)
        for known, key in self._keys.items():  # constant-time compare against every entry
            if hmac.compare_digest(known, digest):
                return key
        return None
