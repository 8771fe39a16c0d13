"""Training: tiny end-to-end runs of every task on 64x64 crops of real data, one 3-D run,
determinism, resume, early stopping, time limit, configs and data handling."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import torch
import yaml
from typer.testing import CliRunner

from microzoo.cli import app
from microzoo.errors import ConfigError, DataError
from microzoo.train.config import (
    TrainingConfig,
    care_config,
    instances_config,
    load_config,
    n2v_config,
    save_config,
    semantic_config,
    short_form_config,
)
from microzoo.train.data import PatchSampler, Sample, load_samples, split_samples
from microzoo.train.loop import cosine_rate, fit, load_checkpoint
from microzoo.train.run import train
from microzoo.train.tasks.semantic import class_map

N = 5  # images per tiny data set


def _tiny(config, *, epochs: int = 2, export: bool = False):
    """Depth 2, 8 features, 32-pixel patches, 2 steps of 4 per epoch."""
    config.network.depth = 2
    config.network.base_features = 8
    config.data.validation_patches = 4
    config.training.epochs = epochs
    config.training.steps_per_epoch = 2
    config.training.batch_size = 4 if config.data.spatial_dims == 2 else 2
    config.training.export = export
    return config


@pytest.fixture(scope="module")
def isbi(shared_data: Path, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("isbi")
    for folder in ("images", "labels"):
        (root / folder).mkdir()
        for i in range(N):
            image = iio.imread(shared_data / "isbi2012" / "train" / folder / f"{i:02d}.png")
            iio.imwrite(root / folder / f"{i:02d}.png", image[200:264, 200:264])
    return root


@pytest.fixture(scope="module")
def dsb(shared_data: Path, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dsb")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    source = shared_data / "dsb2018" / "train"
    for path in sorted((source / "images").glob("*.png"))[:N]:
        iio.imwrite(root / "images" / path.name, iio.imread(path)[:64, :64])  # RGBA PNG
        labels = tifffile.imread(source / "labels" / f"{path.stem}.tif")
        tifffile.imwrite(root / "labels" / f"{path.stem}.tif", labels[:64, :64])
    return root


@pytest.fixture(scope="module")
def w2s(shared_data: Path, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("w2s")
    for folder in ("noisy", "clean"):
        (root / folder).mkdir()
        for i in range(1, N + 1):
            image = tifffile.imread(shared_data / "w2s" / "train" / folder / f"{i:03d}.tif")
            tifffile.imwrite(root / folder / f"{i:03d}.tif", image[200:264, 200:264])
    return root


@pytest.fixture(scope="module")
def w2s_volumes(shared_data: Path, tmp_path_factory) -> Path:
    """Three 8x32x32 stacks of W2S fields (plain 3-D TIFF, no axes metadata)."""
    root = tmp_path_factory.mktemp("w2s3d")
    for folder in ("noisy", "clean"):
        (root / folder).mkdir()
        for v in range(3):
            planes = [tifffile.imread(shared_data / "w2s" / "train" / folder / f"{v * 8 + i + 1:03d}.tif")
                      for i in range(8)]  # fmt: skip
            tifffile.imwrite(root / folder / f"{v}.tif", np.stack([p[100:132, 100:132] for p in planes]))
    return root


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["network"]


def _same_weights(a: Path, b: Path) -> bool:
    first, second = _weights(a), _weights(b)
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


# ------------------------------------------------------------------ end to end, every task


def test_semantic_isbi_writes_model_report_curves_and_package(isbi: Path, tmp_path: Path) -> None:
    # ISBI 2012 draws the membranes as 0: foreground "zero" makes them the class the U-Net learns
    config = semantic_config(images=isbi / "images", labels=isbi / "labels", patch_size=32, foreground="zero")
    config = _tiny(config, export=True)
    result = train(config, out_dir=tmp_path / "out")
    assert load_config(result.config) == config
    rows = (tmp_path / "out" / "curves" / "loss.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,train_loss,val_loss,val_iou") and len(rows) == 3
    assert result.curves_png.stat().st_size > 1000 and result.best_checkpoint.exists()
    metrics = json.loads(result.metrics.read_text())
    assert metrics["task"] == "semantic" and metrics["methods"][0] == "U-Net" and "Otsu" in metrics["methods"][1]
    # the U-Net's membrane probabilities are calibrated against the truth; Otsu gives none
    assert list(metrics["calibration"]) == ["U-Net"] and 0 <= metrics["calibration"]["U-Net"]["ece"] <= 1
    assert {"mean_iou", "baseline mean_iou"} <= set(result.figures)
    description = yaml.safe_load(result.package.read_text())
    assert description["format_version"].startswith("0.5")
    assert {w for w in description["weights"]} == {"pytorch_state_dict", "torchscript", "onnx"}
    # four training images: their quarters complete the fingerprint, so predictions get a trust note
    assert description["config"]["microzoo"]["fingerprint"] == "training_fingerprint.json"


def test_instances_dsb_chooses_thresholds_on_validation_images(dsb: Path, tmp_path: Path) -> None:
    config = _tiny(instances_config(images=dsb / "images", labels=dsb / "labels", patch_size=32), export=True)
    result = train(config, out_dir=tmp_path / "out")
    chosen = yaml.safe_load((tmp_path / "out" / "instance_settings.yaml").read_text())
    assert {"foreground_threshold", "seed_threshold"} <= set(chosen["settings"]) and chosen["search"]["rows"]
    # the chosen thresholds travel with the model: any microzoo user gets the same instances
    description = yaml.safe_load(result.package.read_text())
    assert description["config"]["microzoo"]["instance_settings"] == chosen["settings"]
    assert {"f1@0.5", "baseline f1@0.5"} <= set(result.figures)
    assert "val_f1" in result.history[-1]
    calibration = json.loads(result.metrics.read_text())["calibration"]  # of the foreground channel
    assert list(calibration) == ["U-Net"] and len(calibration["U-Net"]["counts"]) == 10
    assert 0 <= calibration["U-Net"]["ece"] <= 1


def test_care_w2s_is_compared_with_a_tuned_gaussian_and_the_noisy_input(w2s: Path, tmp_path: Path) -> None:
    config = _tiny(care_config(images=w2s / "noisy", targets=w2s / "clean", patch_size=32))
    result = train(config, out_dir=tmp_path / "out")
    metrics = json.loads(result.metrics.read_text())
    assert metrics["methods"][0] == "CARE" and metrics["methods"][2] == "noisy input"
    assert metrics["methods"][1].startswith("Gaussian")
    assert {"psnr_fitted", "baseline psnr_fitted"} <= set(result.figures) and result.package is None
    verdict = result.verdict  # against the Gaussian, on the figure the report ranks by
    assert verdict is not None and (verdict.model, verdict.baseline) == tuple(metrics["methods"][:2])
    assert verdict.metric == "psnr_fitted" and verdict.difference == pytest.approx(
        result.figures["psnr_fitted"] - result.figures["baseline psnr_fitted"]
    )


def test_n2v_in_3d_on_stacks_exports_a_package_with_its_fingerprint(w2s_volumes: Path, tmp_path: Path) -> None:
    config = _tiny(n2v_config(images=w2s_volumes / "noisy", targets=w2s_volumes / "clean", spatial_dims=3,
                              patch_size=(8, 16, 16)), export=True)  # fmt: skip
    result = train(config, out_dir=tmp_path / "out")
    assert result.report.exists() and np.isfinite(result.figures["psnr_fitted"])
    # three stacks: planes of each make the fingerprint, so 3-D predictions get a trust note too
    description = yaml.safe_load(result.package.read_text())
    assert [op["id"] for op in description["outputs"][0]["postprocessing"]] == ["scale_linear", "ensure_dtype"]
    assert description["config"]["microzoo"]["fingerprint"] == "training_fingerprint.json"
    assert (result.package.parent / "training_fingerprint.json").exists()
    # Noise2Void keeps its last epoch (its validation loss is too noisy to choose by), annealed by the
    # cosine schedule: the package holds the last checkpoint's weights and every front end says so
    assert (config.training.keep, config.training.scheduler) == ("last", "cosine")
    assert config.training.early_stopping_patience is None
    assert result.kept_epoch == len(result.history) == 2 and "the last epoch, 2," in result.kept
    from microzoo.train.export_descr import STATE_DICT_FILE

    packaged = torch.load(result.package.parent / STATE_DICT_FILE, weights_only=True)
    last = load_checkpoint(result.last_checkpoint)["network"]
    assert packaged.keys() == last.keys() and all(torch.equal(packaged[k], last[k]) for k in last)
    assert description["config"]["microzoo"]["training"]["keep"] == "last"
    # 3-D keeps the former halo: the format's size rule would pad thin stacks to twice the radius
    assert description["outputs"][0]["axes"][-1]["halo"] == 16


def test_restoration_package_answers_in_the_input_units_and_tiles_without_seams(
    w2s: Path, shared_data: Path, tmp_path: Path
) -> None:
    from _reference import reference_predict

    import microzoo
    from microzoo.train.data import normalize_percentiles
    from microzoo.train.tasks.skeleton import (
        build_network,
        export_halo,
        load_best,
        network_kwargs,
        predict_image,
        receptive_radius,
    )

    # CARE's residual U-Net starts near the identity: after a few steps its output is a restored
    # input, so the package's output must lie in the input's range (0..255 on W2S), not in 0..1
    config = _tiny(care_config(images=w2s / "noisy", targets=w2s / "clean", patch_size=32), export=True)
    result = train(config, out_dir=tmp_path / "out")
    description = yaml.safe_load(result.package.read_text())
    assert [op["id"] for op in description["outputs"][0]["postprocessing"]] == ["scale_linear", "ensure_dtype"]
    scale = description["config"]["microzoo"]["output_scale"]
    raw = tifffile.imread(w2s / "noisy" / "001.tif")  # W2S: uint8, 0..255
    assert raw.dtype == np.uint8 and scale["gain"][0] > 50  # the training images' percentile range, in 0..255
    ours = np.squeeze(microzoo.load_model(result.package.parent).predict(raw, axes="yx")["output"])
    core = np.squeeze(reference_predict(result.package, {"input": raw[None, None].astype(np.float32)},
                                        weight_format="torchscript")["output"])  # fmt: skip
    np.testing.assert_allclose(ours, core, rtol=1e-3, atol=1e-2)
    # the network's normalised output, mapped back by the stored gain and offset
    network = load_best(build_network(config, in_channels=1, out_channels=1), result.best_checkpoint)
    normalised = predict_image(network, normalize_percentiles(raw[None].astype(np.float32)), multiple=4)[0]
    np.testing.assert_allclose(ours, normalised * scale["gain"][0] + scale["offset"][0], rtol=1e-3, atol=1e-2)
    # in the input's units: the denoised image lies in the raw image's range, not in 0..1
    assert np.percentile(raw, 1) - 20 < np.median(ours) < np.percentile(raw, 99) + 20
    assert abs(float(ours.mean()) - float(raw.mean())) < 0.25 * float(np.ptp(raw))

    # the declared halo covers the network's receptive field (radius 22 at depth 2, rounded up to
    # the tile grid of 4), and a W2S field predicted in small tiles equals it predicted in one
    kwargs = network_kwargs(config, in_channels=1, out_channels=1)
    halo = description["outputs"][0]["axes"][-1]["halo"]
    assert halo == export_halo(kwargs) == 24 and receptive_radius(kwargs) == 22
    field = tifffile.imread(shared_data / "w2s" / "test" / "noisy" / "081.tif")[:256, :256]
    model = microzoo.load_model(result.package.parent)
    whole = model.predict(field, axes="yx", tile=256 + 2 * halo)["output"]  # one tile
    tiled = model.predict(field, axes="yx", tile=2 * halo + 16)["output"]  # 16 new pixels per tile
    np.testing.assert_allclose(tiled, whole, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize(
    "n2v2, upsampling, expected", [(False, "transposed", 22), (True, "transposed", 25), (False, "linear", 26),
                                   (True, "linear", 29)]
)  # fmt: skip
def test_the_receptive_radius_is_the_farthest_input_pixel_that_changes_an_output_pixel(
    n2v2: bool, upsampling: str, expected: int
) -> None:
    import torch

    from microzoo.train.models import UNet
    from microzoo.train.tasks.skeleton import receptive_radius

    radius = receptive_radius({"depth": 2, "n2v2": n2v2, "batch_norm": True, "upsampling": upsampling})
    assert radius == expected
    torch.manual_seed(1)
    # other weights, other features
    network = UNet(1, 1, depth=2, base_features=8, n2v2=n2v2, upsampling=upsampling).double().eval()
    image = torch.rand(1, 1, 96, 96, dtype=torch.float64)

    def changed(distance: int) -> list[bool]:
        """Whether the centre output pixel changes when one input pixel at this (Chebyshev) distance does:
        along both axes, on the diagonals and between them, every sign."""
        offsets = {(s * distance, t * k) for k in (0, distance // 2, distance) for s in (-1, 1) for t in (-1, 1)}
        offsets |= {(b, a) for a, b in offsets}
        batch = image.repeat(len(offsets) + 1, 1, 1, 1)
        for i, (dy, dx) in enumerate(sorted(offsets), start=1):
            batch[i, 0, 48 + dy, 48 + dx] += 1.0
        with torch.no_grad():
            centre = network(batch)[:, 0, 48, 48]
        return (centre[1:] != centre[0]).tolist()

    assert not any(changed(radius + 1))  # nothing beyond the radius reaches the pixel
    assert any(changed(radius))  # something at the radius does


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_blur_pooling_gives_max_pooling_values_and_gradients_and_exports_with_standard_operations(
    spatial_dims: int,
) -> None:
    """N2V2's max-blur pooling takes its 2-wide max one axis at a time, with its own backward in
    training: values and gradients are those of torch's max pooling at stride 1 over a
    replicate-padded edge, and TorchScript (scripted or traced) gives the eager network's output."""
    import torch
    from torch.nn import functional

    from microzoo.runtime.torch_export import quiet_torch
    from microzoo.train.models import BlurPool, UNet

    pool = BlurPool(3, spatial_dims)
    torch.manual_seed(0)
    shape = (2, 3, 16, 12) if spatial_dims == 2 else (2, 3, 8, 16, 12)
    x = torch.rand(shape, dtype=torch.float64, requires_grad=True)
    x.data[0, 0, :4, :4] = 0.5  # ties: the gradient goes to one of them, none is lost
    max_pool = functional.max_pool2d if spatial_dims == 2 else functional.max_pool3d
    reference = max_pool(functional.pad(x, (0, 1) * spatial_dims, mode="replicate"), 2, stride=1)
    reference = functional.pad(reference, (1, 1) * spatial_dims, mode="reflect")
    conv = functional.conv2d if spatial_dims == 2 else functional.conv3d
    reference = conv(reference, pool.kernel.double(), stride=2, groups=3)
    ours = pool.double()(x)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-12)
    weights = torch.randn_like(ours)
    (grad_ours,) = torch.autograd.grad(ours, x, weights)
    (grad_reference,) = torch.autograd.grad(reference, x, weights)
    torch.testing.assert_close(grad_ours, grad_reference, rtol=0, atol=1e-12)
    assert float(grad_ours.sum()) == pytest.approx(float(weights.sum()) * 1.0, rel=1e-9)  # blur taps sum to 1

    network = UNet(1, 1, spatial_dims=spatial_dims, depth=2, base_features=4, n2v2=True).eval()
    image = torch.rand((1, 1) + (16,) * spatial_dims)
    with torch.no_grad(), quiet_torch():  # torch deprecates TorchScript, which the zoo format still needs
        eager = network(image)
        assert torch.equal(torch.jit.script(network)(image), eager)
        assert torch.equal(torch.jit.trace(network, image)(image), eager)


def test_linear_upsampling_narrows_the_blocks_to_careamics_size() -> None:
    """`upsampling="linear"`: weight-free upsampling, the blocks before it halve the features (as
    CAREamics' and the original N2V's U-Nets): 82 instead of 115 thousand weights at depth 2 and 16
    features, in 2-D and 3-D, and an output of the input's shape."""
    import torch

    from microzoo.train.models import UNet

    def weights(network: torch.nn.Module) -> int:
        return sum(p.numel() for p in network.parameters())

    assert weights(UNet(1, 1, depth=2, base_features=16, n2v2=True)) == 114_769
    assert weights(UNet(1, 1, depth=2, base_features=16, n2v2=True, upsampling="linear")) == 81_345
    for dims, shape in ((2, (2, 1, 32, 48)), (3, (1, 1, 8, 16, 16))):
        network = UNet(1, 1, spatial_dims=dims, depth=2, base_features=4, residual=True, upsampling="linear")
        assert not any(isinstance(m, (torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)) for m in network.modules())
        assert network(torch.rand(shape)).shape == shape
    with pytest.raises(ValueError, match="upsampling must be 'transposed' or 'linear'"):
        UNet(1, 1, upsampling="nearest")


# ------------------------------------------------------------------ determinism, resume, stopping


class _Interrupted(Exception):
    pass


def test_same_seed_same_weights_and_resume_reaches_the_same_result(w2s: Path, tmp_path: Path) -> None:
    config = _tiny(n2v_config(images=w2s / "noisy", patch_size=32, variant="n2v"))  # no clean images: no QC
    first = train(config, out_dir=tmp_path / "a")
    assert first.report is None and first.figures == {} and len(first.history) == 2
    second = train(config, out_dir=tmp_path / "b")
    assert _same_weights(first.last_checkpoint, second.last_checkpoint)
    assert [r["train_loss"] for r in first.history] == [r["train_loss"] for r in second.history]

    def interrupt(done: int, total: int, description: str) -> None:
        if description.startswith("epoch 2/2"):
            raise _Interrupted

    with pytest.raises(_Interrupted):
        train(config, out_dir=tmp_path / "c", progress=interrupt)
    assert load_checkpoint(tmp_path / "c" / "checkpoints" / "last.pt")["epoch"] == 0  # one epoch saved
    with pytest.raises(ConfigError, match="resume"):
        train(config, out_dir=tmp_path / "c")
    resumed = train(config, out_dir=tmp_path / "c", resume=True)
    assert _same_weights(first.last_checkpoint, resumed.last_checkpoint)
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in first.history]
    assert resumed.history[1]["seconds"] > resumed.history[0]["seconds"]


def _fit_constant(tmp_path: Path, **settings) -> object:
    """A one-layer network whose validation figure never improves."""
    network = torch.nn.Conv2d(1, 1, 3, padding=1)
    data = np.random.default_rng(0).normal(size=(2, 1, 8, 8)).astype(np.float32)
    return fit(network, sample_batch=lambda rng: (data, data), loss_fn=torch.nn.functional.mse_loss,
               validate=lambda net: {"val_loss": 1.0}, monitor="val_loss", mode="min",
               settings=TrainingConfig(steps_per_epoch=2, **settings), out_dir=tmp_path)  # fmt: skip


def test_early_stopping_and_time_limit_keep_the_best_checkpoint(tmp_path: Path) -> None:
    stopped = _fit_constant(tmp_path / "early", epochs=50, early_stopping_patience=3)
    assert stopped.stopped == "early stopping" and len(stopped.history) == 4 and stopped.best_epoch == 1
    assert stopped.best_checkpoint.exists()
    timed = _fit_constant(tmp_path / "time", epochs=50, max_minutes=1e-6)
    assert timed.stopped == "time limit" and len(timed.history) == 1 and timed.best_checkpoint.exists()


def test_curves_png_is_drawn_after_the_first_epoch_then_at_most_every_interval_and_after_the_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import microzoo.train.loop as loop

    drawn: list[int] = []
    draw = loop._draw_curves
    monkeypatch.setattr(loop, "_draw_curves", lambda history, *args: (drawn.append(len(history)), draw(history, *args)))
    run = _fit_constant(tmp_path, epochs=4, early_stopping_patience=None)
    assert drawn == [1, 4] and run.curves_png.exists()  # the epochs between fall within the 30 s
    assert len(run.curves_csv.read_text().splitlines()) == 1 + 4  # the CSV after every epoch


def test_n2v_output_starts_on_the_scale_of_its_targets_and_learns_sooner(w2s: Path) -> None:
    """Noisy patches in percentile units spread about 0.1-0.2: an output on that scale from the start learns sooner."""
    from microzoo.train.tasks import n2v
    from microzoo.train.tasks.skeleton import build_network

    config = _tiny(n2v_config(images=w2s / "noisy", patch_size=32))
    train_samples, val_samples = split_samples(load_samples(config.data), fraction=0.2, seed=0)
    setup = n2v.setup(config, train_samples, val_samples)
    assert setup.output_statistics is not None
    mean, std = setup.output_statistics
    pixels = np.concatenate([s.image.ravel() for s in train_samples])
    assert mean == pytest.approx([pixels.mean()], rel=1e-4) and std == pytest.approx([pixels.std()], rel=1e-4)
    assert 0.02 < std[0] < 0.5
    val_loss = {}
    for scaled in (False, True):
        network = build_network(config, in_channels=1, out_channels=1)
        if scaled:
            network.set_output_statistics(mean, std)
        optimizer = torch.optim.Adam(network.parameters(), lr=4e-4)
        rng = np.random.default_rng(0)
        for _ in range(30):
            inputs, *targets = (torch.from_numpy(a) for a in setup.sample_batch(rng))
            optimizer.zero_grad()
            setup.loss_fn(network(inputs), *targets).backward()
            optimizer.step()
        val_loss[scaled] = setup.validate(network)["val_loss"]
    assert val_loss[True] < 0.5 * val_loss[False], val_loss
    # state dicts saved before the output buffers existed load with gain 1 and offset 0
    old = {k: v for k, v in network.state_dict().items() if not k.startswith("output_")}
    network.load_state_dict(old)
    assert network.output_gain.tolist() == [1.0] and network.output_offset.tolist() == [0.0]


def test_resume_after_a_time_limit_trains_on(tmp_path: Path) -> None:
    """A run stopped by its time budget continues when resumed (with a new budget)."""
    timed = _fit_constant(tmp_path, epochs=3, max_minutes=1e-6)
    assert timed.stopped == "time limit" and len(timed.history) == 1
    network = torch.nn.Conv2d(1, 1, 3, padding=1)
    data = np.random.default_rng(0).normal(size=(2, 1, 8, 8)).astype(np.float32)
    resumed = fit(network, sample_batch=lambda rng: (data, data), loss_fn=torch.nn.functional.mse_loss,
                  validate=lambda net: {"val_loss": 1.0}, monitor="val_loss", mode="min",
                  settings=TrainingConfig(steps_per_epoch=2, epochs=3), out_dir=tmp_path, resume=True)  # fmt: skip
    assert resumed.stopped == "epochs" and len(resumed.history) == 3


def test_cosine_schedule_anneals_over_the_steps_or_the_time_budget(tmp_path: Path) -> None:
    settings = TrainingConfig(epochs=10, steps_per_epoch=10, learning_rate=1e-3, scheduler="cosine")
    assert cosine_rate(settings, 0, 0.0) == pytest.approx(1e-3)
    assert cosine_rate(settings, 50, 0.0) == pytest.approx((1e-3 + 1e-5) / 2)
    assert cosine_rate(settings, 100, 0.0) == pytest.approx(1e-5)
    timed = settings.model_copy(update={"max_minutes": 2.0})
    assert cosine_rate(timed, 10, 1.0) == pytest.approx((1e-3 + 1e-5) / 2)  # half the budget spent
    assert cosine_rate(timed, 10, 5.0) == pytest.approx(1e-5)  # past the deadline: the floor
    run = _fit_constant(tmp_path, epochs=4, scheduler="cosine", early_stopping_patience=None)
    rates = [row["learning_rate"] for row in run.history]
    # the default rate 4e-4, annealed to its hundredth
    assert rates == sorted(rates, reverse=True) and rates[-1] == pytest.approx(4e-6)


# ------------------------------------------------------------------ configuration and data


def test_n2v_keeps_the_last_epoch_unless_its_config_says_otherwise(tmp_path: Path) -> None:
    defaults = n2v_config(images="noisy")
    assert (defaults.training.keep, defaults.training.scheduler, defaults.training.early_stopping_patience) == (
        "last", "cosine", None)  # fmt: skip
    care = care_config(images="noisy", targets="clean")
    assert (care.training.keep, care.training.scheduler, care.training.early_stopping_patience) == (
        "best", "plateau", 20)  # fmt: skip
    path = tmp_path / "n2v.yaml"
    path.write_text(yaml.safe_dump({"task": "n2v", "data": {"images": "noisy"},
                                    "training": {"keep": "best", "early_stopping_patience": 5}}))  # fmt: skip
    given = load_config(path)
    assert (given.training.keep, given.training.scheduler, given.training.early_stopping_patience) == (
        "best", "cosine", 5)  # fmt: skip
    path.write_text(yaml.safe_dump({"task": "n2v", "data": {"images": "noisy"}, "training": None}))
    assert load_config(path).training.keep == "last"


def test_config_yaml_round_trip_with_relative_paths(tmp_path: Path) -> None:
    config = care_config(images="noisy", targets="clean", epochs=7, patch_size=64)
    path = save_config(config, tmp_path / "care.yaml")
    loaded = load_config(path)
    assert loaded.data.images == tmp_path / "noisy" and loaded.training.epochs == 7
    assert loaded.data.patch_size == (64, 64) and loaded.network.residual
    assert loaded.model_dump(exclude={"data"}) == config.model_dump(exclude={"data"})


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"task": "semantic", "data": {"images": "a"}}, "data.labels"),
        ({"task": "care", "data": {"images": "a", "targets": "b"}, "training": {"epocs": 3}}, "training.epocs"),
        ({"task": "n2v", "data": {"images": "a", "patch_size": [60, 60]}}, "data.patch_size"),
        ({"task": "n2v", "data": {"images": "a"}, "training": {"learning_rate": -1}}, "training.learning_rate"),
        ({"task": "segment", "data": {"images": "a"}}, "task"),
        ({"task": "semantic", "data": {"images": "a", "labels": "b"}, "foreground": "membranes"}, "foreground"),
    ],
)
def test_config_errors_name_the_field(tmp_path: Path, data: dict, field: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(path)


def test_names_the_package_format_refuses_are_refused_before_training_and_made_from_folders(tmp_path: Path) -> None:
    """A name the zoo format refuses (under 5 characters, a dot) fails when the config is read,
    not at export after the whole training; names made from a folder or a layer are made to fit."""
    from microzoo.train import package_name

    for bad, why in (("abc", "3 characters"), ("cells.v2", "'.'")):
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump({"task": "n2v", "name": bad, "data": {"images": "a"}}))
        with pytest.raises(ConfigError, match=f"name.*{why}.*5 to 128"):
            load_config(path)
    assert package_name("n2v-my.images [raw]") == "n2v-my-images (raw)"
    assert package_name("ab") == "ab-model"
    assert package_name("x" * 200) == "x" * 128
    noisy = tmp_path / "w2s.noisy"
    noisy.mkdir()
    config = short_form_config("n2v", images=noisy, name=package_name(f"n2v-{noisy.name}"))
    assert config.name == "n2v-w2s-noisy"


def test_a_minimal_n2v_config_gets_the_network_of_its_variant(tmp_path: Path) -> None:
    """`network.n2v2` follows `variant` unless given: a YAML with only the data trains N2V2 (the default
    variant) and `variant: n2v` the plain network; a contradiction given explicitly is still refused."""
    path = tmp_path / "n2v.yaml"
    for extra, n2v2 in (({}, True), ({"variant": "n2v"}, False), ({"network": {"depth": 2}}, True)):
        path.write_text(yaml.safe_dump({"task": "n2v", "data": {"images": "a"}, **extra}))
        config = load_config(path)
        assert config.network.n2v2 is n2v2 and config.variant == ("n2v2" if n2v2 else "n2v")
    assert load_config(path).network.depth == 2
    # N2V's network upsamples linearly unless the config says otherwise; other tasks transpose
    assert load_config(path).network.upsampling == "linear"
    path.write_text(yaml.safe_dump({"task": "n2v", "data": {"images": "a"}, "network": {"upsampling": "transposed"}}))
    assert load_config(path).network.upsampling == "transposed" and load_config(path).network.n2v2
    assert care_config(images=tmp_path, targets=tmp_path).network.upsampling == "transposed"
    path.write_text(yaml.safe_dump({"task": "n2v", "data": {"images": "a"}, "network": {"n2v2": False}}))
    with pytest.raises(ConfigError, match="network.n2v2 is False but variant is 'n2v2'"):
        load_config(path)


def test_each_task_has_one_name_and_former_names_are_refused_with_the_new_one(tmp_path: Path) -> None:
    from microzoo.train.tasks.registry import TASKS

    assert list(TASKS) == ["semantic", "instances", "care", "n2v"]
    for name, task in TASKS.items():  # the config class, its factory and the task's own module agree on the name
        assert task.config_class.model_fields["task"].default == name
        assert task.module.endswith(f".{name}") and task.factory.__name__ == f"{name}_config"
    path = tmp_path / "old.yaml"
    for former in ("unet", "segmentation"):
        path.write_text(yaml.safe_dump({"task": former, "data": {"images": "a", "labels": "b"}}))
        with pytest.raises(ConfigError, match="now called 'semantic'"):
            load_config(path)
    result = CliRunner().invoke(app, ["train", "unet", "--images", str(tmp_path), "--labels", str(tmp_path),
                                      "--out", str(tmp_path / "x")])  # fmt: skip
    assert isinstance(result.exception, ConfigError) and "now called 'semantic'" in str(result.exception)
    assert not (tmp_path / "x").exists()


def test_two_class_foreground_is_label_above_zero_or_label_zero(shared_data: Path) -> None:
    labels = iio.imread(shared_data / "isbi2012" / "train" / "labels" / "00.png")  # 0 membrane, 255 interior
    membranes = class_map(labels, 2, foreground="zero")
    interior = class_map(labels, 2)
    assert np.array_equal(membranes, 1 - interior) and 0.1 < membranes.mean() < 0.35  # membranes: the minority
    assert np.array_equal(class_map(np.array([[0, 1], [2, 0]]), 3), [[0, 1], [2, 0]])  # several classes: as given


def test_data_split_grey_conversion_pairing_and_empty_patches(dsb: Path, isbi: Path, tmp_path: Path) -> None:
    # one of these DSB crops is colour histology: "grey" converts it (colour: tests/test_colour_training.py)
    config = instances_config(images=dsb / "images", labels=dsb / "labels", patch_size=32).data
    config = config.model_copy(update={"colour": "grey"})
    samples = load_samples(config, truth="labels")
    assert all(s.image.shape == (1, 64, 64) and s.truth.shape == (64, 64) for s in samples)
    assert [s.name for s in split_samples(samples, fraction=0.4, seed=3)[1]] == [
        s.name for s in split_samples(samples, fraction=0.4, seed=3)[1]
    ]
    assert len(split_samples(samples, fraction=0.4, seed=3)[1]) == 2
    splits = {tuple(s.name for s in split_samples(samples, fraction=0.4, seed=seed)[1]) for seed in range(6)}
    assert len(splits) > 1  # the seed decides the split
    (tmp_path / "labels").mkdir()
    with pytest.raises(DataError, match="no file of the same name"):
        load_samples(config.model_copy(update={"labels": tmp_path / "labels"}), truth="labels")
    foreground = np.zeros((64, 64), bool)
    foreground[:32, :32] = True
    mask = foreground[None].astype(np.float32)
    sampler = PatchSampler([mask], [mask], patch_size=(16, 16), foreground=[foreground], min_foreground=0.1)
    inputs, targets = sampler.sample(np.random.default_rng(1), 16)
    assert inputs.shape == targets.shape == (16, 1, 16, 16)
    assert all(t.mean() >= 0.1 for t in targets)  # empty patches were redrawn
    inputs_only = PatchSampler([mask], None, patch_size=(16, 16))  # self-supervised: input patches only
    assert inputs_only.sample_inputs(np.random.default_rng(1), 4).shape == (4, 1, 16, 16)
    with pytest.raises(TypeError, match="no targets; draw input patches with sample_inputs"):
        inputs_only.sample(np.random.default_rng(1), 4)
    with pytest.raises(DataError, match="a has no label or clean image"):
        Sample("a", mask, mask).require_truth()


def test_cli_train_from_yaml_and_short_form_errors(w2s: Path, tmp_path: Path) -> None:
    config = _tiny(n2v_config(images=w2s / "noisy", targets=w2s / "clean", patch_size=32), epochs=1)
    path = save_config(config, tmp_path / "n2v.yaml")
    runner = CliRunner()
    result = runner.invoke(app, ["train", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    verdict = next(line for line in result.output.splitlines() if line.startswith("Verdict: N2V2 "))
    assert "the classical baseline Gaussian (sigma" in verdict and "on psnr_fitted:" in verdict
    assert "Curves:" in result.output and (tmp_path / "out" / "config.yaml").exists()
    missing = runner.invoke(app, ["train", "semantic", "--images", str(w2s / "noisy"), "--out", str(tmp_path / "x")])
    assert missing.exit_code != 0 and "--labels" in str(missing.output) + str(missing.exception)
    wrong = runner.invoke(app, ["train", "semantic", "--images", str(w2s / "noisy"), "--labels", str(w2s / "clean"),
                                "--foreground", "membranes", "--out", str(tmp_path / "y")])  # fmt: skip
    assert isinstance(wrong.exception, ConfigError) and "foreground" in str(wrong.exception)
    assert not (tmp_path / "y").exists()  # refused before anything is written
    ignored = runner.invoke(app, ["train", "instances", "--images", str(w2s / "noisy"), "--labels", str(w2s / "clean"),
                                  "--foreground", "zero", "--out", str(tmp_path / "z")])  # fmt: skip
    message = str(ignored.exception)
    assert isinstance(ignored.exception, ConfigError) and "--foreground" in message and "train instances" in message
