"""Export a trained network as a BioImage Model Zoo package (format 0.5) that any zoo tool runs.

:func:`export_package` writes, into a temporary folder renamed onto ``out_dir`` only once the
description validates:

- weights in three formats: ``pytorch_state_dict`` (the original; the architecture source file,
  callable and kwargs included), ``torchscript`` (scripted, else traced) and ``onnx``
  (opset 17, dynamic batch and spatial axes), the last two naming the first as their parent;
  each is checked to reproduce the network before it is written;
- one input ``input`` (batch, channel, spatial axes of ``ParameterizedSize(min, step)``) whose
  preprocessing is ``ensure_dtype`` float32, ``scale_range`` between the percentiles given,
  per sample and channel, ``ensure_dtype`` float32: the normalisation lives in the package and
  every zoo tool recomputes it per image;
- one output ``output`` sized by reference to the input, with the halo, and the
  postprocessing asked for (sigmoid, softmax over channels, or none), then for restoration
  ``scale_linear`` back to the input's intensity units (``output_scale``);
- test tensors: the real test image cropped (or padded) to a valid size and the output the
  exported TorchScript gives for it, with the package's own processing;
- a cover (test input | test output), a README (intended use and limits per task, training,
  QC against the classical baseline, validation, how to run), tags, ``config.bioimageio``
  (task, training details, modality guess) and ``config.microzoo`` (normalisation, instance
  settings, fingerprint name, QC figures); the training fingerprint and the QC report as
  attachments (the description and its files: :mod:`microzoo.train.export_descr`).
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from microzoo.errors import ConfigError, OutputError, PackageError
from microzoo.io.atomic import atomic_output
from microzoo.package.architecture import architecture_callable
from microzoo.progress import ProgressCallback, no_progress
from microzoo.runtime.torch_export import Check, assert_reproduces, save_description, save_onnx, save_torchscript
from microzoo.train.export_descr import (
    INPUT_ID,
    ONNX_FILE,
    OUTPUT_ID,
    STATE_DICT_FILE,
    TORCHSCRIPT_FILE,
    build_description,
    preprocess,
)
from microzoo.train.tasks.registry import TASKS

#: largest test tensor side in 2-D and 3-D: a test tensor is an example, not a data set (and every
#: weight format is checked on it: a 3-D one of 32x128x128 keeps the export short)
TEST_SIDE_LIMIT = {2: {"y": 256, "x": 256}, 3: {"z": 32, "y": 128, "x": 128}}


class ExportSpec(BaseModel):
    """What :func:`export_package` needs to know besides the network itself.

    ``test_input`` is a real validation image with axes ``yx``/``zyx`` (one channel) or
    ``cyx``/``czyx``; ``size_min``/``size_step`` give the valid spatial sizes of the input
    (``size_min + n * size_step``) and ``halo`` the border of the output to discard when tiling.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str
    description: str
    task: str  # a name of microzoo.train.tasks.registry.TASKS
    spatial_dims: Literal[2, 3]
    in_channels: int
    out_channels: int
    architecture_source: Path
    architecture_callable: str
    architecture_kwargs: dict[str, Any]
    normalization_percentiles: tuple[float, float] = (1.0, 99.8)
    postprocessing: Literal["sigmoid", "softmax", "none"] = "none"
    #: (gain, offset) per output channel, applied after ``postprocessing`` (``scale_linear``):
    #: a restoration network's normalised output back in the input's intensity units
    output_scale: tuple[list[float], list[float]] | None = None
    size_min: int
    size_step: int
    halo: int
    test_input: np.ndarray
    tags: list[str] = []
    authors: list[str] = ["microzoo user"]
    license: str = "CC-BY-4.0"
    training: dict[str, Any] = {}
    qc: dict[str, Any] = {}
    fingerprint: Any | None = None
    cover: np.ndarray | None = None
    instance_settings: dict[str, Any] | None = None
    qc_report: Path | None = None
    #: the input channels' names (default ``channel0``, ...); a colour model's are
    #: :data:`microzoo.io.axes.COLOUR_CHANNELS`, which lets the runtime give it grey images too
    channel_names: tuple[str, ...] | None = None

    @property
    def spatial_axes(self) -> tuple[str, ...]:
        return ("z", "y", "x") if self.spatial_dims == 3 else ("y", "x")


def export_package(network: Any, *, out_dir: Path, spec: ExportSpec, progress: ProgressCallback | None = None) -> Path:
    """Write ``network`` as a model package into ``out_dir``; return its ``bioimageio.yaml``.

    Parameters
    ----------
    network
        The trained ``torch.nn.Module``; copied to the CPU, never modified.
    out_dir
        The package folder; replaced if it holds a package already, refused if it holds
        anything else.
    spec
        Everything else the package needs (see :class:`ExportSpec`).

    Raises
    ------
    ConfigError
        ``spec`` is inconsistent (channels, sizes, architecture, licence, ...).
    PackageError
        A weight format does not reproduce the network, or the description is not valid.
    OutputError
        ``out_dir`` exists and is not a model package.
    """
    progress = progress or no_progress
    out_dir = Path(out_dir)
    _check_spec(spec)
    if out_dir.exists() and (
        not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / "bioimageio.yaml").exists())
    ):
        raise OutputError(f"{out_dir} exists and is not a model package; choose a new or empty folder")
    net = copy.deepcopy(network).cpu().eval()
    x = _valid_test_input(spec)
    steps = 6
    with atomic_output(out_dir) as tmp:
        tmp.mkdir()
        progress(0, steps, "saving the weights")
        arch = tmp / spec.architecture_source.name
        shutil.copyfile(spec.architecture_source, arch)
        checks = _checks(net, spec, preprocess(spec, x))
        _save_state_dict(net, spec, arch, tmp / STATE_DICT_FILE, checks[1:])  # the source rebuilds the same net
        progress(1, steps, "converting to TorchScript")
        script_kind, outputs = save_torchscript(net, tmp / TORCHSCRIPT_FILE, checks)
        raw_test_output = outputs[0][0]
        progress(2, steps, "converting to ONNX")
        _save_onnx(net, spec, tmp / ONNX_FILE, checks)
        progress(3, steps, "computing the test output, cover and README")
        descr = build_description(tmp, spec, x, net, script_kind, raw_test_output)
        progress(4, steps, "validating the description")
        _save_and_validate(descr, tmp)
        progress(5, steps, "moving the package into place")
    progress(steps, steps, "package written")
    return out_dir / "bioimageio.yaml"


# --- checks and test tensors --------------------------------------------------------------


def _check_spec(spec: ExportSpec) -> None:
    if spec.task not in TASKS:
        raise ConfigError(f"task {spec.task!r} is not a training task; choose one of {', '.join(TASKS)}")
    image = np.asarray(spec.test_input)
    expected = (spec.spatial_dims, spec.spatial_dims + 1)
    if image.ndim not in expected:
        axes = "zyx or czyx" if spec.spatial_dims == 3 else "yx or cyx"
        raise ConfigError(f"test_input has shape {image.shape}; give a {spec.spatial_dims}-D image with axes {axes}")
    channels = 1 if image.ndim == spec.spatial_dims else image.shape[0]
    if channels != spec.in_channels:
        raise ConfigError(
            f"test_input has {channels} channel(s) but the network takes in_channels="
            f"{spec.in_channels}; give channels first (cyx/czyx) and as many as the network takes"
        )
    if spec.in_channels < 1 or spec.out_channels < 1:
        raise ConfigError("in_channels and out_channels must be at least 1")
    if spec.size_min < 1 or spec.size_step < 1 or spec.halo < 0:
        raise ConfigError(
            f"size_min ({spec.size_min}) and size_step ({spec.size_step}) must be positive "
            f"and halo ({spec.halo}) not negative"
        )
    if 2 * spec.halo >= spec.size_min:
        raise ConfigError(
            f"a halo of {spec.halo} on both sides leaves nothing of the smallest input "
            f"({spec.size_min}); raise size_min above {2 * spec.halo} or lower the halo"
        )
    low, high = spec.normalization_percentiles
    if not 0 <= low < high <= 100 or high <= 1:
        raise ConfigError(
            f"normalization_percentiles {spec.normalization_percentiles} must be percentiles "
            "(0-100) with low < high, e.g. (1.0, 99.8)"
        )
    if not spec.architecture_source.is_file():
        raise ConfigError(
            f"architecture_source {spec.architecture_source} is not a file; give the .py file that defines the network"
        )
    if spec.output_scale is not None and not (
        len(spec.output_scale[0]) == len(spec.output_scale[1]) == spec.out_channels
    ):
        raise ConfigError(
            f"output_scale gives {len(spec.output_scale[0])} gains and {len(spec.output_scale[1])} "
            f"offsets for {spec.out_channels} output channel(s); give one of each per channel"
        )
    if spec.qc_report is not None and not spec.qc_report.is_file():
        raise ConfigError(f"qc_report {spec.qc_report} is not a file")
    if spec.cover is not None:
        cover = np.asarray(spec.cover)
        if cover.dtype != np.uint8 or cover.ndim != 3 or cover.shape[2] != 3:
            raise ConfigError(f"cover must be an RGB uint8 image (height, width, 3), got {cover.dtype} {cover.shape}")


def _valid_test_input(spec: ExportSpec) -> np.ndarray:
    """The test image as float32 (batch, channel, *spatial), cropped (centred) or padded
    (symmetric) to the largest valid size within :data:`TEST_SIDE_LIMIT`."""
    image = np.asarray(spec.test_input, dtype=np.float32)
    if image.ndim == spec.spatial_dims:
        image = image[None]
    for axis, name in enumerate(spec.spatial_axes, start=1):
        n = image.shape[axis]
        limit = max(min(n, TEST_SIDE_LIMIT[spec.spatial_dims][name]), spec.size_min)
        size = spec.size_min + (limit - spec.size_min) // spec.size_step * spec.size_step
        if size <= n:
            start = (n - size) // 2
            image = np.take(image, np.arange(start, start + size), axis=axis)
        else:
            pad = [(0, 0)] * image.ndim
            pad[axis] = ((size - n) // 2, size - n - (size - n) // 2)
            image = np.pad(image, pad, mode="symmetric")
    return np.ascontiguousarray(image[None])


def _random_input(spec: ExportSpec, *, batch: int, extra_steps: int) -> np.ndarray:
    size = spec.size_min + extra_steps * spec.size_step
    rng = np.random.default_rng(0)
    return rng.normal(size=(batch, spec.in_channels) + (size,) * spec.spatial_dims).astype(np.float32)


def _torch_out(module: Any, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


# --- weights ------------------------------------------------------------------------------


def _checks(net: Any, spec: ExportSpec, x: np.ndarray) -> list[Check]:
    """(inputs, expected outputs) pairs: the preprocessed test input, and a small batch of 2 at
    another valid size (dynamic axes). Tracing and conversion use the small one (faster)."""
    other = _random_input(spec, batch=2, extra_steps=1)
    return [([x], [_torch_out(net, x)]), ([other], [_torch_out(net, other)])]


def _save_state_dict(net: Any, spec: ExportSpec, arch: Path, path: Path, checks: list[Check]) -> None:
    """Save the state dict, after checking that the packaged source rebuilds the network."""
    import torch

    try:
        json.dumps(spec.architecture_kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"architecture_kwargs must be plain numbers, strings, lists and dicts ({error})") from error
    try:
        factory = architecture_callable(arch, spec.architecture_callable)
    except PackageError as error:
        raise ConfigError(
            f"{error}; give the source file of the network and the name of its class or factory"
        ) from error
    try:
        rebuilt = factory(**spec.architecture_kwargs)
        rebuilt.load_state_dict(net.state_dict())
    except Exception as error:  # any error of user code: wrong kwargs, other layers
        raise ConfigError(
            f"{spec.architecture_callable}(**architecture_kwargs) from {arch.name} does not rebuild the "
            f"trained network ({error}); give the kwargs the network was built with"
        ) from error
    rebuilt.eval()
    for inputs, expected in checks:
        assert_reproduces("pytorch_state_dict", [_torch_out(rebuilt, inputs[0])], expected)
    torch.save({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, path)


def _save_onnx(net: Any, spec: ExportSpec, path: Path, checks: list[Check]) -> None:
    """ONNX with dynamic batch and spatial axes, checked with onnxruntime."""
    spatial = {d: name for d, name in enumerate(spec.spatial_axes, start=2)}
    dynamic = {
        INPUT_ID: {0: "batch", **spatial},
        OUTPUT_ID: {0: "batch", **{d: f"{OUTPUT_ID}_{a}" for d, a in spatial.items()}},
    }
    save_onnx(net, path, checks, input_names=[INPUT_ID], output_names=[OUTPUT_ID], dynamic_axes=dynamic)


def _save_and_validate(descr: Any, tmp: Path) -> None:
    save_description(descr, tmp, fix="fix the ExportSpec fields named")
