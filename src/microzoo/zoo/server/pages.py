"""The zoo's web pages: server-rendered (Jinja2), readable without JavaScript.

Pages that wait for a worker (a test run after an upload, a "try it" job) refresh themselves
every few seconds while the job runs (a ``<meta http-equiv="refresh">``, no script). Forms that
write take a token field; a token that worked is remembered in an HttpOnly, SameSite=Strict
cookie so a reviewer types it once.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from microzoo.errors import MicrozooError, ZooError, ZooNotFound
from microzoo.zoo.server.access import TOKEN_COOKIE, authorise_write, base_url, rate_limit_client, read_allowed
from microzoo.zoo.server.api import JOB_ID, MAX_TRY_IMAGE_BYTES, queue_try, search_query, upload_package
from microzoo.zoo.server.model_view import model_context

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(env=jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True))
templates.env.filters["when"] = lambda value: value.strftime("%Y-%m-%d %H:%M") if value else ""
router = APIRouter(include_in_schema=False, dependencies=[Depends(read_allowed)])
open_router = APIRouter(include_in_schema=False)  # pages a zoo that requires a token to read still shows
FACETS = {"task": "Task", "modality": "Modality", "dims": "Dimensions", "weight_format": "Weight format",
          "license": "Licence", "consumer": "Runs in"}  # fmt: skip
NOTES_COOKIE = "zoo_upload_notes"
ACTIONS = {"comment": "uploader", "submit": "uploader", "request-changes": "reviewer", "publish": "reviewer"}


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("base", base_url(request))
    return templates.TemplateResponse(request, template, context, status_code=status_code)


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    return render(request, "error.html.j2", status, status=status, message=message)


def _remember(response: Response, token: str | None) -> Response:
    if token:
        response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict", max_age=30 * 86400)
    return response


@router.get("/", response_class=HTMLResponse)
def home(request: Request) -> HTMLResponse:
    recent = request.app.state.zoo.search(search_query(sort="date", per_page=12))
    return render(request, "home.html.j2", recent=recent.items, total=recent.total)


@router.get("/search", response_class=HTMLResponse)
def search(
    request: Request,
    q: str = "",
    task: str = "",
    modality: str = "",
    dims: str = "",
    weight_format: str = "",
    license: str = "",
    consumer: str = "",
    sort: str = "relevance",
    page: int = Query(1, ge=1, le=10_000),
    per_page: int = Query(20, ge=1, le=100),
) -> HTMLResponse:
    filters = {"task": task, "modality": modality, "dims": dims, "weight_format": weight_format,
               "license": license, "consumer": consumer}  # fmt: skip
    result = request.app.state.zoo.search(search_query(text=q, sort=sort, page=page, per_page=per_page, **filters))
    active = {k: v for k, v in filters.items() if v}

    def link(**change: Any) -> str:
        params = {"q": q, "sort": sort, **active, "page": 1, **change}
        return "/search?" + urlencode({k: v for k, v in params.items() if v not in ("", None)})

    pages = max(1, -(-result.total // per_page))
    return render(
        request, "search.html.j2", q=q, sort=sort, result=result, active=active, link=link,
        page=page, pages=pages, facets=FACETS,
    )  # fmt: skip


@router.get("/models/{name}", response_class=HTMLResponse)
def model_latest(request: Request, name: str) -> HTMLResponse:
    versions = request.app.state.zoo.versions(name)  # oldest first
    published = [v for v in versions if v.status == "published"]
    return model_page(request, name, (published or versions)[-1].version)


@router.get("/models/{name}/{version}", response_class=HTMLResponse)
def model_page(request: Request, name: str, version: str) -> HTMLResponse:
    notes = _read_notes(request.cookies.get(NOTES_COOKIE, "")) if request.query_params.get("uploaded") else None
    return render(request, "model.html.j2", **model_context(request, name, version), upload_notes=notes)


def _notes_cookie(response: Response, path: str, problems: list[str]) -> Response:
    """What the validation said of an upload, for the page it leads to (Post/Redirect/Get; kept 10 minutes,
    as that page reloads itself while the test runs)."""
    value = base64.urlsafe_b64encode(json.dumps(problems[:20])[:3000].encode()).decode()
    response.set_cookie(NOTES_COOKIE, value, max_age=600, path=path, httponly=True, samesite="strict")
    return response


def _read_notes(value: str) -> list[str]:
    try:
        notes = json.loads(base64.urlsafe_b64decode(value.encode()))
    except ValueError:
        return []
    return [str(n) for n in notes] if isinstance(notes, list) else []


@router.post("/models/{name}/{version}/review")
def review_action(
    request: Request,
    name: str,
    version: str,
    action: str = Form(...),
    text: str = Form(""),
    token: str = Form(""),
) -> Response:
    zoo = request.app.state.zoo
    if action not in ACTIONS:
        raise ZooError(f"unknown action {action}: one of {', '.join(ACTIONS)}")
    info = authorise_write(request, ACTIONS[action], token)
    if action == "comment":
        zoo.comment(name, version, token=info, text=text)
    elif action == "submit":
        zoo.submit_for_review(name, version, token=info)
        if text.strip():  # what the uploader wrote with it (the changes made) is kept as a comment
            zoo.comment(name, version, token=info, text=text)
    elif action == "request-changes":
        zoo.request_changes(name, version, token=info, comment=text)
    else:
        zoo.publish(name, version, token=info, comment=text)
    target = f"/models/{quote(name)}/{quote(version)}#review"
    return _remember(RedirectResponse(target, status_code=303), token)


@router.post("/models/{name}/{version}/convert")
def convert_action(
    request: Request, name: str, version: str, formats: str = Form(...), token: str = Form("")
) -> Response:
    info = authorise_write(request, "uploader", token)
    request.app.state.zoo.request_conversion(name, version, token=info, formats=formats.split(","))
    target = f"/models/{quote(name)}/{quote(version)}#compatibility"
    return _remember(RedirectResponse(target, status_code=303), token)


@open_router.get("/sign-in", response_class=HTMLResponse)
def sign_in_form(request: Request, next: str = "/") -> HTMLResponse:
    return render(request, "sign_in.html.j2", next=_local(next))


@open_router.post("/sign-in")
def sign_in(request: Request, token: str = Form(...), next: str = Form("/")) -> Response:
    """Check a token and remember it in the page cookie (a zoo that requires a token to read)."""
    try:
        authorise_write(request, "uploader", token)
    except ZooError as error:
        return render(request, "sign_in.html.j2", error.status, next=_local(next), error=str(error))
    return _remember(RedirectResponse(_local(next), status_code=303), token)


def _local(target: str) -> str:
    """Only a path of this zoo to go back to (never another site)."""
    return target if target.startswith("/") and not target.startswith("//") else "/"


@router.get("/upload", response_class=HTMLResponse)
def upload_form(request: Request) -> HTMLResponse:
    return render(request, "upload.html.j2")


@router.post("/upload", response_class=HTMLResponse)
async def upload(request: Request) -> Response:
    form = await request.form(max_files=1, max_fields=10)
    token = str(form.get("token") or "")
    name = str(form.get("name") or "") or None
    package = form.get("package")
    try:
        who = await run_in_threadpool(authorise_write, request, "uploader", token)
        if not isinstance(package, UploadFile) or not package.filename:
            raise ZooError("choose a package zip to upload")
        data = await package.read(request.app.state.max_upload_bytes + 1)
        if len(data) > request.app.state.max_upload_bytes:
            raise ZooError("the package is larger than this zoo accepts", status=413)
        info, ingest = await run_in_threadpool(upload_package, request, who, data, name, None)
    except MicrozooError as error:
        status = getattr(error, "status", 422)
        return render(request, "upload.html.j2", status, error=str(error), name=name or "")
    path = f"/models/{quote(info.name)}/{quote(info.version)}"
    response = _remember(RedirectResponse(f"{path}?uploaded=1", status_code=303), token)
    return _notes_cookie(response, path, list(ingest.problems))


@router.get("/review", response_class=HTMLResponse)
def review_queue(request: Request) -> HTMLResponse:
    versions = request.app.state.zoo.review_queue()
    waiting = [v for v in versions if v.status == "in_review"]
    others = [v for v in versions if v.status != "in_review"]
    return render(request, "review.html.j2", queue=waiting, others=others)


@router.get("/models/{name}/{version}/try", response_class=HTMLResponse)
def try_form(request: Request, name: str, version: str) -> HTMLResponse:
    info = request.app.state.zoo.version(name, version, published_only=False)
    return render(request, "try.html.j2", info=info, job=None)


@router.post("/models/{name}/{version}/try")
async def try_submit(request: Request, name: str, version: str) -> Response:
    await run_in_threadpool(rate_limit_client, request)
    form = await request.form(max_files=1, max_fields=5)
    image = form.get("image")
    if not isinstance(image, UploadFile) or not image.filename:
        raise ZooError("choose an image to try the model on")
    data = await image.read(MAX_TRY_IMAGE_BYTES + 1)
    if len(data) > MAX_TRY_IMAGE_BYTES:
        raise ZooError(f"the image is larger than {MAX_TRY_IMAGE_BYTES >> 20} MiB: try a smaller crop", status=413)
    job = await run_in_threadpool(queue_try, request, name, version, data, image.filename)
    return RedirectResponse(f"/models/{quote(name)}/{quote(version)}/try/{job}", status_code=303)


@router.get("/models/{name}/{version}/try/{job_id}", response_class=HTMLResponse)
def try_result(request: Request, name: str, version: str, job_id: int = JOB_ID) -> HTMLResponse:
    zoo = request.app.state.zoo
    info = zoo.version(name, version, published_only=False)
    job = zoo.job(job_id)
    if job.kind != "try" or job.version_id != info.id:
        raise ZooNotFound(f"no try-it job {job_id} for {name}/{version}")
    return render(request, "try.html.j2", info=info, job=job, result=job.result or {})
