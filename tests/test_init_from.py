"""Training from a parent package (``training.init_from``, `microzoo train TASK --from MODEL`):
tiny runs on 64x64 crops of real DSB2018 images."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import pytest
import tifffile
import torch
import yaml
from _packages import built_package
from typer.testing import CliRunner

from microzoo.cli import app
from microzoo.errors import ConfigError
from microzoo.package.load import sha256_of
from microzoo.train.config import instances_config, semantic_config
from microzoo.train.export_descr import STATE_DICT_FILE
from microzoo.train.init_from import fine_tune, untrainable_reason
from microzoo.train.loop import load_checkpoint
from microzoo.train.run import train


def _crops(shared_data: Path, root: Path, start: int, n: int = 4) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    source = shared_data / "dsb2018" / "train"
    for path in sorted((source / "images").glob("*.png"))[start : start + n]:
        iio.imwrite(root / "images" / path.name, iio.imread(path)[:64, :64])
        labels = tifffile.imread(source / "labels" / f"{path.stem}.tif")
        tifffile.imwrite(root / "labels" / f"{path.stem}.tif", labels[:64, :64])
    return root


def _tiny(config, *, export: bool = False, lr: float | None = None):
    config.network.depth, config.network.base_features = 2, 8
    config.data.validation_patches = 4
    config.training.epochs, config.training.steps_per_epoch, config.training.batch_size = 1, 2, 4
    config.training.export = export
    if lr is not None:
        config.training.learning_rate, config.training.weight_decay = lr, 0.0
    return config


@pytest.fixture(scope="module")
def parent(shared_data: Path, tmp_path_factory) -> Path:
    """A tiny instances package exported by microzoo, trained on 4 DSB2018 crops."""
    data = _crops(shared_data, tmp_path_factory.mktemp("parent_data"), 0)
    config = _tiny(instances_config(images=data / "images", labels=data / "labels", patch_size=32), export=True)
    config.name = "tiny-nuclei"
    return train(config, out_dir=tmp_path_factory.mktemp("parent") / "run").package


def test_fine_tuning_starts_from_the_parent_and_the_package_records_it(
    parent: Path, shared_data: Path, tmp_path: Path
) -> None:
    data = _crops(shared_data, tmp_path / "data", 10)
    config = _tiny(instances_config(images=data / "images", labels=data / "labels", patch_size=32), export=True,
                   lr=1e-9)  # fmt: skip
    config.network.base_features = 16  # the parent's 8 wins: its weights must fit
    config.training.init_from = str(parent.parent)
    result = train(config, out_dir=tmp_path / "ft")
    parent_state = torch.load(parent.parent / STATE_DICT_FILE, weights_only=True)
    tuned = load_checkpoint(result.best_checkpoint)["network"]
    assert set(tuned) == set(parent_state)
    for key, value in parent_state.items():  # a learning rate of 1e-9 leaves the parent's weights
        if value.is_floating_point() and "running" not in key:
            assert torch.allclose(tuned[key], value, atol=1e-5), key
    assert any("base_features 16 -> 8" in n for n in result.notices)
    assert any("all" in n and "tiny-nuclei" in n for n in result.notices)
    assert yaml.safe_load(result.config.read_text())["network"]["base_features"] == 8
    description = yaml.safe_load(result.package.read_text())
    recorded = description["config"]["microzoo"]["parent"]
    assert recorded["name"] == "tiny-nuclei"
    assert recorded["sha256"] == sha256_of(parent.parent / STATE_DICT_FILE)
    assert Path(recorded["source"]) == parent.parent.resolve()
    assert description["config"]["microzoo"]["training"]["init_from"] == "tiny-nuclei"
    assert "tiny-nuclei" in (result.package.parent / "README.md").read_text()


def test_another_task_keeps_the_body_and_starts_the_head_fresh(parent: Path, shared_data: Path, tmp_path: Path) -> None:
    data = _crops(shared_data, tmp_path / "data", 10)
    config = _tiny(semantic_config(images=data / "images", labels=data / "labels", patch_size=32), lr=1e-9)
    config.training.init_from = str(parent)
    result = train(config, out_dir=tmp_path / "semantic")
    (notice,) = [n for n in result.notices if "start fresh" in n]
    assert "head.weight" in notice and "head.bias" in notice and "encoders" not in notice
    tuned = load_checkpoint(result.best_checkpoint)["network"]
    parent_state = torch.load(parent.parent / STATE_DICT_FILE, weights_only=True)
    assert tuned["head.weight"].shape[0] != parent_state["head.weight"].shape[0]
    assert torch.allclose(tuned["encoders.0.0.weight"], parent_state["encoders.0.0.weight"], atol=1e-5)


def test_packages_without_a_trainable_unet_are_refused_with_the_reason(
    example_model: Path, tmp_path_factory, tmp_path: Path
) -> None:
    config = instances_config(images=tmp_path, labels=tmp_path, patch_size=32)
    config.training.init_from = str(example_model)
    with pytest.raises(ConfigError, match=r"only torchscript, onnx weights.*pytorch_state_dict"):
        train(config, out_dir=tmp_path / "a")
    config.training.init_from = str(built_package(tmp_path_factory, "state_dict"))
    with pytest.raises(ConfigError, match="is not microzoo's U-Net"):
        train(config, out_dir=tmp_path / "b")
    assert not (tmp_path / "a" / "config.yaml").exists()


def test_cli_train_from_prints_what_it_started_from(parent: Path, shared_data: Path, tmp_path: Path) -> None:
    data = _crops(shared_data, tmp_path / "data", 20)
    args = ["train", "semantic", "--images", str(data / "images"), "--labels", str(data / "labels"),
            "--epochs", "1", "--patch", "32", "--from", str(parent.parent), "--out", str(tmp_path / "out")]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Note: started from the weights of tiny-nuclei" in result.output
    description = yaml.safe_load((tmp_path / "out" / "package" / "bioimageio.yaml").read_text())
    assert description["config"]["microzoo"]["parent"]["name"] == "tiny-nuclei"
    assert description["config"]["microzoo"]["qc"]  # QC against the baseline ran


def test_fine_tune_infers_the_parents_task_and_untrainable_reason_says_why(
    parent: Path, example_model: Path, shared_data: Path, tmp_path: Path
) -> None:
    assert untrainable_reason(str(parent)) is None
    assert "only torchscript, onnx weights" in (untrainable_reason(str(example_model)) or "")
    data = _crops(shared_data, tmp_path / "data", 30)
    result = fine_tune(str(parent), images=data / "images", labels=data / "labels", out_dir=tmp_path / "ft",
                       epochs=1, steps_per_epoch=1, batch_size=2, patch_size=32)  # fmt: skip
    assert result.task == "instances"
    assert yaml.safe_load(result.package.read_text())["config"]["microzoo"]["parent"]["name"] == "tiny-nuclei"


def test_a_parent_written_before_linear_upsampling_keeps_its_transposed_convolutions(tmp_path: Path) -> None:
    """Kwargs without `upsampling` (packages exported before the setting existed) describe the U-Net's
    default, transposed convolutions: a Noise2Void run (linear by default) started from such a parent
    adopts them, so every parent tensor fits."""
    from microzoo.train.config import n2v_config
    from microzoo.train.init_from import Parent, adopt_parent_network
    from microzoo.train.models import UNet

    kwargs = {"in_channels": 1, "out_channels": 1, "spatial_dims": 2, "depth": 2, "base_features": 8,
              "batch_norm": True, "residual": False, "n2v2": True}  # fmt: skip
    state = UNet(**kwargs).state_dict()
    parent = Parent(name="old-n2v", source=str(tmp_path), sha256="0" * 64, zoo_id=None, kwargs=kwargs, task="n2v",
                    state=state)  # fmt: skip
    config = n2v_config(images=tmp_path)
    assert config.network.upsampling == "linear"
    adopted, notices = adopt_parent_network(config, parent)
    assert adopted.network.upsampling == "transposed" and adopted.network.depth == 2
    assert any("upsampling linear -> transposed" in notice for notice in notices)
    rebuilt = UNet(**{**kwargs, "upsampling": adopted.network.upsampling}).state_dict()
    assert {k: tuple(v.shape) for k, v in rebuilt.items()} == {k: tuple(v.shape) for k, v in state.items()}
