"""OmeZarrWriter: OME-NGFF 0.4 layout, chunk-wise writes from threads and processes, labels,
pyramids (mean and nearest) read back by read_image with each level's pixel size."""

from __future__ import annotations

import json
import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from _mosaic import dsb_mosaic

from microzoo.errors import OutputError
from microzoo.io.ome_zarr import OmeZarrWriter
from microzoo.io.read import read_image
from microzoo.io.write import write_image

RNG = np.random.default_rng(11)


@pytest.fixture(scope="module")
def nuclei(shared_data: Path) -> np.ndarray:
    """A 600 x 520 uint16 mosaic of real DSB2018 nuclei images (odd sizes on purpose below)."""
    return dsb_mosaic(shared_data, 2, 2, piece=(300, 260))


def _mean_halved(data: np.ndarray) -> np.ndarray:
    """Reference: the mean of each 2x2 block of the last two axes (a last odd row/column alone)."""
    h, w = data.shape[-2:]
    out = np.zeros((*data.shape[:-2], math.ceil(h / 2), math.ceil(w / 2)))
    for i in range(out.shape[-2]):
        for j in range(out.shape[-1]):
            out[..., i, j] = data[..., 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].astype(np.float64).mean(axis=(-2, -1))
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_is_what_ome_zarr_readers_expect(tmp_path: Path, nuclei: np.ndarray) -> None:
    path = tmp_path / "n.ome.zarr"
    writer = OmeZarrWriter.create(path, shape=(2, *nuclei.shape), dtype="uint16", axes="cyx", chunks=(1, 256, 256),
                                  pixel_size={"y": 0.3, "x": 0.3}, unit="µm")  # fmt: skip
    writer.write((slice(0, 2), slice(0, 256), slice(256, 512)), np.stack([nuclei, nuclei])[:, :256, 256:512])
    assert json.loads((path / ".zgroup").read_text()) == {"zarr_format": 2}
    zarray = json.loads((path / "0" / ".zarray").read_text())
    assert zarray["dimension_separator"] == "/" and zarray["chunks"] == [1, 256, 256] and zarray["dtype"] == "<u2"
    assert sorted(str(p.relative_to(path / "0")) for p in (path / "0").rglob("*") if p.name[0] != ".") == [
        "0", "0/0", "0/0/1", "1", "1/0", "1/0/1"]  # fmt: skip
    multiscale = json.loads((path / ".zattrs").read_text())["multiscales"][0]
    assert multiscale["version"] == "0.4" and multiscale["name"] == "n"
    assert multiscale["axes"] == [{"name": "c", "type": "channel"},
                                  {"name": "y", "type": "space", "unit": "micrometer"},
                                  {"name": "x", "type": "space", "unit": "micrometer"}]  # fmt: skip
    assert multiscale["datasets"] == [{"path": "0", "coordinateTransformations": [
        {"type": "scale", "scale": [1.0, 0.3, 0.3]}]}]  # fmt: skip
    image = read_image(path)
    assert image.axes == "cyx" and image.pixel_size == pytest.approx({"y": 0.3, "x": 0.3})
    assert image.chunks == (1, 256, 256) and image.unit == "micrometer"
    np.testing.assert_array_equal(image.data[1, :256, 256:512], nuclei[:256, 256:512])
    assert image.data[0, 300:, :].max() == 0  # not written: the fill value


def test_pyramid_mean_levels_and_pixel_sizes(tmp_path: Path, nuclei: np.ndarray) -> None:
    path = tmp_path / "n.ome.zarr"
    data = nuclei[:599, :517]  # odd sizes: a last row and column stand alone
    writer = OmeZarrWriter.create(path, shape=data.shape, dtype=data.dtype, axes="yx", chunks=(128, 128),
                                  pixel_size={"y": 0.5, "x": 0.25})  # fmt: skip
    writer.write((slice(0, 599), slice(0, 517)), data)
    calls: list[tuple[int, int, str]] = []
    levels = writer.build_pyramid(method="mean", min_size=100, progress=lambda d, t, s: calls.append((d, t, s)))
    assert levels == ((599, 517), (300, 259), (150, 130), (75, 65))
    assert calls[-1][0] == calls[-1][1] and calls[-1][2] == "pyramid level 3"
    expected = data
    for level, shape in enumerate(levels):
        image = read_image(path, level=level)
        assert image.levels == levels and image.data.shape == shape and image.data.dtype == np.uint16
        assert image.pixel_size == pytest.approx({"y": 0.5 * 2**level, "x": 0.25 * 2**level})
        np.testing.assert_array_equal(image.data[...], expected)
        expected = np.rint(_mean_halved(expected)).astype(np.uint16)


def test_pyramid_of_floats_keeps_the_dtype_and_3d_halves_z_when_it_is_large(tmp_path: Path) -> None:
    volume = RNG.random((40, 40, 36)).astype(np.float32)
    writer = OmeZarrWriter.create(tmp_path / "v.ome.zarr", shape=volume.shape, dtype="float32", axes="zyx",
                                  chunks=(16, 16, 16))  # fmt: skip
    writer.write((slice(None),) * 3, volume)
    assert writer.build_pyramid(min_size=10) == ((40, 40, 36), (20, 20, 18), (10, 10, 9))
    level1 = read_image(tmp_path / "v.ome.zarr", level=1).data[...]
    expected = volume.astype(np.float64).reshape(20, 2, 20, 2, 18, 2).mean(axis=(1, 3, 5)).astype(np.float32)
    assert level1.dtype == np.float32
    np.testing.assert_array_equal(level1, expected)
    thin = OmeZarrWriter.create(tmp_path / "t.ome.zarr", shape=(4, 40, 36), dtype="uint8", axes="zyx",
                                chunks=(1, 16, 16))  # fmt: skip
    assert thin.build_pyramid(min_size=10) == ((4, 40, 36), (4, 20, 18), (4, 10, 9))


def test_labels_with_nearest_pyramid(tmp_path: Path, shared_data: Path) -> None:
    import tifffile

    truth = tifffile.imread(sorted((shared_data / "dsb2018" / "train" / "labels").glob("*.tif"))[0])
    image = OmeZarrWriter.create(tmp_path / "i.ome.zarr", shape=(3, *truth.shape), dtype="uint8", axes="cyx",
                                 chunks=(1, 64, 64), pixel_size={"y": 0.2, "x": 0.2})  # fmt: skip
    labels = image.create_labels("instances", dtype="uint32")
    assert labels.shape == (1, *truth.shape) and labels.chunks == (1, 64, 64) and labels.axes == "cyx"
    labels.write((slice(0, 1), slice(None), slice(None)), truth[None].astype(np.uint32))
    levels = labels.build_pyramid(method="nearest", min_size=64)
    root = tmp_path / "i.ome.zarr"
    assert json.loads((root / "labels" / ".zattrs").read_text()) == {"labels": ["instances"]}
    attrs = json.loads((root / "labels" / "instances" / ".zattrs").read_text())
    assert attrs["image-label"] == {"version": "0.4", "source": {"image": "../../"}}
    assert attrs["multiscales"][0]["type"] == "nearest"
    for level in range(len(levels)):
        read = read_image(root / "labels" / "instances", level=level)
        step = 2**level
        np.testing.assert_array_equal(read.data[0], truth[::step, ::step])
        assert read.pixel_size == pytest.approx({"y": 0.2 * step, "x": 0.2 * step})
    with pytest.raises(OutputError, match="already has labels 'instances'"):
        image.create_labels("instances", dtype="uint32")
    reopened = OmeZarrWriter.open(root / "labels" / "instances")
    np.testing.assert_array_equal(reopened.read()[0], truth)


def _write_stripe(path: str, index: int) -> None:
    writer = OmeZarrWriter.open(path)
    block = np.full((64, writer.shape[1]), index + 1, dtype=writer.dtype)
    writer.write((slice(index * 64, (index + 1) * 64), slice(None)), block)


def test_disjoint_chunks_from_threads_and_processes(tmp_path: Path, nuclei: np.ndarray) -> None:
    threads = OmeZarrWriter.create(tmp_path / "t.ome.zarr", shape=nuclei.shape, dtype="uint16", axes="yx",
                                   chunks=(64, 64))  # fmt: skip
    regions = [(slice(y, y + 64), slice(x, x + 64)) for y in range(0, 600, 64) for x in range(0, 520, 64)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda r: threads.write(r, nuclei[r]), regions[::-1]))
    np.testing.assert_array_equal(threads.read(), nuclei)

    path = tmp_path / "p.ome.zarr"
    OmeZarrWriter.create(path, shape=(256, 100), dtype="uint8", axes="yx", chunks=(64, 64))
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(_write_stripe, [str(path)] * 4, range(4)))
    np.testing.assert_array_equal(read_image(path).data[...], np.repeat(np.arange(1, 5, dtype=np.uint8), 64)[:, None]
                                  * np.ones((1, 100), np.uint8))  # fmt: skip


def test_same_data_gives_the_same_bytes(tmp_path: Path, nuclei: np.ndarray) -> None:
    for name in ("a", "b"):
        writer = OmeZarrWriter.create(tmp_path / name / "x.ome.zarr", shape=nuclei.shape, dtype="uint16", axes="yx",
                                      chunks=(128, 128), pixel_size={"y": 1.0, "x": 1.0})  # fmt: skip
        for y in (256, 0, 512, 128, 384):  # another order of writes
            writer.write((slice(y, y + 128), slice(None)), nuclei[y : y + 128])
        writer.build_pyramid(min_size=64)
    first, second = _files(tmp_path / "a" / "x.ome.zarr"), _files(tmp_path / "b" / "x.ome.zarr")
    assert len(first) > 20 and first == second
    writer.build_pyramid(min_size=64)  # built again: the same files
    assert _files(tmp_path / "b" / "x.ome.zarr") == first


def test_refusals(tmp_path: Path) -> None:
    OmeZarrWriter.create(tmp_path / "a.ome.zarr", shape=(10, 10), dtype="uint8", axes="yx", chunks=(8, 8))
    with pytest.raises(OutputError, match="exists; open it"):
        OmeZarrWriter.create(tmp_path / "a.ome.zarr", shape=(10, 10), dtype="uint8", axes="yx", chunks=(8, 8))
    with pytest.raises(OutputError, match="NGFF order"):
        OmeZarrWriter.create(tmp_path / "b.ome.zarr", shape=(10, 10, 3), dtype="uint8", axes="yxc", chunks=(8, 8, 3))
    with pytest.raises(OutputError, match="one positive size per axis"):
        OmeZarrWriter.create(tmp_path / "c.ome.zarr", shape=(10, 10), dtype="uint8", axes="yx", chunks=(8,))
    write_image(tmp_path / "d.npy", np.zeros((4, 4)), "yx")
    with pytest.raises(OutputError, match="not an OME-Zarr 0.4 image"):
        OmeZarrWriter.open(tmp_path / "d.npy")
    with pytest.raises(OutputError, match="not an OME-Zarr 0.4 image"):
        OmeZarrWriter.open(tmp_path / "missing.ome.zarr")


def test_write_image_zarr_has_a_pyramid_and_keeps_axes(tmp_path: Path, nuclei: np.ndarray) -> None:
    data = np.stack([nuclei, nuclei // 3], axis=-1)  # yxc, stored cyx
    out = write_image(tmp_path / "w.ome.zarr", data, "yxc", pixel_size={"y": 0.4, "x": 0.4})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.ome.zarr"]  # no temporary left
    multiscale = json.loads((out / ".zattrs").read_text())["multiscales"][0]
    assert multiscale["name"] == "w" and multiscale["type"] == "mean"
    image = read_image(out, level=1)
    assert (
        image.axes == "cyx"
        and image.levels == ((2, 600, 520), (2, 300, 260), (2, 150, 130))
        and image.chunks == (1, 256, 256)
    )
    assert image.pixel_size == pytest.approx({"y": 0.8, "x": 0.8})
    np.testing.assert_array_equal(image.data[1], np.rint(_mean_halved(nuclei // 3)).astype(np.uint16))
    np.testing.assert_array_equal(read_image(out).data[...], data.transpose(2, 0, 1))

    labels = write_image(tmp_path / "l.zarr", (nuclei > 5000).astype(np.uint16) * 7, "yx", pyramid="nearest")
    np.testing.assert_array_equal(read_image(labels, level=1).data[...], (nuclei[::2, ::2] > 5000) * 7)
    small = write_image(tmp_path / "s.zarr", nuclei[:200, :256], "yx")
    assert read_image(small).levels == ((200, 256),)
