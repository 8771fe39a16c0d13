"""The zoo's JSON API (``/api``): search, models and versions, upload, review, try it, jobs.

Reads are public unless the zoo requires a token to read; every write needs a token
(``Authorization: Bearer TOKEN``) of the role it names and is rate-limited per token.
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pydantic_core
from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as FastAPIPath
from fastapi.encoders import jsonable_encoder
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from microzoo.errors import UploadError, ZooNotFound
from microzoo.zoo.server.access import authorise_write, base_url, rate_limit_client, read_allowed

router = APIRouter(prefix="/api", tags=["api"], dependencies=[Depends(read_allowed)])
#: The largest image "try it" accepts.
MAX_TRY_IMAGE_BYTES = 32 << 20
JOB_ID = FastAPIPath(..., ge=1, le=2**31 - 1)  # jobs.id is a 32-bit integer on PostgreSQL


def _multipart(required: str, **optional: str) -> dict[str, Any]:
    """The OpenAPI request body of a multipart form: one file field and optional text fields."""
    fields: dict[str, Any] = {required: {"type": "string", "format": "binary"}}
    fields.update({name: {"type": "string", "description": text} for name, text in optional.items()})
    schema = {"type": "object", "properties": fields, "required": [required]}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


def as_json(obj: Any) -> Any:
    """A service object (dataclass or pydantic model) as JSON-ready data.

    The service's records hold JSON columns (already plain) and datetimes, so a record is converted
    field by field, and only the values that are not plain go through :func:`_plain`: 40 times
    faster than ``jsonable_encoder``'s walk for a page of 20 search results, which was a sixth of
    a search's time.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            name: value if type(value) in _PLAIN_TYPES else _plain(value)
            for name in _field_names(type(obj))
            for value in (getattr(obj, name),)
        }
    if isinstance(obj, BaseModel):
        obj = obj.model_dump()
    return jsonable_encoder(obj)


#: values a record's field can hold that JSON takes as they are (JSON columns hold only plain values)
_PLAIN_TYPES: tuple[type, ...] = (str, int, float, bool, type(None), dict, list)


@functools.cache
def _field_names(record_type: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(record_type))


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, _PLAIN_TYPES):
        return value  # subclasses of the plain types (a str enum, say)
    return jsonable_encoder(value)


class PlainJSONResponse(JSONResponse):
    """A response of JSON-ready content, written by pydantic-core's serializer (Rust, already a dependency
    through pydantic): the same bytes as Starlette's ``json.dumps`` in a quarter of the time (0.25
    against 0.94 ms for a page of 20 search results, 54 KB); NaN and infinities are written as null."""

    def render(self, content: Any) -> bytes:
        return pydantic_core.to_json(content)


def version_json(request: Request, info: Any) -> dict[str, Any]:
    """A version with the addresses of its files."""
    data: dict[str, Any] = as_json(info)
    base, path = base_url(request), f"{quote(info.name)}/{quote(info.version)}"
    data["package_zip"] = f"{base}/api/models/{path}/package.zip"
    tree = "artifacts" if info.status == "published" else "drafts"
    data["files"] = f"{base}/{tree}/{path}/files/"
    return data


def search_query(**values: Any) -> Any:
    from microzoo.zoo.service import SearchQuery

    return SearchQuery(**{k: v for k, v in values.items() if v not in (None, "")})


@router.get("/models")
def search_models(
    request: Request,
    q: str = "",
    task: str | None = None,
    modality: str | None = None,
    dims: str | None = None,
    weight_format: str | None = None,
    license: str | None = None,
    consumer: str | None = None,
    sort: str = "relevance",
    page: int = Query(1, ge=1, le=10_000),
    per_page: int = Query(20, ge=1, le=100),
) -> JSONResponse:
    """Search the published models: full text, filters, sort (relevance, downloads, date), facets."""
    query = search_query(
        text=q, task=task, modality=modality, dims=dims, weight_format=weight_format,
        license=license, consumer=consumer, sort=sort, page=page, per_page=per_page,
    )  # fmt: skip
    result = request.app.state.zoo.search(query)
    content = {
        "total": result.total,
        "page": page,
        "per_page": per_page,
        "items": [version_json(request, item) for item in result.items],
        "facets": result.facets,
    }
    return PlainJSONResponse(content)  # JSON-ready already: FastAPI's second encoding pass would cost as much again


@router.get("/models/{name}")
def model(request: Request, name: str) -> dict[str, Any]:
    """A model: its versions (newest first) and its latest published version (null before one is)."""
    versions = request.app.state.zoo.versions(name)  # oldest first
    published = [v for v in versions if v.status == "published"]
    latest = next((v for v in published if v.is_latest), published[-1] if published else None)
    return {
        "name": name,
        "latest": latest.version if latest else None,
        "versions": [version_json(request, v) for v in reversed(versions)],
    }


@router.get("/models/{name}/{version}")
def version(request: Request, name: str, version: str) -> dict[str, Any]:
    """A version: summary, status, test report, compatibility matrix, comments."""
    zoo = request.app.state.zoo
    data = version_json(request, zoo.version(name, version, published_only=False))
    data["comments"] = [as_json(c) for c in zoo.comments(name, version)]
    return data


@router.get("/models/{name}/{version}/package.zip")
def package_zip(request: Request, name: str, version: str) -> FileResponse:
    """The version's package zip (deepImageJ's "install from URL"); counts a download."""
    zoo = request.app.state.zoo
    info = zoo.version(name, version, published_only=False)
    path = Path(zoo.zip_path(name, info.version))
    zoo.count_download(name, info.version)
    return FileResponse(path, media_type="application/zip", filename=f"{name}-{info.version}.zip")


async def _upload_file(request: Request, field: str, limit: int) -> tuple[bytes, str, dict[str, str]]:
    """The bytes and name of one uploaded file, and the other form fields; 413 past ``limit``."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit + (1 << 20):
        raise UploadError(f"the upload is {int(length):,} bytes, more than this zoo accepts ({limit:,})", status=413)
    form = await request.form(max_files=1, max_fields=10)
    upload = form.get(field)
    if not isinstance(upload, UploadFile):
        raise UploadError(f"no file in the form field '{field}': send it as multipart/form-data", status=400)
    if upload.size is not None and upload.size > limit:
        raise UploadError(f"the file is {upload.size:,} bytes, more than this zoo accepts ({limit:,})", status=413)
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise UploadError(f"the file is more than this zoo accepts ({limit:,} bytes)", status=413)
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    return data, upload.filename or "", fields


def upload_package(request: Request, token: Any, data: bytes, name: str | None, version: str | None) -> Any:
    """Check an uploaded package and store it as a new version (queued for its test run)."""
    from microzoo.zoo.ingest import ingest_upload

    zoo = request.app.state.zoo
    staging = zoo.new_staging_dir()
    try:
        ingest = ingest_upload(
            data, staging=staging, name=name, version=version, max_bytes=request.app.state.max_upload_bytes
        )
        return zoo.publish_upload(ingest, token=token, name=name or None), ingest
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # what is left: the upload was moved into place, or refused


@router.post(
    "/models",
    status_code=201,
    openapi_extra=_multipart("package", name="the model's name", version="the version (default: the next)"),
)
async def upload(request: Request) -> JSONResponse:
    """Upload a package zip (form field ``package``; optional ``name``, ``version``): 201 and its test job."""
    token = await run_in_threadpool(authorise_write, request, "uploader")
    data, _, fields = await _upload_file(request, "package", request.app.state.max_upload_bytes)
    name, version = fields.get("name") or None, fields.get("version") or None
    info, ingest = await run_in_threadpool(upload_package, request, token, data, name, version)
    body = {
        "name": info.name,
        "version": info.version,
        "status": info.status,
        "test_job": next((j.id for j in request.app.state.zoo.jobs_of(info.name, info.version, "test")), None),
        "problems": list(getattr(ingest, "problems", []) or []),
        "url": f"{base_url(request)}/models/{quote(info.name)}/{quote(info.version)}",
    }
    return JSONResponse(body, status_code=201)


class CommentBody(BaseModel):
    comment: str = ""


class TextBody(BaseModel):
    text: str


@router.post("/models/{name}/{version}/submit")
def submit(request: Request, name: str, version: str) -> dict[str, Any]:
    """Ask for review (draft or changes requested -> in review)."""
    token = authorise_write(request, "uploader")
    return version_json(request, request.app.state.zoo.submit_for_review(name, version, token=token))


@router.post("/models/{name}/{version}/request-changes")
def request_changes(request: Request, name: str, version: str, body: CommentBody) -> dict[str, Any]:
    """A reviewer sends the version back with a comment."""
    token = authorise_write(request, "reviewer")
    info = request.app.state.zoo.request_changes(name, version, token=token, comment=body.comment)
    return version_json(request, info)


@router.post("/models/{name}/{version}/publish")
def publish(request: Request, name: str, version: str, body: CommentBody | None = None) -> dict[str, Any]:
    """A reviewer publishes the version (its test run must have passed)."""
    token = authorise_write(request, "reviewer")
    comment = body.comment if body else ""
    return version_json(request, request.app.state.zoo.publish(name, version, token=token, comment=comment))


@router.post("/models/{name}/{version}/comments", status_code=201)
def comment(request: Request, name: str, version: str, body: TextBody) -> Any:
    """Comment on a version."""
    token = authorise_write(request, "uploader")
    return as_json(request.app.state.zoo.comment(name, version, token=token, text=body.text))


class ConvertBody(BaseModel):
    formats: list[str]


@router.post("/models/{name}/{version}/convert", status_code=202)
def convert(request: Request, name: str, version: str, body: ConvertBody) -> dict[str, Any]:
    """Add weight formats (``onnx``, ``torchscript``) a tool needs: a worker converts, checks the new
    weights against the test outputs and uploads the result as the model's next version."""
    token = authorise_write(request, "uploader")
    job_id = request.app.state.zoo.request_conversion(name, version, token=token, formats=body.formats)
    return {"job": job_id, "poll": f"{base_url(request)}/api/jobs/{job_id}"}


def queue_try(request: Request, name: str, version: str, image: bytes, filename: str) -> int:
    """Store the image under ROOT/try/upload-<uuid>/ and queue a `try` job for it (payload: its path there)."""
    zoo = request.app.state.zoo
    info = zoo.version(name, version, published_only=False)
    suffix = "".join(Path(filename).suffixes[-2:]).lower()
    if not suffix or not all(c.isalnum() or c == "." for c in suffix):
        suffix = ".tif"
    relative = f"upload-{uuid.uuid4().hex}/input{suffix}"
    target = Path(zoo.root) / "try" / relative
    target.parent.mkdir(parents=True)
    target.write_bytes(image)
    job_id: int = zoo.enqueue("try", version_id=info.id, payload={"image": relative})
    return job_id


@router.post("/models/{name}/{version}/try", status_code=202, openapi_extra=_multipart("image"))
async def try_it(request: Request, name: str, version: str) -> JSONResponse:
    """Run the model on one image (form field ``image``) in a worker: 202 and the job to poll."""
    await run_in_threadpool(rate_limit_client, request)
    data, filename, _ = await _upload_file(request, "image", MAX_TRY_IMAGE_BYTES)
    job = await run_in_threadpool(queue_try, request, name, version, data, filename or "image.tif")
    return JSONResponse({"job": job, "poll": f"{base_url(request)}/api/jobs/{job}"}, status_code=202)


@router.get("/jobs/{job_id}")
def job(request: Request, job_id: int = JOB_ID) -> Any:
    """A job: its kind, status, and when done its result (for try it: output and trust note)."""
    data = as_json(request.app.state.zoo.job(job_id))
    if data.get("kind") == "try":
        files = (data.get("result") or {}).get("files") or {}
        data["pictures"] = {key: f"{base_url(request)}/api/jobs/{job_id}/files/{key}" for key in files}
    return data


@router.get("/jobs/{job_id}/files/{picture}")
def job_file(request: Request, picture: str, job_id: int = JOB_ID) -> FileResponse:
    """A picture a `try` job made: ``input``, ``output`` or ``overlay`` (PNG)."""
    zoo = request.app.state.zoo
    info = zoo.job(job_id)
    files = (info.result or {}).get("files") or {} if info.kind == "try" else {}
    if picture not in files:
        raise ZooNotFound(f"job {job_id} has no picture '{picture}' (yet): it has {', '.join(files) or 'none'}")
    root = Path(zoo.root).resolve()
    target = (root / str(files[picture])).resolve()
    if not target.is_relative_to(root / "try") or not target.is_file():
        raise ZooNotFound(f"the picture '{picture}' of job {job_id} is gone")
    return FileResponse(target)
