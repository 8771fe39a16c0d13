"""Reading and writing images: round trips, real files, errors, atomic writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from microzoo.errors import AxesError, DataError, ImageError, OutputError
from microzoo.io.axes import RGB_WEIGHTS, rgb_to_grey, to_grayscale
from microzoo.io.files import image_stem, list_images, pair_by_stem
from microzoo.io.read import find_images, read_image
from microzoo.io.write import write_image

RNG = np.random.default_rng(0)
PIXEL = {"t": 2.5, "z": 2.0, "y": 0.25, "x": 0.5}


def _random(shape: tuple[int, ...], dtype: str = "uint16") -> np.ndarray:
    return RNG.integers(0, 200, size=shape).astype(dtype)


@pytest.mark.parametrize(
    ("name", "axes", "shape", "dtype"),
    [
        ("a.tif", "yx", (12, 10), "uint8"),
        ("a.ome.tif", "tczyx", (2, 3, 4, 12, 10), "uint16"),
        ("a.tiff", "yxc", (12, 10, 5), "float32"),
        ("a.tif", "zyx", (1, 12, 10), "float32"),  # singleton axes survive
        ("a.tif", "bcyx", (2, 1, 12, 10), "int16"),
        ("a.zarr", "tczyx", (2, 1, 3, 12, 10), "uint16"),
        ("a.ome.zarr", "zyx", (3, 12, 10), "float32"),
    ],
)
def test_round_trip_with_metadata(tmp_path: Path, name: str, axes: str, shape: tuple[int, ...], dtype: str) -> None:
    data = _random(shape, dtype)
    pixel = {a: v for a, v in PIXEL.items() if a in axes}
    out = write_image(tmp_path / name, data, axes, pixel_size=pixel, unit="µm")
    assert out == tmp_path / name
    image = read_image(out)
    assert image.axes == axes
    assert image.pixel_size == pytest.approx(pixel)
    assert image.unit == "micrometer"
    assert image.path == out
    np.testing.assert_array_equal(np.asarray(image.data), data)
    assert np.asarray(image.data).dtype == data.dtype


def test_round_trip_png_and_npy(tmp_path: Path) -> None:
    gray = _random((12, 10), "uint16")
    rgba = _random((12, 10, 4), "uint8")
    stack = _random((3, 12, 10), "float32")
    assert read_image(write_image(tmp_path / "g.png", gray, "yx")).axes == "yx"
    np.testing.assert_array_equal(read_image(tmp_path / "g.png").data, gray)
    image = read_image(write_image(tmp_path / "c.png", rgba, "yxc"))
    assert image.axes == "yxc" and image.pixel_size is None
    np.testing.assert_array_equal(image.data, rgba)
    image = read_image(write_image(tmp_path / "s.npy", stack, "zyx"), axes="zyx")
    np.testing.assert_array_equal(image.data, stack)


def test_zarr_is_ome_ngff_04_and_lazy(tmp_path: Path) -> None:
    import zarr

    data = _random((12, 10, 3), "uint8")
    out = write_image(tmp_path / "rgb.ome.zarr", data, "yxc", pixel_size={"x": 0.5, "y": 0.5})
    assert (out / ".zgroup").exists() and (out / "0" / ".zarray").exists()
    meta = zarr.open_group(str(out), mode="r").attrs["multiscales"][0]
    assert meta["version"] == "0.4"
    assert [a["name"] for a in meta["axes"]] == ["c", "y", "x"]  # NGFF order: channel first
    image = read_image(out)
    assert isinstance(image.data, zarr.Array)
    assert image.axes == "cyx" and image.unit == "micrometer"
    np.testing.assert_array_equal(image.data[:], data.transpose(2, 0, 1))


def test_zarr_without_pixel_size_reads_none(tmp_path: Path) -> None:
    out = write_image(tmp_path / "p.zarr", _random((12, 10)), "yx")
    assert read_image(out).pixel_size is None


def test_imagej_tiff_pixel_size(tmp_path: Path) -> None:
    data = _random((4, 12, 10), "uint8")
    path = tmp_path / "ij.tif"
    tifffile.imwrite(
        path, data, imagej=True, resolution=(1 / 0.2, 1 / 0.2),
        metadata={"axes": "ZYX", "spacing": 1.5, "unit": "um"},
    )  # fmt: skip
    image = read_image(path)
    assert image.axes == "zyx" and image.unit == "micrometer"
    assert image.pixel_size == pytest.approx({"z": 1.5, "y": 0.2, "x": 0.2})


def test_real_dsb2018_rgba_png(shared_data: Path) -> None:
    path = sorted((shared_data / "dsb2018" / "train" / "images").glob("*.png"))[0]
    image = read_image(path)
    assert image.axes == "yxc" and image.data.shape[-1] == 4 and image.data.dtype == np.uint8


def test_real_w2s_tiff_and_isbi_png(shared_data: Path) -> None:
    image = read_image(shared_data / "w2s" / "test" / "noisy" / "081.tif")
    assert image.axes == "yx" and image.data.shape == (512, 512)
    image = read_image(shared_data / "isbi2012" / "test" / "images" / "20.png")
    assert image.axes == "yx" and image.data.shape == (512, 512) and image.data.dtype == np.uint8


@pytest.mark.parametrize("name", ["bad.tif", "bad.png", "bad.npy", "bad.jpg"])
def test_corrupt_file_names_the_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"\x89PNG\r\n not really an image" * 3)
    with pytest.raises(ImageError, match=name):
        read_image(path)


def test_truncated_tiff(tmp_path: Path) -> None:
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, _random((64, 64)))
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ImageError, match="cut.tif"):
        read_image(path)


def test_missing_and_unknown_files(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="does not exist"):
        read_image(tmp_path / "nope.tif")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ImageError, match="unknown image type"):
        read_image(tmp_path / "notes.txt")


def test_ambiguous_axes_name_choices(tmp_path: Path) -> None:
    path = tmp_path / "stack.npy"
    np.save(path, _random((5, 12, 10)))
    with pytest.raises(AxesError) as info:
        read_image(path)
    message = str(info.value)
    assert "(5, 12, 10)" in message and "zyx" in message and "cyx" in message
    assert "--axes" in message
    plain = tmp_path / "plain.tif"  # a TIFF without axes metadata is as ambiguous
    tifffile.imwrite(plain, _random((3, 12, 10)), metadata=None, photometric="minisblack")
    with pytest.raises(AxesError, match="--axes"):
        read_image(plain)
    assert read_image(plain, axes="ZYX").axes == "zyx"


def test_given_axes_must_match_ndim(tmp_path: Path) -> None:
    path = write_image(tmp_path / "a.npy", _random((12, 10)), "yx")
    assert read_image(path).axes == "yx"
    with pytest.raises(AxesError, match="3 letters.*2 dimensions"):
        read_image(path, axes="zyx")
    with pytest.raises(AxesError, match="unknown letters"):
        read_image(path, axes="yq")


def test_png_refuses_what_it_cannot_hold(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match=r"\.tif"):
        write_image(tmp_path / "f.png", _random((12, 10), "float32"), "yx")
    with pytest.raises(OutputError, match=r"\.tif"):
        write_image(tmp_path / "z.png", _random((3, 12, 10), "uint8"), "zyx")
    with pytest.raises(OutputError, match="suffix"):
        write_image(tmp_path / "a.bmp", _random((12, 10), "uint8"), "yx")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.tif"
    write_image(target, _random((12, 10)), "yx")
    before = target.read_bytes()

    def broken(path: Path, *args: object, **kwargs: object) -> None:
        Path(path).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(tifffile, "imwrite", broken)
    with pytest.raises(OSError, match="disk full"):
        write_image(target, _random((12, 10)), "yx")
    assert target.read_bytes() == before  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif"]  # no partial file


def test_atomic_zarr_write_leaves_nothing_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import zarr

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(zarr.Group, "create_array", broken)
    with pytest.raises(OSError, match="disk full"):
        write_image(tmp_path / "out.zarr", _random((12, 10)), "yx")
    assert list(tmp_path.iterdir()) == []


def test_find_images(tmp_path: Path) -> None:
    for name in ["b.tif", "a.png", "c.npy"]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "notes.txt").write_text("")
    (tmp_path / ".a.partial-1234.tif").write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.tif").write_bytes(b"")
    zarr_path = write_image(tmp_path / "e.ome.zarr", _random((4, 4)), "yx")
    folder = find_images([str(tmp_path)])
    assert [p.name for p in folder] == ["a.png", "b.tif", "c.npy", "e.ome.zarr"]
    pattern = find_images([str(tmp_path / "*.tif"), str(tmp_path / "b.tif")])
    assert [p.name for p in pattern] == ["b.tif"]  # duplicates removed
    assert find_images([str(zarr_path)]) == [zarr_path]
    with pytest.raises(ImageError, match=r"\*\.jpg"):
        find_images([str(tmp_path / "*.jpg")])
    with pytest.raises(ImageError, match="missing.tif"):
        find_images([str(tmp_path / "missing.tif")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="no images found for input .*empty"):
        find_images([str(tmp_path / "empty")])


def test_tiff_from_other_tools_and_jpeg(tmp_path: Path) -> None:
    import imageio.v3 as iio

    ome = tmp_path / "other.ome.tif"
    tifffile.imwrite(ome, _random((3, 12, 10)), ome=True, metadata={"axes": "ZYX"})
    assert read_image(ome).axes == "zyx"
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, _random((12, 10, 3), "uint8"), photometric="rgb")
    assert read_image(rgb).axes == "yxc"
    jpeg = tmp_path / "photo.jpg"
    iio.imwrite(jpeg, _random((16, 16, 3), "uint8"))
    image = read_image(jpeg)
    assert image.axes == "yxc" and image.data.shape == (16, 16, 3)


def test_to_grayscale_drops_alpha_and_keeps_units():
    rgba = np.zeros((4, 5, 4), dtype=np.uint8)
    rgba[..., :3] = 100
    rgba[..., 3] = 255
    gray = to_grayscale(rgba)
    assert gray.shape == (4, 5) and np.all(gray == 100)
    colour = np.zeros((2, 2, 3), dtype=np.uint8)
    colour[..., 0] = 255
    assert to_grayscale(colour).max() == pytest.approx(0.2125 * 255)
    with pytest.raises(ImageError, match="one plane at a time"):
        to_grayscale(np.zeros((3, 4, 5, 6)))


def test_rgb_to_grey_is_one_set_of_weights_for_every_layout() -> None:
    rgba = np.random.default_rng(0).integers(0, 255, (5, 6, 4)).astype(np.uint8)
    last = rgb_to_grey(rgba)
    first = rgb_to_grey(np.moveaxis(rgba, -1, 0), channel_axis=0)
    np.testing.assert_allclose(first, last)
    np.testing.assert_allclose(to_grayscale(rgba), rgba[..., :3].astype(float) @ np.array(RGB_WEIGHTS), rtol=1e-6)
    with pytest.raises(AxesError, match="3 or 4 channels"):
        rgb_to_grey(np.zeros((4, 4, 2)))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.ome.tif", "a"),
        ("a.ome.tiff", "a"),
        ("a.ome.zarr", "a"),
        ("cell.v1.tif", "cell.v1"),
        ("cell.v2.png", "cell.v2"),
        ("B.TIF", "B"),
        ("points.csv", "points"),
        ("noext", "noext"),
    ],
)
def test_image_stem(name: str, expected: str) -> None:
    assert image_stem(Path("folder") / name) == expected


def test_pair_by_stem_ome_and_dotted_names(tmp_path: Path) -> None:
    images = [tmp_path / "i" / n for n in ("a.ome.tif", "cell.v1.tif", "cell.v2.tif")]
    labels = [tmp_path / "l" / n for n in ("cell.v2.png", "a.tif", "cell.v1.npy", "extra.tif")]
    stems, paired = pair_by_stem({"images": images, "labels": labels}, extra_ok=True)
    assert stems == ["a", "cell.v1", "cell.v2"]
    assert [p.name for p in paired["labels"]] == ["a.tif", "cell.v1.npy", "cell.v2.png"]
    with pytest.raises(DataError, match=r"1 name\(s\) in the labels are not among the images: extra"):
        pair_by_stem({"images": images, "labels": labels})
    with pytest.raises(DataError, match="no file of the same name in the labels: cell.v2"):
        pair_by_stem({"images": images, "labels": labels[1:]}, extra_ok=True)
    with pytest.raises(DataError, match="a.ome.tif and a.png .images. share the name 'a'"):
        pair_by_stem({"images": [*images, tmp_path / "a.png"], "labels": labels})


def test_list_images_of_a_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="the labels folder .* does not exist"):
        list_images(tmp_path / "nowhere", role="labels")
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(DataError, match="no images .* in the images folder"):
        list_images(tmp_path)
    (tmp_path / "p.csv").write_text("y,x\n")
    (tmp_path / "b.tif").write_bytes(b"")
    assert [p.name for p in list_images(tmp_path)] == ["b.tif"]
    assert [p.name for p in list_images(tmp_path, extra_suffixes=(".csv",))] == ["b.tif", "p.csv"]


def test_an_existing_path_with_brackets_is_a_file_not_a_pattern(tmp_path: Path) -> None:
    path = tmp_path / "cell[red].png"
    write_image(path, _random((8, 8)).astype(np.uint8), "yx")
    assert find_images([str(path)]) == [path]
    assert read_image(path).data.shape == (8, 8)
    assert find_images([str(tmp_path / "cell*.png")]) == [path]
