"""Exceptions with messages meant for the person at the terminal.

Each carries enough context (the file, the option, the fix) that the CLI can print it
as-is and exit non-zero without a traceback.
"""


class CuratorError(Exception):
    """Base class: a problem the user can fix; the CLI prints the message, not a traceback."""


class EncoderUnavailableError(CuratorError):
    """The requested encoder (or its pretrained weights) cannot be loaded here."""


class BadImageError(CuratorError):
    """An input is not a decodable image, or breaks a safety limit (pixels, bytes)."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class DeviceUnavailableError(CuratorError):
    """``--device cuda`` was asked for but no usable GPU (or GPU build) is present."""


class PlanMismatchError(CuratorError):
    """An output folder holds a build of different inputs or settings."""
