"""The zoo's web server: the FastAPI app of ``microzoo serve``.

Three faces over one :class:`~microzoo.zoo.service.Zoo`:

- the JSON API under ``/api`` (:mod:`.api`; its OpenAPI document at ``/openapi.json``, read at ``/docs``);
- the routes stock bioimageio.spec resolves ids with (here): ``/artifacts/{id}/files/{path}`` for
  ``id`` = NAME (its latest published version) or NAME/VERSION, GET and HEAD, the exact stored bytes;
  ``/id_map.json`` and ``/id_map_draft.json``. Drafts are never served under ``/artifacts``: the
  draft map points under ``/drafts``;
- the web pages (:mod:`.pages`).

Every refusal is JSON ``{"detail": message}`` with the status of the
:class:`~microzoo.errors.ZooError` raised (the pages render the same message as HTML).
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from microzoo import __version__
from microzoo.errors import MicrozooError, ZooError, ZooNotFound
from microzoo.zoo.server.access import RateLimiter, base_url, check_read

HERE = Path(__file__).resolve().parent
logger = logging.getLogger("microzoo.zoo.server")
#: The largest upload accepted by default (a package zip); bigger ones are refused with 413.
DEFAULT_MAX_UPLOAD_BYTES = 1 << 30
_JSON_PREFIXES = ("/api/", "/artifacts/", "/drafts/", "/id_map")


def create_app(
    zoo: Any,
    *,
    public_url: str | None = None,
    read_token_required: bool = False,
    write_rate_per_minute: int = 30,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
) -> FastAPI:
    """The zoo's app over ``zoo`` (a :class:`~microzoo.zoo.service.Zoo`).

    ``public_url``: the address users reach the zoo at (behind a proxy), used in the id maps and
    the pages' instructions; default: the address each request came to.
    """
    from microzoo.zoo.server import api, pages

    app = FastAPI(
        title="microzoo zoo",
        version=__version__,
        description="A BioImage Model Zoo repository: search, publish, review and download model packages.",
        lifespan=_lifespan,
    )
    app.state.zoo = zoo
    app.state.public_url = public_url.rstrip("/") if public_url else None
    app.state.read_token_required = read_token_required
    app.state.rate_limiter = RateLimiter(write_rate_per_minute)
    app.state.max_upload_bytes = max_upload_bytes
    _add_error_handlers(app)
    app.include_router(api.router)
    _add_bioimageio_routes(app)
    app.include_router(pages.router)
    app.include_router(pages.open_router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    return app


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Before the first request: one search, so the process holds the search entries in memory
    (``zoo.search``; ~50 ms for 10,000 models, which the first user would otherwise wait for), then
    ``gc.freeze()``: the objects alive at start (modules, the app, those entries) leave the
    collector's generations, so its full collections, which pause every request of the process,
    no longer walk them."""
    from starlette.concurrency import run_in_threadpool

    from microzoo.zoo.records import SearchQuery

    await run_in_threadpool(app.state.zoo.search, SearchQuery())
    gc.collect()
    gc.freeze()
    yield


#: The environment variable through which ``microzoo serve --processes N`` hands its settings to
#: each server process (uvicorn starts them by import string, so they cannot share one app object).
SERVE_SETTINGS_ENV = "MICROZOO_ZOO_SERVE_SETTINGS"


def app_from_environment() -> FastAPI:
    """The app of one of several server processes: settings from :data:`SERVE_SETTINGS_ENV` (JSON)."""
    import json
    import os

    from microzoo.zoo.service import Zoo

    settings = json.loads(os.environ[SERVE_SETTINGS_ENV])
    zoo = Zoo(Path(settings.pop("root")), settings.pop("db"), publish_on_pass=settings.pop("publish_on_pass"))
    return create_app(zoo, **settings)


def _wants_json(request: Request) -> bool:
    path = request.url.path
    return path.startswith(_JSON_PREFIXES) or "text/html" not in request.headers.get("accept", "")


def _error(request: Request, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    if _wants_json(request):
        return JSONResponse({"detail": message}, status_code=status, headers=headers)
    from microzoo.zoo.server.pages import error_page

    return error_page(request, status, message)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ZooError)
    async def zoo_error(request: Request, error: ZooError) -> Response:
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
        return _error(request, error.status, str(error), headers)

    @app.exception_handler(MicrozooError)
    async def package_error(request: Request, error: MicrozooError) -> Response:
        return _error(request, 422, str(error))  # a package or image the zoo could not use

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'request'}: {e.get('msg', '')}"
            for e in error.errors()
        )
        return _error(request, 422, f"invalid request ({problems}): see /docs for the parameters")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> Response:
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(request, 500, f"the zoo failed on this request ({type(error).__name__}); its log has the details")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        message = str(error.detail) if error.status_code != 404 else f"nothing at {request.url.path}"
        return _error(request, error.status_code, message, dict(error.headers or {}) or None)


def _file_response(path: Path) -> FileResponse:
    media = "application/x-yaml" if path.suffix in (".yaml", ".yml") else None
    return FileResponse(path, media_type=media)


def stored_file(zoo: Any, name: str, version: str, relative: str) -> Path:
    """The stored file of a version; ``rdf.yaml`` is the description whatever its name in the package."""
    try:
        return Path(zoo.file_path(name, version, relative))
    except ZooNotFound:
        if relative != "rdf.yaml":
            raise
        return Path(zoo.file_path(name, version, "bioimageio.yaml"))


def _add_bioimageio_routes(app: FastAPI) -> None:
    zoo = app.state.zoo

    def get_and_head(path: str) -> Callable[[Callable[..., FileResponse]], Callable[..., FileResponse]]:
        """Register a file route for GET and HEAD (one operation each in the OpenAPI document)."""

        def register(function: Callable[..., FileResponse]) -> Callable[..., FileResponse]:
            for method in ("GET", "HEAD"):
                operation = f"{function.__name__}_{method.lower()}"
                app.add_api_route(path, function, methods=[method], tags=["bioimageio"], operation_id=operation)
            return function

        return register

    @get_and_head("/artifacts/{name}/files/{path:path}")
    def latest_file(name: str, path: str, request: Request) -> FileResponse:
        """A file of the latest published version of NAME (``rdf.yaml``: its description)."""
        check_read(request)
        version = zoo.latest_published(name)
        return _file_response(stored_file(zoo, name, version.version, path))

    @get_and_head("/artifacts/{name}/{version}/files/{path:path}")
    def version_file(name: str, version: str, path: str, request: Request) -> FileResponse:
        """A file of a published version: the exact bytes its description's sha256 names."""
        check_read(request)
        zoo.version(name, version, published_only=True)
        return _file_response(stored_file(zoo, name, version, path))

    @get_and_head("/drafts/{name}/{version}/files/{path:path}")
    def draft_file(name: str, version: str, path: str, request: Request) -> FileResponse:
        """A file of a version not published yet (what ``/id_map_draft.json`` points to)."""
        check_read(request)
        info = zoo.version(name, version, published_only=False)
        if info.status == "published":
            raise ZooNotFound(f"{name}/{version} is published: its files are under /artifacts/{name}/{version}/files/")
        return _file_response(stored_file(zoo, name, version, path))

    @app.get("/id_map.json", tags=["bioimageio"])
    def id_map(request: Request) -> dict[str, Any]:
        """``{NAME and NAME/VERSION: {"source": rdf.yaml URL, "sha256": hex}}`` of published versions."""
        check_read(request)
        result: dict[str, Any] = zoo.id_map(base_url(request), drafts=False)
        return result

    @app.get("/id_map_draft.json", tags=["bioimageio"])
    def id_map_draft(request: Request) -> dict[str, Any]:
        """``{NAME/draft: {...}}``: the newest unpublished version of each model, under ``/drafts``."""
        check_read(request)
        result: dict[str, Any] = zoo.id_map(base_url(request), drafts=True)
        return result
