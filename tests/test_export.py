"""Tests for microzoo.train.export: trained networks become valid, runnable zoo packages.

Every package is checked three ways: bioimageio.spec validation with io checks, ``microzoo test``
for each weight format, and bioimageio.core's own test (test outputs reproduced, then
parameterized sizes and batch sizes run) for each weight format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from microzoo.errors import ConfigError, OutputError
from microzoo.train.export import ExportSpec, export_package

ARCH_SOURCE = '''"""Tiny networks for microzoo's export tests (torch only)."""
import torch
from torch import nn


class TinyNet(nn.Module):
    """Two 3x3 convolutions, 'same' padding: the output depends on a 5x5 neighbourhood."""

    def __init__(self, in_channels: int = 1, out_channels: int = 1, hidden: int = 4, dims: int = 2):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.net = nn.Sequential(conv(in_channels, hidden, 3, padding=1), nn.ReLU(),
                                 conv(hidden, out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TraceOnly(TinyNet):
    """TorchScript cannot script variadic forward arguments; tracing works."""

    def forward(self, *inputs):
        return self.net(inputs[0])
'''

#: name -> (task, dims, in channels, out channels, postprocessing)
CASES: dict[str, tuple[str, int, int, int, str]] = {
    "semantic": ("semantic", 2, 1, 2, "softmax"),
    "instances": ("instances", 2, 1, 2, "sigmoid"),
    "care": ("care", 2, 1, 1, "none"),
    "n2v": ("n2v", 2, 1, 1, "none"),
    "care_3d": ("care", 3, 2, 1, "none"),
}
INSTANCE_SETTINGS = {"foreground_threshold": 0.5, "min_size": 12, "seed_distance": 3.0}
FORMATS = {"pytorch_state_dict", "torchscript", "onnx"}


def _image(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Dark background with a few bright blobs and Poisson noise, like fluorescence (uint16)."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    signal = np.zeros(shape)
    for _ in range(6):
        centre = [rng.uniform(0, n) for n in shape]
        signal += 200 * np.exp(-sum((g - c) ** 2 for g, c in zip(grids, centre, strict=True)) / 20.0)
    return (rng.poisson(signal + 20) + 100).astype(np.uint16)


@pytest.fixture(scope="module")
def arch_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("arch") / "tiny_arch.py"
    path.write_text(ARCH_SOURCE)
    return path


@pytest.fixture(scope="module")
def arch(arch_file: Path) -> Any:
    import importlib.util
    import sys

    module_spec = importlib.util.spec_from_file_location("microzoo_test_export_arch", arch_file)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = module
    module_spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fingerprint() -> Any:
    from microzoo.trust.fingerprint import fingerprint_images

    return fingerprint_images([_image((48, 48), seed) for seed in range(5)], pixel_size=0.5)


def _spec(arch_file: Path, case: str, **changes: Any) -> ExportSpec:
    task, dims, cin, cout, post = CASES[case]
    shape = (12, 40, 44) if dims == 3 else (70, 90)
    image = _image(shape)
    if cin > 1:
        image = np.stack([image, _image(shape, seed=1)])
    fields: dict[str, Any] = dict(
        name=f"microzoo export test {case}",
        description=f"A tiny untrained {task} network for tests.",
        task=task,
        spatial_dims=dims,
        in_channels=cin,
        out_channels=cout,
        architecture_source=arch_file,
        architecture_callable="TinyNet",
        architecture_kwargs={"in_channels": cin, "out_channels": cout, "dims": dims},
        postprocessing=post,
        size_min=8 if dims == 3 else 16,
        size_step=4 if dims == 3 else 8,
        halo=2,
        test_input=image,
        training={"epochs": 3, "batch_size": 4, "data": "synthetic blobs", "time_s": 12.5},
        qc={"F1@0.5": 0.88, "baseline F1@0.5": 0.67}
        if task in ("semantic", "instances")
        else {"PSNR": 31.2, "baseline PSNR": 28.0},
        tags=["nuclei"],
        instance_settings=INSTANCE_SETTINGS if task == "instances" else None,
        # restoration: the output back in the input's units (uint16-like range here)
        output_scale=([900.0] * cout, [110.0] * cout) if task in ("care", "n2v") else None,
    )
    fields.update(changes)
    return ExportSpec(**fields)


def _network(arch: Any, spec: ExportSpec, seed: int = 0) -> Any:
    import torch

    torch.manual_seed(seed)
    return getattr(arch, spec.architecture_callable)(**spec.architecture_kwargs)


@pytest.fixture(scope="module")
def exported(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    arch_file: Path,
    arch: Any,
    fingerprint: Any,
) -> dict[str, Path]:
    """Case name -> bioimageio.yaml of its exported package (exported once per module)."""
    report = tmp_path_factory.mktemp("qc") / "report.html"
    report.write_text("<html><body>QC report</body></html>")
    rdfs = {}
    for case in CASES:
        spec = _spec(arch_file, case, fingerprint=fingerprint, qc_report=report)
        rdfs[case] = export_package(_network(arch, spec), out_dir=tmp_path_factory.mktemp("out") / case, spec=spec)
    return rdfs


def _description(rdf: Path) -> dict[str, Any]:
    return yaml.safe_load(rdf.read_text())


@pytest.mark.parametrize("case", list(CASES))
def test_package_passes_spec_microzoo_and_core(exported: dict[str, Path], case: str) -> None:
    from _reference import failure_messages, reference_test, test_passed
    from bioimageio.spec import load_model_description
    from bioimageio.spec.model import v0_5

    from microzoo.package.load import open_package
    from microzoo.runtime.reproduce import test_package

    rdf = exported[case]
    descr = load_model_description(rdf, perform_io_checks=True)
    assert isinstance(descr, v0_5.ModelDescr), descr.validation_summary.display()
    warnings = [w.msg for d in descr.validation_summary.details for w in d.warnings]
    # the only warning left asks for a GitHub user name, which microzoo cannot know
    assert all("github_user" in w for w in warnings), warnings

    results = test_package(open_package(rdf))
    assert {r.weight_format for r in results} == FORMATS
    assert all(r.passed for r in results), results

    summary = reference_test(rdf)  # every weight format: test outputs, then parameterized sizes
    assert test_passed(summary), failure_messages(summary)


def config_scale(description: dict[str, Any]) -> dict[str, Any]:
    scale = description["config"]["microzoo"]["output_scale"]
    return {"gain": scale["gain"], "offset": scale["offset"]}


def test_description_content(exported: dict[str, Path], fingerprint: Any) -> None:
    from microzoo.trust.fingerprint import Fingerprint

    for case, (task, dims, _cin, cout, post) in CASES.items():
        rdf = exported[case]
        d = _description(rdf)
        (inp,), (out,) = d["inputs"], d["outputs"]
        spatial = ["z", "y", "x"][3 - dims :]
        assert [a.get("id", a["type"]) for a in inp["axes"]] == ["batch", "channel", *spatial]
        assert all(
            a["size"] == ({"min": 8, "step": 4} if dims == 3 else {"min": 16, "step": 8}) for a in inp["axes"][2:]
        )
        assert all(a["halo"] == 2 and a["size"]["tensor_id"] == "input" for a in out["axes"][2:])
        assert [p["id"] for p in inp["preprocessing"]] == ["ensure_dtype", "scale_range", "ensure_dtype"]
        assert inp["preprocessing"][1]["kwargs"] == {"axes": spatial, "min_percentile": 1.0, "max_percentile": 99.8}
        restores = task in ("care", "n2v")
        assert [p["id"] for p in out["postprocessing"] if p["id"] != "ensure_dtype"] == (
            ([] if post == "none" else [post]) + (["scale_linear"] if restores else [])
        )
        if restores:  # the network's normalised output times the gain plus the offset
            assert out["postprocessing"][0]["kwargs"] == {"gain": 900.0, "offset": 110.0}
            assert config_scale(d) == {"gain": [900.0] * cout, "offset": [110.0] * cout}
        weights = d["weights"]
        assert set(weights) == FORMATS and "parent" not in weights["pytorch_state_dict"]
        assert weights["torchscript"]["parent"] == weights["onnx"]["parent"] == "pytorch_state_dict"
        assert weights["pytorch_state_dict"]["architecture"]["callable"] == "TinyNet"
        assert weights["onnx"]["opset_version"] == 17
        kind = "segmentation" if task in ("semantic", "instances") else "denoising"
        assert {kind, f"{dims}d", "microzoo", "nuclei", "fluorescence-light-microscopy"} <= set(d["tags"])
        config = d["config"]
        assert config["bioimageio"]["task"] and config["bioimageio"]["training"]["training_epochs"] == 3
        assert config["microzoo"]["normalization"]["min_percentile"] == 1.0
        assert config["microzoo"]["fingerprint"] == "training_fingerprint.json"
        assert config["microzoo"].get("instance_settings") == (INSTANCE_SETTINGS if task == "instances" else None)
        attached = {Path(a["source"]).name for a in d["attachments"]}
        assert attached == {"training_fingerprint.json", "qc_report.html"}
        loaded = Fingerprint.load(rdf.parent / config["microzoo"]["fingerprint"])
        assert loaded == fingerprint
        x = np.load(rdf.parent / inp["test_tensor"]["source"])
        y = np.load(rdf.parent / out["test_tensor"]["source"])
        # 70 x 90 -> 64 x 88 (16 + n * 8); 12 x 40 x 44 -> 12 x 40 x 44 (8 + n * 4)
        assert x.shape == ((1, 2, 12, 40, 44) if dims == 3 else (1, 1, 64, 88)) and x.dtype == np.float32
        assert y.shape == (1, cout, *x.shape[2:])
        if post == "softmax":
            np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("case", list(CASES))
def test_readme_sections(exported: dict[str, Path], case: str) -> None:
    text = (exported[case].parent / "README.md").read_text()
    for heading in (
        "## What the model does",
        "## Intended use and limits",
        "## Training data and parameters",
        "## Quality control",
        "# Validation",
        "## How to run it",
    ):
        assert f"\n{heading}\n" in text, heading
    for words in (
        "microzoo predict",
        "bioimageio.core",
        "deepImageJ",
        "synthetic blobs",
        "| F1@0.5 | 0.88 | 0.67 |" if CASES[case][0] in ("semantic", "instances") else "| PSNR | 31.2 | 28 |",
        "qc_report.html",
    ):
        assert words in text, words
    if CASES[case][0] in ("care", "n2v"):
        assert "intensity quantification" in text and "hallucination" in text
    if CASES[case][0] == "instances":
        assert "config.microzoo.instance_settings" in text and "| foreground_threshold | 0.5 |" in text


def test_cover_is_input_beside_output(exported: dict[str, Path]) -> None:
    import imageio.v3 as iio

    cover = iio.imread(exported["semantic"].parent / "cover.png")
    # test input 64 x 88 | test output 64 x 88, enlarged 4 times
    assert cover.dtype == np.uint8 and cover.shape == (256, 704, 3)
    assert not np.array_equal(cover[:, :352], cover[:, 352:])


def test_untraceable_by_script_is_traced(tmp_path: Path, arch_file: Path, arch: Any) -> None:
    from microzoo.package.load import open_package
    from microzoo.runtime.reproduce import test_package

    spec = _spec(arch_file, "care", architecture_callable="TraceOnly")
    rdf = export_package(_network(arch, spec), out_dir=tmp_path / "pkg", spec=spec)
    assert "TorchScript, traced" in (rdf.parent / "README.md").read_text()
    assert all(r.passed for r in test_package(open_package(rdf)))


def test_given_cover_small_test_image_and_progress(tmp_path: Path, arch_file: Path, arch: Any) -> None:
    import imageio.v3 as iio

    cover = np.zeros((40, 80, 3), np.uint8)
    cover[:, 40:] = 255
    spec = _spec(arch_file, "care", cover=cover, test_input=_image((10, 12)), qc={}, training={})
    calls = []
    rdf = export_package(
        _network(arch, spec),
        out_dir=tmp_path / "pkg",
        spec=spec,
        progress=lambda done, total, what: calls.append((done, total)),
    )
    np.testing.assert_array_equal(iio.imread(rdf.parent / "cover.png"), cover)
    assert np.load(rdf.parent / "test_input.npy").shape == (1, 1, 16, 16)  # padded up to the minimum
    assert calls[-1][0] == calls[-1][1] and [c[0] for c in calls] == sorted(c[0] for c in calls)
    text = (rdf.parent / "README.md").read_text()
    assert "No quality-control figures were recorded." in text and "# Validation" in text


def test_export_replaces_an_older_package(tmp_path: Path, arch_file: Path, arch: Any) -> None:
    spec = _spec(arch_file, "n2v")
    out = tmp_path / "pkg"
    export_package(_network(arch, spec, seed=1), out_dir=out, spec=spec)
    first = np.load(out / "test_output.npy")
    export_package(_network(arch, spec, seed=2), out_dir=out, spec=spec)
    assert not np.allclose(np.load(out / "test_output.npy"), first)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"architecture_kwargs": {"in_channels": 1, "out_channels": 3}}, "does not rebuild"),
        ({"architecture_callable": "Missing"}, "defines no 'Missing'"),
        ({"license": "not-a-licence"}, "license"),
        ({"in_channels": 2}, "channel"),
        ({"halo": 8}, "halo"),
        ({"normalization_percentiles": (99.0, 1.0)}, "percentiles"),
        ({"task": "unet"}, "not a training task; choose one of semantic, instances, care, n2v"),
        ({"output_scale": ([2.0, 3.0], [0.0])}, "output_scale gives 2 gains and 1 offsets"),
    ],
)
def test_failed_export_leaves_nothing(
    tmp_path: Path, arch_file: Path, arch: Any, changes: dict[str, Any], message: str
) -> None:
    good = _spec(arch_file, "semantic")
    spec = _spec(arch_file, "semantic", **changes)
    with pytest.raises(ConfigError, match=message):
        export_package(_network(arch, good), out_dir=tmp_path / "pkg", spec=spec)
    assert list(tmp_path.iterdir()) == []


def test_refuses_a_folder_that_is_not_a_package(tmp_path: Path, arch_file: Path, arch: Any) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "notes.txt").write_text("mine")
    spec = _spec(arch_file, "semantic")
    with pytest.raises(OutputError, match="not a model package"):
        export_package(_network(arch, spec), out_dir=tmp_path / "pkg", spec=spec)
    assert (tmp_path / "pkg" / "notes.txt").read_text() == "mine"


def test_network_is_not_modified(tmp_path: Path, arch_file: Path, arch: Any) -> None:
    spec = _spec(arch_file, "semantic")
    net = _network(arch, spec).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    export_package(net, out_dir=tmp_path / "pkg", spec=spec)
    assert net.training and all((before[k] == v).all() for k, v in net.state_dict().items())


@pytest.mark.parametrize("task, options", [("n2v", {"n2v2": True}), ("semantic", {"batch_norm": True})])
def test_microzoo_unet(tmp_path: Path, task: str, options: dict[str, Any]) -> None:
    """The U-Net of microzoo's training pipelines, shipped as its own architecture source."""
    import torch
    from _reference import failure_messages, reference_test, test_passed

    from microzoo.package.load import open_package
    from microzoo.runtime.reproduce import test_package
    from microzoo.train import models

    out_channels = 2 if task == "semantic" else 1
    kwargs = {
        "in_channels": 1,
        "out_channels": out_channels,
        "spatial_dims": 2,
        "depth": 2,
        "base_features": 4,
        **options,
    }
    torch.manual_seed(0)
    net = models.UNet(**kwargs)
    spec = ExportSpec(
        name=f"microzoo U-Net {task}",
        description="microzoo's U-Net, tiny and untrained.",
        task=task,
        spatial_dims=2,
        in_channels=1,
        out_channels=out_channels,
        architecture_source=Path(models.__file__),
        architecture_callable="UNet",
        architecture_kwargs=kwargs,
        size_min=16,
        size_step=4,
        halo=6,
        postprocessing="softmax" if task == "semantic" else "none",
        test_input=_image((70, 90)),
    )
    rdf = export_package(net, out_dir=tmp_path / "unet", spec=spec)
    assert all(r.passed for r in test_package(open_package(rdf)))
    summary = reference_test(rdf)
    assert test_passed(summary), failure_messages(summary)
