"""Streaming prediction (runtime/stream.py) equals in-memory prediction, on Zarr, TIFF, ZYX and TZYX."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _mosaic import assert_within_spec_tolerance, dsb_mosaic

from microzoo.io.ome_zarr import OmeZarrWriter
from microzoo.io.read import read_image
from microzoo.runtime.predict import Model
from microzoo.runtime.stream import predict_stream, rate_text

SIZE = 2048


@pytest.fixture(scope="module")
def nuclei(shared_data: Path) -> np.ndarray:
    """A 2048x2048 uint16 mosaic of 256x256 DSB2018 crops."""
    return dsb_mosaic(shared_data, SIZE // 256, SIZE // 256, split="test")


@pytest.fixture(scope="module")
def model(example_model: Path) -> Model:
    return Model.open(example_model, threads=1)


@pytest.fixture(scope="module")
def in_memory(model: Model, nuclei: np.ndarray) -> np.ndarray:
    return model.predict(nuclei, axes="yx").only


@pytest.fixture(scope="module")
def streamed_ome_zarr(model: Model, nuclei: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    """The mosaic as an OME-Zarr (Zarr v2, 256-chunks, 0.5 micrometer pixels), streamed."""
    folder = tmp_path_factory.mktemp("stream")
    source = OmeZarrWriter.create(
        folder / "in.ome.zarr", shape=nuclei.shape, dtype=nuclei.dtype, axes="yx", chunks=(256, 256),
        pixel_size={"y": 0.5, "x": 0.5}, unit="micrometer",
    )  # fmt: skip
    source.write((slice(None), slice(None)), nuclei)
    calls: list = []
    result = predict_stream(
        model, source.path, folder / "out.ome.zarr", threads=1, progress=lambda *call: calls.append(call)
    )
    assert result.outputs == {"probability": folder / "out.ome.zarr"} and result.resumed == 0
    assert not (folder / ".out.ome.zarr.job").exists()  # the job folder is gone at the end
    return folder / "out.ome.zarr", calls


@pytest.fixture(scope="module")
def two_d(tmp_path_factory: pytest.TempPathFactory) -> Model:
    from _packages import build_parameterized

    return Model.open(build_parameterized(tmp_path_factory.mktemp("two_d") / "package"), threads=1)


def test_zarr_v2_stream_equals_in_memory(streamed_ome_zarr: tuple[Path, list], in_memory: np.ndarray) -> None:
    out, _ = streamed_ome_zarr
    assert_within_spec_tolerance(np.asarray(read_image(out).data), in_memory)


def test_output_is_an_ome_zarr_pyramid_with_the_inputs_pixel_size(streamed_ome_zarr: tuple[Path, list]) -> None:
    out, _ = streamed_ome_zarr
    written = read_image(out, lazy=True)
    assert written.axes == "yx" and written.pixel_size == {"y": 0.5, "x": 0.5} and written.unit == "micrometer"
    assert written.levels[:3] == ((SIZE, SIZE), (SIZE // 2, SIZE // 2), (SIZE // 4, SIZE // 4))
    assert written.chunks == (448, 448)  # the stride of the example model's tiles (512 - 2 * 32)
    level1 = read_image(out, level=1)
    assert level1.pixel_size == {"y": 1.0, "x": 1.0}
    whole = np.asarray(written.data[:64, :64], dtype=np.float64)
    expected = whole.reshape(32, 2, 32, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(np.asarray(level1.data[:32, :32]), expected, rtol=1e-6)


def test_progress_reports_tiles_megapixels_per_second_and_eta(streamed_ome_zarr: tuple[Path, list]) -> None:
    _, calls = streamed_ome_zarr
    tiles = [c for c in calls if c[2].startswith("tile ")]
    assert tiles[-1][:2] == (25, 25) and "MP/s" in tiles[-1][2] and "ETA" in tiles[-1][2]
    assert [c[0] for c in tiles] == sorted(c[0] for c in tiles)
    assert rate_text(120, 1225, 3.14, 300) == "tile 120/1225, 3.1 MP/s, ETA 5 min"


def test_zarr_v3_stream_gives_the_same_bytes(
    model: Model, nuclei: np.ndarray, streamed_ome_zarr: tuple[Path, list], tmp_path: Path
) -> None:
    """A plain Zarr v3 array (no metadata): the same tiles, the same output, bit for bit."""
    import zarr

    array = zarr.create_array(str(tmp_path / "in.zarr"), shape=nuclei.shape, chunks=(256, 256), dtype=nuclei.dtype,
                              zarr_format=3)  # fmt: skip
    array[...] = nuclei
    predict_stream(model, tmp_path / "in.zarr", tmp_path / "out.ome.zarr", threads=1)
    v2, _ = streamed_ome_zarr
    np.testing.assert_array_equal(read_image(tmp_path / "out.ome.zarr").data, read_image(v2).data)


def test_big_tiff_input_streams_like_in_memory(model: Model, nuclei: np.ndarray, tmp_path: Path) -> None:
    """A tiled BigTIFF (read by tile) of a 1024x1024 part of the mosaic."""
    import tifffile

    part = nuclei[512:1536, 256:1280]
    tifffile.imwrite(tmp_path / "big.tif", part, bigtiff=True, tile=(256, 256))
    predict_stream(model, tmp_path / "big.tif", tmp_path / "out.ome.zarr", threads=1)
    assert_within_spec_tolerance(np.asarray(read_image(tmp_path / "out.ome.zarr").data), model.predict(part).only)


def test_a_3d_model_streams_over_a_zyx_volume(tmp_path: Path) -> None:
    from _packages import build_three_d

    model = Model.open(build_three_d(tmp_path / "three_d"), threads=1)
    volume = np.random.default_rng(3).normal(100, 20, (30, 90, 100)).astype(np.float32)
    np.save(tmp_path / "volume.npy", volume)
    tile = {"z": 16, "y": 48, "x": 48}
    result = predict_stream(model, tmp_path / "volume.npy", tmp_path / "out.ome.zarr", axes="zyx", tile=tile)
    assert result.n_tiles > 8
    written = read_image(tmp_path / "out.ome.zarr")
    assert written.axes == "zyx"
    expected = model.predict(volume, axes="zyx", tile=tile).only
    assert_within_spec_tolerance(np.asarray(written.data), expected)


def test_a_time_series_is_tiled_over_t_with_a_2d_model(two_d: Model, tmp_path: Path) -> None:
    """TZYX through a 2-D model: t and z fold into the batch; the output keeps tzyx."""
    model = two_d
    movie = np.random.default_rng(4).integers(0, 4000, (3, 2, 70, 90)).astype(np.uint16)
    np.save(tmp_path / "movie.npy", movie)
    result = predict_stream(model, tmp_path / "movie.npy", tmp_path / "out.ome.zarr", axes="tzyx", tile=48)
    assert result.n_tiles == 6 * 3 * 3  # 6 planes, 3 x 3 tiles of 48 (stride 32) each
    written = read_image(tmp_path / "out.ome.zarr")
    assert written.axes == "tzyx" and written.data.shape == movie.shape
    expected = model.predict(movie, axes="tzyx", tile=48).only
    assert_within_spec_tolerance(np.asarray(written.data), expected)


def test_non_finite_pixels_are_filled_and_marked_as_in_memory(two_d: Model, tmp_path: Path) -> None:
    model = two_d
    image = np.random.default_rng(5).normal(50, 10, (100, 130)).astype(np.float32)
    image[20:24, 60:90] = np.nan
    image[70, 5] = np.inf
    np.save(tmp_path / "image.npy", image)
    result = predict_stream(model, tmp_path / "image.npy", tmp_path / "out.ome.zarr", tile=48)
    streamed = np.asarray(read_image(tmp_path / "out.ome.zarr").data)
    expected = model.predict_image(image, tile=48)
    np.testing.assert_array_equal(np.isnan(streamed), ~np.isfinite(image))
    finite = np.isfinite(image)
    assert_within_spec_tolerance(streamed[finite], expected.outputs.only[finite])
    assert len(result.notices) == 1 and "120 NaN and 1 infinite value(s)" in result.notices[0]
    assert "121 output pixel(s) there are NaN" in result.notices[0]


def test_the_trust_note_overview_reads_every_kth_pixel_lazily(tmp_path: Path) -> None:
    import tifffile

    from microzoo.runtime.stream_files import overview

    image = (np.arange(3000 * 2500) % 65521).astype(np.uint16).reshape(3000, 2500)
    tifffile.imwrite(tmp_path / "big.tif", image, bigtiff=True, tile=(256, 256))
    small, k = overview(read_image(tmp_path / "big.tif", lazy=True).data, "yx")
    assert k == 2 and np.array_equal(small, image[::2, ::2])
    stack = np.zeros((40, 10, 10))
    assert overview(stack, "zyx")[0].shape == (14, 10, 10)  # every 3rd of 40 planes: at most about 16


def test_level_picks_a_pyramid_level_with_its_pixel_size(two_d: Model, tmp_path: Path) -> None:
    image = np.random.default_rng(6).integers(0, 1000, (600, 520)).astype(np.uint16)
    pyramid = OmeZarrWriter.create(tmp_path / "in.ome.zarr", shape=image.shape, dtype=image.dtype, axes="yx",
                                   chunks=(128, 128), pixel_size={"y": 0.25, "x": 0.25})  # fmt: skip
    pyramid.write((slice(None), slice(None)), image)
    pyramid.build_pyramid(min_size=128)
    predict_stream(two_d, pyramid.path, tmp_path / "out.ome.zarr", level=1, tile=64)
    written = read_image(tmp_path / "out.ome.zarr")
    level1 = read_image(pyramid.path, level=1)
    assert written.data.shape == level1.data.shape == (300, 260)
    assert written.pixel_size == level1.pixel_size == {"y": 0.5, "x": 0.5}
    expected = two_d.predict(np.asarray(level1.data), tile=64).only
    assert_within_spec_tolerance(np.asarray(written.data), expected)


def test_a_tif_target_is_written_from_the_streamed_result(two_d: Model, tmp_path: Path) -> None:
    image = np.random.default_rng(8).normal(0, 1, (3, 100, 90)).astype(np.float32)
    np.save(tmp_path / "stack.npy", image)
    predict_stream(two_d, tmp_path / "stack.npy", tmp_path / "a.ome.zarr", axes="zyx", tile=48)
    predict_stream(two_d, tmp_path / "stack.npy", tmp_path / "b.tif", axes="zyx", tile=48)
    tif, zarr_ = read_image(tmp_path / "b.tif"), read_image(tmp_path / "a.ome.zarr")
    assert tif.axes == zarr_.axes == "zyx"
    np.testing.assert_array_equal(tif.data, zarr_.data)
    assert not (tmp_path / ".b.tif.job").exists()


@pytest.mark.parametrize(
    ("axes", "shape", "model_axes", "channels", "channel"),
    [
        ("yx", (37, 41), ("batch", "channel", "y", "x"), 1, None),
        ("tzyx", (3, 4, 20, 30), ("batch", "channel", "y", "x"), 1, None),
        ("yxc", (25, 31, 3), ("batch", "channel", "y", "x"), 1, None),  # RGB to grey
        ("cyx", (4, 25, 31), ("batch", "channel", "y", "x"), 2, [3, 1]),
        ("czyx", (2, 6, 20, 22), ("batch", "channel", "z", "y", "x"), 2, None),
        ("tyx", (1, 20, 22), ("channel", "y", "x"), 1, None),  # a singleton t the model lacks
    ],
)
def test_model_view_reads_regions_as_map_to_model_maps_the_whole(axes, shape, model_axes, channels, channel) -> None:
    from microzoo.io.axes import map_to_model, select_channels
    from microzoo.runtime.stream_view import ModelView

    image = np.random.default_rng(9).integers(0, 255, shape).astype(np.uint8)
    view = ModelView(image, axes, model_axes, channels=channels, channel=channel)
    whole = select_channels(image, axes, channel)[0] if channel is not None else image
    expected, mapping = map_to_model(whole, axes, model_axes, channels=channels)
    assert view.shape == expected.shape and view.dtype == expected.dtype
    chosen = (select_channels(image, axes, channel)[1],) if channel is not None else ()
    assert view.notices == chosen + mapping.notices  # the notices of the in-memory path
    region = tuple(slice(n // 3, n - n // 4) if a not in ("channel",) else slice(0, n) for a, n in
                   zip(model_axes, expected.shape, strict=True))  # fmt: skip
    np.testing.assert_array_equal(view[region], expected[region])


def test_percentile_normalisation_of_a_two_channel_z_stack(tmp_path: Path) -> None:
    """scale_range by percentiles per sample and channel: the statistics pass gives in-memory's numbers."""
    from _packages import build_ops_stats

    model = Model.open(build_ops_stats(tmp_path / "ops"), threads=1)
    stack = np.random.default_rng(10).gamma(2.0, 300.0, (3, 2, 80, 70)).astype(np.uint16)  # zcyx
    np.save(tmp_path / "stack.npy", stack)
    result = predict_stream(model, tmp_path / "stack.npy", tmp_path / "out.ome.zarr", axes="zcyx", tile=48)
    written = read_image(tmp_path / "out.ome.zarr")
    expected = model.predict_image(stack, axes="zcyx", tile=48)
    assert written.axes == "czyx" and result.n_tiles == 3 * 3 * 3  # 3 planes of 3 x 3 tiles
    out_axes = expected.axes[model.output_ids[0]]
    reordered = np.transpose(expected.outputs.only, [out_axes.index(a) for a in written.axes])
    assert_within_spec_tolerance(np.asarray(written.data), reordered)


def test_postprocessing_with_statistics_of_the_output_is_refused(tmp_path: Path) -> None:
    from _packages import build_ops_scale_mean_variance

    from microzoo.errors import ProcessingError

    model = Model.open(build_ops_scale_mean_variance(tmp_path / "ops"))
    np.save(tmp_path / "image.npy", np.zeros((2, 64, 64), np.float32))
    with pytest.raises(ProcessingError, match="predict this image in memory"):
        predict_stream(model, tmp_path / "image.npy", tmp_path / "out.ome.zarr", axes="cyx")
    assert not (tmp_path / "out.ome.zarr").exists() and not (tmp_path / ".out.ome.zarr.job").exists()


def test_the_trust_note_of_a_streamed_image_says_it_looked_at_an_overview(
    example_model: Path, shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A W2S image (unlike the fluorescence training data) streamed: flagged, on an overview."""
    import shutil

    from _trust import fingerprinted_copy

    import microzoo.runtime.stream_files as stream_files
    from microzoo.trust.note import predict_files_with_note

    package = fingerprinted_copy(example_model, shared_data, tmp_path / "model", n_images=20)
    shutil.copy(shared_data / "w2s" / "test" / "noisy" / "081.tif", tmp_path / "w2s_081.tif")
    monkeypatch.setattr(stream_files, "OVERVIEW_SIZE", 256)  # a 512 x 512 image seen at every 2nd pixel
    run = predict_files_with_note(Model.open(package, threads=1), [tmp_path / "w2s_081.tif"], tmp_path / "out.ome.zarr")
    assert run.results[0].overview == 2 and (tmp_path / "out.ome.zarr").is_dir()
    assert run.trust.warning and [r.name for r in run.trust.unlike] == ["w2s_081.tif"]
    assert run.trust.details[-1] == (
        "w2s_081.tif: compared on an overview of every 2nd pixel of y and x (it was streamed)"
    )
