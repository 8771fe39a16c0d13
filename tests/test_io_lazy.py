"""Lazy reading: region reads of TIFF, Zarr v2/v3, OME-Zarr levels, NPY; image_identity."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from _mosaic import dsb_mosaic

from microzoo.errors import ImageError
from microzoo.io.read import image_identity, read_image
from microzoo.io.read_tiff import LazyArray
from microzoo.io.write import write_image

RNG = np.random.default_rng(3)


@pytest.fixture(scope="module")
def mosaic(shared_data: Path) -> np.ndarray:
    return dsb_mosaic(shared_data, 4, 3)  # 1024 x 768


def _corrupt_tiff_segments(path: Path, keep: list[int]) -> None:
    """Overwrite every tile/strip of the first page with garbage, except the indices in ``keep``."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        segments = list(zip(page.dataoffsets, page.databytecounts, strict=True))
    with open(path, "r+b") as f:
        for i, (offset, count) in enumerate(segments):
            if i not in keep:
                f.seek(offset)
                f.write(b"\xff" * count)


@pytest.mark.parametrize(
    "options",
    [
        {"tile": (256, 256), "compression": "zlib"},
        {"tile": (128, 128)},
        {"rowsperstrip": 64, "compression": "zlib"},
        {"rowsperstrip": 64},  # uncompressed contiguous strips: memory-mapped
        {"tile": (256, 256), "compression": "zlib", "bigtiff": True},
        {},  # uncompressed, one strip: memory-mapped
    ],
)
def test_lazy_tiff_equals_whole_read(tmp_path: Path, mosaic: np.ndarray, options: dict) -> None:
    path = tmp_path / "m.tif"
    tifffile.imwrite(path, mosaic, **options)
    whole = read_image(path)
    lazy = read_image(path, lazy=True)
    assert isinstance(whole.data, np.ndarray) and not isinstance(whole.data, np.memmap)
    assert lazy.axes == whole.axes == "yx" and lazy.levels == ((1024, 768),)
    assert lazy.data.shape == (1024, 768) and lazy.data.dtype == np.uint16 and lazy.data.ndim == 2
    if "tile" in options or "compression" in options:
        assert isinstance(lazy.data, LazyArray)
        assert lazy.chunks == (options["tile"] if "tile" in options else (64, 768))
    else:
        assert isinstance(lazy.data, np.memmap) and lazy.chunks is None
    region = lazy.data[300:700, 100:650]
    assert isinstance(region, np.ndarray)
    np.testing.assert_array_equal(region, mosaic[300:700, 100:650])
    np.testing.assert_array_equal(lazy.data[5, 10:20], mosaic[5, 10:20])
    np.testing.assert_array_equal(np.asarray(lazy.data), whole.data)
    if isinstance(lazy.data, LazyArray):
        lazy.data.close()


def test_lazy_tiff_decodes_only_the_tiles_of_a_region(tmp_path: Path, mosaic: np.ndarray) -> None:
    path = tmp_path / "tiled.tif"
    tifffile.imwrite(path, mosaic, tile=(256, 256), compression="zlib")  # 4 x 3 tiles
    _corrupt_tiff_segments(path, keep=[4, 5, 7, 8])  # tile rows 1-2, columns 1-2
    image = read_image(path, lazy=True)
    np.testing.assert_array_equal(image.data[256:768, 256:768], mosaic[256:768, 256:768])
    with pytest.raises(Exception, match="(?i)bad.data|error"):
        np.asarray(image.data)  # the whole image needs the corrupt tiles
    image.data.close()


def test_lazy_striped_tiff_decodes_only_its_strips(tmp_path: Path, mosaic: np.ndarray) -> None:
    path = tmp_path / "striped.tif"
    tifffile.imwrite(path, mosaic, rowsperstrip=128, compression="zlib")  # 8 strips
    _corrupt_tiff_segments(path, keep=[2, 3])
    with read_image(path, lazy=True).data as data:
        np.testing.assert_array_equal(data[256:512, :], mosaic[256:512, :])
        with pytest.raises(Exception, match="(?i)bad.data|error"):
            data[0:10, :]


@pytest.mark.parametrize(
    ("axes", "shape", "dtype"),
    [("tczyx", (2, 3, 4, 40, 36), "uint16"), ("yxc", (40, 36, 5), "float32"), ("zyx", (1, 40, 36), "float32"),
     ("bcyx", (2, 1, 40, 36), "int16"), ("cyx", (3, 40, 36), "uint8")],
)  # fmt: skip
def test_lazy_own_ome_tiff_keeps_its_axes_order(tmp_path: Path, axes: str, shape: tuple, dtype: str) -> None:
    data = RNG.integers(0, 200, size=shape).astype(dtype)
    path = write_image(tmp_path / "own.ome.tif", data, axes, pixel_size={"x": 0.4, "y": 0.4})
    whole, lazy = read_image(path), read_image(path, lazy=True)
    assert lazy.axes == whole.axes == axes and lazy.pixel_size == whole.pixel_size
    assert lazy.data.shape == shape and lazy.levels == (shape,)
    np.testing.assert_array_equal(np.asarray(lazy.data), data)
    index = tuple(slice(1, n - 1) if n > 2 else 0 for n in shape)
    np.testing.assert_array_equal(lazy.data[index], data[index])
    np.testing.assert_array_equal(lazy.data[..., 3:9], data[..., 3:9])


def test_lazy_own_ome_tiff_with_tiles_reads_regions_in_its_axes(tmp_path: Path, mosaic: np.ndarray) -> None:
    """A channels-last image written by microzoo (stored cyx) read lazily as yxc, tile by tile."""
    data = np.stack([mosaic, mosaic // 2], axis=-1)
    path = tmp_path / "own.ome.tif"
    metadata = {"axes": "CYX", "Description": "microzoo axes=yxc"}
    tifffile.imwrite(path, data.transpose(2, 0, 1), ome=True, tile=(256, 256), compression="zlib",
                     photometric="minisblack", metadata=metadata)  # fmt: skip
    image = read_image(path, lazy=True)
    assert image.axes == "yxc" and isinstance(image.data, LazyArray) and image.chunks == (256, 256, 1)
    np.testing.assert_array_equal(image.data[100:400, 600:700], data[100:400, 600:700])
    np.testing.assert_array_equal(image.data[100:400, 600:700, 1], data[100:400, 600:700, 1])
    image.data.close()


def test_lazy_tiff_pyramid_levels(tmp_path: Path, mosaic: np.ndarray) -> None:
    path = tmp_path / "pyramid.ome.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(mosaic, subifds=2, tile=(128, 128), metadata={"axes": "YX", "PhysicalSizeX": 0.5,
                                                                "PhysicalSizeY": 0.5})  # fmt: skip
        tif.write(mosaic[::2, ::2], subfiletype=1, tile=(128, 128))
        tif.write(mosaic[::4, ::4], subfiletype=1, tile=(128, 128))
    image = read_image(path, level=2, lazy=True)
    assert image.levels == ((1024, 768), (512, 384), (256, 192)) and image.data.shape == (256, 192)
    np.testing.assert_array_equal(image.data[10:100, 20:50], mosaic[::4, ::4][10:100, 20:50])
    np.testing.assert_array_equal(read_image(path, level=1).data, mosaic[::2, ::2])
    with pytest.raises(ImageError, match="no resolution level 3: it has levels 0 to 2"):
        read_image(path, level=3, lazy=True)
    image.data.close()


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_array_reads_only_the_chunks_of_a_region(tmp_path: Path, mosaic: np.ndarray, zarr_format: int) -> None:
    path = tmp_path / "m.zarr"
    array = zarr.create_array(str(path), shape=mosaic.shape, dtype=mosaic.dtype, chunks=(256, 256),
                              zarr_format=zarr_format)  # fmt: skip
    array[...] = mosaic
    chunk_files = [p for p in path.rglob("*") if p.is_file() and not p.name.startswith((".z", "zarr.json"))]
    assert len(chunk_files) == 12
    image = read_image(path, axes="yx", lazy=True)
    assert image.chunks == (256, 256) and image.levels == ((1024, 768),)
    region = (slice(256, 512), slice(0, 256))  # chunk (1, 0)
    for chunk in chunk_files:
        if "/".join(chunk.relative_to(path).parts) not in ("1.0", "c/1/0"):
            chunk.write_bytes(b"not a chunk")
    np.testing.assert_array_equal(image.data[region], mosaic[region])
    with pytest.raises(Exception):  # noqa: B017 - any codec error: the other chunks are corrupt
        np.asarray(image.data)


def _ngff_05(path: Path, levels: list[np.ndarray], scale: list[float]) -> None:
    """An OME-Zarr 0.5 image (Zarr v3, metadata under ``ome``), written with zarr alone."""
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    datasets = []
    for i, level in enumerate(levels):
        group.create_array(str(i), data=level, chunks=(128, 128))
        datasets.append({"path": str(i), "coordinateTransformations": [
            {"type": "scale", "scale": [s * 2**i for s in scale]}]})  # fmt: skip
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{
        "axes": [{"name": "y", "type": "space", "unit": "micrometer"},
                 {"name": "x", "type": "space", "unit": "micrometer"}],
        "datasets": datasets}]}  # fmt: skip


def test_ome_zarr_05_levels_with_their_pixel_size(tmp_path: Path, mosaic: np.ndarray) -> None:
    path = tmp_path / "m.ome.zarr"
    _ngff_05(path, [mosaic, mosaic[::2, ::2], mosaic[::4, ::4]], [0.25, 0.25])
    for level, step in enumerate((1, 2, 4)):
        image = read_image(path, level=level)
        assert image.axes == "yx" and image.unit == "micrometer"
        assert image.pixel_size == pytest.approx({"y": 0.25 * step, "x": 0.25 * step})
        assert image.levels == ((1024, 768), (512, 384), (256, 192)) and image.chunks == (128, 128)
        np.testing.assert_array_equal(image.data[3:77, 5:99], mosaic[::step, ::step][3:77, 5:99])
    with pytest.raises(ImageError, match="levels 0 to 2"):
        read_image(path, level=3)


def test_npy_is_memory_mapped_and_has_one_level(tmp_path: Path, mosaic: np.ndarray) -> None:
    np.save(tmp_path / "m.npy", mosaic)
    image = read_image(tmp_path / "m.npy", axes="yx", lazy=True)
    assert isinstance(image.data, np.memmap) and image.levels == ((1024, 768),) and image.chunks is None
    with pytest.raises(ImageError, match="only level 0"):
        read_image(tmp_path / "m.npy", axes="yx", level=1)


def test_lazy_png_is_read_whole(shared_data: Path) -> None:
    path = sorted((shared_data / "dsb2018" / "train" / "images").glob("*.png"))[0]
    image = read_image(path, lazy=True)
    assert isinstance(image.data, np.ndarray) and image.axes == "yxc" and image.chunks is None


def test_closed_lazy_tiffs_leave_no_open_file(tmp_path: Path, mosaic: np.ndarray) -> None:
    """pytest turns ResourceWarning into errors: an unclosed file collected here would fail."""
    path = tmp_path / "t.tif"
    tifffile.imwrite(path, mosaic, tile=(256, 256), compression="zlib")
    image = read_image(path, lazy=True)
    image.data[0:10, 0:10]
    del image
    gc.collect()
    with read_image(path, lazy=True).data as data:
        data[0:10, 0:10]
    gc.collect()


def test_image_identity_names_the_input_and_changes_with_it(tmp_path: Path, mosaic: np.ndarray) -> None:
    tif = tmp_path / "m.tif"
    tifffile.imwrite(tif, mosaic, tile=(256, 256))
    identity = image_identity(tif)
    assert json.loads(json.dumps(identity)) == identity
    assert identity["path"] == str(tif.absolute()) and identity["format"] == "tiff" and identity["level"] == 0
    assert identity["shape"] == [1024, 768] and identity["dtype"] == "uint16" and identity["chunks"] == [256, 256]
    assert image_identity(tif) == identity
    tifffile.imwrite(tif, mosaic[:512], tile=(256, 256))
    assert image_identity(tif) != identity

    zarr_path = write_image(tmp_path / "m.ome.zarr", mosaic, "yx")
    first = image_identity(zarr_path)
    assert {".zgroup", ".zattrs", "0/.zarray"} <= set(first["stamp"]) and first["format"] == "zarr"
    assert image_identity(zarr_path) == first
    v3 = tmp_path / "v3.ome.zarr"
    _ngff_05(v3, [mosaic, mosaic[::2, ::2]], [1.0, 1.0])
    second = image_identity(v3, level=1)
    assert second["shape"] == [512, 384] and set(second["stamp"]) == {"zarr.json", "1/zarr.json"}
    with pytest.raises(ImageError, match="no resolution level"):
        image_identity(zarr_path, level=9)


def test_sharded_zarr_v3_reads_regions(tmp_path: Path, mosaic: np.ndarray) -> None:
    path = tmp_path / "sharded.zarr"
    array = zarr.create_array(str(path), shape=mosaic.shape, dtype=mosaic.dtype, chunks=(128, 128),
                              shards=(512, 384), zarr_format=3)  # fmt: skip
    array[...] = mosaic
    image = read_image(path, axes="yx")
    assert image.chunks == (128, 128) and len(list((path / "c").rglob("*"))) == 2 + 4
    np.testing.assert_array_equal(image.data[500:530, 370:400], mosaic[500:530, 370:400])


def test_lazy_tiff_regions_from_several_threads(tmp_path: Path, mosaic: np.ndarray) -> None:
    from concurrent.futures import ThreadPoolExecutor

    path = tmp_path / "t.tif"
    tifffile.imwrite(path, mosaic, tile=(128, 128), compression="zlib")
    regions = [(slice(y, y + 200), slice(x, x + 150)) for y in range(0, 1024, 200) for x in range(0, 768, 150)]
    with read_image(path, lazy=True).data as data, ThreadPoolExecutor(4) as pool:
        blocks = list(pool.map(lambda r: data[r], regions))
    for region, block in zip(regions, blocks, strict=True):
        np.testing.assert_array_equal(block, mosaic[region])
