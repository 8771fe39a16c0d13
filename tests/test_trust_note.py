"""The trust note is computed by the library from the images already in memory; front ends render it."""

from __future__ import annotations

import json
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
    assert note.checked and note.n_images == 2 and note.warning and note.strong
    assert [r.name for r in note.unlike] == ["w2s_081.tif"]
    assert note.headline.startswith("1 of 2 image(s) differ from the model's training data")
    assert note.details[0].startswith("w2s_081.tif: differs: ")
    assert [i.verdict for i in note.images] == ["similar", "differs"]  # sorted: the nuclei image first
    assert note.images[0].checked == ("input features", "output statistics", "2 flips/rotations")
    # trust.json beside the outputs holds each image's verdict, score and reasons
    assert run.trust_file == tmp_path / "out" / "trust.json"
    written = json.loads(run.trust_file.read_text())
    assert written == json.loads(json.dumps(note.to_dict()))
    assert written["images"]["w2s_081.tif"]["verdict"] == "differs" and written["images"]["w2s_081.tif"]["reasons"]
    assert "30 training images" in written["evidence"]
    # the same note from arrays in memory (a napari widget's path)
    read = [original(p) for p in paths]
    outputs = [r.prediction.outputs for r in run.results]
    arrays, axes = [np.asarray(r.data) for r in read], [r.axes for r in read]
    assert trust_note(model.package, arrays, [p.name for p in paths], axes, outputs=outputs, model=model) == note


def test_a_package_without_fingerprint_is_judged_against_its_test_input(example_model: Path, shared_data: Path) -> None:
    """The zoo example model (fluorescence nuclei, no fingerprint) on a fluorescence and an H&E
    image of DSB2018: the histology image differs (input features and output statistics), the
    fluorescence one is similar, and the note says its evidence is weaker."""
    from microzoo.io.read import read_image
    from microzoo.trust.note import trust_note

    model = microzoo.load_model(example_model, weights="onnx")
    folder = shared_data / "dsb2018" / "test" / "images"
    names = [
        "003cee89357d9fe13516167fd67b609a164651b21934585648c740d2c3d86dc1.png",  # fluorescence
        "1e488c42eb1a54a3e8412b1f12cde530f950f238d71078f2ede6a85a02168e1f.png",  # H&E histology
    ]
    images = [read_image(folder / name) for name in names]
    arrays = [np.asarray(i.data) for i in images]
    outputs = [model.predict_image(a, axes=i.axes).outputs for a, i in zip(arrays, images, strict=True)]
    note = trust_note(model.package, arrays, names, [i.axes for i in images], outputs=outputs)
    assert note.checked and not note.strong and note.warning
    assert note.headline == (
        "1 of 2 image(s) differ from the package's test input (the package carries no training fingerprint: "
        "weaker evidence); check these outputs with care:"
    )
    similar, histology = note.images
    assert similar.verdict == "similar" and similar.score < 1 and similar.reasons == ()
    assert histology.verdict == "differs" and histology.score > 1
    assert any("background" in r for r in histology.reasons) and any("colour" in r for r in histology.reasons)
    assert any("foreground" in r and "test input" in r for r in histology.reasons)  # the output check
    assert "weaker evidence than a training fingerprint" in histology.evidence
    assert histology.checked == ("input features", "output statistics")
    assert note.details == (f"{names[1]}: differs: " + "; ".join(histology.reasons[:3]),)


def test_the_flip_check_calls_a_self_contradicting_prediction_uncertain(example_model: Path, shared_data: Path) -> None:
    """The flip check's rate is measured on a real image; a rate past the limit (FLIP_FACTOR times the
    rate on the package's test input) makes the verdict
    uncertain, with the rate in words; a differing input outranks it."""
    from microzoo.io.read import read_image
    from microzoo.trust.reference import package_reference
    from microzoo.trust.verdict import FLIP_FACTOR, flip_check, flip_limit_for, judge_image

    model = microzoo.load_model(example_model, weights="onnx")
    image = read_image(sorted((shared_data / "dsb2018" / "test" / "images").glob("*.png"))[0])
    data = np.asarray(image.data)
    rate, words = flip_check(model, data, image.axes)
    limit = flip_limit_for(model, ("transpose", "rot180"))
    test_rate, _ = flip_check(model, np.load(example_model / "test_input.npy"), "bcyx")
    assert limit == pytest.approx(FLIP_FACTOR * test_rate) and 0.01 < limit < 0.05
    assert 0 < rate < limit and words == "2 flips/rotations"  # a fluorescence image it segments well
    reference = package_reference(model.package)
    calm = judge_image(reference, data, "a", image.axes, flip_rate=rate, flip_check=words, flip_limit=limit)
    assert calm.verdict == "similar" and calm.score >= rate / limit and calm.reasons == ()
    shaky = judge_image(reference, data, "a", image.axes, flip_rate=0.23, flip_check=words, flip_limit=limit)
    assert shaky.verdict == "uncertain" and shaky.score == pytest.approx(0.23 / limit)
    assert shaky.reasons == (
        f"the model disagrees with itself under 2 flips/rotations on 23.0% of the foreground (limit {limit:.1%}, "
        "from its rate on the package's test input)",
    )
    noise = np.random.default_rng(0).normal(100, 30, (256, 256)).astype(np.float32)
    assert judge_image(reference, noise, "n", "yx", flip_rate=0.23).verdict == "differs"


def test_the_package_reference_is_built_once_from_its_test_tensors(example_model: Path) -> None:
    from microzoo.package.load import open_package
    from microzoo.trust.reference import PACKAGE_THRESHOLD, output_statistics, package_reference

    package = open_package(example_model)
    reference = package_reference(package)
    assert reference is package_reference(open_package(example_model))  # cached by the description's sha256
    assert reference.kind == "package test inputs" and reference.n_images == 1 and not reference.strong
    assert reference.fingerprint.threshold == PACKAGE_THRESHOLD and reference.pixel_size is None
    expected = output_statistics(np.load(example_model / "test_output.npy"))
    assert reference.outputs == {"probability": expected}
    assert expected.probability and expected.foreground == pytest.approx(0.2069, abs=1e-4)
    assert expected.confidence > 0.9


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


def test_with_uncertainty_tta_the_note_uses_all_eight_flips(
    example_model: Path, shared_data: Path, tmp_path: Path
) -> None:
    """`predict --uncertainty tta` already predicted under the 8 flips and rotations: the note uses
    that flip rate (and its own limit) instead of running the cheap check."""
    from microzoo.runtime.uncertainty import TRANSFORMS
    from microzoo.trust.note import predict_files_with_note
    from microzoo.trust.verdict import flip_limit_for

    image = sorted((shared_data / "dsb2018" / "test" / "images").glob("*.png"))[0]  # 256x256 fluorescence
    model = microzoo.load_model(example_model, weights="onnx")
    run = predict_files_with_note(model, [image], tmp_path / "out", uncertainty="tta")
    (verdict,) = run.trust.images
    assert verdict.checked == ("input features", "output statistics", "all 8 flips and rotations")
    rate = max(r for r in run.results[0].uncertainty.flip_rate.values() if r is not None)
    limit = flip_limit_for(model, TRANSFORMS)
    assert verdict.score >= rate / limit and verdict.verdict == ("uncertain" if rate > limit else "similar")
