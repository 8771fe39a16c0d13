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
  postprocessing asked for (sigmoid, softmax over channels, or none);
- test tensors: the real test image cropped (or padded) to a valid size and the output the
  exported TorchScript gives for it, with the package's own processing;
- a cover (test input | test output), a README (intended use and limits per task, training,
  QC against the classical baseline, validation, how to run), tags, ``config.bioimageio``
  (task, training details, modality guess) and ``config.microzoo`` (normalisation, instance
  settings, fingerprint name, QC figures); the training fingerprint and the QC report as
  attachments.
"""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from microzoo.errors import ConfigError, OutputError, PackageError
from microzoo.io.atomic import atomic_output
from microzoo.package.architecture import architecture_callable
from microzoo.progress import ProgressCallback, no_progress
from microzoo.train.export_docs import plain_yaml, readme_text, write_cover
from microzoo.train.tasks.registry import TASKS
from microzoo.trust.fingerprint import ATTACHMENT_NAME as FINGERPRINT_NAME

OPSET = 17
INPUT_ID, OUTPUT_ID = "input", "output"
#: largest test tensor side in 2-D and 3-D: a test tensor is an example, not a data set (and every
#: weight format is checked on it: a 3-D one of 32x128x128 keeps the export short)
TEST_SIDE_LIMIT = {2: {"y": 256, "x": 256}, 3: {"z": 32, "y": 128, "x": 128}}
STATE_DICT_FILE, TORCHSCRIPT_FILE, ONNX_FILE = "weights_state_dict.pt", "weights_torchscript.pt", "weights.onnx"
_TOLERANCE = dict(rtol=1e-3, atol=1e-3)  # as the spec's reproducibility defaults


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

    @property
    def spatial_axes(self) -> tuple[str, ...]:
        return ("z", "y", "x") if self.spatial_dims == 3 else ("y", "x")


def export_package(network: Any, *, out_dir: Path, spec: ExportSpec,
                   progress: ProgressCallback | None = None) -> Path:
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
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir())
                                                      and not (out_dir / "bioimageio.yaml").exists())):
        raise OutputError(f"{out_dir} exists and is not a model package; choose a new or empty folder")
    net = copy.deepcopy(network).cpu().eval()
    x = _valid_test_input(spec)
    steps = 6
    with atomic_output(out_dir) as tmp:
        tmp.mkdir()
        progress(0, steps, "saving the weights")
        arch = tmp / spec.architecture_source.name
        shutil.copyfile(spec.architecture_source, arch)
        checks = _checks(net, spec, _preprocess(spec, x))
        _save_state_dict(net, spec, arch, tmp / STATE_DICT_FILE, checks[1:])  # the source rebuilds the same net
        progress(1, steps, "converting to TorchScript")
        script_kind, raw_test_output = _save_torchscript(net, spec, tmp / TORCHSCRIPT_FILE, checks)
        progress(2, steps, "converting to ONNX")
        _save_onnx(net, spec, tmp / ONNX_FILE, checks)
        progress(3, steps, "computing the test output, cover and README")
        descr = _build_descr(tmp, spec, x, net, script_kind, raw_test_output)
        progress(4, steps, "validating the description")
        _save_and_validate(descr, tmp)
        progress(5, steps, "moving the package into place")
    progress(steps, steps, "package written")
    return out_dir / "bioimageio.yaml"


def _build_descr(tmp: Path, spec: ExportSpec, x: np.ndarray, net: Any, script_kind: str, raw: np.ndarray) -> Any:
    """The description (files written into ``tmp``); spec errors become :class:`ConfigError`."""
    import pydantic
    from bioimageio.spec import ValidationContext

    try:
        with ValidationContext(root=tmp, perform_io_checks=False):
            return _describe(tmp, spec, x, net, script_kind, raw)
    except pydantic.ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()[:6])
        raise ConfigError(f"the package description is not valid ({problems}); fix the ExportSpec "
                          "fields named (name, license, authors, tags, ...)") from error


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
        raise ConfigError(f"test_input has {channels} channel(s) but the network takes in_channels="
                          f"{spec.in_channels}; give channels first (cyx/czyx) and as many as the network takes")
    if spec.in_channels < 1 or spec.out_channels < 1:
        raise ConfigError("in_channels and out_channels must be at least 1")
    if spec.size_min < 1 or spec.size_step < 1 or spec.halo < 0:
        raise ConfigError(f"size_min ({spec.size_min}) and size_step ({spec.size_step}) must be positive "
                          f"and halo ({spec.halo}) not negative")
    if 2 * spec.halo >= spec.size_min:
        raise ConfigError(f"a halo of {spec.halo} on both sides leaves nothing of the smallest input "
                          f"({spec.size_min}); raise size_min above {2 * spec.halo} or lower the halo")
    low, high = spec.normalization_percentiles
    if not 0 <= low < high <= 100 or high <= 1:
        raise ConfigError(f"normalization_percentiles {spec.normalization_percentiles} must be percentiles "
                          "(0-100) with low < high, e.g. (1.0, 99.8)")
    if not spec.architecture_source.is_file():
        raise ConfigError(f"architecture_source {spec.architecture_source} is not a file; give the .py "
                          "file that defines the network")
    if spec.output_scale is not None and not (len(spec.output_scale[0]) == len(spec.output_scale[1])
                                               == spec.out_channels):
        raise ConfigError(f"output_scale gives {len(spec.output_scale[0])} gains and {len(spec.output_scale[1])} "
                          f"offsets for {spec.out_channels} output channel(s); give one of each per channel")
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


def _assert_reproduces(what: str, actual: np.ndarray, expected: np.ndarray) -> None:
    if actual.shape != expected.shape or not np.allclose(actual, expected, **_TOLERANCE):
        diff = float(np.max(np.abs(actual - expected))) if actual.shape == expected.shape else float("nan")
        raise PackageError(f"the {what} weights do not reproduce the network (shape {actual.shape} vs "
                           f"{expected.shape}, largest difference {diff:.3g}); the network may use "
                           "operations that this format cannot express")


@contextlib.contextmanager
def _quiet_torch() -> Iterator[None]:
    """torch 2.10+ deprecates TorchScript and the TorchScript-based ONNX exporter, which the
    zoo format still needs; tracing warns about Python values that become constants, which
    the check at a second size catches."""
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\..*")
        yield


# --- weights ------------------------------------------------------------------------------


_Check = tuple[np.ndarray, np.ndarray]


def _checks(net: Any, spec: ExportSpec, x: np.ndarray) -> list[_Check]:
    """(input, expected output) pairs: the preprocessed test input, and a small batch of 2 at
    another valid size (dynamic axes). Tracing and conversion use the small one (faster)."""
    other = _random_input(spec, batch=2, extra_steps=1)
    return [(x, _torch_out(net, x)), (other, _torch_out(net, other))]


def _save_state_dict(net: Any, spec: ExportSpec, arch: Path, path: Path, checks: list[_Check]) -> None:
    """Save the state dict, after checking that the packaged source rebuilds the network."""
    import torch

    try:
        json.dumps(spec.architecture_kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"architecture_kwargs must be plain numbers, strings, lists and dicts ({error})") from error
    try:
        factory = architecture_callable(arch, spec.architecture_callable)
    except PackageError as error:
        raise ConfigError(f"{error}; give the source file of the network and the name of its class or "
                          "factory") from error
    try:
        rebuilt = factory(**spec.architecture_kwargs)
        rebuilt.load_state_dict(net.state_dict())
    except Exception as error:  # any error of user code: wrong kwargs, other layers
        raise ConfigError(
            f"{spec.architecture_callable}(**architecture_kwargs) from {arch.name} does not rebuild the "
            f"trained network ({error}); give the kwargs the network was built with") from error
    rebuilt.eval()
    for inputs, expected in checks:
        _assert_reproduces("pytorch_state_dict", _torch_out(rebuilt, inputs), expected)
    torch.save({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, path)


def _save_torchscript(net: Any, spec: ExportSpec, path: Path, checks: list[_Check]) -> tuple[str, np.ndarray]:
    """Script the network (trace it if scripting fails); return ``"scripted"`` or ``"traced"``
    and the saved module's output for the first check's input (the package's test output)."""
    import torch

    failures = []
    for kind in ("scripted", "traced"):
        try:
            with _quiet_torch():
                module = torch.jit.script(net) if kind == "scripted" else torch.jit.trace(
                    net, torch.from_numpy(checks[-1][0]), check_trace=False)
                module.save(str(path))
                loaded = torch.jit.load(str(path)).eval()
            outputs = [_torch_out(loaded, inputs) for inputs, _ in checks]
            for output, (_, expected) in zip(outputs, checks):
                _assert_reproduces(f"{kind} TorchScript", output, expected)
            return kind, outputs[0]
        except Exception as error:  # scripting raises many error types; any means: try the next way
            failures.append(f"{kind}: {str(error).splitlines()[0] if str(error) else type(error).__name__}")
    path.unlink(missing_ok=True)
    raise PackageError("the network cannot be converted to TorchScript (" + "; ".join(failures) + "); "
                       "avoid data-dependent Python control flow in forward, or make it scriptable")


def _save_onnx(net: Any, spec: ExportSpec, path: Path, checks: list[_Check]) -> None:
    """ONNX (opset 17) with dynamic batch and spatial axes, checked with onnxruntime."""
    import onnxruntime
    import torch

    spatial = {d: name for d, name in enumerate(spec.spatial_axes, start=2)}
    dynamic = {INPUT_ID: {0: "batch", **spatial},
               OUTPUT_ID: {0: "batch", **{d: f"{OUTPUT_ID}_{a}" for d, a in spatial.items()}}}
    try:
        with _quiet_torch(), torch.no_grad():
            torch.onnx.export(net, (torch.from_numpy(checks[-1][0]),), str(path), dynamo=False, opset_version=OPSET,
                              input_names=[INPUT_ID], output_names=[OUTPUT_ID], dynamic_axes=dynamic)
    except Exception as error:  # the exporter raises many error types
        raise PackageError(f"the network cannot be exported to ONNX opset {OPSET}: {error}") from error
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for inputs, expected in checks:
        _assert_reproduces("ONNX", session.run(None, {INPUT_ID: inputs})[0], expected)


def _weights_descr(v05: Any, tmp: Path, spec: ExportSpec) -> Any:
    import torch

    version = v05.Version(torch.__version__.split("+")[0])
    parent = "pytorch_state_dict"
    return v05.WeightsDescr(
        pytorch_state_dict=v05.PytorchStateDictWeightsDescr(
            **_file_fields(v05, tmp, STATE_DICT_FILE), pytorch_version=version,
            architecture=v05.ArchitectureFromFileDescr(
                **_file_fields(v05, tmp, spec.architecture_source.name),
                callable=v05.Identifier(spec.architecture_callable), kwargs=spec.architecture_kwargs)),
        torchscript=v05.TorchscriptWeightsDescr(**_file_fields(v05, tmp, TORCHSCRIPT_FILE),
                                                pytorch_version=version, parent=parent),
        onnx=v05.OnnxWeightsDescr(**_file_fields(v05, tmp, ONNX_FILE), opset_version=OPSET, parent=parent),
    )


# --- tensors ------------------------------------------------------------------------------


def _file_fields(v05: Any, tmp: Path, name: str) -> dict[str, Any]:
    from microzoo.package.load import sha256_of

    return {"source": Path(name), "sha256": v05.Sha256(sha256_of(tmp / name))}


def _input_descr(v05: Any, tmp: Path, spec: ExportSpec, x: np.ndarray) -> Any:
    np.save(tmp / "test_input.npy", x)
    spatial = [v05.AxisId(a) for a in spec.spatial_axes]
    return v05.InputTensorDescr(
        id=v05.TensorId(INPUT_ID),
        axes=[v05.BatchAxis(),
              v05.ChannelAxis(channel_names=[v05.Identifier(f"channel{i}") for i in range(spec.in_channels)]),
              *[v05.SpaceInputAxis(id=a, size=v05.ParameterizedSize(min=spec.size_min, step=spec.size_step))
                for a in spatial]],
        test_tensor=v05.FileDescr(**_file_fields(v05, tmp, "test_input.npy")),
        sample_tensor=v05.FileDescr(**_file_fields(v05, tmp, _write_sample(tmp, "sample_input.tif", x))),
        preprocessing=_preprocessing(v05, spec),
    )


def _preprocessing(v05: Any, spec: ExportSpec) -> list[Any]:
    """float32, then each sample and channel scaled between its percentiles, float32."""
    low, high = spec.normalization_percentiles
    f32 = v05.EnsureDtypeDescr(kwargs=v05.EnsureDtypeKwargs(dtype="float32"))
    scale = v05.ScaleRangeDescr(kwargs=v05.ScaleRangeKwargs(
        axes=[v05.AxisId(a) for a in spec.spatial_axes], min_percentile=low, max_percentile=high))
    return [f32, scale, f32]


def _preprocess(spec: ExportSpec, x: np.ndarray) -> np.ndarray:
    """``x`` after the package's preprocessing, as every zoo tool feeds it to the network."""
    from bioimageio.spec.model import v0_5 as v05

    from microzoo.runtime.ops import bind_ops

    axes = ("batch", "channel", *spec.spatial_axes)
    return np.ascontiguousarray(bind_ops(_preprocessing(v05, spec), x, axes)(x), dtype=np.float32)


def _postprocessing(v05: Any, spec: ExportSpec) -> list[Any]:
    ops: list[Any] = []
    if spec.postprocessing == "sigmoid":
        ops.append(v05.SigmoidDescr())
    elif spec.postprocessing == "softmax":
        ops.append(v05.SoftmaxDescr(kwargs=v05.SoftmaxKwargs(axis=v05.AxisId("channel"))))
    if spec.output_scale is not None:
        gain, offset = spec.output_scale
        kwargs = (v05.ScaleLinearKwargs(gain=gain[0], offset=offset[0]) if len(gain) == 1 else
                  v05.ScaleLinearAlongAxisKwargs(axis=v05.AxisId("channel"), gain=gain, offset=offset))
        ops += [v05.ScaleLinearDescr(kwargs=kwargs), v05.EnsureDtypeDescr(kwargs=v05.EnsureDtypeKwargs(dtype="float32"))]
    return ops


def _write_sample(tmp: Path, name: str, tensor: np.ndarray) -> str:
    """A TIFF of a test tensor for people to look at (the spec's ``sample_tensor``)."""
    import tifffile

    tifffile.imwrite(tmp / name, np.squeeze(tensor, axis=0), photometric="minisblack")  # channels are not RGB
    return name


def _output_descr(v05: Any, tmp: Path, spec: ExportSpec, y: np.ndarray) -> Any:
    prefix = TASKS[spec.task].channel_prefix
    ref = dict(tensor_id=v05.TensorId(INPUT_ID))
    return v05.OutputTensorDescr(
        id=v05.TensorId(OUTPUT_ID),
        axes=[v05.BatchAxis(),
              v05.ChannelAxis(channel_names=[v05.Identifier(f"{prefix}{i}") for i in range(spec.out_channels)]),
              *[v05.SpaceOutputAxisWithHalo(id=v05.AxisId(a), halo=spec.halo,
                                            size=v05.SizeReference(**ref, axis_id=v05.AxisId(a)))
                if spec.halo else v05.SpaceOutputAxis(id=v05.AxisId(a), size=v05.SizeReference(
                    **ref, axis_id=v05.AxisId(a))) for a in spec.spatial_axes]],
        test_tensor=v05.FileDescr(**_file_fields(v05, tmp, "test_output.npy")),
        sample_tensor=v05.FileDescr(**_file_fields(v05, tmp, _write_sample(tmp, "sample_output.tif", y))),
        postprocessing=_postprocessing(v05, spec),
    )


def _test_output(tmp: Path, spec: ExportSpec, x: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """The test output: ``raw``, the exported TorchScript's output for the preprocessed ``x``,
    after the package's postprocessing."""
    from bioimageio.spec.model import v0_5 as v05

    from microzoo.runtime.ops import bind_ops

    axes = ("batch", "channel", *spec.spatial_axes)
    post = bind_ops(_postprocessing(v05, spec), raw, axes, sample={INPUT_ID: (x, axes)})
    y = np.ascontiguousarray(post(raw), dtype=np.float32)
    np.save(tmp / "test_output.npy", y)
    return y


# --- the description ----------------------------------------------------------------------

MODALITY_TAGS = {"fluorescence": "fluorescence-light-microscopy", "brightfield": "brightfield",
                 "colour": "histology"}
CITE = [("BioImage Model Zoo: Ouyang et al. (2022), BioImage Model Zoo: a community-driven resource for "
         "accessible deep learning in bioimage analysis", "10.1101/2022.06.07.495102")]


def _describe(tmp: Path, spec: ExportSpec, x: np.ndarray, net: Any, script_kind: str, raw: np.ndarray) -> Any:
    from bioimageio.spec.model import v0_5 as v05

    input_descr = _input_descr(v05, tmp, spec, x)
    y = _test_output(tmp, spec, x, raw)
    modality = _guess_modality(x)
    write_cover(tmp / "cover.png", spec, x, y)
    attachments = _write_attachments(tmp, spec)
    weights = {"pytorch_state_dict": STATE_DICT_FILE, "torchscript": TORCHSCRIPT_FILE, "onnx": ONNX_FILE}
    (tmp / "README.md").write_text(readme_text(
        spec, weights=weights, opset=OPSET, input_id=INPUT_ID, modality=modality, script_kind=script_kind,
        attachments=[a.name for a in attachments]))
    tags = [*spec.tags, *TASKS[spec.task].tags, f"{spec.spatial_dims}d", "pytorch", "microzoo"]
    if modality:
        tags.append(MODALITY_TAGS[modality])
    return v05.ModelDescr(
        name=spec.name,
        description=spec.description,
        authors=[v05.Author(name=a) for a in spec.authors],
        cite=[v05.CiteEntry(text=text, doi=v05.Doi(doi)) for text, doi in CITE],
        license=v05.LicenseId(spec.license),
        documentation=v05.FileDescr(**_file_fields(v05, tmp, "README.md")),
        covers=[v05.FileDescr(**_file_fields(v05, tmp, "cover.png"))],
        attachments=[v05.FileDescr(**_file_fields(v05, tmp, a.name)) for a in attachments],
        tags=list(dict.fromkeys(t.lower() for t in tags)),
        inputs=[input_descr],
        outputs=[_output_descr(v05, tmp, spec, y)],
        weights=_weights_descr(v05, tmp, spec),
        config=v05.Config(bioimageio=_bioimageio_config(v05, spec, net, modality),
                          microzoo=_microzoo_config(spec, attachments)),
    )


def _guess_modality(x: np.ndarray) -> str | None:
    from microzoo.errors import ImageError
    from microzoo.trust.fingerprint import guess_modality

    plane = x[0, 0] if x.ndim == 4 else x[0, 0, x.shape[2] // 2]
    try:
        return guess_modality(plane)
    except ImageError:  # too small to tell
        return None


def _write_attachments(tmp: Path, spec: ExportSpec) -> list[Path]:
    from microzoo.trust.fingerprint import Fingerprint

    written = []
    if spec.fingerprint is not None:
        fingerprint = spec.fingerprint
        try:
            if isinstance(fingerprint, (str, Path)):
                fingerprint = Fingerprint.load(fingerprint)
            elif not isinstance(fingerprint, Fingerprint):
                fingerprint = Fingerprint.model_validate(fingerprint)
        except ValueError as error:
            raise ConfigError(f"fingerprint is not a training fingerprint ({error}); give a "
                              "microzoo.trust.fingerprint.Fingerprint") from error
        written.append(fingerprint.save(tmp / FINGERPRINT_NAME))
    if spec.qc_report is not None:
        written.append(tmp / f"qc_report{spec.qc_report.suffix}")
        shutil.copyfile(spec.qc_report, written[-1])
    return written


def _bioimageio_config(v05: Any, spec: ExportSpec, net: Any, modality: str | None) -> Any:
    low, high = spec.normalization_percentiles
    training: dict[str, Any] = {"training_preprocessing": (
        f"each image scaled so that its percentiles {low:g} and {high:g} (per channel) become 0 and 1")}
    numbers = {"epochs": "training_epochs", "batch_size": "training_batch_size",
               "learning_rate": "initial_learning_rate", "lr": "initial_learning_rate"}
    texts = {"loss": "loss_function", "optimizer": "optimizer", "schedule": "learning_rate_schedule"}
    for key, value in spec.training.items():
        if key in numbers and isinstance(value, (int, float)) and not isinstance(value, bool):
            training[numbers[key]] = float(value)
        elif key in texts and isinstance(value, str):
            training[texts[key]] = value
        elif key in ("hours", "time_h") and isinstance(value, (int, float)):
            training["training_duration"] = float(value)
        elif key in ("seconds", "time_s") and isinstance(value, (int, float)):
            training["training_duration"] = float(value) / 3600
    return v05.BioimageioConfig(
        task=TASKS[spec.task].bioimageio_task,
        modality=f"{modality} (guessed from the test image)" if modality else None,
        architecture_type=spec.architecture_callable[:32],
        model_parameter_count=int(sum(p.numel() for p in net.parameters())),
        out_of_scope_use=TASKS[spec.task].limits,
        training=v05.TrainingDetails(**training),
    )


def _microzoo_config(spec: ExportSpec, attachments: list[Path]) -> dict[str, Any]:
    low, high = spec.normalization_percentiles
    names = {a.name for a in attachments}
    config = {
        "task": spec.task,
        "spatial_dims": spec.spatial_dims,
        "normalization": {"method": "scale_range", "min_percentile": low, "max_percentile": high,
                          "per": "sample and channel", "axes": list(spec.spatial_axes)},
        "postprocessing": spec.postprocessing,
        "output_scale": {"gain": spec.output_scale[0], "offset": spec.output_scale[1],
                         "meaning": "output = network output * gain + offset: the input's intensity units "
                                    "(median percentiles of the training images)"} if spec.output_scale else None,
        "instance_settings": spec.instance_settings,
        "fingerprint": FINGERPRINT_NAME if FINGERPRINT_NAME in names else None,
        "qc_report": next((n for n in names if n.startswith("qc_report")), None),
        "qc": spec.qc,
        "training": spec.training,
    }
    return plain_yaml({k: v for k, v in config.items() if v is not None})


def _save_and_validate(descr: Any, tmp: Path) -> None:
    from bioimageio.spec import InvalidDescr, load_model_description, save_bioimageio_yaml_only

    rdf = tmp / "bioimageio.yaml"
    save_bioimageio_yaml_only(descr, rdf)
    loaded = load_model_description(rdf, perform_io_checks=True)
    if isinstance(loaded, InvalidDescr):
        errors = [f"{'.'.join(map(str, e.loc))}: {e.msg}" for d in loaded.validation_summary.details
                  for e in d.errors]
        raise PackageError("the exported description is not valid for bioimageio.spec: "
                           + "; ".join(errors[:8]) + "; fix the ExportSpec fields named")
