"""CLI flags generated from the config models, so every default lives once, in the model.

As timm's ``create_model`` drops ``None`` kwargs, flags a user did not give are left out of the
model's input and the model's own default applies; ``--help`` shows that default.
"""
from __future__ import annotations

import argparse
import types
from typing import Any, Iterable, Literal, Optional, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from ..errors import CuratorError
from ..formats import describe_errors


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _base_type(annotation: Any) -> Any:
    """``Optional[X]`` and ``Annotated[X, ...]`` down to X."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return _base_type(args[0]) if len(args) == 1 else str
    if origin is not None and hasattr(annotation, "__metadata__"):
        return _base_type(get_args(annotation)[0])
    return annotation


def _default_text(info) -> str:
    if info.default_factory is not None or info.is_required() or info.default is None:
        return ""
    return f" (default: {info.default})"


def add_model_flags(parser: argparse.ArgumentParser, model: type[BaseModel], fields: Iterable[str], *,
                    required: Iterable[str] = (), short: Optional[dict[str, str]] = None,
                    help: Optional[dict[str, str]] = None, rename: Optional[dict[str, str]] = None) -> None:
    """One flag per model field: type, choices and help (with the model's default) from the field.
    ``rename`` gives a field a flag of another name (``index_dir``: ``--index``)."""
    required, short, help, rename = set(required), short or {}, help or {}, rename or {}
    for name in fields:
        info = model.model_fields[name]
        kind = _base_type(info.annotation)
        text = (help.get(name) or info.description or name.replace("_", " ")) + _default_text(info)
        names = [rename.get(name, flag_name(name))] + ([short[name]] if name in short else [])
        if kind is bool:
            on = not info.default
            parser.add_argument(*(names if on else ["--no-" + names[0].removeprefix("--")]), dest=name,
                                action="store_true" if on else "store_false", default=None, help=text)
            continue
        kwargs: dict[str, Any] = dict(dest=name, default=None, help=text, required=name in required)
        if get_origin(kind) is Literal:
            kwargs["choices"] = list(get_args(kind))
        elif get_origin(kind) is list:  # e.g. --values 400 800 1600, --arms task-agnostic supervised
            item = _base_type(get_args(kind)[0])
            kwargs.update(nargs="+", **({"choices": list(get_args(item))} if get_origin(item) is Literal
                                        else {"type": item, "metavar": "N"}))
        elif (info.json_schema_extra or {}).get("bytes"):
            kwargs["metavar"] = "BYTES"  # "4G", "512M" or a number, parsed by the model
        elif kind in (int, float):
            kwargs["type"] = kind
        parser.add_argument(*names, **kwargs)


def build_model(model: type[BaseModel], args: argparse.Namespace, *, rename: Optional[dict[str, str]] = None,
                **fixed: Any):
    """The model from the flags the user gave (``None`` means: the model's default) plus ``fixed``;
    a validation error names the flag, never a pydantic internal."""
    given = {k: v for k, v in vars(args).items() if k in model.model_fields and v is not None}
    try:
        return model(**{**given, **fixed})
    except ValidationError as exc:
        flags = {name: (rename or {}).get(name, flag_name(name)) for name in model.model_fields}
        raise CuratorError(describe_errors(exc, flags)) from None


def add_set_dir(p) -> None:
    """The positional SET_DIR of the commands that read one transfer set."""
    p.add_argument("set_dir", metavar="SET_DIR", help="a transfer set's folder (it holds manifest.json)")
