"""The Train widget: N2V on W2S layers and folders for a few steps (tiny patches), the live loss
curve, stop early, cancel, the verdict, "Use this model" and publishing to a real zoo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from _napari import NAPARI_WARNINGS, save_screenshot

from microzoo.napari._state import state_of
from microzoo.napari.settings import load_settings
from microzoo.napari.train_result import VERDICT_COLOURS
from microzoo.napari.train_widget import TrainWidget
from microzoo.package.validate import validate_package
from microzoo.train.loop import USER_STOP

pytestmark = NAPARI_WARNINGS


@pytest.fixture(scope="module")
def w2s_field(shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    """A 96x128 crop of a W2S field: noisy and clean."""
    folder = shared_data / "w2s" / "train"
    return tuple(tifffile.imread(folder / kind / "001.tif")[160:256, 160:288] for kind in ("noisy", "clean"))


def _tiny(widget: TrainWidget, *, epochs: int = 2) -> None:
    """A few steps of small batches of 32-pixel patches."""
    widget.epochs.setValue(epochs)
    widget.steps.setValue(3)
    widget.batch.setValue(2)
    widget.patch.setText("32 x 32")
    widget.validation.setValue(0.25)


def _wait(qtbot, job, timeout: int = 120_000) -> None:
    """Wait until the job's last signal was handled (the widget shows its result)."""
    assert job is not None
    qtbot.waitUntil(lambda: not job.running, timeout=timeout)


def test_n2v_on_a_w2s_layer_trains_draws_its_curve_exports_and_is_chosen(
    make_napari_viewer, qtbot, w2s_field, screenshots: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    viewer = make_napari_viewer()
    noisy, clean = w2s_field
    viewer.add_image(noisy, name="W2S noisy")
    viewer.add_image(clean, name="W2S clean")
    widget = TrainWidget(viewer)
    assert widget.task.currentData() == "n2v" and widget.epochs.value() == 100  # the library's defaults
    assert widget.patch.text() == "128 x 128" and widget.rate.value() == pytest.approx(4e-4)
    assert widget.partner_label.text() == "Clean layer (optional, for QC)"
    widget.partner_layer.setCurrentText("W2S clean")
    _tiny(widget)
    job = widget.train()
    _wait(qtbot, job)
    assert job.error is None
    result = widget.result
    assert result.stopped == "epochs" and validate_package(result.package).passed
    cache = load_settings().cache_dir  # the layers' files and the run, in new folders of the cache folder
    assert result.out_dir.parent == cache / "models" and len(list((cache / "training-data").glob("*/images/*"))) == 1
    # the curve got one point per epoch, from the library's rows
    assert widget.curve_points == result.history and len(result.history) == 2
    assert list(widget.train_line.get_xdata()) == [1, 2]
    assert np.allclose(widget.val_line.get_ydata(), [row["val_loss"] for row in result.history])
    # the verdict the CLI prints, in its colour
    assert widget.result_panel.verdict.text() == result.verdict.line
    assert VERDICT_COLOURS[result.verdict.kind] in widget.result_panel.verdict.styleSheet()
    opened: list[str] = []
    monkeypatch.setattr("microzoo.napari.train_result.QDesktopServices.openUrl", lambda url: opened.append(url))
    widget.result_panel.open_report()
    assert [url.toLocalFile() for url in opened] == [str(result.report)]
    use = widget.result_panel.use_model()
    _wait(qtbot, use)
    chosen = state_of(viewer).model
    assert chosen is not None and chosen.source == str(result.package.parent)
    assert chosen.model.package.name == "n2v-W2S noisy"
    widget.resize(460, widget.sizeHint().height())
    save_screenshot(widget, screenshots / "train.png")


def test_stop_early_from_folders_still_exports_and_publishes_to_the_zoo(
    make_napari_viewer, qtbot, w2s_field, tmp_path: Path, zoo_server, screenshots: Path
) -> None:
    from microzoo.napari.settings import Settings, save_settings

    (tmp_path / "noisy").mkdir()
    for i, crop in enumerate((w2s_field[0][:, :64], w2s_field[0][:, 64:])):
        tifffile.imwrite(tmp_path / "noisy" / f"{i}.tif", crop)
    widget = TrainWidget(make_napari_viewer())
    widget.from_folders.setChecked(True)
    assert widget.folder_panel.isVisibleTo(widget) and not widget.layer_panel.isVisibleTo(widget)
    widget.image_folder.setText(str(tmp_path / "noisy"))
    widget.output.setText(str(tmp_path / "run"))
    widget.name.setText("n2v-stopped")
    _tiny(widget, epochs=50)
    widget.epoch_finished.connect(lambda row: widget.stop_early())  # stop once the first point is drawn
    job = widget.train()
    _wait(qtbot, job)
    result = widget.result
    assert job.error is None and result.stopped == USER_STOP and len(result.history) < 50
    assert validate_package(result.package).passed and result.out_dir == tmp_path / "run"
    assert "No comparison" in widget.result_panel.verdict.text() and not widget.result_panel.report_button.isEnabled()
    assert widget.curve_points == result.history
    # publishing: a token is needed, then the zoo set in the settings receives it
    save_settings(Settings(zoo_url=zoo_server.url))
    assert widget.result_panel.publish() is None and "token" in widget.status.text()
    widget.result_panel.token.setText(zoo_server.tokens["uploader"])
    publish = widget.result_panel.publish()
    _wait(qtbot, publish, timeout=60_000)
    assert publish.error is None, publish.error
    answer = publish.result
    assert answer["name"] and f"as {answer['name']}/{answer['version']}" in widget.status.text()
    with zoo_server.client("admin") as http:
        assert http.get(f"/api/models/{answer['name']}/{answer['version']}").status_code == 200
    save_screenshot(widget, screenshots / "train-stopped-published.png")


def test_cancel_abandons_the_run_and_an_incomplete_form_says_what_is_missing(
    make_napari_viewer, qtbot, w2s_field, tmp_path: Path
) -> None:
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("microzoo", "Train")  # through the manifest
    assert isinstance(widget, TrainWidget)
    assert widget.train() is None and "image layer" in widget.status.text()
    viewer.add_image(w2s_field[0], name="noisy")
    viewer.add_labels((w2s_field[1] > 100).astype(np.uint8), name="mask")
    widget.task.setCurrentIndex(widget.task.findData("semantic"))
    assert widget.partner_label.text() == "Label layer" and widget.patch.text() == "128 x 128"
    assert [widget.partner_layer.itemText(i) for i in range(widget.partner_layer.count())] == [
        "(choose a layer)", "mask"]  # fmt: skip
    widget.task.setCurrentIndex(widget.task.findData("care"))
    assert widget.partner_label.text() == "Clean layer"
    assert widget.train() is None and "clean layer" in widget.status.text()
    widget.task.setCurrentIndex(widget.task.findData("n2v"))
    _tiny(widget, epochs=50)
    widget.output.setText(str(tmp_path / "run"))
    job = widget.train()
    job.progressed.connect(lambda *_: widget.cancel())
    _wait(qtbot, job)
    assert widget.result is None and "cancelled" in widget.status.text()
    assert not (tmp_path / "run" / "package").exists() and widget.train_button.isEnabled()


def test_layers_become_training_images_named_alike(tmp_path: Path) -> None:
    from microzoo.errors import DataError
    from microzoo.io.read import read_image
    from microzoo.napari.layer_files import LayerPair, layer_images, write_pairs

    stack = np.arange(2 * 3 * 16 * 16, dtype=np.uint16).reshape(2, 3, 16, 16)
    assert [axes for _, axes in layer_images(stack, rgb=False, spatial_dims=2, name="s")] == ["yx"] * 6
    assert [a.shape for a, _ in layer_images(stack, rgb=False, spatial_dims=3, name="s")] == [(3, 16, 16)] * 2
    with pytest.raises(DataError, match="3-D"):
        layer_images(stack[0, 0], rgb=False, spatial_dims=3, name="s")
    labels = (stack[0] % 3).astype(np.uint8)
    folders = write_pairs([LayerPair("s", stack[0], False, labels)], tmp_path, truth_role="labels")
    assert sorted(p.name for p in folders["labels"].iterdir()) == ["s-000.tif", "s-001.tif", "s-002.tif"]
    assert sorted(p.name for p in folders["images"].iterdir()) == ["s-000.tif", "s-001.tif", "s-002.tif"]
    assert np.array_equal(read_image(folders["labels"] / "s-002.tif").data, labels[2])
    with pytest.raises(DataError, match="pick the layer drawn on this image"):
        write_pairs([LayerPair("s", stack[0], False, labels[:2])], tmp_path / "b", truth_role="labels")


def test_closing_the_viewer_mid_run_cancels_the_training(make_napari_viewer, qtbot, w2s_field, tmp_path: Path) -> None:
    viewer = make_napari_viewer()
    viewer.add_image(w2s_field[0], name="noisy")
    _, widget = viewer.window.add_plugin_dock_widget("microzoo", "Train")
    _tiny(widget, epochs=500)
    widget.output.setText(str(tmp_path / "run"))
    job = widget.train()
    qtbot.waitUntil(lambda: "epoch 1/500" in widget.status.text(), timeout=60_000)  # training
    viewer.close()  # the dock widget goes with it; the run must not outlive it, nor call it
    _wait(qtbot, job, timeout=30_000)
    assert job.error is not None and job.error.startswith("cancelled")
    assert not (tmp_path / "run" / "package").exists()
