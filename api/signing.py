"""Short-lived signed URLs for a set's shards and its wids index: readers that cannot send a header
(wids and webdataset fetch with curl) authenticate by the URL itself.

A signature is an HMAC-SHA256, under the service's signing secret, over the set id, the file name,
the expiry and the name of the key that asked for the URL, so a URL grants what that key could read,
for that one file, until it expires. The secret lives in ``--data`` (replicas share it), or comes from
``$CURATOR_SIGNING_SECRET``; rotating it revokes every URL issued.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path
from typing import Optional
from urllib.parse import urlencode

SECRET_FILE = "signing.secret"


def load_secret(data_dir: Path) -> bytes:
    """The signing secret: ``$CURATOR_SIGNING_SECRET``, else ``DATA/signing.secret`` (made on first use,
    readable by the service's user only)."""
    env = os.environ.get("CURATOR_SIGNING_SECRET")
    if env:
        return env.encode()
    path = data_dir / SECRET_FILE
    if not path.exists():  # the first replica to link its secret in wins; the others read that one
        tmp = data_dir / f".{SECRET_FILE}.{secrets.token_hex(8)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_bytes()


def _mac(secret: bytes, set_id: str, name: str, expires: int, key_name: str) -> str:
    message = "\n".join((set_id, name, str(expires), key_name)).encode()
    return base64.urlsafe_b64encode(hmac.new(secret, message, hashlib.sha256).digest()).decode().rstrip("=")


def sign(secret: bytes, set_id: str, name: str, key_name: Optional[str], seconds: float,
         now: Optional[float] = None) -> str:
    """The query string that grants ``key_name``'s read of ``name`` in ``set_id`` for ``seconds``."""
    expires = int((time.time() if now is None else now) + seconds)
    who = key_name or ""
    return urlencode({"expires": expires, "key": who, "sig": _mac(secret, set_id, name, expires, who)})


def verify(secret: bytes, set_id: str, name: str, expires: int, key_name: str, sig: str,
           now: Optional[float] = None) -> bool:
    """Whether ``sig`` is this service's signature for that read, and it has not expired."""
    if expires < (time.time() if now is None else now):
        return False
    return hmac.compare_digest(_mac(secret, set_id, name, expires, key_name), sig)


#: The file name a set's signed wids index is served and signed under.
WIDS_INDEX = "wids.json"


def base_url(request) -> str:
    """The service's address as the caller reached it (uvicorn applies X-Forwarded-* from trusted proxies)."""
    return str(request.base_url).rstrip("/")
