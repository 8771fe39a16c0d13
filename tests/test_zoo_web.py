"""The zoo's web pages in a real headless browser (Debian's chromium driven by Playwright).

Against one real ``microzoo serve`` with its worker (``tests/_zoo.py``): search from the home
page, open a model, download its package (the bytes are the stored zip), upload through the form
with a token and read the validation and the test log, see a broken package refused in words,
review (request changes with a comment, then publish) and find the published model in search.

Each page is photographed at a laptop's width (1280 px) and a phone's (390 px) into pytest's
``tmp_path``; with ``MICROZOO_SCREENSHOTS=DIR`` set a copy goes to DIR too (the pictures in
docs/img/zoo/ are made that way). No browser is downloaded: the tests skip, saying why, where
/usr/bin/chromium is absent.
"""

# ruff: noqa: F811  (the fixtures imported from _zoo are the test functions' parameters)
from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from _zoo import ZooServer, package_zip, published_example, zoo_server  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]  # fmt: skip
WIDTHS = {"laptop": (1280, 800), "phone": (390, 844)}
EXAMPLE = "bmz/unet2d_nuclei_broad"
WORD = "zebrafish"  # only the model uploaded through the form says it


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium (make setup) to run the browser tests")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture
def page(browser, zoo_server: ZooServer):
    context = browser.new_context(base_url=zoo_server.url, viewport={"width": 1280, "height": 800},
                                  accept_downloads=True)  # fmt: skip
    context.set_default_timeout(30_000)
    yield context.new_page()
    context.close()


def screenshot(page, folder: Path, name: str) -> list[Path]:
    """The page at both widths (full length), into ``folder`` and MICROZOO_SCREENSHOTS if set."""
    written = []
    for label, (width, height) in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": height})
        path = folder / f"{name}-{label}.png"
        page.screenshot(path=str(path), full_page=True)
        # at the phone's width nothing may stick out sideways (a page that scrolls horizontally)
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{name} at {width} px is {overflow} px wider than the screen"
        if os.environ.get("MICROZOO_SCREENSHOTS"):
            copy = Path(os.environ["MICROZOO_SCREENSHOTS"])
            copy.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, copy / path.name)
        written.append(path)
    page.set_viewport_size({"width": 1280, "height": 800})
    return written


def _upload_through_form(page, token: str, data: bytes, name: str = "") -> None:
    page.goto("/upload")
    page.fill("#upload-token", token)
    page.set_input_files("#upload-package", {"name": "package.zip", "mimeType": "application/zip", "buffer": data})
    if name:
        page.fill("#upload-name", name)
    page.click("#upload-button")


def _broken_zip(folder: Path) -> bytes:
    """The example package with one byte of its test input changed: its sha256 no longer matches."""
    buffer = io.BytesIO(package_zip(folder))
    out = io.BytesIO()
    with zipfile.ZipFile(buffer) as source, zipfile.ZipFile(out, "w") as target:
        for entry in source.infolist():
            data = source.read(entry)
            if entry.filename == "test_input.npy":
                data = data[:-1] + bytes([data[-1] ^ 0xFF])
            target.writestr(entry, data)
    return out.getvalue()


@pytest.fixture(scope="module")
def web_upload(browser, zoo_server: ZooServer, shared_data: Path, shots: Path) -> tuple[str, str]:
    """The example package, retitled, uploaded through the form; the page followed until its test ended."""
    context = browser.new_context(base_url=zoo_server.url, viewport={"width": 1280, "height": 800})
    page = context.new_page()
    data = package_zip(shared_data / EXAMPLE, changes={"UNet 2D Nuclei Broad": "Zebrafish nuclei U-Net"})
    _upload_through_form(page, zoo_server.tokens["uploader"], data)
    page.wait_for_selector("#upload-ok", timeout=60_000)
    match = re.fullmatch(r"([a-z0-9-]+)/(\w+)", page.inner_text("#model-id"))
    assert match, page.inner_text("#model-id")
    name, version = match.groups()
    assert "Uploaded as" in page.inner_text("#upload-ok")
    assert page.inner_text("#version-status") == "draft"
    # the page refreshes itself until the worker has tested the model
    page.wait_for_selector("#tests [data-format='onnx']", timeout=240_000)
    screenshot(page, shots, "upload-done")
    context.close()
    return name, version


def test_search_from_home_open_the_model_and_download_its_package(
    page, zoo_server: ZooServer, published_example, shots: Path
):
    name, version = published_example
    page.goto("/")
    assert page.title().startswith("Home")
    assert page.locator(f"#recent [data-model='{name}']").count() == 1
    screenshot(page, shots, "home")

    page.fill("#search-box", "nuclei broad")
    page.click("#search-button")
    page.wait_for_url(re.compile(r"/search\?q=nuclei"))
    assert re.match(r"\d+ models? for “nuclei broad”", page.inner_text("#result-count"))
    card = page.locator(f"#results [data-model='{name}']")
    assert card.count() == 1 and "UNet 2D Nuclei Broad" in card.inner_text()
    assert page.locator("#facets [data-facet='weight_format']").inner_text().count("onnx") == 1
    screenshot(page, shots, "results")

    card.locator("a.model-link").click()
    page.wait_for_url(f"**/models/{name}/{version}")
    assert page.inner_text("#model-title") == "UNet 2D Nuclei Broad"
    assert page.inner_text("#version-status") == "published"
    assert page.locator("#tests [data-format='torchscript'] [data-status='passed']").count() == 1
    assert page.locator("#compatibility [data-consumer='deepImageJ']").inner_text().split()[1] == "yes"
    assert "MIT" in page.inner_text("#model-license")
    assert f"bioimageio test {name}/{version}" in page.inner_text("#use-bioimageio")
    assert page.locator("#covers img").evaluate("img => img.naturalWidth") > 0  # the cover is served
    screenshot(page, shots, "model")

    with page.expect_download() as download_info:
        page.click("#download-link")
    downloaded = Path(download_info.value.path()).read_bytes()
    stored = (zoo_server.root / "files" / name / f"{version}.zip").read_bytes()
    assert hashlib.sha256(downloaded).hexdigest() == hashlib.sha256(stored).hexdigest()
    assert "rdf.yaml" in zipfile.ZipFile(io.BytesIO(downloaded)).namelist()


def test_upload_through_the_form_shows_validation_and_the_test_log(page, web_upload, shots: Path):
    name, version = web_upload
    page.goto(f"/models/{name}/{version}")
    assert page.inner_text("#model-title") == "Zebrafish nuclei U-Net"
    assert "passed" in page.inner_text("#validation")
    for weight_format in ("torchscript", "onnx"):
        assert page.locator(f"#tests [data-format='{weight_format}'] [data-status='passed']").count() == 1
    page.click("#test-log summary")
    assert page.locator("#test-log pre").is_visible() and "onnx" in page.inner_text("#test-log pre")
    screenshot(page, shots, "model-draft")


def test_a_broken_package_is_refused_in_words(page, zoo_server: ZooServer, shared_data: Path, shots: Path):
    page.goto("/upload")
    screenshot(page, shots, "upload")
    _upload_through_form(page, zoo_server.tokens["uploader"], _broken_zip(shared_data / EXAMPLE))
    error = page.locator("#upload-error")
    error.wait_for()
    assert "Refused" in error.inner_text() and "test_input.npy" in error.inner_text()
    assert "sha256" in error.inner_text()
    assert page.locator("#upload-form").is_visible()  # the form is there to try again
    screenshot(page, shots, "upload-refused")

    _upload_through_form(page, "not-a-token", package_zip(shared_data / EXAMPLE))
    assert "token" in page.inner_text("#upload-error").lower()


def test_review_request_changes_then_publish_and_find_it(page, zoo_server: ZooServer, web_upload, shots: Path):
    name, version = web_upload
    page.goto(f"/search?q={WORD}")
    assert page.locator(f"[data-model='{name}']").count() == 0  # a draft is not found

    page.goto(f"/models/{name}/{version}")
    page.fill("#review-token", zoo_server.tokens["uploader"])
    page.click("#action-submit")
    page.wait_for_url(f"**/models/{name}/{version}#review")
    assert page.inner_text("#version-status") == "in review"

    page.goto("/review")
    row = page.locator(f"#review-queue tr[data-model='{name}']")
    assert row.count() == 1 and "Zebrafish nuclei U-Net" in row.inner_text()
    screenshot(page, shots, "review")

    row.locator("a").click()
    page.fill("#review-token", zoo_server.tokens["reviewer"])
    page.fill("#review-text", "Please say which microscope took the training images.")
    page.click("#action-request-changes")
    page.wait_for_url(f"**/models/{name}/{version}#review")
    assert page.inner_text("#version-status") == "changes requested"
    assert "which microscope" in page.inner_text("#comments")
    screenshot(page, shots, "review-changes")

    # the reviewer's token is remembered (a cookie): the token field may stay empty now
    page.fill("#review-text", "Widefield, 40x.")
    page.click("#action-submit")
    page.wait_for_url(f"**/models/{name}/{version}#review")
    page.fill("#review-text", "Thank you.")
    page.click("#action-publish")
    page.wait_for_url(f"**/models/{name}/{version}#review")
    assert page.inner_text("#version-status") == "published"
    assert page.locator("#action-publish").count() == 0
    comments = page.inner_text("#comments")
    assert "Widefield, 40x." in comments and "Thank you." in comments

    page.goto("/")
    page.fill("#search-box", WORD)
    page.click("#search-button")
    page.wait_for_url(re.compile(rf"/search\?q={WORD}"))
    assert page.locator(f"#results [data-model='{name}']").count() == 1
    assert page.inner_text("#result-count").startswith("1 model ")
