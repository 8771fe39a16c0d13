"""The zoo's app in process (no sockets): rate limits, read tokens, JSON errors, the OpenAPI document."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from _zoo_db import staged_example

from microzoo.zoo.server import create_app
from microzoo.zoo.service import Zoo


def _requests(app: Any, calls: list[tuple[str, str, dict[str, Any]]]) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://zoo.test") as http:
            return [await http.request(method, path, **kwargs) for method, path, kwargs in calls]

    return asyncio.run(run())


@pytest.fixture
def zoo(tmp_path: Path) -> Zoo:
    return Zoo(tmp_path / "zoo")


def test_writes_are_rate_limited_per_token(zoo: Zoo):
    first, second = zoo.create_token("uploader", "a"), zoo.create_token("uploader", "b")
    app = create_app(zoo, write_rate_per_minute=2)

    def comment(token: str) -> tuple[str, str, dict[str, Any]]:
        return (
            "POST",
            "/api/models/x/1/comments",
            {"json": {"text": "hi"}, "headers": {"Authorization": f"Bearer {token}"}},
        )

    answers = _requests(app, [comment(first), comment(first), comment(first), comment(second)])
    assert [a.status_code for a in answers] == [404, 404, 429, 404]
    assert "at most 2 a minute" in answers[2].json()["detail"]


def test_a_zoo_can_require_a_token_to_read(zoo: Zoo):
    token = zoo.create_token("uploader", "reader")
    app = create_app(zoo, read_token_required=True)
    anonymous, with_token, id_map = _requests(
        app,
        [
            ("GET", "/api/models", {}),
            ("GET", "/api/models", {"headers": {"Authorization": f"Bearer {token}"}}),
            ("GET", "/id_map.json", {}),
        ],
    )
    assert anonymous.status_code == 401 and "token" in anonymous.json()["detail"]
    assert with_token.status_code == 200 and with_token.json()["total"] == 0
    assert id_map.status_code == 401


def test_errors_are_json_and_pages_html(zoo: Zoo):
    app = create_app(zoo)
    api, page, unknown, validation = _requests(
        app,
        [
            ("GET", "/api/models/none", {"headers": {"accept": "text/html"}}),
            ("GET", "/models/none", {"headers": {"accept": "text/html"}}),
            ("GET", "/no/such/route", {}),
            ("GET", "/api/models", {"params": {"per_page": 1000}}),
        ],
    )
    assert api.status_code == 404 and api.json() == {
        "detail": "no model 'none' in this zoo: `microzoo search` lists them"
    }
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html") and "none" in page.text
    assert unknown.status_code == 404 and unknown.json()["detail"] == "nothing at /no/such/route"
    assert validation.status_code == 422 and "per_page" in validation.json()["detail"]


def test_the_openapi_document_names_every_route(zoo: Zoo):
    (document,) = _requests(create_app(zoo), [("GET", "/openapi.json", {})])
    paths = document.json()["paths"]
    for path in ("/api/models", "/api/models/{name}/{version}", "/api/models/{name}/{version}/package.zip",
                 "/artifacts/{name}/{version}/files/{path}", "/id_map.json", "/api/jobs/{job_id}"):  # fmt: skip
        assert path in paths, path
    assert {"get", "head"} <= set(paths["/artifacts/{name}/files/{path}"])


def test_the_pages_of_a_private_zoo_ask_for_a_token_and_remember_it(zoo: Zoo):
    token = zoo.create_token("uploader", "reader")
    app = create_app(zoo, read_token_required=True)
    html = {"headers": {"accept": "text/html"}}
    refused, wrong, signed_in = _requests(
        app,
        [
            ("GET", "/search", html),
            ("POST", "/sign-in", {"data": {"token": "nope", "next": "/search"}, **html}),
            ("POST", "/sign-in", {"data": {"token": token, "next": "https://elsewhere.example/"}, **html}),
        ],
    )
    assert refused.status_code == 401 and 'id="sign-in-link"' in refused.text
    assert wrong.status_code == 401 and "unknown token" in wrong.text
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/"
    cookie = signed_in.headers["set-cookie"]
    assert cookie.startswith(f"zoo_token={token}") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    (page,) = _requests(app, [("GET", "/search", {"headers": {"accept": "text/html", "cookie": f"zoo_token={token}"}})])
    assert page.status_code == 200 and 'id="search-box"' in page.text


def _publish_small(zoo: Zoo, example: Path, token: str, **summary: Any) -> Any:
    """A published version of the example's description (small: no weights), tested by decree."""
    who = zoo.authorise(token, "admin")
    info = zoo.publish_upload(staged_example(zoo, example, small=True, **summary), token=who)
    (job,) = zoo.jobs_of(info.name, info.version, "test")
    zoo.finish_job(job.id, ok=True, result={"formats": {"onnx": {"status": "passed"}}})
    zoo.submit_for_review(info.name, info.version, token=who)
    return zoo.publish(info.name, info.version, token=who)


def test_the_search_page_filters_by_facet_and_pages(zoo: Zoo, example_model: Path):
    admin = zoo.create_token("admin", "curator")
    for i in range(3):
        _publish_small(zoo, example_model, admin, title=f"Nuclei model {i}")
    _publish_small(
        zoo, example_model, admin, title="Membranes", task="semantic-segmentation", modality="electron-microscopy"
    )
    html = {"headers": {"accept": "text/html"}}
    first, second, filtered = _requests(
        create_app(zoo),
        [
            ("GET", "/search", {"params": {"per_page": 2, "sort": "date"}, **html}),
            ("GET", "/search", {"params": {"per_page": 2, "page": 2, "sort": "date"}, **html}),
            ("GET", "/search", {"params": {"modality": "electron-microscopy"}, **html}),
        ],
    )
    assert first.text.count('class="card"') == 2 and 'id="page-next"' in first.text and "page 1 of 2" in first.text
    assert second.text.count('class="card"') == 2 and 'id="page-prev"' in second.text
    assert 'id="page-next"' not in second.text
    assert filtered.text.count('class="card"') == 1 and "Membranes" in filtered.text
    assert 'class="active"' in filtered.text  # the filter shows as set, with a link that removes it


def test_conversion_is_offered_and_queued_for_a_tested_version_without_the_format(zoo: Zoo, example_model: Path):
    uploader, other = zoo.create_token("uploader", "owner"), zoo.create_token("uploader", "someone else")
    staged = staged_example(zoo, example_model, weight_formats=["torchscript"])
    info = zoo.publish_upload(staged, token=zoo.authorise(uploader, "uploader"))
    path = f"/api/models/{info.name}/{info.version}"
    app = create_app(zoo)

    def convert(token: str, formats: list[str]) -> tuple[str, str, dict[str, Any]]:
        return (
            "POST",
            f"{path}/convert",
            {"json": {"formats": formats}, "headers": {"Authorization": f"Bearer {token}"}},
        )

    (untested,) = _requests(app, [convert(uploader, ["onnx"])])
    assert untested.status_code == 409 and "test status 'pending'" in untested.json()["detail"]
    test_job = zoo.claim_job("w", ("test",))
    assert test_job is not None
    zoo.finish_job(test_job.id, ok=True, result={"status": "passed", "formats": {"torchscript": {"status": "passed"}}})
    page, present, unknown, not_owner, queued = _requests(
        app,
        [
            ("GET", f"/models/{info.name}/{info.version}", {"headers": {"accept": "text/html"}}),
            convert(uploader, ["torchscript"]),
            convert(uploader, ["keras_hdf5"]),
            convert(other, ["onnx"]),
            convert(uploader, ["onnx"]),
        ],
    )
    assert 'id="convert-form"' in page.text and "Add onnx weights" in page.text
    assert present.status_code == 409 and "has torchscript weights already" in present.json()["detail"]
    assert unknown.status_code == 400 and "choose from torchscript, onnx" in unknown.json()["detail"]
    assert not_owner.status_code == 403
    assert queued.status_code == 202
    job = zoo.job(queued.json()["job"])
    assert (job.kind, job.status, job.payload["formats"]) == ("convert", "queued", ["onnx"])
    assert job.payload["token_id"] == zoo.authorise(uploader, "uploader").id
