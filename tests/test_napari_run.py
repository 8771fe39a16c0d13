"""The Run widget and its layers: the same values as ``microzoo predict``, cancel, the trust note in
colour, and a Dask-backed layer streamed with a peak memory below the layer's size."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from _napari import NAPARI_WARNINGS, save_screenshot
from typer.testing import CliRunner

from microzoo.cli import app
from microzoo.io.read import read_image
from microzoo.runtime.predict import Model
from microzoo.trust.note import predict_array_with_note

pytestmark = NAPARI_WARNINGS

FLUORESCENCE = "003cee89357d9fe13516167fd67b609a164651b21934585648c740d2c3d86dc1.png"  # 256x256
HISTOLOGY = "1e488c42eb1a54a3e8412b1f12cde530f950f238d71078f2ede6a85a02168e1f.png"  # H&E, 256x320


@pytest.fixture(scope="module")
def example(shared_data: Path) -> Path:
    return shared_data / "bmz" / "unet2d_nuclei_broad"


@pytest.fixture(scope="module")
def model(example: Path) -> Model:
    return Model.open(example)


def _dsb(shared_data: Path, name: str) -> np.ndarray:
    return np.asarray(read_image(shared_data / "dsb2018" / "test" / "images" / name).data)


def _widget(make_napari_viewer, model: Model):
    from microzoo.napari._state import ChosenModel, state_of
    from microzoo.napari.run_widget import RunWidget

    viewer = make_napari_viewer()
    widget = RunWidget(viewer)
    state_of(viewer).choose(ChosenModel("example", model))
    return viewer, widget


def _finish(qtbot, job, timeout: int = 60_000) -> None:
    qtbot.waitUntil(lambda: not job.running, timeout=timeout)
    qtbot.wait(50)  # the queued succeeded/ended signals


# --- layers, without a viewer ------------------------------------------------------------


def test_layer_input_guesses_axes_and_keeps_lazy_data_lazy() -> None:
    import dask.array as da
    from napari.layers import Image

    from microzoo.napari.layers import layer_input

    assert layer_input(Image(np.zeros((32, 40))))[1] == "yx"
    assert layer_input(Image(np.zeros((5, 32, 40))))[1] == "zyx"
    assert layer_input(Image(np.zeros((3, 5, 32, 40))))[1] == "tzyx"
    assert layer_input(Image(np.zeros((32, 40, 3), np.uint8), rgb=True))[1] == "yxc"
    lazy = da.zeros((64, 64), chunks=16)
    data, axes = layer_input(Image(lazy))
    assert data is lazy and axes == "yx"
    pyramid = [np.zeros((64, 64)), np.zeros((32, 32))]
    data, _ = layer_input(Image(pyramid, multiscale=True))
    assert data is pyramid[0]


def test_output_layers_kinds_scale_and_translate(model: Model) -> None:
    from napari.layers import Image

    from microzoo.napari.layers import output_layers

    layer = Image(np.zeros((40, 48, 3), np.uint8), rgb=True, name="cells", scale=(0.5, 0.25), translate=(10, 20))
    probability = np.linspace(0, 1, 40 * 48, dtype=np.float32).reshape(40, 48)
    prediction = SimpleNamespace(
        outputs={"probability": probability, "labels": np.arange(40 * 48, dtype=np.int32).reshape(40, 48)},
        axes={"probability": "yx", "labels": "yx"},
        uncertainty=np.full((40, 48), 3.0, np.float32),
        paths={},
    )
    made = output_layers(prediction, model, layer, "yxc")
    assert [(kwargs["name"], kind) for _, kwargs, kind in made] == [
        ("cells probability", "image"), ("cells labels", "labels"), ("cells probability uncertainty", "image"),
    ]  # fmt: skip
    for _, kwargs, _ in made:
        assert kwargs["scale"] == [0.5, 0.25] and kwargs["translate"] == [10.0, 20.0]
    assert made[0][1]["colormap"] == "magma" and made[0][1]["contrast_limits"] == [0.0, 1.0]
    assert made[2][1]["contrast_limits"] == [3.0, 4.0]  # a flat map: a range napari accepts


def test_a_streamed_output_arrives_as_pyramids_with_its_labels(model: Model, tmp_path: Path) -> None:
    """A streamed output (an OME-Zarr with a pyramid and ``labels/instances``) is shown lazily,
    level by level, its instance labels as a labels layer without the channel axis."""
    from napari.layers import Image

    from microzoo.io.ome_zarr import OmeZarrWriter
    from microzoo.io.read import read_image
    from microzoo.napari.layers import output_layers

    path = tmp_path / "probability.ome.zarr"
    writer = OmeZarrWriter.create(path, shape=(3, 64, 64), dtype="float32", axes="cyx", chunks=(1, 16, 16))
    writer.write((slice(None), slice(None), slice(None)), np.full((3, 64, 64), 2.5, np.float32))
    writer.build_pyramid(min_size=16)
    labels = writer.create_labels("instances", dtype=np.uint32)
    labels.write((slice(None), slice(8, 24), slice(8, 24)), np.full((1, 16, 16), 7, np.uint32))
    labels.build_pyramid(method="nearest", min_size=16)
    prediction = SimpleNamespace(
        outputs={"probability": read_image(path).data}, axes={"probability": "cyx"}, paths={"probability": path},
        uncertainty=None,
    )  # fmt: skip
    layer = Image(np.zeros((64, 64), np.float32), name="big", scale=(0.5, 0.5))
    (image, image_kwargs, image_kind), (found, labels_kwargs, labels_kind) = output_layers(
        prediction, model, layer, "yx"
    )
    assert image_kind == "image" and image_kwargs["multiscale"]
    assert [level.shape for level in image] == [(3, 64, 64), (3, 32, 32), (3, 16, 16)]
    assert image_kwargs["scale"] == [1.0, 0.5, 0.5] and image_kwargs["contrast_limits"] == [2.5, 3.5]
    assert labels_kind == "labels" and labels_kwargs["name"] == "big probability labels"
    assert [level.shape for level in found] == [(64, 64), (32, 32), (16, 16)] and labels_kwargs["scale"] == [0.5, 0.5]
    assert int(np.asarray(found[0][8:24, 8:24]).min()) == 7 and int(np.asarray(found[0]).sum()) == 7 * 256


def test_layer_pixel_size_only_in_physical_units() -> None:
    from napari.layers import Image

    from microzoo.napari.layers import layer_pixel_size

    assert layer_pixel_size(Image(np.zeros((8, 8)), scale=(0.5, 0.5)), "yx") == (None, None)  # pixels
    measured = Image(np.zeros((4, 8, 8)), scale=(2.0, 0.3, 0.3), units=("um", "um", "um"))
    assert layer_pixel_size(measured, "zyx") == ({"z": 2.0, "y": 0.3, "x": 0.3}, "micrometer")


# --- the widget --------------------------------------------------------------------------


def test_run_gives_the_values_of_microzoo_predict(make_napari_viewer, qtbot, model, example, shared_data, tmp_path,
                                                  screenshots) -> None:  # fmt: skip
    image = _dsb(shared_data, FLUORESCENCE)
    viewer, widget = _widget(make_napari_viewer, model)
    viewer.add_image(image, name="nuclei", scale=(0.4, 0.4), translate=(5, 7))
    assert widget.axes_edit.text() == "yxc" and widget.format_box.currentText() == model.weight_format
    job = widget.run()
    assert job is not None
    _finish(qtbot, job)
    assert job.error is None, job.error
    output = viewer.layers["nuclei probability"]
    assert tuple(output.scale) == (0.4, 0.4) and tuple(output.translate) == (5, 7)

    source = shared_data / "dsb2018" / "test" / "images" / FLUORESCENCE
    result = CliRunner().invoke(app, ["predict", str(example), str(source), "-o", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    expected = read_image(tmp_path / "cli" / f"{source.stem}.tif").data
    assert output.data.shape == expected.shape
    np.testing.assert_allclose(output.data, expected, atol=1e-5)
    assert widget.verdict_label.text() == "Trust: similar"
    assert "#2e7d32" in widget.verdict_label.styleSheet()  # green
    assert "added nuclei probability" in widget.status_label.text()
    save_screenshot(widget, screenshots / "run_widget_similar.png")


def test_a_stack_is_predicted_plane_by_plane_with_its_scale(make_napari_viewer, qtbot, model, shared_data) -> None:
    viewer, widget = _widget(make_napari_viewer, model)
    plane = _dsb(shared_data, FLUORESCENCE)[:128, :128, 0]
    viewer.add_image(np.stack([plane, plane[::-1]]), name="stack", scale=(2.0, 0.5, 0.5), translate=(4, 0, 0))
    assert widget.axes_edit.text() == "zyx"
    job = widget.run()
    _finish(qtbot, job)
    assert job.error is None, job.error
    output = viewer.layers["stack probability"]
    assert output.data.shape == (2, 128, 128) and tuple(output.scale) == (2.0, 0.5, 0.5)
    assert tuple(output.translate) == (4, 0, 0)
    np.testing.assert_allclose(output.data[1], model.predict(plane[::-1])["probability"], atol=1e-5)


def test_uncertainty_arrives_as_its_own_layer(make_napari_viewer, qtbot, model, shared_data) -> None:
    viewer, widget = _widget(make_napari_viewer, model)
    viewer.add_image(_dsb(shared_data, FLUORESCENCE), name="nuclei", scale=(0.4, 0.4))
    offered = [widget.uncertainty_box.itemText(i) for i in range(widget.uncertainty_box.count())]
    assert offered == ["none", "flips and rotations (tta)"]  # no dropout: the example has no PyTorch state dict
    widget.uncertainty_box.setCurrentText("flips and rotations (tta)")
    job = widget.run()
    _finish(qtbot, job)
    assert job.error is None, job.error
    spread = viewer.layers["nuclei probability uncertainty"]
    assert spread.data.shape == (256, 256) and spread.data.max() > 0 and tuple(spread.scale) == (0.4, 0.4)
    assert spread.colormap.name == "viridis"


def test_the_histology_image_differs_in_red(make_napari_viewer, qtbot, model, shared_data, screenshots) -> None:
    """The widget docked from the plugin's manifest; the H&E image is called ``differs``, in red, with its reasons."""
    from microzoo.napari._state import ChosenModel, state_of

    viewer = make_napari_viewer(show=True)
    _, widget = viewer.window.add_plugin_dock_widget("microzoo", "Run")
    state_of(viewer).choose(ChosenModel("example", model))
    viewer.add_image(_dsb(shared_data, HISTOLOGY), name="H&E section")
    job = widget.run()
    _finish(qtbot, job)
    assert job.error is None, job.error
    assert widget.verdict_label.text() == "Trust: differs"
    assert "#c62828" in widget.verdict_label.styleSheet()  # red
    note = widget.note_label.text()
    assert "differ from the package's test input" in note and "colour" in note
    save_screenshot(widget, screenshots / "run_widget_differs.png")
    viewer.window._qt_window.resize(1400, 900)
    viewer.layers["H&E section probability"].opacity = 0.5
    save_screenshot(viewer.window._qt_window, screenshots / "run_viewer_differs.png")


def test_cancel_stops_between_tiles_and_adds_nothing(make_napari_viewer, qtbot, model, shared_data) -> None:
    viewer, widget = _widget(make_napari_viewer, model)
    tile = _dsb(shared_data, FLUORESCENCE)[..., 0]
    viewer.add_image(np.tile(tile, (8, 8)), name="mosaic")  # 2048 x 2048: many 512 tiles
    job = widget.run()
    formats = []
    job.progressed.connect(lambda done, total, text: formats.append(widget.progress_bar.format()))
    job.progressed.connect(lambda done, total, text: widget.cancel() if total > 1 else None)
    assert widget.cancel_button.isEnabled() and not widget.run_button.isEnabled()
    _finish(qtbot, job)
    assert job.error is not None and job.error.startswith("cancelled at")
    assert widget.status_label.text() == "cancelled: no layer was added"
    assert "predicting tiles: %v of %m" in formats  # the progress bar counts tiles
    assert [layer.name for layer in viewer.layers] == ["mosaic"]
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()


def test_a_library_refusal_is_shown_in_red(make_napari_viewer, qtbot, model) -> None:
    import dask.array as da

    viewer, widget = _widget(make_napari_viewer, model)
    viewer.add_image(da.zeros((600, 600), chunks=300, dtype=np.float32), name="lazy")
    widget.uncertainty_box.setCurrentText("flips and rotations (tta)")
    job = widget.run()
    _finish(qtbot, job)
    assert "uncertainty needs the whole image in memory" in widget.status_label.text()
    assert "#c62828" in widget.status_label.styleSheet()
    assert [layer.name for layer in viewer.layers] == ["lazy"]


def test_the_layer_picker_follows_the_layer_list(make_napari_viewer, model) -> None:
    viewer, widget = _widget(make_napari_viewer, model)
    assert widget.layer_box.count() == 0 and not widget.run_button.isEnabled()
    viewer.add_image(np.zeros((64, 64), np.float32), name="first")
    viewer.add_labels(np.zeros((64, 64), np.int32), name="not an image")
    viewer.add_image(np.zeros((3, 64, 64), np.float32), name="second")
    assert [widget.layer_box.itemText(i) for i in range(widget.layer_box.count())] == ["first", "second"]
    assert widget.layer_box.currentText() == "first" and widget.run_button.isEnabled()
    widget.layer_box.setCurrentText("second")
    assert widget.axes_edit.text() == "zyx"
    viewer.layers["second"].name = "renamed"
    assert widget.layer_box.currentText() == "renamed"
    viewer.layers.remove("renamed")
    assert widget.layer_box.currentText() == "first" and widget.axes_edit.text() == "yx"


def test_a_bad_axes_field_is_refused_in_words(make_napari_viewer, model) -> None:
    viewer, widget = _widget(make_napari_viewer, model)
    viewer.add_image(np.zeros((64, 64), np.float32), name="plane")
    widget.axes_edit.setText("zyx")
    assert widget.run() is None
    assert "give 2 axes letters" in widget.status_label.text()


def test_a_dask_layer_streams_with_peak_memory_below_its_size(make_napari_viewer, qtbot, tmp_path, monkeypatch,
                                                             shared_data) -> None:  # fmt: skip
    """A 576 MiB Zarr pyramid shown as a Dask layer: level 0 predicted by the streaming runner into an
    OME-Zarr in the cache folder; the process grows by less than the layer (loading it whole grows by all of it)."""
    import dask.array as da
    import zarr
    from _packages import build_parameterized

    model = Model.open(build_parameterized(tmp_path / "package"), threads=1)
    size, piece = 12288, _dsb(shared_data, FLUORESCENCE)[..., 0].astype(np.float32)  # 256 x 256
    levels = []
    for level in range(4):  # a pyramid, as a Zarr layer has, so that napari draws a coarse level
        step, n = 2**level, size // 2**level
        band = np.tile(piece[::step, ::step], (1024 * step // 256, size // 256))  # 1024 rows of the level
        array = zarr.create_array(tmp_path / f"{level}.zarr", shape=(n, n), chunks=(1024, 1024), dtype="float32")
        for y in range(0, n, 1024):
            array[y : y + 1024] = band[: min(1024, n - y)]
        levels.append(da.from_zarr(array))
    layer_bytes = size * size * 4
    monkeypatch.setenv("MICROZOO_MEMORY_BUDGET", "16MB")  # batches of a few tiles
    viewer, widget = _widget(make_napari_viewer, model)
    viewer.add_image(levels, name="big", multiscale=True, contrast_limits=(0, 255))
    widget.tile_box.setValue(512)
    warm = widget.cache_dir / "warm-up"  # imports and thread pools of the streaming runner, before measuring
    predict_array_with_note(model, levels[0][:512, :512], axes="yx", tile=512, stream_to=warm)
    qtbot.wait(100)
    with PeakMemory() as streamed:
        job = widget.run()
        _finish(qtbot, job, timeout=180_000)
    assert job.error is None, job.error
    output = viewer.layers["big prob"]
    assert output.multiscale and output.data.shape == (size, size)
    assert f"{widget.cache_dir}/predictions/big-" in widget.status_label.text()
    assert widget.progress_bar.format() == "ready"
    with PeakMemory() as whole:
        region = np.asarray(levels[0])[1000:1512, 2000:2512]
    assert whole.growth >= 0.9 * layer_bytes  # the measurement sees a layer loaded whole
    assert streamed.growth < layer_bytes, f"grew by {streamed.growth / 2**20:.0f} MiB"
    expected = model.predict(region)["prob"]  # 3x3 convolutions: the same away from the region's edge
    np.testing.assert_allclose(np.asarray(output.data[0][1008:1504, 2008:2504]), expected[8:-8, 8:-8], atol=1e-4)


class PeakMemory:
    """The largest growth of this process' resident memory while inside the ``with`` (sampled every 5 ms)."""

    def __enter__(self) -> PeakMemory:
        self.start = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss())
            time.sleep(0.005)

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())

    @property
    def growth(self) -> int:
        return self.peak - self.start


def _rss() -> int:
    import os

    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
