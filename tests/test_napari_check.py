"""The Check widget: the example model against the classical baseline on DSB2018 nuclei opened as layers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
from _labels import fluorescent_nuclei
from _napari import NAPARI_WARNINGS, save_screenshot

from microzoo.errors import DataError
from microzoo.napari._state import state_of
from microzoo.napari.layer_files import LayerPair, write_pairs
from microzoo.qc.report import format_estimate

pytestmark = NAPARI_WARNINGS


@pytest.fixture(scope="module")
def nuclei(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    return fluorescent_nuclei(tmp_path_factory.mktemp("nuclei"), shared_data, n=3)


def test_check_ranks_the_example_model_against_the_baseline_from_layers(
    make_napari_viewer, qtbot, nuclei: Path, example_model: Path, screenshots: Path, monkeypatch
) -> None:
    from qtpy.QtCore import Qt

    from microzoo.napari.check_widget import CheckWidget

    viewer = make_napari_viewer()
    images = sorted((nuclei / "images").glob("*.png"))
    for path in images:  # as a biologist opens them: the PNG through napari's reader, the labels beside it
        viewer.open(str(path))
        viewer.add_labels(tifffile.imread(nuclei / "truth" / f"{path.stem}.tif"), name=f"{path.stem} truth")
    widget = CheckWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Check and select")
    assert widget.layers_table.rowCount() == len(images)  # image layers only, each paired with its truth by name
    assert [widget._row_truth(r) for r in range(len(images))] == [f"{p.stem} truth" for p in images]
    widget.add_model(str(example_model))

    job = widget.run()
    assert job is not None, widget.status.text()
    qtbot.waitUntil(lambda: widget.run_button.isEnabled(), timeout=120_000)  # re-enabled when the Job's end arrived
    assert job.error is None and widget.selection is not None, widget.status.text()

    # both rows, with the figure and interval exactly as selection.json holds them
    document = json.loads(Path(widget.selection.paths["json"]).read_text())
    assert document["images"] == [p.stem for p in images] and document["ground_truth"] is True
    rows = [[widget.table.item(r, c).text() for c in range(4)] for r in range(widget.table.rowCount())]
    assert {row[1] for row in rows} == {"UNet 2D Nuclei Broad", "Otsu+watershed"}
    assert widget.table.horizontalHeaderItem(3).text() == "f1@0.5 [95% interval]"
    expected = [
        [str(e["rank"]), e["method"], e["kind"], format_estimate(e["value"], e["low"], e["high"], document["metric"])]
        for e in document["ranking"]
    ]
    assert rows == expected and all("[" in row[3] for row in rows)
    assert widget.verdict_label.text() == document["verdict"] and document["verdict"]

    opened = []  # the button opens selection.html in the browser: record the address instead
    monkeypatch.setattr("microzoo.napari.check_widget.QDesktopServices.openUrl", opened.append)
    qtbot.mouseClick(widget.report_button, Qt.MouseButton.LeftButton)
    assert [Path(url.toLocalFile()) for url in opened] == [Path(widget.selection.paths["report"])]
    assert Path(opened[0].toLocalFile()).is_file() and opened[0].toLocalFile().endswith("selection.html")

    save_screenshot(widget.content, screenshots / "check.png")  # the whole form, as scrolled through

    assert widget.best_button.text() == "Use the best model: UNet 2D Nuclei Broad"
    qtbot.mouseClick(widget.best_button, Qt.MouseButton.LeftButton)
    chosen = widget.job
    assert chosen is not None and chosen is not job
    qtbot.waitUntil(lambda: widget.status.text().startswith(("Chosen", "Could not")), timeout=60_000)
    model = state_of(viewer).model
    assert model is not None and model.source == str(example_model), widget.status.text()
    assert model.model.package.name == "UNet 2D Nuclei Broad"


def test_check_says_what_is_missing(make_napari_viewer, qtbot, example_model: Path) -> None:
    from microzoo.napari.check_widget import CheckWidget

    viewer = make_napari_viewer()
    widget = CheckWidget(viewer)
    assert widget.run() is None and "no models" in widget.status.text()
    widget.add_model(str(example_model))
    assert widget.run() is None and "no image layer" in widget.status.text()
    assert not widget.use_zoo.isEnabled() and "No zoo is set" in widget.zoo_label.text()

    settings = Path(os.environ["MICROZOO_NAPARI_SETTINGS"])  # a broken settings file is named, not a traceback
    settings.write_text("{not json", encoding="utf-8")
    assert CheckWidget(viewer).zoo_label.text().startswith(f"cannot read the napari settings {settings}")
    assert widget.run() is None and "fix or delete the file" in widget.status.text()


def test_cancel_stops_the_selection(make_napari_viewer, qtbot, nuclei: Path, example_model: Path) -> None:
    from microzoo.napari.check_widget import CheckWidget

    viewer = make_napari_viewer()
    widget = CheckWidget(viewer)
    widget.source_tabs.setCurrentIndex(1)  # from folders
    widget.images_dir.setText(str(nuclei / "images"))
    widget.truth_dir.setText(str(nuclei / "truth"))
    widget.add_model(str(example_model))
    job = widget.run()
    assert job is not None, widget.status.text()
    job.progressed.connect(lambda *_: widget.cancel())
    qtbot.waitUntil(lambda: widget.run_button.isEnabled(), timeout=60_000)
    assert job.error is not None and widget.status.text() == f"Cancelled: {job.error}"
    assert widget.selection is None and widget.table.rowCount() == 0 and not widget.best_button.isEnabled()


def test_layers_become_files_paired_by_name(tmp_path: Path) -> None:
    """A stack layer is one file per plane; truth goes beside each image under the same name, or not at all."""
    stack = np.random.default_rng(0).random((2, 16, 16)).astype(np.float32)
    labels = np.zeros((2, 16, 16), np.int64)
    labels[:, 4:8, 4:8] = 1
    rgb = np.zeros((16, 16, 3), np.uint8)
    written = write_pairs(
        [LayerPair("cells: day 1", stack, False, labels), LayerPair("cells: day 1", rgb, True, labels[0])],
        tmp_path / "run",
    )
    images, truth = written["images"], written.get("truth")
    names = ["cells_day_1-000.tif", "cells_day_1-001.tif", "cells_day_1-2.tif"]
    assert sorted(p.name for p in images.iterdir()) == names
    assert truth is not None and sorted(p.name for p in truth.iterdir()) == names
    np.testing.assert_array_equal(tifffile.imread(images / names[1]), stack[1])
    assert tifffile.imread(truth / names[0]).dtype == np.uint32
    with pytest.raises(DataError, match="for every image or for none"):
        write_pairs([LayerPair("a", rgb, True, labels[0]), LayerPair("b", rgb, True)], tmp_path / "two")
    with pytest.raises(DataError, match="pick the layer drawn on this image"):
        write_pairs([LayerPair("a", stack[0], False, labels[0][:8])], tmp_path / "three")
    with pytest.raises(DataError, match="give a 2-D colour image"):
        write_pairs([LayerPair("a", np.zeros((2, 16, 16, 3)), True)], tmp_path / "four")


def test_select_from_the_zoo_of_the_settings(
    make_napari_viewer, qtbot, zoo_server, published_example: tuple[str, str], nuclei: Path, monkeypatch
) -> None:
    """The zoo of the settings: its model for the task joins the candidates; a zoo:NAME/VERSION chosen in
    the Model widget is fetched from that zoo (once: it is the same candidate)."""
    from microzoo.napari._state import ChosenModel
    from microzoo.napari.check_widget import CheckWidget
    from microzoo.napari.settings import Settings, save_settings

    monkeypatch.setenv("MICROZOO_CACHE", os.environ["MICROZOO_NAPARI_CACHE"])  # zoo downloads in the test's folder
    monkeypatch.delenv("MICROZOO_ZOO", raising=False)
    save_settings(Settings(zoo_url=zoo_server.url))
    name, version = published_example
    viewer = make_napari_viewer()
    state_of(viewer).choose(ChosenModel(f"zoo:{name}/{version}", None))
    widget = CheckWidget(viewer)
    assert widget.zoo_label.text() == f"Zoo: {zoo_server.url}" and widget.use_zoo.isEnabled()
    assert widget.models.count() == 1 and "chosen in the Model widget" in widget.models.item(0).text()
    widget.use_zoo.setChecked(True)
    widget.search_words.setText("nuclei")
    widget.source_tabs.setCurrentIndex(1)
    widget.images_dir.setText(str(nuclei / "images"))
    widget.truth_dir.setText(str(nuclei / "truth"))
    job = widget.run()
    assert job is not None, widget.status.text()
    qtbot.waitUntil(lambda: widget.run_button.isEnabled(), timeout=120_000)
    assert widget.selection is not None, widget.status.text()
    assert [c.origin for c in widget.selection.candidates] == ["named"]  # the zoo's copy of it is the same file
    assert {widget.table.item(r, 1).text() for r in range(2)} == {"UNet 2D Nuclei Broad", "Otsu+watershed"}


def test_without_truth_the_ranking_says_it_is_weaker(
    make_napari_viewer, qtbot, nuclei: Path, example_model: Path, screenshots: Path
) -> None:
    from microzoo.napari.check_widget import CheckWidget

    viewer = make_napari_viewer()
    for path in sorted((nuclei / "images").glob("*.png"))[:2]:
        viewer.open(str(path))
    widget = CheckWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Check and select")
    assert all(widget._row_truth(r) is None for r in range(widget.layers_table.rowCount()))
    widget.add_model(str(example_model))
    job = widget.run()
    assert job is not None, widget.status.text()
    qtbot.waitUntil(lambda: widget.run_button.isEnabled(), timeout=120_000)
    assert widget.selection is not None, widget.status.text()
    document = json.loads(Path(widget.selection.paths["json"]).read_text())
    assert document["ground_truth"] is False and "weaker" in widget.ranking.title_label.text()
    assert widget.table.horizontalHeaderItem(4).text() == "Trusted images"
    trusted = {widget.table.item(r, 1).text(): widget.table.item(r, 4).text() for r in range(2)}
    entries = {e["method"]: e for e in document["ranking"]}
    assert trusted["Otsu+watershed"] == "–" and trusted["UNet 2D Nuclei Broad"].endswith("%")
    assert trusted["UNet 2D Nuclei Broad"] == f"{entries['UNet 2D Nuclei Broad']['trusted']:.0%}"
    save_screenshot(widget.content, screenshots / "check-without-truth.png")
