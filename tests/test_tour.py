"""`microzoo tour --quick` (what `make demo` runs, at tiny sizes): six steps on real data, one page.

One quick tour runs for the module; each test reads what it did. The steps are the library's
own verbs, so what is asserted here is what the tour adds: that each step ran and said so on
the page with its command and reports, and the findings a newcomer is meant to see (the
histology images flagged, the package run by stock bioimageio.core, streaming's lower peak).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from markupsafe import escape

from microzoo.tour import TourResult, run_tour

pytestmark = pytest.mark.slow
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def tour(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> TourResult:
    out = tmp_path_factory.mktemp("tour")
    seen: list[str] = []
    result = run_tour(out, data=shared_data, quick=True, progress=lambda d, t, what: seen.append(what))
    assert {what.split(" ", 1)[0] for what in seen} == {f"{n}/6" for n in range(1, 7)}  # every step reports
    return result


def _step(tour: TourResult, number: int):  # noqa: ANN202
    return next(s for s in tour.steps if s.number == number)


def test_six_steps_on_one_page_with_their_commands_and_reports(tour: TourResult) -> None:
    assert not tour.failed, tour.failed
    assert [s.number for s in tour.steps] == [1, 2, 3, 4, 5, 6]
    page = tour.page.read_text(encoding="utf-8")
    assert "This is the quick tour" in page
    for step in tour.steps:
        assert f'id="step-{step.number}"' in page and escape(step.title) in page
        assert step.what and step.why and escape(step.what) in page
        assert step.commands and all(c.startswith(("microzoo ", "BIOIMAGEIO_", "MICROZOO_ZOO=")) for c in step.commands)
        for line in step.commands:
            assert escape(line) in page, line
        for label, path in step.reports:
            assert path.exists(), (step.number, label, path)
            href = os.path.relpath(path, tour.page.parent)
            assert f'href="{href}"' in page, href
    assert (tour.page.parent / "tour.json").exists()


def test_the_example_model_is_test_run_in_the_local_zoo(tour: TourResult) -> None:
    step = _step(tour, 1)
    assert step.facts["test_status"] == "passed" and step.facts["status"] == "published"
    consumers = step.facts["compat"]["consumers"]
    assert set(consumers) >= {"bioimageio.core", "deepImageJ", "ilastik", "microzoo"}
    page = tour.page.read_text(encoding="utf-8")
    assert 'class="compat"' in page and "Compatibility matrix" in page and "deepImageJ" in page


def test_the_trust_note_calls_the_histology_image_differs(tour: TourResult) -> None:
    """The example model (fluorescence nuclei) marks stained tissue as nuclei: the histology
    image is called ``differs``, the fluorescence ones ``similar``; its panel is on the page."""
    step = _step(tour, 2)
    verdicts = step.facts["verdicts"]
    assert step.facts["histology"] and step.facts["fluorescence"]
    assert {verdicts[name] for name in step.facts["histology"]} == {"differs"}
    assert {verdicts[name] for name in step.facts["fluorescence"]} == {"similar"}
    assert any("differ" in line for line in step.lines)
    assert step.pictures and "histology" in step.pictures[0].caption
    assert step.pictures[0].uri.startswith("data:image/png;base64,")


def test_noise2void_is_compared_with_bm3d_and_a_gaussian(tour: TourResult) -> None:
    step = _step(tour, 3)
    methods = set(step.facts["figures"])
    assert any(m.startswith("BM3D") for m in methods) and any(m.startswith("Gaussian") for m in methods)
    assert len(methods) == 3 and set(step.facts["hallucination"]) == methods
    assert (Path(step.facts["package"]) / "bioimageio.yaml").exists()
    assert step.facts["spread_mean"] > 0  # the uncertainty map is not blank
    assert len(step.pictures) == 2


def test_the_learning_curve_has_two_points(tour: TourResult) -> None:
    step = _step(tour, 4)
    assert [n for n, _ in step.facts["points"]] == [2, 5]
    assert step.commands[0].startswith("microzoo learning-curve instances")


def test_stock_bioimageio_core_runs_the_published_model_by_its_zoo_id(tour: TourResult) -> None:
    from microzoo.tour.zoo_steps import bioimageio_core_missing

    step = _step(tour, 5)
    assert step.facts["test_status"] == "passed"
    assert f"{step.facts['name']}/{step.facts['version']}" in step.facts["found"]
    if bioimageio_core_missing() is None:
        assert step.facts["core_passed"] is True, step.lines
    else:
        assert step.facts["core_passed"] is None and "Not run" in step.lines[0]
    assert any("napari" in c for c in step.commands) and any("serve" in c for c in step.commands)


def test_streaming_gives_the_in_memory_output_and_both_peaks_are_measured(tour: TourResult) -> None:
    """At the quick tour's 2048x2048 the in-memory arrays are small (16 MiB a plane), so the two
    peaks are close (measured: streaming 710 MiB, in memory 605 MiB: streaming runs two forwards
    at once); the full tour's 8192x8192 is where streaming's peak is the lower (docs/tour.md)."""
    facts = _step(tour, 6).facts
    assert facts["side"] == 2048
    assert facts["inner_per_million"] <= 100 and facts["per_million"] <= 100, facts  # the format's tolerance
    for peak in (facts["stream_peak"], facts["memory_peak"]):
        assert 200 * 2**20 < peak < 4 * 2**30, facts  # Python + PyTorch + tiles: measured, not a parent's size


def test_the_page_renders_in_chromium(tour: TourResult, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium (make setup) to run the browser tests")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(tour.page.as_uri())
        assert page.locator("section.step").count() == 6
        assert page.locator("img").count() >= 4  # panels of steps 2 and 3, the learning curve
        heights = page.evaluate("[...document.images].map(i => i.naturalHeight)")
        assert all(h > 0 for h in heights)  # every embedded figure decodes
        shot = tmp_path / "tour.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert shot.stat().st_size > 50_000
    if os.environ.get("MICROZOO_SCREENSHOTS"):  # kept to look at
        folder = Path(os.environ["MICROZOO_SCREENSHOTS"])
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, folder / "tour-quick.png")
