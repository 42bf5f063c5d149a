"""What every document shares: strict models, a format tag, and one way to read and write them.

Each JSON document carries ``format: "curator.<name>/<version>"``. Readers refuse a version
they do not know instead of guessing, and every write goes through the model (atomically), so
a document on disk always validates.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from .. import atomic
from ..errors import CuratorError


def utcnow() -> str:
    """ISO 8601 in UTC, seconds resolution: the one timestamp format of every document and API."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def iso(timestamp: float | None) -> str | None:
    """An epoch time as ISO 8601 UTC (the store keeps epoch floats; every API and document shows this)."""
    if timestamp is None:
        return None
    return _dt.datetime.fromtimestamp(timestamp, _dt.timezone.utc).isoformat(timespec="seconds")


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number (not NaN or Infinity)")
    return value


#: A float that refuses NaN and +-Infinity: they validate as floats but poison every later step.
FiniteFloat = Annotated[float, AfterValidator(_finite)]


class Doc(BaseModel):
    """A strict document: unknown keys are errors (a typo is caught where it is made)."""
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


M = TypeVar("M", bound=BaseModel)


def load_doc(path: str | Path, model: type[M]) -> M:
    """Read and validate a JSON document; errors name the file and the field."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise CuratorError(f"{path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise CuratorError(f"{path} is not valid JSON: {exc}") from None
    return parse_doc(raw, model, str(path))


def load_settings(path: str | Path, model: type[M]) -> M:
    """A settings document (``format`` plus ``settings``); one written before such files were versioned
    (a bare JSON object of the settings) reads as its settings, so an older run folder still resumes."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CuratorError(f"{path} cannot be read: {exc}") from None
    if isinstance(raw, dict) and "format" not in raw:
        raw = {"settings": raw, "format": model.model_fields["format"].default}
    return parse_doc(raw, model, str(path))


def parse_doc(raw: Any, model: type[M], where: str) -> M:
    """Validate an already-parsed document (e.g. an HTTP body) against ``model``."""
    want = model.model_fields.get("format")
    if want is not None and isinstance(raw, dict):
        fmt, expected = str(raw.get("format", "")), want.default
        if fmt != expected:
            raise CuratorError(f"{where} has format {fmt!r}; this curator reads {expected!r}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise CuratorError(f"{where} is not a valid {model.__name__}: {describe_errors(exc)}") from None


def dump_doc(doc: BaseModel) -> dict:
    """The JSON form of a document (aliases such as wids' ``__kind__`` included)."""
    return doc.model_dump(mode="json", by_alias=True)


def save_doc(path: str | Path, doc: BaseModel) -> None:
    """Write a document atomically through its model."""
    atomic.write_json(path, dump_doc(doc))


def describe_errors(exc: ValidationError, flags: dict[str, str] | None = None) -> str:
    """pydantic errors as one line that names each field (or the CLI flag that sets it)."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(x) for x in err["loc"])
        name = (flags or {}).get(loc, loc)
        msg = err["msg"].removeprefix("Value error, ")
        for field, flag in (flags or {}).items():  # "needs 'threshold'" -> "needs --threshold"
            msg = msg.replace(f"'{field}'", flag)
        parts.append(f"{name}: {msg}" if name else msg)
    return "; ".join(parts)
