"""The trust note is computed by the library from the images already in memory; front ends render it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from _trust import fingerprinted_copy

import microzoo


@pytest.fixture(scope="module")
def fingerprinted_model(example_model: Path, shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The zoo example model with a fingerprint of 30 fluorescence training images attached."""
    return fingerprinted_copy(
        example_model, shared_data, tmp_path_factory.mktemp("fingerprinted") / "model", n_images=30
    )


def test_predict_files_with_note_reads_each_image_once(
    fingerprinted_model: Path, shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import microzoo.io.read as read_module
    from microzoo.io.read import read_image
    from microzoo.trust.note import predict_files_with_note, trust_note

    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(shared_data / "w2s" / "test" / "noisy" / "081.tif", images / "w2s_081.tif")
    nuclei = sorted((shared_data / "dsb2018" / "test" / "images").glob("*.png"))
    fluorescent = next(p for p in nuclei if np.asarray(read_image(p).data)[..., :3].std(axis=-1).mean() < 1)
    shutil.copy(fluorescent, images / fluorescent.name)
    paths = sorted(images.iterdir())
    reads: list[Path] = []
    original = read_module.read_image

    def counting(path, *args, **kwargs):  # noqa: ANN001, ANN202
        reads.append(Path(path))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(read_module, "read_image", counting)
    model = microzoo.load_model(fingerprinted_model, weights="onnx")
    run = predict_files_with_note(model, paths, tmp_path / "out")
    assert sorted(reads) == paths  # each image read once: for the prediction and the note together
    note = run.trust
    assert note.checked and note.n_images == 2 and note.warning
    assert [r.name for r in note.unlike] == ["w2s_081.tif"]
    assert note.headline.startswith("1 of 2 image(s) differ from the model's training data")
    assert note.details[0].startswith("w2s_081.tif: ")
    # the same note from arrays in memory (a napari widget's path)
    arrays = [np.asarray(original(p).data) for p in paths]
    assert trust_note(model.package, arrays, [p.name for p in paths]) == note


def test_a_package_without_fingerprint_says_so(example_model: Path) -> None:
    from microzoo.package.load import open_package
    from microzoo.trust.note import NO_FINGERPRINT, trust_note

    note = trust_note(open_package(example_model), [np.zeros((64, 64), np.float32)], ["blank"])
    assert not note.checked and not note.warning and note.headline == NO_FINGERPRINT and note.details == ()


def test_a_few_nan_pixels_do_not_change_the_verdict(fingerprinted_model: Path, shared_data: Path) -> None:
    """The fingerprint's features of an image with NaN/Inf pixels were all 0 (a flag for the
    wrong reasons); the pixels are left out as in prediction."""
    from microzoo.io.read import read_array
    from microzoo.package.load import open_package
    from microzoo.trust.note import package_fingerprint, trust_note
    from microzoo.trust.ood import check_images

    package = open_package(fingerprinted_model)
    noisy = read_array(shared_data / "w2s" / "test" / "noisy" / "081.tif").astype(np.float32)
    broken = noisy.copy()
    broken[10, 10], broken[20, 30], broken[-1, -1] = np.nan, np.inf, -np.inf
    (with_nan,) = trust_note(package, [broken], ["w2s"]).unlike
    (without,) = trust_note(package, [noisy], ["w2s"]).unlike
    assert [d.feature for d in with_nan.deviations] == [d.feature for d in without.deviations]
    assert with_nan.score == pytest.approx(without.score, rel=0.01)
    fingerprint = package_fingerprint(package)
    assert fingerprint is not None
    (clean,) = check_images(fingerprint, [noisy], names=["w2s"])
    assert clean.out_of_distribution  # the verdict compared above is a real flag, not an empty note


def test_stacks_are_compared_plane_by_plane(fingerprinted_model: Path, shared_data: Path, tmp_path: Path) -> None:
    """A z-stack (a 2-D model runs it plane by plane) gets a note, not an error: its planes are
    compared with the fingerprint, the views a 3-D package's fingerprint is built from."""
    import tifffile

    from microzoo.io.read import read_array
    from microzoo.trust.note import predict_files_with_note

    nuclei = sorted((shared_data / "dsb2018" / "test" / "images").glob("*.png"))
    planes = [read_array(p)[..., 0] for p in nuclei if read_array(p)[..., :3].std(axis=-1).mean() < 1]
    fluorescent = np.stack([p[:128, :128] for p in planes[:6]])
    noisy = read_array(shared_data / "w2s" / "test" / "noisy" / "081.tif")
    w2s = np.stack([noisy[64 * i : 64 * i + 128, :128] for i in range(6)])
    images = tmp_path / "stacks"
    images.mkdir()
    tifffile.imwrite(images / "nuclei_stack.tif", fluorescent, metadata={"axes": "ZYX"})
    tifffile.imwrite(images / "w2s_stack.tif", w2s, metadata={"axes": "ZYX"})
    model = microzoo.load_model(fingerprinted_model, weights="onnx")
    run = predict_files_with_note(model, sorted(images.iterdir()), tmp_path / "out", axes="zyx")
    assert run.trust.checked and run.trust.n_images == 2
    assert [r.name for r in run.trust.unlike] == ["w2s_stack.tif"]
    assert "planes differ" in run.trust.details[0]
