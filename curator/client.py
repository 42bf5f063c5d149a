"""A Python client for the curator service, mirroring its HTTP API.

Distillation jobs on other machines use it to submit curation jobs, wait for them, and
pull transfer sets, with every shard checked against the manifest's sha256.

    client = CuratorClient("http://host:8000", token="...")
    job = client.curate(["q1.jpg", "q2.jpg"], {"per_query": 100})
    job = client.wait(job.id)
    folder = client.download_transfer_set(job["transfer_set_id"], "/data/sets")
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from .errors import CuratorError
from .formats import TransferManifest, describe_errors, parse_doc
from .formats.protocol import ClaimOut, DistillJobOut, JobOut, SetSummary

M = TypeVar("M", bound=BaseModel)


class ServiceError(CuratorError):
    """The service answered with an error status; ``status`` and ``detail`` say which."""

    def __init__(self, status: int, detail: Any, url: str):
        super().__init__(f"{url}: HTTP {status}: {detail}")
        self.status, self.detail = status, detail


class CuratorClient:
    def __init__(self, base_url: str, token: Optional[str] = None, timeout: float = 120.0):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "CuratorClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = response.text[:500]
            raise ServiceError(response.status_code, detail, str(response.request.url))
        return response

    def _get(self, url: str, model: type[M], **params: Any) -> M:
        return _parse(self._check(self.http.get(url, params=params)), model)

    # -- API mirror -------------------------------------------------------------------------
    def health(self) -> dict:
        return self._check(self.http.get("/healthz")).json()

    def curate(self, images: Sequence[str | os.PathLike], params: Optional[dict] = None,
               labels: Optional[Sequence[Optional[str]]] = None, wait: bool = False) -> JobOut:
        """Submit a curation job with query image files; returns the job."""
        files = [("files", (Path(p).name, Path(p).read_bytes(), "application/octet-stream")) for p in images]
        data = {"params": json.dumps(params or {})}
        if labels is not None:
            data["labels"] = json.dumps(list(labels))
        return self._submit(files=files, data=data, params={"wait": wait})

    def curate_embeddings(self, embeddings: Iterable[Iterable[float]], params: Optional[dict] = None,
                          labels: Optional[Sequence[Optional[str]]] = None, wait: bool = False) -> JobOut:
        body = {"params": params or {}, "embeddings": [list(map(float, e)) for e in embeddings], "labels": labels}
        return self._submit(json=body, params={"wait": wait})

    def _submit(self, attempts: int = 4, **request: Any) -> JobOut:
        """POST /curate, retried when the connection fails (a replica behind a load balancer died, say).
        One Idempotency-Key for all tries: a request the service took before the answer was lost
        returns its job, so a retry never makes a second one."""
        headers = {"Idempotency-Key": uuid.uuid4().hex}
        for attempt in range(attempts):
            try:
                return _parse(self._check(self.http.post("/curate", headers=headers, **request)), JobOut)
            except httpx.TransportError:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.5 * 2 ** attempt)
        raise AssertionError("unreachable")

    def job(self, job_id: str) -> JobOut:
        return self._get(f"/jobs/{job_id}", JobOut)

    def jobs(self, state: Optional[str] = None) -> list[JobOut]:
        return self._get("/jobs", list[JobOut], **({"state": state} if state else {}))

    def cancel(self, job_id: str) -> JobOut:
        return _parse(self._check(self.http.delete(f"/jobs/{job_id}")), JobOut)

    def wait(self, job_id: str, timeout: float = 3600, poll: float = 0.5) -> JobOut:
        """Poll until the job is final; a failed or cancelled job raises with its error."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job.state == "succeeded":
                return job
            if not job.active:
                raise CuratorError(f"job {job_id} {job.state}: {job.error}")
            if time.monotonic() > deadline:
                raise CuratorError(f"job {job_id} still {job.state} after {timeout:.0f} s")
            time.sleep(poll)

    def transfer_sets(self) -> list[SetSummary]:
        return self._get("/transfer-sets", list[SetSummary])

    def transfer_set(self, set_id: str) -> SetSummary:
        return self._get(f"/transfer-sets/{set_id}", SetSummary)

    def manifest_bytes(self, set_id: str) -> bytes:
        """The manifest exactly as the service stores it (its sha256 is in the set's summary)."""
        return self._check(self.http.get(f"/transfer-sets/{set_id}/manifest")).content

    def manifest(self, set_id: str) -> TransferManifest:
        return _parse_manifest(self.manifest_bytes(set_id), set_id)

    def search(self, image: str | os.PathLike, k: int = 10) -> dict:
        files = {"file": (Path(image).name, Path(image).read_bytes(), "application/octet-stream")}
        return self._check(self.http.post("/search", files=files, params={"k": k})).json()

    # -- distillation jobs ------------------------------------------------------------------
    def submit_distill_job(self, transfer_set_id: str, labelled: str, config: Optional[dict] = None) -> DistillJobOut:
        body = {"transfer_set_id": transfer_set_id, "labelled": labelled, "config": config or {}}
        return _parse(self._check(self.http.post("/distill-jobs", json=body)), DistillJobOut)

    def distill_job(self, job_id: str) -> DistillJobOut:
        return self._get(f"/distill-jobs/{job_id}", DistillJobOut)

    def claim_distill_job(self, worker: str, lease_seconds: float) -> Optional[ClaimOut]:
        """The next job for ``worker`` (under a lease), or None when the queue is empty. The job's
        ``lease_token`` is the lease's secret: heartbeats and the result must present it."""
        r = self._check(self.http.post("/distill-jobs/claim", json={"worker": worker, "lease_seconds": lease_seconds}))
        return _parse(r, ClaimOut) if r.status_code == 200 else None

    def heartbeat(self, job_id: str, worker: str, lease_seconds: float, lease_token: str) -> bool:
        r = self.http.post(f"/distill-jobs/{job_id}/heartbeat",
                           json={"worker": worker, "lease_seconds": lease_seconds, "lease_token": lease_token})
        if r.status_code == 409:
            return False
        self._check(r)
        return True

    def finish_distill_job(self, job_id: str, worker: str, state: str, lease_token: str, **fields) -> DistillJobOut:
        body = {"worker": worker, "state": state, "lease_token": lease_token, **fields}
        return _parse(self._check(self.http.post(f"/distill-jobs/{job_id}/finish", json=body)), DistillJobOut)

    def download_transfer_set(self, set_id: str, dest: str | os.PathLike) -> Path:
        """Download manifest, samples and every shard into ``dest/set_id``, verifying sha256.

        Shards already present with the right checksum are kept (a re-run resumes); the
        folder appears under its final name only once everything checked out.
        """
        dest = Path(dest)
        final, tmp = dest / set_id, dest / f".{set_id}.partial"
        if final.exists():
            return final
        tmp.mkdir(parents=True, exist_ok=True)
        raw = self.manifest_bytes(set_id)
        if hashlib.sha256(raw).hexdigest() != self.transfer_set(set_id).manifest_sha256:
            raise CuratorError(f"the manifest of {set_id} does not match the sha256 the service recorded for it")
        manifest = _parse_manifest(raw, set_id)
        for shard in manifest.shardlist:
            path = tmp / shard.url
            if path.exists() and _sha256(path) == shard.sha256:
                continue
            self._download(f"/transfer-sets/{set_id}/shards/{shard.url}", path)
            if _sha256(path) != shard.sha256:
                path.unlink()
                raise CuratorError(f"shard {shard.url} of {set_id}: sha256 mismatch after download")
        samples = self._check(self.http.get(f"/transfer-sets/{set_id}/samples.parquet")).content
        (tmp / "samples.parquet").write_bytes(samples)
        if manifest.url_list:  # URL-only pool items: the list img2dataset (or curator materialize) downloads
            self._download(f"/transfer-sets/{set_id}/{manifest.url_list}", tmp / manifest.url_list)
        (tmp / "manifest.json").write_bytes(raw)  # byte for byte: its sha256 stays the service's
        os.replace(tmp, final)
        return final

    def _download(self, url: str, path: Path) -> None:
        with self.http.stream("GET", url) as response:
            if response.status_code >= 400:
                response.read()  # a streamed error body must be read before it can be reported
            self._check(response)
            with open(path, "wb") as fh:
                for chunk in response.iter_bytes(1 << 20):
                    fh.write(chunk)


def _parse(response: httpx.Response, model: Any) -> Any:
    """An answer as its protocol model; a body that is not one says which URL sent it."""
    try:
        return TypeAdapter(model).validate_json(response.content)
    except ValidationError as exc:
        raise CuratorError(f"{response.request.url}: the service's answer is not a valid {getattr(model, '__name__', model)}: "
                           f"{describe_errors(exc)}") from None


def _parse_manifest(raw: bytes, set_id: str) -> TransferManifest:
    try:
        doc = json.loads(raw)
    except ValueError:
        raise CuratorError(f"the manifest of {set_id} is not JSON") from None
    return parse_doc(doc, TransferManifest, f"the manifest of {set_id}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
