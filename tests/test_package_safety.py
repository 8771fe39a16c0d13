"""Hostile and careless packages: refused with one message, nothing written outside the cache."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from _hostile import (
    alias_bomb,
    edited_copy,
    files_under,
    serve_folder,
    writable_copy,
    zip_bomb,
    zip_folder,
    zip_with_symlink,
)

from microzoo.errors import ChecksumError, MicrozooError, PackageError
from microzoo.package import archive as archive_module
from microzoo.package import load as load_module
from microzoo.package.load import open_package
from microzoo.package.validate import validate_package


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MICROZOO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _point_input_at(source: str) -> Callable[[str], str]:
    return lambda text: text.replace("source: test_input.npy", f"source: {source}")


# -- a remote description --------------------------------------------------------------------


def test_remote_description_cannot_write_outside_the_cache(example_model: Path, tmp_path: Path) -> None:
    www = tmp_path / "www"
    edited_copy(example_model, www / "a" / "b" / "c" / "pkg", _point_input_at("../../../../../pwned/PWN.npy"))
    (www / "pwned").mkdir()
    (www / "pwned" / "PWN.npy").write_bytes(b"not what the description says")
    with serve_folder(www) as base, pytest.raises(PackageError, match="outside the package"):
        open_package(f"{base}/a/b/c/pkg/bioimageio.yaml")
    written = files_under(tmp_path) - files_under(www)
    assert all(path.is_relative_to(tmp_path / "cache") for path in written), written
    assert not any(path.name == "PWN.npy" for path in written)


def test_remote_file_appears_only_after_its_sha256_matches(example_model: Path, tmp_path: Path) -> None:
    www = tmp_path / "www"
    folder = writable_copy(example_model, www / "pkg")
    (folder / "test_output.npy").write_bytes(b"replaced on the server")
    with serve_folder(www) as base, pytest.raises(ChecksumError, match="test_output.npy"):
        open_package(f"{base}/pkg/bioimageio.yaml")
    cached = {path.name for path in files_under(tmp_path / "cache")}
    assert "test_output.npy" not in cached
    assert not any(".partial" in name for name in cached)


# -- packages that reach outside themselves ---------------------------------------------------


@pytest.mark.parametrize("source", ["../x.npy", "ABSOLUTE"])
def test_files_outside_the_package_are_refused(example_model: Path, tmp_path: Path, source: str) -> None:
    outside = tmp_path / "x.npy"
    outside.write_bytes((example_model / "test_input.npy").read_bytes())
    source = str(outside) if source == "ABSOLUTE" else source
    folder = edited_copy(example_model, tmp_path / "pkg", _point_input_at(source))
    with pytest.raises(PackageError, match="x.npy") as info:
        open_package(folder)
    assert "outside the package" in str(info.value) or "absolute" in str(info.value)
    report = validate_package(folder)
    assert not report.passed and any("x.npy" in p.message for p in report.errors)


def test_weights_symlink_to_a_file_outside_is_refused(example_model: Path, tmp_path: Path) -> None:
    folder = writable_copy(example_model, tmp_path / "pkg")
    outside = tmp_path / "elsewhere.onnx"
    outside.write_bytes((folder / "weights.onnx").read_bytes())  # even with the right sha256
    (folder / "weights.onnx").unlink()
    (folder / "weights.onnx").symlink_to(outside)
    with pytest.raises(PackageError, match="weights.onnx.*outside the package"):
        open_package(folder)
    assert not validate_package(folder).passed


# -- zip bombs ---------------------------------------------------------------------------------


def test_zip_bomb_is_refused_by_its_compression_ratio(
    example_model: Path, tmp_path: Path, _private_cache: Path
) -> None:
    archive = zip_bomb(example_model, tmp_path / "bomb.zip", member_mib=64)
    assert archive.stat().st_size < 10 << 20
    with pytest.raises(PackageError, match="zeros.bin.*compress") as info:
        open_package(archive)
    assert "extract" in str(info.value)  # says what to do
    assert files_under(_private_cache) == set()


def test_zip_larger_than_the_limit_is_refused(
    example_model: Path, tmp_path: Path, _private_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = zip_folder(example_model, tmp_path / "model.zip")
    monkeypatch.setattr(archive_module, "MAX_EXTRACTED_BYTES", 1 << 20)
    with pytest.raises(PackageError, match="1 MiB") as info:
        open_package(archive)
    assert "extract" in str(info.value)
    assert files_under(_private_cache) == set()


def test_zip_member_outside_the_package_is_refused(example_model: Path, tmp_path: Path, _private_cache: Path) -> None:
    archive = zip_folder(example_model, tmp_path / "model.zip", extra={"../evil.txt": b"x"})
    with pytest.raises(PackageError, match="evil.txt"):
        open_package(archive)
    assert files_under(_private_cache) == set()
    assert not (tmp_path / "evil.txt").exists()


def test_zip_member_that_is_a_symlink_is_refused(example_model: Path, tmp_path: Path, _private_cache: Path) -> None:
    archive = zip_with_symlink(example_model, tmp_path / "model.zip", name="weights.onnx")
    with pytest.raises(PackageError, match="symbolic link.*weights.onnx|weights.onnx.*symbolic link"):
        open_package(archive)
    assert files_under(_private_cache) == set()


# -- YAML -------------------------------------------------------------------------------------


def test_yaml_alias_bomb_is_refused_quickly(example_model: Path, tmp_path: Path) -> None:
    folder = writable_copy(example_model, tmp_path / "pkg")
    (folder / "bioimageio.yaml").write_text(alias_bomb(10, 10))
    for action in (open_package, validate_package):
        start = time.perf_counter()
        with pytest.raises(PackageError, match="alias"):
            action(folder)
        assert time.perf_counter() - start < 5


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "name: [unclosed\n", "\t:\n"])
def test_validate_reports_unreadable_yaml_as_one_error(example_model: Path, tmp_path: Path, text: str) -> None:
    folder = writable_copy(example_model, tmp_path / "pkg")
    (folder / "bioimageio.yaml").write_text(text)
    with pytest.raises(MicrozooError, match="bioimageio.yaml"):
        validate_package(folder)
    with pytest.raises(MicrozooError, match="bioimageio.yaml"):
        open_package(folder)


# -- weights that are more than weights --------------------------------------------------------


def test_state_dict_holding_more_than_weights_is_refused_without_unsafe_advice(tmp_path_factory) -> None:
    import argparse

    import torch
    from _packages import built_package

    from microzoo.runtime.engines import load_engine

    rdf = built_package(tmp_path_factory, "state_dict")
    folder = tmp_path_factory.mktemp("unsafe_state_dict")
    package = writable_copy(rdf.parent, folder / "pkg")
    weights = package / "weights_state_dict.pt"
    old_sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    state = torch.load(weights, weights_only=True)
    torch.save({**state, "payload": argparse.Namespace(anything=1)}, weights)
    new_sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    description = package / "bioimageio.yaml"
    description.write_text(description.read_text().replace(old_sha, new_sha))
    with pytest.raises(PackageError) as info:
        load_engine(open_package(package), "pytorch_state_dict", device="cpu")
    message = str(info.value)
    assert "weights_only=False" not in message and "weights_only" not in message
    assert "more than weights" in message and "torchscript" in message


# -- the architecture code of a package --------------------------------------------------------


def test_architecture_source_is_imported_once_and_its_errors_are_one_message(tmp_path: Path) -> None:
    from microzoo.package.architecture import architecture_callable

    source = tmp_path / "arch.py"
    source.write_text("CALLS = []\nCALLS.append(1)\ndef Net(width=2):\n    return ('net', width)\n")
    first = architecture_callable(source, "Net")
    assert first(width=3) == ("net", 3)
    assert architecture_callable(source, "Net") is first  # imported once: module-level code ran once
    with pytest.raises(PackageError, match="arch.py defines no 'Missing'"):
        architecture_callable(source, "Missing")
    for text, what in [
        ("def Net(:\n", "SyntaxError"),
        ("import not_a_module_xyz\n", "ModuleNotFoundError"),
        ("raise RuntimeError('boom')\n", "boom"),
    ]:
        broken = tmp_path / f"broken_{len(text)}.py"
        broken.write_text(text)
        with pytest.raises(PackageError, match=what) as info:
            architecture_callable(broken, "Net")
        assert broken.name in str(info.value)


def test_only_an_opened_package_runs_its_architecture_code(tmp_path_factory, tmp_path: Path) -> None:
    """Opening and validating a package never executes its code; loading its state dict does."""
    from _packages import ARCH_FILE, built_package

    from microzoo.runtime.engines import load_engine

    rdf = built_package(tmp_path_factory, "state_dict")
    folder = writable_copy(rdf.parent, tmp_path / "pkg")
    marker = tmp_path / "executed"
    arch = folder / ARCH_FILE
    old_sha = hashlib.sha256(arch.read_bytes()).hexdigest()
    arch.write_text(arch.read_text() + f"\nimport pathlib\npathlib.Path({str(marker)!r}).touch()\n")
    description = folder / "bioimageio.yaml"
    description.write_text(description.read_text().replace(old_sha, hashlib.sha256(arch.read_bytes()).hexdigest()))
    package = open_package(folder)
    assert validate_package(folder).passed
    assert not marker.exists()
    load_engine(package, "pytorch_state_dict", device="cpu")
    assert marker.exists()


def test_every_path_is_checked_before_any_file_is_read(
    example_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The escaping path is the last file named; no file is hashed before it is refused. A path
    with a NUL byte is one PackageError too (found by the fuzz test)."""
    folder = edited_copy(
        example_model,
        tmp_path / "pkg",
        lambda text: text.replace("    source: weights.pt\n", "    source: ../weights.pt\n"),
    )
    hashed: list[Path] = []
    monkeypatch.setattr(load_module, "sha256_of", lambda path, **_: hashed.append(path) or "0")
    with pytest.raises(PackageError, match="weights.pt"):
        open_package(folder)
    assert hashed == []
    (folder / "bioimageio.yaml").write_text(
        (example_model / "bioimageio.yaml").read_text().replace("source: test_input.npy", 'source: "a\\0b.npy"')
    )
    with pytest.raises(PackageError, match="not a usable file path"):
        open_package(folder)


def test_cli_validate_of_a_list_yaml_exits_2_without_traceback(example_model: Path, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    folder = writable_copy(example_model, tmp_path / "pkg")
    (folder / "bioimageio.yaml").write_text("- a\n- b\n")
    result = subprocess.run(
        [sys.executable, "-m", "microzoo.cli", "validate", str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "expected a YAML mapping" in result.stderr
