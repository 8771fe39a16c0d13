"""The zoo's upload check: the example package is accepted as a zip and a folder; every hostile
package is refused with its HTTP status and a message naming the problem, leaving staging empty."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from _hostile import (
    ExecutesOnUnpickle,
    alias_bomb,
    edited_copy,
    replace_file,
    writable_copy,
    zip_bomb,
    zip_declaring,
    zip_folder,
    zip_with_symlink,
    zip_wrapped,
)

from microzoo.errors import UploadError
from microzoo.package.archive import ZipLimits
from microzoo.zoo.ingest import IngestResult, ingest_upload


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    """The folder for one upload, as ``Zoo.new_staging_dir`` gives it (``ROOT/staging/PID-UUID``)."""
    folder = tmp_path / "root" / "staging" / "1-upload"
    folder.mkdir(parents=True)
    return folder


def refused(data: bytes | Path, staging: Path, status: int, match: str, **options: object) -> str:
    """Ingest ``data``, expect an ``UploadError`` of ``status`` whose message matches; nothing is left in staging."""
    with pytest.raises(UploadError, match=match) as info:
        ingest_upload(data, staging=staging, **options)  # type: ignore[arg-type]
    assert info.value.status == status, str(info.value)
    assert not staging.exists() and list(staging.parent.iterdir()) == [], "a refused upload left files in staging"
    assert str(staging) not in str(info.value), "the message shows the server's staging path"
    return str(info.value)


# -- accepted ---------------------------------------------------------------------------------------


def test_example_zip_is_accepted_with_its_summary(example_model: Path, tmp_path: Path, staging: Path) -> None:
    archive = zip_folder(example_model, tmp_path / "model.zip")
    steps: list[str] = []
    result = ingest_upload(
        archive.read_bytes(),
        staging=staging,
        name="affable-shark",
        version="1",
        progress=lambda d, n, s: steps.append(s),
    )
    assert result.folder == staging and steps[0] == "unpacking" and steps[-1] == "done"
    stored = {p.name for p in result.folder.iterdir()}
    assert stored == {p.name for p in example_model.iterdir()} - {"bioimageio.yaml"} | {"rdf.yaml"}
    for name in stored - {"rdf.yaml"}:  # every other file byte for byte
        assert (result.folder / name).read_bytes() == (example_model / name).read_bytes(), name
    original = (example_model / "bioimageio.yaml").read_text()
    rdf = (result.folder / "rdf.yaml").read_text()
    assert rdf.startswith(original.rstrip("\n")), "the description's own bytes were rewritten"
    assert yaml.safe_load(rdf) == {**yaml.safe_load(original), "id": "affable-shark", "version": "1"}

    summary = result.summary
    assert (summary.name_in_package, summary.version_in_package) == ("affable-shark", "1")
    assert (summary.task, summary.dims, summary.modality) == ("segmentation", "2d", "other")
    assert sorted(summary.weight_formats) == ["onnx", "torchscript"]
    assert summary.title == "UNet 2D Nuclei Broad" and summary.license == "MIT" and summary.format_version == "0.5.4"
    assert summary.authors == ["Constantin Pape;@bioimage-io", "Fynn Beuttenmueller"]
    (raw,) = summary.inputs
    assert raw["id"] == "raw" and raw["axes"] == "bcyx" and raw["data_type"] == "float32"
    assert raw["sizes"] == ["batch: 1", "channel: 1 (raw_intensity)", "y: 512", "x: 512"]
    assert "zero_mean_unit_variance over (x, y) per sample, eps 1e-06" in raw["processing"]
    (probability,) = summary.outputs
    assert probability["sizes"][2] == "y: size of raw.y (halo 32)" and probability["processing"][0] == "sigmoid"
    assert summary.covers == ["cover0.png"] and summary.documentation == "README.md" and not summary.has_qc
    assert summary.cite[0]["doi"] == "10.1007/978-3-319-24574-4_28"
    assert all(isinstance(p, str) for p in result.problems)


@pytest.mark.parametrize("form", ["folder", "zip file", "wrapped zip"])
def test_example_as_folder_or_zip_file_keeps_the_description_bytes(
    example_model: Path, tmp_path: Path, staging: Path, form: str
) -> None:
    upload = {
        "folder": lambda: example_model,
        "zip file": lambda: zip_folder(example_model, tmp_path / "model.zip"),
        "wrapped zip": lambda: zip_wrapped(example_model, tmp_path / "model.zip"),
    }[form]()
    result = ingest_upload(upload, staging=staging)
    assert (result.folder / "rdf.yaml").read_bytes() == (example_model / "bioimageio.yaml").read_bytes()
    assert not (result.folder / "bioimageio.yaml").exists() and not (result.folder / "my-model").exists()
    assert result.summary.name_in_package is None and result.summary.task == "segmentation"
    assert list(staging.parent.iterdir()) == [result.folder]


def test_a_flow_style_description_gets_its_identity_too(example_model: Path, tmp_path: Path, staging: Path) -> None:
    folder = writable_copy(example_model, tmp_path / "pkg")
    description = yaml.safe_load((folder / "bioimageio.yaml").read_text())
    (folder / "bioimageio.yaml").write_text(json.dumps(description))  # JSON is YAML in flow style
    result = ingest_upload(folder, staging=staging, name="json-jay", version="2")
    assert yaml.safe_load((result.folder / "rdf.yaml").read_text()) == {**description, "id": "json-jay", "version": "2"}


def test_a_staging_folder_in_use_is_a_programming_error(example_model: Path, staging: Path) -> None:
    (staging / "other-upload.txt").write_text("busy")
    with pytest.raises(ValueError, match="not empty"):
        ingest_upload(example_model, staging=staging)
    assert [p.name for p in staging.iterdir()] == ["other-upload.txt"]


def test_state_dict_three_d_and_format_04_packages_are_accepted(tmp_path_factory, staging: Path) -> None:
    from _packages import built_package

    def ingest(kind: str, **options: str) -> IngestResult:
        return ingest_upload(built_package(tmp_path_factory, kind).parent, staging=staging / kind, **options)

    state_dict = ingest("state_dict")
    assert state_dict.summary.weight_formats == ["pytorch_state_dict"]
    three_d = ingest("three_d")
    assert three_d.summary.dims == "3d" and three_d.summary.inputs[0]["axes"].endswith("zyx")
    old = ingest("format_04", name="old-owl")
    assert old.summary.format_version.startswith("0.4") and old.summary.name_in_package == "old-owl"


# -- refused: the archive ---------------------------------------------------------------------------


def test_zip_slip_is_refused(example_model: Path, tmp_path: Path, staging: Path) -> None:
    archive = zip_folder(example_model, tmp_path / "model.zip", extra={"../../evil.txt": b"owned"})
    refused(archive.read_bytes(), staging, 400, r"outside the package \(\.\./\.\./evil\.txt\)")
    assert not list(tmp_path.rglob("evil.txt"))


def test_symlink_member_is_refused(example_model: Path, tmp_path: Path, staging: Path) -> None:
    archive = zip_with_symlink(example_model, tmp_path / "model.zip", name="weights.onnx", points_to="/etc/passwd")
    refused(archive, staging, 400, r"symbolic link \(weights\.onnx\)")


def test_symlink_in_a_folder_upload_is_refused(example_model: Path, tmp_path: Path, staging: Path) -> None:
    folder = writable_copy(example_model, tmp_path / "pkg")
    (tmp_path / "secret.txt").write_text("the server's secret")
    (folder / "README.md").unlink()
    (folder / "README.md").symlink_to(tmp_path / "secret.txt")
    refused(folder, staging, 400, r"symbolic link \(README\.md\)")


def test_zip_bomb_is_refused_by_its_ratio(example_model: Path, tmp_path: Path, staging: Path) -> None:
    archive = zip_bomb(example_model, tmp_path / "bomb.zip", member_mib=16)
    assert archive.stat().st_size < 6 << 20
    refused(archive.read_bytes(), staging, 413, r"zeros\.bin would expand .* \(\d+:1\)")


def test_zip_declaring_more_than_the_cap_is_refused(example_model: Path, tmp_path: Path, staging: Path) -> None:
    archive = zip_declaring(example_model, tmp_path / "liar.zip", name="weights.onnx", declared_bytes=3 << 30)
    assert archive.stat().st_size < 6 << 20
    refused(archive.read_bytes(), staging, 413, r"would extract to 3,07\d MiB, more than .* \(2,048 MiB\)")


def test_zip_of_too_many_files_is_refused(example_model: Path, tmp_path: Path, staging: Path) -> None:
    extra = {f"junk/{i}.txt": b"" for i in range(10_001)}
    archive = zip_folder(example_model, tmp_path / "many.zip", extra=extra)
    refused(archive, staging, 413, r"holds 10,0\d\d files, more than are extracted from one zip \(10,000\)")


def test_a_member_name_the_disk_cannot_hold_is_refused(example_model: Path, tmp_path: Path, staging: Path) -> None:
    archive = zip_folder(example_model, tmp_path / "model.zip", extra={"x" * 300 + ".txt": b"x"})
    refused(archive, staging, 422, "cannot be unpacked: File name too long")


def test_a_zip_made_by_macos_is_accepted_without_its_metadata(
    example_model: Path, tmp_path: Path, staging: Path
) -> None:
    archive = zip_wrapped(example_model, tmp_path / "model.zip", top="nuclei")
    with zipfile.ZipFile(archive, "a") as extra:
        extra.writestr("__MACOSX/nuclei/._README.md", b"\x00\x05\x16\x07 Mac OS X resource fork")
    result = ingest_upload(archive, staging=staging)
    assert {p.name for p in result.folder.iterdir()} == {p.name for p in example_model.iterdir()} - {
        "bioimageio.yaml"
    } | {"rdf.yaml"}
    assert "__MACOSX/: macOS file metadata, not part of the package, left out" in result.problems


def test_zip_caps_are_a_parameter(example_model: Path, tmp_path: Path, staging: Path) -> None:
    archive = zip_folder(example_model, tmp_path / "model.zip")
    small = ZipLimits(max_total_bytes=1 << 20, max_ratio=200, ratio_check_bytes=1 << 20)
    refused(archive, staging, 413, r"\(1 MiB\)", zip_limits=small)


@pytest.mark.parametrize("form", ["zip bytes", "folder"])
def test_oversized_upload_is_refused(example_model: Path, tmp_path: Path, staging: Path, form: str) -> None:
    upload = zip_folder(example_model, tmp_path / "model.zip").read_bytes() if form == "zip bytes" else example_model
    refused(upload, staging, 413, r"MiB, more than this zoo accepts \(1\.0 MiB\)", max_bytes=1 << 20)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda tmp: b"this is not a zip", r"not a readable zip archive"),
        (lambda tmp: zipfile_with({"notes.txt": b"hello"}, tmp), r"no description"),
        (lambda tmp: tmp / "missing.zip", r"no file or folder"),
    ],
    ids=["not a zip", "no description", "no such file"],
)
def test_what_is_not_a_package_is_refused(
    tmp_path: Path, staging: Path, make: Callable[[Path], bytes | Path], match: str
) -> None:
    refused(make(tmp_path), staging, 422, match)


def zipfile_with(members: dict[str, bytes], tmp: Path) -> Path:
    target = tmp / "upload.zip"
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return target


# -- refused: the description and its files ----------------------------------------------------------


def test_yaml_alias_bomb_is_refused_quickly(example_model: Path, tmp_path: Path, staging: Path) -> None:
    folder = writable_copy(example_model, tmp_path / "pkg")
    (folder / "bioimageio.yaml").write_text(alias_bomb(10, 10))
    start = time.perf_counter()
    refused(zip_folder(folder, tmp_path / "bomb.zip"), staging, 400, "alias")
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize(
    ("source", "match"), [("../../x.npy", r"'\.\./\.\./x\.npy'.*outside the package"), ("/etc/passwd", "absolute")]
)
def test_description_naming_files_outside_is_refused(
    example_model: Path, tmp_path: Path, staging: Path, source: str, match: str
) -> None:
    folder = edited_copy(
        example_model, tmp_path / "pkg", lambda t: t.replace("source: test_input.npy", f"source: {source}")
    )
    refused(zip_folder(folder, tmp_path / "model.zip"), staging, 400, match)


def test_hash_mismatch_is_refused(example_model: Path, tmp_path: Path, staging: Path) -> None:
    folder = writable_copy(example_model, tmp_path / "pkg")
    (folder / "test_output.npy").write_bytes((folder / "test_output.npy").read_bytes()[:-4] + b"\0\0\0\0")
    refused(zip_folder(folder, tmp_path / "model.zip"), staging, 422, r"sha256 mismatch for 'test_output\.npy'")


def test_files_named_by_url_are_refused(example_model: Path, tmp_path: Path, staging: Path) -> None:
    edit = lambda t: t.replace("source: weights.onnx", "source: https://example.com/weights.onnx")  # noqa: E731
    folder = edited_copy(example_model, tmp_path / "pkg", edit)
    (folder / "weights.onnx").unlink()
    refused(folder, staging, 422, r"names files by URL: https://example\.com/weights\.onnx")


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda t: t.replace("name: UNet 2D Nuclei Broad\n", ""), r"not a valid model description.*name"),
        # only the spec's file checks see this: the test input's shape no longer fits the axes
        (lambda t: t.replace("      - size: 512\n        id: y", "      - size: 256\n        id: y", 1), "not a valid"),
    ],
    ids=["missing field", "test tensor shape"],
)
def test_format_validation_failures_are_listed(
    example_model: Path, tmp_path: Path, staging: Path, edit: Callable[[str], str], match: str
) -> None:
    folder = edited_copy(example_model, tmp_path / "pkg", edit)
    message = refused(zip_folder(folder, tmp_path / "model.zip"), staging, 422, match)
    assert "inputs" in message or "name" in message


def test_package_id_other_than_the_name_asked_for_is_refused(
    example_model: Path, tmp_path: Path, staging: Path
) -> None:
    folder = edited_copy(example_model, tmp_path / "pkg", lambda t: t + "id: other-model\n")
    refused(folder, staging, 422, r"says id: other-model, but it is uploaded as id mine", name="mine")


def test_two_descriptions_are_refused(example_model: Path, tmp_path: Path, staging: Path) -> None:
    folder = writable_copy(example_model, tmp_path / "pkg")
    (folder / "rdf.yaml").write_text((folder / "bioimageio.yaml").read_text())
    refused(folder, staging, 422, "two descriptions")


# -- refused: documentation and weights --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ("# Nuclei\n\n<script>fetch('/api/tokens')</script>\n", "<script> element"),
        ('# Nuclei\n\n<img src="cover0.png" onerror="alert(document.cookie)">\n', "onerror= on <img>"),
        ("# Nuclei\n\nSee [the paper](javascript:alert(1)).\n", "javascript: URL"),
        ('# Nuclei\n\n<a href="jav&#x61;script:alert(1)">paper</a>\n', "javascript: URL"),
    ],
    ids=["script", "event handler", "markdown link", "encoded html link"],
)
def test_documentation_that_could_run_code_is_refused_naming_the_file(
    example_model: Path, tmp_path: Path, staging: Path, text: str, what: str
) -> None:
    folder = writable_copy(example_model, tmp_path / "pkg")
    (folder / "README.md").write_text(text)
    message = refused(zip_folder(folder, tmp_path / "model.zip"), staging, 400, r"^README\.md holds")
    assert what in message


def test_svg_with_a_script_is_refused(example_model: Path, tmp_path: Path, staging: Path) -> None:
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><circle r="4"/></svg>'
    archive = zip_folder(example_model, tmp_path / "model.zip", extra={"docs/figure.svg": svg})
    refused(archive, staging, 400, r"docs/figure\.svg holds an event-handler attribute onload=")


def test_a_huge_documentation_file_is_refused(example_model: Path, tmp_path: Path, staging: Path) -> None:
    folder = writable_copy(example_model, tmp_path / "pkg")
    (folder / "README.md").write_text("# Nuclei\n\n" + "[a](b) " * (3 << 20))
    refused(folder, staging, 413, r"README\.md is 2\d MiB; the zoo reads documentation files of up to 16 MiB")


def test_harmless_markup_the_page_leaves_out_is_a_problem_not_a_refusal(
    example_model: Path, tmp_path: Path, staging: Path
) -> None:
    folder = writable_copy(example_model, tmp_path / "pkg")
    (folder / "README.md").write_text('# Nuclei\n\n<iframe src="https://example.com/video"></iframe>\n')
    result = ingest_upload(folder, staging=staging)
    assert "README.md: the zoo's page leaves out the element <iframe> (its text is kept)" in result.problems


def test_state_dict_whose_pickle_calls_os_system_is_refused(tmp_path_factory, tmp_path: Path, staging: Path) -> None:
    import torch
    from _packages import built_package

    folder = writable_copy(built_package(tmp_path_factory, "state_dict").parent, tmp_path / "pkg")
    marker = tmp_path / "PWNED"
    state = torch.load(folder / "weights_state_dict.pt", weights_only=True)
    payload = io.BytesIO()
    torch.save({**state, "extra": ExecutesOnUnpickle(f"touch {marker}")}, payload)
    replace_file(folder, "weights_state_dict.pt", payload.getvalue())
    refused(folder, staging, 400, r"weights_state_dict\.pt hold the Python callable posix\.system")
    assert not marker.exists(), "the check ran the pickled code"


def test_the_architecture_code_of_an_accepted_package_never_runs(
    tmp_path_factory, tmp_path: Path, staging: Path
) -> None:
    from _packages import ARCH_FILE, built_package

    folder = writable_copy(built_package(tmp_path_factory, "state_dict").parent, tmp_path / "pkg")
    marker = tmp_path / "IMPORTED"
    source = (folder / ARCH_FILE).read_text()
    replace_file(folder, ARCH_FILE, f"open({str(marker)!r}, 'w').close()\n{source}".encode())
    result = ingest_upload(folder, staging=staging)
    assert result.summary.weight_formats == ["pytorch_state_dict"]
    assert not marker.exists(), "checking the upload imported the package's code"


def test_torchscript_whose_pickle_calls_os_system_is_refused(
    example_model: Path, tmp_path: Path, staging: Path
) -> None:
    folder = writable_copy(example_model, tmp_path / "pkg")
    marker = tmp_path / "PWNED"
    hostile = io.BytesIO()
    with zipfile.ZipFile(folder / "weights.pt") as original, zipfile.ZipFile(hostile, "w") as copy:
        for member in original.infolist():
            data = original.read(member)
            if member.filename.endswith("/data.pkl"):
                data = pickle.dumps(ExecutesOnUnpickle(f"touch {marker}"), protocol=2)
            copy.writestr(member, data)
    replace_file(folder, "weights.pt", hostile.getvalue())
    assert hashlib.sha256((folder / "weights.pt").read_bytes()).hexdigest() in (folder / "bioimageio.yaml").read_text()
    refused(
        folder, staging, 400, r"weights\.pt name the Python callable posix\.system in weights_torchscript/data\.pkl"
    )
    assert not marker.exists(), "the check ran the pickled code"
