"""The description of an exported package (format 0.5): tensors, processing, weights, config.

:func:`build_description` writes the package's test tensors, samples, cover, README and
attachments into the package's temporary folder and returns the ``ModelDescr``;
:func:`preprocess` applies the input's preprocessing as every zoo tool does. The weights
themselves are written and checked by :mod:`microzoo.train.export`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from microzoo.errors import ConfigError
from microzoo.runtime.torch_export import ONNX_FILE, OPSET, TORCHSCRIPT_FILE
from microzoo.train.export_docs import plain_yaml, readme_text, write_cover
from microzoo.train.tasks.registry import TASKS
from microzoo.trust.fingerprint import ATTACHMENT_NAME as FINGERPRINT_NAME

if TYPE_CHECKING:
    from microzoo.train.export import ExportSpec

__all__ = ["build_description", "preprocess"]

INPUT_ID, OUTPUT_ID = "input", "output"
STATE_DICT_FILE = "weights_state_dict.pt"


def build_description(tmp: Path, spec: ExportSpec, x: np.ndarray, net: Any, script_kind: str, raw: np.ndarray) -> Any:
    """The package's description, its files (test tensors, cover, README, attachments) written into
    ``tmp``. ``raw`` is the TorchScript's output for the preprocessed ``x``; spec errors become
    :class:`ConfigError`."""
    import pydantic
    from bioimageio.spec import ValidationContext

    try:
        with ValidationContext(root=tmp, perform_io_checks=False):
            return _describe(tmp, spec, x, net, script_kind, raw)
    except pydantic.ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()[:6])
        raise ConfigError(
            f"the package description is not valid ({problems}); fix the ExportSpec "
            "fields named (name, license, authors, tags, ...)"
        ) from error


def _weights_descr(v05: Any, tmp: Path, spec: ExportSpec) -> Any:
    import torch

    version = v05.Version(torch.__version__.split("+")[0])
    parent = "pytorch_state_dict"
    return v05.WeightsDescr(
        pytorch_state_dict=v05.PytorchStateDictWeightsDescr(
            **_file_fields(v05, tmp, STATE_DICT_FILE),
            pytorch_version=version,
            architecture=v05.ArchitectureFromFileDescr(
                **_file_fields(v05, tmp, spec.architecture_source.name),
                callable=v05.Identifier(spec.architecture_callable),
                kwargs=spec.architecture_kwargs,
            ),
        ),
        torchscript=v05.TorchscriptWeightsDescr(
            **_file_fields(v05, tmp, TORCHSCRIPT_FILE), pytorch_version=version, parent=parent
        ),
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
        axes=[
            v05.BatchAxis(),
            v05.ChannelAxis(
                channel_names=[
                    v05.Identifier(n) for n in spec.channel_names or [f"channel{i}" for i in range(spec.in_channels)]
                ]  # fmt: skip
            ),
            *[
                v05.SpaceInputAxis(id=a, size=v05.ParameterizedSize(min=spec.size_min, step=spec.size_step))
                for a in spatial
            ],
        ],
        test_tensor=v05.FileDescr(**_file_fields(v05, tmp, "test_input.npy")),
        sample_tensor=v05.FileDescr(**_file_fields(v05, tmp, _write_sample(tmp, "sample_input.tif", x))),
        preprocessing=_preprocessing(v05, spec),
    )


def _preprocessing(v05: Any, spec: ExportSpec) -> list[Any]:
    """float32, then each sample and channel scaled between its percentiles, float32."""
    low, high = spec.normalization_percentiles
    f32 = v05.EnsureDtypeDescr(kwargs=v05.EnsureDtypeKwargs(dtype="float32"))
    scale = v05.ScaleRangeDescr(
        kwargs=v05.ScaleRangeKwargs(
            axes=[v05.AxisId(a) for a in spec.spatial_axes], min_percentile=low, max_percentile=high
        )
    )
    return [f32, scale, f32]


def preprocess(spec: ExportSpec, x: np.ndarray) -> np.ndarray:
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
        kwargs = (
            v05.ScaleLinearKwargs(gain=gain[0], offset=offset[0]) if len(gain) == 1
            else v05.ScaleLinearAlongAxisKwargs(axis=v05.AxisId("channel"), gain=gain, offset=offset)
        )  # fmt: skip
        f32 = v05.EnsureDtypeDescr(kwargs=v05.EnsureDtypeKwargs(dtype="float32"))
        ops += [v05.ScaleLinearDescr(kwargs=kwargs), f32]
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
        axes=[
            v05.BatchAxis(),
            v05.ChannelAxis(channel_names=[v05.Identifier(f"{prefix}{i}") for i in range(spec.out_channels)]),
            *[
                v05.SpaceOutputAxisWithHalo(
                    id=v05.AxisId(a), halo=spec.halo, size=v05.SizeReference(**ref, axis_id=v05.AxisId(a))
                )
                if spec.halo
                else v05.SpaceOutputAxis(id=v05.AxisId(a), size=v05.SizeReference(**ref, axis_id=v05.AxisId(a)))
                for a in spec.spatial_axes
            ],
        ],
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

MODALITY_TAGS = {"fluorescence": "fluorescence-light-microscopy", "brightfield": "brightfield", "colour": "histology"}
CITE = [
    (
        "BioImage Model Zoo: Ouyang et al. (2022), BioImage Model Zoo: a community-driven resource for "
        "accessible deep learning in bioimage analysis",
        "10.1101/2022.06.07.495102",
    )
]


def _describe(tmp: Path, spec: ExportSpec, x: np.ndarray, net: Any, script_kind: str, raw: np.ndarray) -> Any:
    from bioimageio.spec.model import v0_5 as v05

    input_descr = _input_descr(v05, tmp, spec, x)
    y = _test_output(tmp, spec, x, raw)
    modality = _guess_modality(x)
    write_cover(tmp / "cover.png", spec, x, y)
    attachments = _write_attachments(tmp, spec)
    weights = {"pytorch_state_dict": STATE_DICT_FILE, "torchscript": TORCHSCRIPT_FILE, "onnx": ONNX_FILE}
    (tmp / "README.md").write_text(
        readme_text(
            spec,
            weights=weights,
            opset=OPSET,
            input_id=INPUT_ID,
            modality=modality,
            script_kind=script_kind,
            attachments=[a.name for a in attachments],
        )
    )
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
        config=v05.Config(
            bioimageio=_bioimageio_config(v05, spec, net, modality), microzoo=_microzoo_config(spec, attachments)
        ),
    )


def _guess_modality(x: np.ndarray) -> str | None:
    from microzoo.errors import ImageError
    from microzoo.qc.image_features import guess_modality

    if x.ndim == 4 and x.shape[1] == 3:  # a colour model: its test image in colour
        plane = np.moveaxis(x[0], 0, -1)
    else:
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
            raise ConfigError(
                f"fingerprint is not a training fingerprint ({error}); give a microzoo.trust.fingerprint.Fingerprint"
            ) from error
        written.append(fingerprint.save(tmp / FINGERPRINT_NAME))
    if spec.qc_report is not None:
        written.append(tmp / f"qc_report{spec.qc_report.suffix}")
        shutil.copyfile(spec.qc_report, written[-1])
    return written


def _bioimageio_config(v05: Any, spec: ExportSpec, net: Any, modality: str | None) -> Any:
    low, high = spec.normalization_percentiles
    training: dict[str, Any] = {
        "training_preprocessing": (
            f"each image scaled so that its percentiles {low:g} and {high:g} (per channel) become 0 and 1"
        )
    }
    numbers = {
        "epochs": "training_epochs",
        "batch_size": "training_batch_size",
        "learning_rate": "initial_learning_rate",
        "lr": "initial_learning_rate",
    }
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
        "normalization": {
            "method": "scale_range",
            "min_percentile": low,
            "max_percentile": high,
            "per": "sample and channel",
            "axes": list(spec.spatial_axes),
        },
        "postprocessing": spec.postprocessing,
        "output_scale": {
            "gain": spec.output_scale[0],
            "offset": spec.output_scale[1],
            "meaning": "output = network output * gain + offset: the input's intensity units "
            "(median percentiles of the training images)",
        }
        if spec.output_scale
        else None,
        "instance_settings": spec.instance_settings,
        "fingerprint": FINGERPRINT_NAME if FINGERPRINT_NAME in names else None,
        "qc_report": next((n for n in names if n.startswith("qc_report")), None),
        "qc": spec.qc,
        "training": spec.training,
    }
    return plain_yaml({k: v for k, v in config.items() if v is not None})
