"""Service settings: the core's model (``curator serve``'s flags come from it), under the name the
service has always used."""
from __future__ import annotations

from curator.formats.service import Limits, ServiceSettings as Settings, default_replica

__all__ = ["Limits", "Settings", "default_replica"]
