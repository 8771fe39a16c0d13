"""Streaming an instance package writes labels/instances equal to whole-image decoding.

The synthetic ``instances`` package (tests/_packages.py: fixed weights, bright blobs to
foreground, boundary and distance maps, a halo larger than its objects) is streamed over an
OME-Zarr in tiles much smaller than the image; its labels are compared with the in-memory
prediction of the whole image decoded by ``instances_from_output``.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from _labels import same_partition
from _packages import built_package, instance_test_image

from microzoo.io.ome_zarr import OmeZarrWriter
from microzoo.io.read import read_image
from microzoo.runtime.instances import instance_settings_of, instances_from_output
from microzoo.runtime.predict import Model
from microzoo.runtime.stream import predict_stream, prepare_stream

TILE = 96  # inner 48 with the package's halo of 24


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Model:
    return Model.open(built_package(tmp_path_factory, "instances"), threads=1)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return instance_test_image((300, 344), n=55, seed=7)


@pytest.fixture(scope="module")
def whole_image_labels(model: Model, image: np.ndarray) -> np.ndarray:
    prediction = model.predict_image(image, axes="yx")
    maps = prediction.outputs["instances"]
    assert prediction.axes["instances"] == "cyx"
    settings = instance_settings_of(model.descr)
    assert settings is not None
    return instances_from_output(maps, settings=settings)


def _source(folder: Path, image: np.ndarray) -> Path:
    source = OmeZarrWriter.create(
        folder / "in.ome.zarr", shape=image.shape, dtype=image.dtype, axes="yx", chunks=(128, 128)
    )
    source.write((slice(None), slice(None)), image)
    return source.path


def _labels(out: Path) -> np.ndarray:
    labels = read_image(out / "labels" / "instances")
    assert labels.axes == "cyx" and labels.data.dtype == np.uint32
    return np.asarray(labels.data)[0]


def test_streamed_labels_equal_whole_image_decoding(
    model: Model, image: np.ndarray, whole_image_labels: np.ndarray, tmp_path: Path
) -> None:
    out = tmp_path / "out.ome.zarr"
    steps: list[str] = []
    result = predict_stream(
        model,
        _source(tmp_path, image),
        out,
        tile=TILE,
        threads=1,
        progress=lambda done, total, what: steps.append(what),
    )
    assert "painting instance labels" in steps

    labels = _labels(out)
    assert result.notices == () and result.n_tiles >= 30
    assert same_partition(labels, whole_image_labels)
    assert np.array_equal(np.unique(labels), np.arange(whole_image_labels.max() + 1)) and labels.max() > 40
    # many objects cross the output chunks (one per tile): they kept one label
    chunk_of = (np.arange(image.shape[0])[:, None] // 48) * 100 + np.arange(image.shape[1])[None, :] // 48
    crossing = sum(len(np.unique(chunk_of[labels == k])) > 1 for k in range(1, labels.max() + 1))
    assert crossing > 15
    # the labels are listed, with a pyramid, beside the maps
    assert read_image(out, lazy=True).levels[0] == (3, 300, 344)
    assert read_image(out / "labels" / "instances", lazy=True).levels[1] == (1, 150, 172)


def test_labels_do_not_depend_on_the_order_batches_complete(model: Model, image: np.ndarray, tmp_path: Path) -> None:
    source = _source(tmp_path, image)
    in_order = predict_stream(model, source, tmp_path / "a.ome.zarr", tile=TILE, threads=1).outputs["instances"]
    small = {"tile": TILE, "threads": 1, "memory_budget": 40_000_000}  # 4 tiles a batch
    job = prepare_stream(model, source, tmp_path / "b.ome.zarr", **small)
    batches = job.pending_batches()
    assert len(batches) >= 10
    random.Random(0).shuffle(batches)
    for index in batches[: len(batches) // 2]:
        job.run_batch(model, index)
    job = prepare_stream(model, source, tmp_path / "b.ome.zarr", **small)  # resumed
    for index in batches[len(batches) // 2 :]:
        job.run_batch(model, index)
    job.finish()
    assert np.array_equal(_labels(tmp_path / "b.ome.zarr"), _labels(in_order))


def test_a_notice_when_objects_are_larger_than_the_halo(model: Model, tmp_path: Path) -> None:
    image = instance_test_image((200, 200), n=4, seed=5)
    yy, xx = np.ogrid[:200, :200]
    image[(yy - 100) ** 2 + (xx - 100) ** 2 < 40**2] = 0.9  # an object far larger than the halo
    result = predict_stream(model, _source(tmp_path, image), tmp_path / "out.ome.zarr", tile=64, threads=1)
    (notice,) = result.notices
    assert "larger tiles (--tile)" in notice


def test_a_tiff_target_gets_the_maps_only(model: Model, image: np.ndarray, tmp_path: Path) -> None:
    steps: list[str] = []
    result = predict_stream(
        model, _source(tmp_path, image), tmp_path / "out.tif", tile=TILE, threads=1,
        progress=lambda done, total, what: steps.append(what),
    )  # fmt: skip
    assert steps and not any("labels" in step for step in steps)  # no labels painted for a TIFF
    written = read_image(result.outputs["instances"])
    assert written.axes == "cyx" and written.data.shape == (3, *image.shape)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.ome.zarr", "out.tif"]  # the job folder is gone


def test_non_finite_input_pixels_are_background_as_in_memory(model: Model, tmp_path: Path) -> None:
    """Squares cover most of the image, so the median that fills a non-finite pixel is bright:
    the network sees object there, and only marking the output NaN (as in memory) makes it
    background."""
    rng = np.random.default_rng(9)
    image = rng.normal(0.05, 0.03, (240, 272)).astype(np.float32)
    for y in range(2, 240 - 14, 17):
        for x in range(2, 272 - 14, 17):
            image[y : y + 14, x : x + 14] += 0.8
    image[100:104, 30:250] = np.nan  # a stripe through squares, gaps and tile edges
    prediction = model.predict_image(image, axes="yx")
    maps = prediction.outputs["instances"]
    assert np.isnan(maps[:, 100:104, 30:250]).all()
    settings = instance_settings_of(model.descr)
    assert settings is not None
    whole = instances_from_output(maps, settings=settings)

    out = tmp_path / "out.ome.zarr"
    result = predict_stream(model, _source(tmp_path, image), out, tile=TILE, threads=1)
    labels = _labels(out)
    assert any("not finite" in notice for notice in result.notices)
    assert not labels[100:104, 30:250].any() and labels.max() > 150
    assert same_partition(labels, whole)
