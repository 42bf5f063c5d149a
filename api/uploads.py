"""Reading a POST /curate body: multipart files or JSON (base64 images or embeddings), every part
bounded and checked before a job exists. Both forms end in the same checks (:func:`check_request`)."""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import threading
from pathlib import Path
from typing import Any, BinaryIO, Callable, Optional

import numpy as np
from fastapi import HTTPException, Request
from pydantic import ValidationError

from curator import atomic
from curator.curate import check_vectors
from curator.errors import BadImageError, CuratorError
from curator.formats import CurateParams, Limits
from curator.pipeline import ImagePipeline
from curator.queries import Query
from curator.strategies import needs_labels

from .deps import reject
from .jobs import input_file
from .schemas import CurateRequest

#: Images being decoded at once by request checks, across all requests: concurrent uploads cannot
#: multiply the decode memory (a 40 MP image is 120 MB decoded).
DECODE_SLOTS = 2
DECODES = threading.BoundedSemaphore(DECODE_SLOTS)
COPY_BLOCK = 1 << 20
Parsed = tuple[list[Query], Optional[np.ndarray], CurateParams, Optional[list[str]]]
#: Why an image is refused, as an HTTP status (anything else: 422).
IMAGE_STATUS = {"not_an_image": 415, "unsupported_format": 415, "too_many_pixels": 413}


TextEmbedder = Callable[[list[str], list[Optional[str]]], tuple[list[Query], np.ndarray]]


async def read_curate_request(request: Request, limits: Limits, dim: int, staging: Path,
                              embed_texts: TextEmbedder) -> Parsed:
    """The queries, embeddings, params, and (multipart) the query files already stored in ``staging``:
    uploads are checked and written one at a time, never all held in memory. ``embed_texts``: the
    index's text tower (JSON ``texts``), which raises CuratorError when there is none."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        parsed = await _read_multipart(request, limits, staging)
    elif ctype == "application/json":
        parsed = await _read_json(request, limits, dim, embed_texts)
    else:
        raise reject(415, "POST /curate takes multipart/form-data (files + params) or application/json")
    params = check_request(*parsed[:3], limits)
    return (parsed[0], parsed[1], params, *parsed[3:])


def check_request(queries: list[Query], vectors: Optional[np.ndarray], params: CurateParams,
                  limits: Limits) -> CurateParams:
    """The checks both body forms share: size of the set, labels the strategy needs. Returns the params
    the job runs with: a threshold without a budget takes at most ``--max-budget`` images."""
    if params.budget and params.budget > limits.max_budget:
        raise reject(422, f"budget {params.budget} exceeds this server's limit of {limits.max_budget}")
    wanted = params.per_query * len(queries) if params.per_query else 0
    if wanted > limits.max_budget:
        raise reject(422, f"per_query {params.per_query} x {len(queries)} queries exceeds this server's limit of "
                          f"{limits.max_budget} images")
    if needs_labels(params.strategy) and any(q.label is None for q in queries):
        raise reject(422, f"strategy {params.strategy!r} needs a label for every query ('labels')")
    if params.strategy == "threshold" and params.budget is None:
        return params.model_copy(update={"budget": limits.max_budget})
    return params


async def _read_multipart(request: Request, limits: Limits, staging: Path) -> Parsed:
    form = await read_form(request, max_files=limits.max_files + 1, max_fields=16, max_part_size=1 << 20)
    params = parse_params(form.get("params"))
    uploads = [f for f in form.getlist("files") if hasattr(f, "read")]
    labels = parse_labels(form.get("labels"), len(uploads))
    check_count(len(uploads), limits)
    staging.mkdir(parents=True, exist_ok=True)
    queries, files, pixels = [], [], 0
    for n, upload in enumerate(uploads):  # the parser spooled each file to disk; copied and decoded from there
        name, dest = (upload.filename or f"file{n}")[:256], staging / input_file(n)
        await asyncio.to_thread(store_upload, name, upload.file, dest, limits)  # off the event loop
        pixels += await asyncio.to_thread(check_stored_image, name, dest, limits)
        check_pixels(pixels, limits)
        queries.append(Query(name, label=labels[n]))
        files.append(input_file(n))
    return queries, None, params, files


def store_upload(name: str, source: BinaryIO, dest: Path, limits: Limits) -> None:
    """Copy one spooled upload to ``dest`` in blocks (never whole in memory), refusing it past the limit."""
    def copy(tmp: Path) -> None:
        size = 0
        with open(tmp, "wb") as out:
            while block := source.read(COPY_BLOCK):
                size += len(block)
                if size > limits.max_file_bytes:
                    raise reject(413, f"file {name!r} exceeds {limits.max_file_bytes} bytes per image")
                out.write(block)
    atomic.write_with(dest, copy)


def check_stored_image(name: str, path: Path, limits: Limits) -> int:
    """Decode a stored upload from its file, at most DECODE_SLOTS at once in the whole server: the
    decoded pixels, not the uploaded bytes, are what a request costs in memory."""
    with DECODES, open(path, "rb") as f:
        return decoded_cost(name, f, limits)


async def _read_json(request: Request, limits: Limits, dim: int, embed_texts: TextEmbedder) -> Parsed:
    try:
        body = CurateRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        raise HTTPException(422, exc.errors(include_url=False, include_context=False, include_input=False))
    if [body.images, body.embeddings, body.texts].count(None) != 2:
        raise reject(422, "send exactly one of 'images' (base64), 'embeddings' or 'texts'")
    if body.texts is not None:
        check_count(len(body.texts), limits)
        labels = _labels_for(body.labels, len(body.texts), "texts")
        queries, vectors = await asyncio.to_thread(embed_texts, body.texts, labels)
        return queries, vectors, body.params, None
    if body.images is not None:
        check_count(len(body.images), limits)
        blobs = []
        for img in body.images:
            try:
                blobs.append((img.name, base64.b64decode(img.data, validate=True)))
            except (binascii.Error, ValueError):
                raise reject(422, f"image {img.name!r}: 'data' is not valid base64")
        await asyncio.to_thread(check_images, blobs, limits)
        return [Query(n, d, img.label) for (n, d), img in zip(blobs, body.images)], None, body.params, None
    check_count(len(body.embeddings), limits)
    try:
        vectors = check_vectors(body.embeddings, dim)
    except CuratorError as exc:
        raise reject(422, str(exc))
    labels = _labels_for(body.labels, len(vectors), "embeddings")
    return [Query(f"embedding-{i}", b"", lab) for i, lab in enumerate(labels)], vectors, body.params, None


def _labels_for(labels: Optional[list[Optional[str]]], n: int, what: str) -> list[Optional[str]]:
    if labels is None:
        return [None] * n
    if len(labels) != n:
        raise reject(422, f"{len(labels)} labels for {n} {what}")
    return labels


#: Starlette reports every multipart problem as one exception type; these are the ones that mean
#: "too big" (413). Anything else is a malformed body (400).
TOO_BIG = ("Too many files", "Too many fields", "Part exceeded maximum size", "Field exceeded maximum size")


async def read_form(request: Request, **bounds):
    from starlette.formparsers import MultiPartException

    try:
        return await request.form(**bounds)
    except MultiPartException as exc:
        status = 413 if str(exc.message).startswith(TOO_BIG) else 400
        raise reject(status, f"bad multipart body: {exc.message}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise reject(400, f"bad multipart body: {exc}")


def parse_params(raw: Any) -> CurateParams:
    if raw is None:
        return CurateParams()
    if not isinstance(raw, str):
        raise reject(422, "'params' must be a JSON string field")
    try:
        return CurateParams.model_validate_json(raw)
    except ValidationError as exc:
        raise HTTPException(422, exc.errors(include_url=False, include_context=False, include_input=False))


def parse_labels(raw: Any, n: int) -> list[Optional[str]]:
    if raw is None:
        return [None] * n
    try:
        labels = json.loads(raw)
    except (TypeError, json.JSONDecodeError):
        raise reject(422, "'labels' must be a JSON list of strings, one per file")
    if not isinstance(labels, list) or len(labels) != n or not all(isinstance(x, (str, type(None))) for x in labels):
        raise reject(422, f"'labels' must be a JSON list of {n} strings (one per file)")
    return labels


def check_count(n: int, limits: Limits) -> None:
    if n == 0:
        raise reject(422, "no query images: send at least one file")
    if n > limits.max_files:
        raise reject(413, f"{n} images exceed the limit of {limits.max_files} per request")


def check_images(blobs: list[tuple[str, bytes]], limits: Limits) -> None:
    """Each image, and their decoding cost together: the pixels decoded for one request are bounded."""
    total = 0
    for name, data in blobs:
        total += check_image(name, data, limits)
        check_pixels(total, limits)


def check_pixels(total: int, limits: Limits) -> None:
    if total > limits.max_request_pixels:
        raise reject(413, f"the images of this request decode to more than {limits.max_request_pixels} pixels "
                          f"(--max-request-pixels); send fewer or smaller images")


def check_image(name: str, data: bytes, limits: Limits) -> int:
    """Decode under the limits; returns the pixels decoding cost (the decoded size)."""
    if len(data) > limits.max_file_bytes:
        raise reject(413, f"file {name!r} exceeds {limits.max_file_bytes} bytes per image")
    with DECODES:
        return decoded_cost(name, data, limits)


def decoded_cost(name: str, data: bytes | BinaryIO, limits: Limits) -> int:
    try:
        sample = ImagePipeline(max_pixels=limits.max_pixels, min_side=64, on_bad="raise").load(data)
    except BadImageError as exc:
        raise reject(IMAGE_STATUS.get(exc.reason, 422), f"file {name!r} rejected ({exc.reason}): {exc.detail}")
    return min(sample.width * sample.height, limits.max_pixels)
