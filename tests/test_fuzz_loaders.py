"""Property-based: mutated descriptions, zips and image headers give a MicrozooError or a result,
never another exception, and nothing is written outside the output folder and the cache.

Examples are derandomised (the same on every run) and bounded (``max_examples``) so the module
runs in well under half a minute.
"""

from __future__ import annotations

import copy
import io
import os
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from _hostile import files_under, writable_copy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microzoo.errors import MicrozooError
from microzoo.io.read import read_image
from microzoo.package.load import open_package
from microzoo.package.validate import validate_package


def _fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


ESCAPES = [
    "../escape/PWN.npy",
    "../../escape/PWN.npy",
    "/tmp/escape-microzoo/PWN.npy",
    "sub/../../escape/x",
    "",
    ".",
    "..",
    "a\x00b",
    "https://127.0.0.1:9/none.npy",
]
ODD_VALUES: list[Any] = [None, 0, -1, 1.5, "", "x" * 300, [], {}, [None], {"a": 1}, True, "0.4.10", "0.5.4"]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory, example_model: Path) -> Iterator[Path]:
    """A folder holding the cache (``MICROZOO_CACHE``), one writable package and the outputs."""
    root = tmp_path_factory.mktemp("fuzz")
    writable_copy(example_model, root / "pkg")
    previous = os.environ.get("MICROZOO_CACHE")
    os.environ["MICROZOO_CACHE"] = str(root / "cache")
    try:
        yield root
    finally:
        if previous is None:
            del os.environ["MICROZOO_CACHE"]
        else:
            os.environ["MICROZOO_CACHE"] = previous


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path of a YAML tree (dict keys and list indices)."""
    found = [prefix] if prefix else []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        found += _paths(child, (*prefix, key))
    return found


def _mutate(content: dict[str, Any], draw: Any) -> dict[str, Any]:
    mutated = copy.deepcopy(content)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(mutated)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = mutated
        for key in path[:-1]:
            parent = parent[key]
        kind = draw(st.sampled_from(["remove", "replace", "escape"]))
        if kind == "remove":
            del parent[path[-1]]
        elif kind == "replace":
            parent[path[-1]] = draw(st.sampled_from(ODD_VALUES))
        else:
            sources = [p for p in paths if p[-1] == "source"]
            target = draw(st.sampled_from(sources)) if sources else path
            holder = mutated
            for key in target[:-1]:
                holder = holder[key]
            holder[target[-1]] = draw(st.sampled_from(ESCAPES))
    return mutated


def _outside_files(sandbox: Path) -> set[Path]:
    """Files under the sandbox, outside the cache, and anything in the escape targets."""
    inside = files_under(sandbox) - files_under(sandbox / "cache")
    return inside | files_under(sandbox.parent / "escape") | files_under(Path("/tmp/escape-microzoo"))


def _call(action: Any, *args: Any, **kwargs: Any) -> None:
    try:
        action(*args, **kwargs)
    except MicrozooError:
        pass


@_fuzz(60)  # each example parses a description with bioimageio.spec: 20-120 ms
@given(data=st.data())
def test_mutated_descriptions(sandbox: Path, data: st.DataObject) -> None:
    package = sandbox / "pkg"
    description = package / "bioimageio.yaml"
    original = getattr(test_mutated_descriptions, "_original", None) or description.read_text()
    test_mutated_descriptions._original = original  # type: ignore[attr-defined]
    mutated = _mutate(yaml.safe_load(original), data.draw)
    description.write_text(yaml.safe_dump(mutated, sort_keys=False))
    before = _outside_files(sandbox)
    action = data.draw(st.sampled_from([open_package, validate_package]))
    try:
        _call(action, package)
    finally:
        description.write_text(original)
    assert _outside_files(sandbox) == before


@pytest.fixture(scope="module")
def small_zip(sandbox: Path) -> bytes:
    """A zip of the package with the weights left out (only the description's other files)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted((sandbox / "pkg").iterdir()):
            if path.suffix not in (".onnx", ".pt"):
                archive.write(path, path.name)
    return buffer.getvalue()


def _renamed_member(data: bytes, old_index: int, new_name: str) -> bytes:
    """``data`` with one member renamed (a name may then appear twice: zipfile warns, allowed)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(buffer, "w") as target:
        warnings.simplefilter("ignore", UserWarning)
        for i, info in enumerate(source.infolist()):
            target.writestr(new_name if i == old_index else info.filename, source.read(info))
    return buffer.getvalue()


@_fuzz(100)
@given(data=st.data())
def test_mutated_zips(sandbox: Path, small_zip: bytes, data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(["truncate", "flip", "rename"]))
    blob = bytearray(small_zip)
    if kind == "truncate":
        blob = blob[: data.draw(st.integers(0, len(blob) - 1))]
    elif kind == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            position = data.draw(st.integers(0, len(blob) - 1))
            blob[position] ^= data.draw(st.integers(1, 255))
    else:
        with zipfile.ZipFile(io.BytesIO(small_zip)) as archive:
            count = len(archive.infolist())
        name = data.draw(
            st.sampled_from(
                ["../escape/x.txt", "/tmp/escape-microzoo/x", "a/../../escape/y", "bioimageio.yaml", "..", "dir/"]
            )
        )
        blob = bytearray(_renamed_member(small_zip, data.draw(st.integers(0, count - 1)), name))
    archive_path = sandbox / "out" / "model.zip"
    archive_path.parent.mkdir(exist_ok=True)
    archive_path.write_bytes(bytes(blob))
    check_files = data.draw(st.booleans())
    before = _outside_files(sandbox)
    _call(open_package, archive_path, check_files=check_files)
    assert _outside_files(sandbox) == before


def _image_bytes() -> dict[str, bytes]:
    import imageio.v3 as iio
    import tifffile

    rng = np.random.default_rng(0)
    image = (rng.random((16, 24)) * 255).astype(np.uint8)
    tiff, npy = io.BytesIO(), io.BytesIO()
    tifffile.imwrite(tiff, image, metadata={"axes": "YX"})
    np.save(npy, image)
    return {
        ".tif": tiff.getvalue(),
        ".png": iio.imwrite("<bytes>", image, extension=".png"),
        ".ome.tif": tiff.getvalue(),
        ".npy": npy.getvalue(),
    }


IMAGES = _image_bytes()


@_fuzz(300)
@given(data=st.data())
def test_mutated_image_headers(sandbox: Path, data: st.DataObject) -> None:
    suffix = data.draw(st.sampled_from(sorted(IMAGES)))
    blob = bytearray(IMAGES[suffix])
    if data.draw(st.booleans()):
        blob = blob[: data.draw(st.integers(0, len(blob)))]
    else:
        for _ in range(data.draw(st.integers(1, 6))):
            position = data.draw(st.integers(0, min(len(blob), 256) - 1))  # the header
            blob[position] = data.draw(st.integers(0, 255))
    path = sandbox / "out" / f"image{suffix}"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(bytes(blob))
    try:
        image = read_image(path, axes=data.draw(st.sampled_from([None, "yx"])))
        np.asarray(image.data)
    except MicrozooError:
        pass


def test_tiff_header_claiming_a_huge_image_is_an_image_error(tmp_path: Path) -> None:
    """Found by the fuzz test: a header claiming more pixels than memory holds raised MemoryError."""
    import struct

    from microzoo.errors import ImageError

    blob = bytearray(IMAGES[".tif"])
    (ifd,) = struct.unpack_from("<I", blob, 4)
    (count,) = struct.unpack_from("<H", blob, ifd)
    for i in range(count):
        entry = ifd + 2 + 12 * i
        tag, kind = struct.unpack_from("<HH", blob, entry)
        if tag in (256, 257):  # ImageWidth, ImageLength: claim 200000 x 200000 pixels (37 GiB)
            struct.pack_into("<HHII", blob, entry, tag, 4, 1, 200_000)
    path = tmp_path / "huge.tif"
    path.write_bytes(bytes(blob))
    with pytest.raises(ImageError, match="huge.tif"):
        read_image(path)
