"""Synthetic BioImage Model Zoo packages for the runtime's tests.

Every builder is ``build_<name>(folder: Path) -> Path``: it writes a complete, tiny, seeded model
package into ``folder`` and returns the path of its ``bioimageio.yaml`` (``rdf.yaml`` for the
format 0.4 package). Weights are built locally (torchscript, onnx and, where stated,
pytorch_state_dict with the architecture as a source file in the package). The test output
tensors are produced by bioimageio.core itself (whole image, no padding, no cropping), so
``bioimageio.core.test_model`` reproduces them.

Packages (``BUILDERS`` maps name -> builder):

- ``parameterized``: 2-D, ``raw`` (batch, channel=1, y, x), y/x ``ParameterizedSize(32, 16)``,
  output ``prob`` sized by reference to ``raw``, halo 8; torchscript, onnx, pytorch_state_dict.
- ``scaled_output``: outputs ``down`` (2x average-pooled: scale 2.0, halo 2) and ``valid``
  (two valid 3x3 convolutions: offset -4).
- ``two_in_two_out``: inputs ``raw`` (1 channel) and ``aux`` (2 channels, y/x referencing
  ``raw``), outputs ``foreground`` (1 channel) and ``boundaries`` (2 channels), halo 4.
- ``format_04``: hand-written format 0.4.10 ``rdf.yaml`` (bcyx, min/step shape,
  zero_mean_unit_variance per_sample), torchscript only.
- ``state_dict``: pytorch_state_dict only.
- ``ops_fixed``: uint8 2-channel input; ensure_dtype, scale_linear (per channel),
  fixed_zero_mean_unit_variance (per channel), clip; postprocessing binarize (per channel),
  ensure_dtype uint8.
- ``ops_stats``: scale_range (percentiles, per sample and channel); postprocessing
  scale_mean_variance with reference to the input tensor.
- ``ops_norm_act``: batch of 2; input ``a`` zero_mean_unit_variance per sample (axes y, x),
  input ``b`` zero_mean_unit_variance over the batch (axes batch, y, x); outputs ``prob``
  (sigmoid) and ``classes`` (softmax over channel).
- ``three_d``: (batch, channel, z, y, x), z ``ParameterizedSize(8, 4)``, y/x
  ``ParameterizedSize(32, 16)``, halo z 2, y/x 4.
- ``instances``: an instance package (3 output maps: foreground, boundary, distance; sigmoid
  postprocessing; ``config.microzoo.instance_settings``), fixed weights that turn bright blobs
  (:func:`instance_test_image`) into objects; halo 24.
- ``keras_only``: only keras_hdf5 weights (a dummy file); valid for bioimageio.spec, not
  runnable (for "unsupported weight format" errors).

``built_packages(tmp_path_factory)`` builds (once per test session) and returns all of them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

ARCH_FILE = "synthetic_arch.py"
OPSET = 17
HALO = 8

# The architectures. Written into every package that has pytorch_state_dict weights and
# imported from there, so torchscript/onnx/state_dict weights all come from the same code.
ARCH_SOURCE = '''"""Tiny convolutional networks for microzoo's synthetic test packages."""
from typing import Tuple

import torch
from torch import nn


def _conv(dims: int):
    return nn.Conv2d if dims == 2 else nn.Conv3d


class TinyConvNet(nn.Module):
    """``n_layers`` k x k convolutions with ReLU between; 'same' padding by default."""

    def __init__(self, in_channels: int = 1, out_channels: int = 1, hidden: int = 4,
                 n_layers: int = 2, kernel_size: int = 3, dims: int = 2, padding: int = -1):
        super().__init__()
        conv = _conv(dims)
        pad = kernel_size // 2 if padding < 0 else padding
        layers = []
        channels = in_channels
        for i in range(n_layers):
            last = i == n_layers - 1
            layers.append(conv(channels, out_channels if last else hidden, kernel_size, padding=pad))
            if not last:
                layers.append(nn.ReLU())
            channels = hidden
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ScaledOutputs(nn.Module):
    """``down``: 2x average-pooled 'same' conv; ``valid``: two valid 3x3 convs (size - 4)."""

    def __init__(self, in_channels: int = 1, hidden: int = 4):
        super().__init__()
        self.same = TinyConvNet(in_channels, 1, hidden, n_layers=2)
        self.pool = nn.AvgPool2d(2)
        self.valid = TinyConvNet(in_channels, 1, hidden, n_layers=2, padding=0)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.pool(self.same(x)), self.valid(x)


class TwoInTwoOut(nn.Module):
    """Concatenates ``raw`` (1 ch) and ``aux`` (2 ch); heads of 1 and 2 channels."""

    def __init__(self, hidden: int = 4):
        super().__init__()
        self.body = TinyConvNet(3, hidden, hidden, n_layers=1)
        self.act = nn.ReLU()
        self.head_fg = nn.Conv2d(hidden, 1, 3, padding=1)
        self.head_bd = nn.Conv2d(hidden, 2, 1)

    def forward(self, raw: torch.Tensor, aux: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        h = self.act(self.body(torch.cat([raw, aux], dim=1)))
        return self.head_fg(h), self.head_bd(h)


class TwoHeads(nn.Module):
    """Inputs ``a`` (1 ch) and ``b`` (2 ch); outputs ``prob`` (1 ch) and ``classes`` (2 ch)."""

    def __init__(self, hidden: int = 4):
        super().__init__()
        self.inner = TwoInTwoOut(hidden)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.inner(a, b)
'''


# ---------------------------------------------------------------------------------------------
# helpers


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _import_arch(folder: Path) -> ModuleType:
    path = folder / ARCH_FILE
    if not path.exists():
        path.write_text(ARCH_SOURCE)
    name = f"microzoo_synthetic_arch_{sha256_of(path)[:16]}"
    cached = sys.modules.get(name)
    # reuse only while its file exists: torch.jit.script reads the class's source from that file,
    # and an earlier test's folder may be gone
    if cached is not None and cached.__file__ is not None and Path(cached.__file__).exists():
        return cached
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _make_model(folder: Path, callable_name: str, kwargs: dict[str, Any], seed: int):
    import torch

    arch = _import_arch(folder)
    torch.manual_seed(seed)
    model = getattr(arch, callable_name)(**kwargs)
    model.eval()
    return model


def _save_torchscript(model, path: Path) -> None:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(model)
        scripted.save(str(path))


def _save_onnx(
    model, example_inputs: Sequence[np.ndarray], input_names: Sequence[str], output_names: Sequence[str], path: Path
) -> None:
    """Legacy (TorchScript-based) exporter: needs only the ``onnx`` package."""
    import torch

    args = tuple(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) for x in example_inputs)
    dynamic_axes = {}
    for name, x in zip(input_names, example_inputs, strict=True):
        dynamic_axes[name] = {0: "batch", **{d: f"{name}_d{d}" for d in range(2, x.ndim)}}
    for name in output_names:
        dynamic_axes[name] = {0: "batch", **{d: f"{name}_d{d}" for d in range(2, example_inputs[0].ndim)}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            torch.onnx.export(
                model,
                args,
                str(path),
                dynamo=False,
                opset_version=OPSET,
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_axes=dynamic_axes,
            )


def _torch_version() -> str:
    import torch

    return torch.__version__.split("+")[0]


def _write_doc(folder: Path, title: str, text: str) -> Path:
    p = folder / "README.md"
    p.write_text(
        f"# {title}\n\n{text}\n\nSynthetic test package built by microzoo's tests "
        "(seeded, untrained weights). Not for real use.\n"
    )
    return p


def _write_cover(folder: Path, array: np.ndarray) -> Path:
    import imageio.v3 as iio

    img = np.asarray(array, dtype=np.float64)
    while img.ndim > 2:
        img = img[0]
    lo, hi = float(img.min()), float(img.max())
    img8 = ((img - lo) / (hi - lo + 1e-12) * 255).astype(np.uint8)
    img8 = np.repeat(np.repeat(img8, 2, axis=0), 2, axis=1)  # covers should not be tiny
    p = folder / "cover.png"
    iio.imwrite(p, img8)
    return p


def _rng_image(
    seed: int, shape: tuple[int, ...], dtype=np.float32, scale: float = 1.0, offset: float = 0.0
) -> np.ndarray:
    """Smooth-ish random image (sum of a random field and a ramp) so statistics are not trivial."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape)
    ramp = np.linspace(0.0, 1.0, shape[-1])
    x = x + 2.0 * ramp
    x = x * scale + offset
    if np.issubdtype(np.dtype(dtype), np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.round(x), info.min, info.max).astype(dtype)
    return x.astype(dtype)


def _file(v05, folder: Path, name: str):
    return v05.FileDescr(source=Path(name), sha256=v05.Sha256(sha256_of(folder / name)))


def _common_fields(v05, folder: Path, name: str, description: str, cover_array: np.ndarray):
    doc = _write_doc(folder, name, description)
    cover = _write_cover(folder, cover_array)
    return dict(
        name=name,
        description=description,
        authors=[v05.Author(name="microzoo tests")],
        cite=[v05.CiteEntry(text="microzoo synthetic test package", url=v05.HttpUrl("https://bioimage.io"))],
        license=v05.LicenseId("MIT"),
        documentation=_file(v05, folder, doc.name),
        covers=[_file(v05, folder, cover.name)],
        tags=["microzoo-test", "synthetic"],
        timestamp=v05.Datetime(__import__("datetime").datetime(2024, 1, 1)),
    )


def _core_outputs(descr, inputs: dict[str, np.ndarray], weight_format: str) -> dict[str, np.ndarray]:
    from _reference import reference_predict_descr  # noqa: PLC0415  (tests dir is on sys.path)

    return reference_predict_descr(descr, inputs, weight_format=weight_format)


def _finish_v05(
    folder: Path,
    make_descr: Callable[[dict[str, Any] | None], Any],
    inputs: dict[str, np.ndarray],
    weight_format: str,
    outputs: dict[str, np.ndarray] | None = None,
) -> Path:
    """Build the description without output test tensors, let core predict the test inputs
    (unless ``outputs`` are given), write those as the test outputs, and save
    ``bioimageio.yaml``."""
    from bioimageio.spec import ValidationContext, save_bioimageio_yaml_only
    from bioimageio.spec.model import v0_5 as v05

    if outputs is None:
        with ValidationContext(root=folder, perform_io_checks=False):
            draft = make_descr(None)
        # own context: core records the files it hashes in the context's known_files
        with ValidationContext(root=folder, perform_io_checks=False):
            outputs = _core_outputs(draft, inputs, weight_format)
    for tid, arr in outputs.items():
        np.save(folder / f"test_output_{tid}.npy", arr)
    with ValidationContext(root=folder, perform_io_checks=False):
        files = {tid: _file(v05, folder, f"test_output_{tid}.npy") for tid in outputs}
        descr = make_descr(files)
    rdf = folder / "bioimageio.yaml"
    save_bioimageio_yaml_only(descr, rdf)
    return rdf


def _batch():
    from bioimageio.spec.model import v0_5 as v05

    return v05.BatchAxis()


def _channel(n: int, prefix: str = "c"):
    from bioimageio.spec.model import v0_5 as v05

    return v05.ChannelAxis(channel_names=[v05.Identifier(f"{prefix}{i}") for i in range(n)])


def _param_in(axis: str, min_: int = 32, step: int = 16):
    from bioimageio.spec.model import v0_5 as v05

    return v05.SpaceInputAxis(id=v05.AxisId(axis), size=v05.ParameterizedSize(min=min_, step=step))


def _ref_in(axis: str, tensor: str):
    from bioimageio.spec.model import v0_5 as v05

    return v05.SpaceInputAxis(
        id=v05.AxisId(axis), size=v05.SizeReference(tensor_id=v05.TensorId(tensor), axis_id=v05.AxisId(axis))
    )


def _ref_out(axis: str, tensor: str, halo: int = 0, scale: float = 1.0, offset: int = 0):
    from bioimageio.spec.model import v0_5 as v05

    size = v05.SizeReference(tensor_id=v05.TensorId(tensor), axis_id=v05.AxisId(axis), offset=offset)
    if halo:
        return v05.SpaceOutputAxisWithHalo(id=v05.AxisId(axis), size=size, halo=halo, scale=scale)
    return v05.SpaceOutputAxis(id=v05.AxisId(axis), size=size, scale=scale)


def _weights(
    v05,
    folder: Path,
    *,
    torchscript: str | None = None,
    onnx: str | None = None,
    state_dict: str | None = None,
    arch: tuple[str, dict[str, Any]] | None = None,
    parent: str | None = None,
):
    """``parent``: the original format; the others name it as their parent."""
    tv = v05.Version(_torch_version())
    entries: dict[str, Any] = {}

    def _parent(fmt: str) -> dict[str, str]:
        return {} if parent in (None, fmt) else {"parent": parent}

    if state_dict is not None:
        assert arch is not None
        entries["pytorch_state_dict"] = v05.PytorchStateDictWeightsDescr(
            source=Path(state_dict),
            sha256=v05.Sha256(sha256_of(folder / state_dict)),
            architecture=v05.ArchitectureFromFileDescr(
                source=Path(ARCH_FILE),
                sha256=v05.Sha256(sha256_of(folder / ARCH_FILE)),
                callable=v05.Identifier(arch[0]),
                kwargs=arch[1],
            ),
            pytorch_version=tv,
            **_parent("pytorch_state_dict"),
        )
    if torchscript is not None:
        entries["torchscript"] = v05.TorchscriptWeightsDescr(
            source=Path(torchscript),
            sha256=v05.Sha256(sha256_of(folder / torchscript)),
            pytorch_version=tv,
            **_parent("torchscript"),
        )
    if onnx is not None:
        entries["onnx"] = v05.OnnxWeightsDescr(
            source=Path(onnx),
            sha256=v05.Sha256(sha256_of(folder / onnx)),
            opset_version=OPSET,
            **_parent("onnx"),
        )
    return v05.WeightsDescr(**entries)


def _save_all_weights(
    folder: Path,
    model,
    example_inputs: Sequence[np.ndarray],
    input_names: Sequence[str],
    output_names: Sequence[str],
    *,
    state_dict: bool = False,
) -> dict[str, str]:
    import torch

    files: dict[str, str] = {}
    if state_dict:
        torch.save(model.state_dict(), folder / "weights_state_dict.pt")
        files["state_dict"] = "weights_state_dict.pt"
    _save_torchscript(model, folder / "weights_torchscript.pt")
    files["torchscript"] = "weights_torchscript.pt"
    _save_onnx(model, example_inputs, input_names, output_names, folder / "weights.onnx")
    files["onnx"] = "weights.onnx"
    return files


def _input(v05, folder: Path, tid: str, axes, array: np.ndarray, preprocessing=(), dtype=None):
    name = f"test_input_{tid}.npy"
    np.save(folder / name, array)
    kwargs: dict[str, Any] = {}
    if dtype is not None:
        kwargs["data"] = v05.IntervalOrRatioDataDescr(type=dtype)
    return v05.InputTensorDescr(
        id=v05.TensorId(tid),
        axes=axes,
        test_tensor=_file(v05, folder, name),
        preprocessing=list(preprocessing),
        **kwargs,
    )


def _output(v05, tid: str, axes, files: dict[str, Any] | None, postprocessing=(), dtype=None):
    kwargs: dict[str, Any] = {}
    if dtype is not None:
        kwargs["data"] = v05.IntervalOrRatioDataDescr(type=dtype)
    return v05.OutputTensorDescr(
        id=v05.TensorId(tid),
        axes=axes,
        test_tensor=None if files is None else files[tid],
        postprocessing=list(postprocessing),
        **kwargs,
    )


def _ensure_f32(v05):
    return v05.EnsureDtypeDescr(kwargs=v05.EnsureDtypeKwargs(dtype="float32"))


def _in_folder_context(builder: Callable[[Path], Path]) -> Callable[[Path], Path]:
    """Relative file sources resolve against the package folder while building."""
    import functools

    @functools.wraps(builder)
    def wrapped(folder: Path) -> Path:
        from bioimageio.spec import ValidationContext

        folder = Path(folder).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        with ValidationContext(root=folder, perform_io_checks=False):
            return builder(folder)

    return wrapped


# ---------------------------------------------------------------------------------------------
# builders


@_in_folder_context
def build_parameterized(folder: Path) -> Path:
    """2-D, ParameterizedSize(32, 16) on y/x, halo 8, torchscript + onnx + pytorch_state_dict."""
    from bioimageio.spec.model import v0_5 as v05

    folder.mkdir(parents=True, exist_ok=True)
    arch = ("TinyConvNet", {"in_channels": 1, "out_channels": 1, "hidden": 4, "n_layers": 3})
    model = _make_model(folder, arch[0], arch[1], seed=1)
    x = _rng_image(11, (1, 1, 64, 64))
    w = _save_all_weights(folder, model, [x], ["raw"], ["prob"], state_dict=True)
    common = _common_fields(
        v05, folder, "microzoo synthetic parameterized", "2-D conv net, parameterized input size, output halo 8.", x
    )

    def make(files):
        return v05.ModelDescr(
            **common,
            inputs=[
                _input(
                    v05,
                    folder,
                    "raw",
                    [_batch(), _channel(1), _param_in("y"), _param_in("x")],
                    x,
                    preprocessing=[_ensure_f32(v05)],
                )
            ],
            outputs=[
                _output(
                    v05, "prob", [_batch(), _channel(1), _ref_out("y", "raw", HALO), _ref_out("x", "raw", HALO)], files
                )
            ],
            weights=_weights(
                v05,
                folder,
                torchscript=w["torchscript"],
                onnx=w["onnx"],
                state_dict=w["state_dict"],
                arch=arch,
                parent="pytorch_state_dict",
            ),
        )

    return _finish_v05(folder, make, {"raw": x}, "torchscript")


@_in_folder_context
def build_scaled_output(folder: Path) -> Path:
    """Outputs ``down`` (scale 2.0, halo 2) and ``valid`` (offset -4) referencing ``raw``."""
    from bioimageio.spec.model import v0_5 as v05

    folder.mkdir(parents=True, exist_ok=True)
    model = _make_model(folder, "ScaledOutputs", {"in_channels": 1, "hidden": 4}, seed=2)
    x = _rng_image(12, (1, 1, 64, 64))
    w = _save_all_weights(folder, model, [x], ["raw"], ["down", "valid"])
    common = _common_fields(
        v05,
        folder,
        "microzoo synthetic scaled output",
        "Output sizes reference the input with a scale (2x pooling) and an offset (valid convolutions).",
        x,
    )

    def make(files):
        return v05.ModelDescr(
            **common,
            inputs=[_input(v05, folder, "raw", [_batch(), _channel(1), _param_in("y"), _param_in("x")], x)],
            outputs=[
                _output(
                    v05,
                    "down",
                    [_batch(), _channel(1), _ref_out("y", "raw", 2, scale=2.0), _ref_out("x", "raw", 2, scale=2.0)],
                    files,
                ),
                _output(
                    v05,
                    "valid",
                    [_batch(), _channel(1), _ref_out("y", "raw", offset=-4), _ref_out("x", "raw", offset=-4)],
                    files,
                ),
            ],
            weights=_weights(v05, folder, torchscript=w["torchscript"], onnx=w["onnx"], parent="torchscript"),
        )

    return _finish_v05(folder, make, {"raw": x}, "torchscript")


@_in_folder_context
def build_two_in_two_out(folder: Path) -> Path:
    """Inputs ``raw`` (1 ch) and ``aux`` (2 ch, y/x referencing raw); outputs of 1 and 2 ch."""
    from bioimageio.spec.model import v0_5 as v05

    folder.mkdir(parents=True, exist_ok=True)
    model = _make_model(folder, "TwoInTwoOut", {"hidden": 4}, seed=3)
    raw = _rng_image(13, (1, 1, 64, 64))
    aux = _rng_image(14, (1, 2, 64, 64), scale=0.5)
    w = _save_all_weights(folder, model, [raw, aux], ["raw", "aux"], ["foreground", "boundaries"])
    common = _common_fields(
        v05,
        folder,
        "microzoo synthetic two in two out",
        "Two input tensors (1 and 2 channels) and two output tensors.",
        raw,
    )
    halo = 4

    def make(files):
        return v05.ModelDescr(
            **common,
            inputs=[
                _input(v05, folder, "raw", [_batch(), _channel(1), _param_in("y"), _param_in("x")], raw),
                _input(
                    v05, folder, "aux", [_batch(), _channel(2, "aux"), _ref_in("y", "raw"), _ref_in("x", "raw")], aux
                ),
            ],
            outputs=[
                _output(
                    v05,
                    "foreground",
                    [_batch(), _channel(1, "fg"), _ref_out("y", "raw", halo), _ref_out("x", "raw", halo)],
                    files,
                ),
                _output(
                    v05,
                    "boundaries",
                    [_batch(), _channel(2, "bd"), _ref_out("y", "raw", halo), _ref_out("x", "raw", halo)],
                    files,
                ),
            ],
            weights=_weights(v05, folder, torchscript=w["torchscript"], onnx=w["onnx"], parent="torchscript"),
        )

    return _finish_v05(folder, make, {"raw": raw, "aux": aux}, "torchscript")


@_in_folder_context
def build_state_dict(folder: Path) -> Path:
    """pytorch_state_dict weights only; architecture ``synthetic_arch.py`` in the package."""
    import torch
    from bioimageio.spec.model import v0_5 as v05

    folder.mkdir(parents=True, exist_ok=True)
    arch = ("TinyConvNet", {"in_channels": 1, "out_channels": 2, "hidden": 4, "n_layers": 2})
    model = _make_model(folder, arch[0], arch[1], seed=5)
    x = _rng_image(15, (1, 1, 64, 64))
    torch.save(model.state_dict(), folder / "weights_state_dict.pt")
    common = _common_fields(
        v05,
        folder,
        "microzoo synthetic state dict",
        "pytorch_state_dict weights only (architecture file in the package).",
        x,
    )

    def make(files):
        return v05.ModelDescr(
            **common,
            inputs=[
                _input(
                    v05,
                    folder,
                    "raw",
                    [_batch(), _channel(1), _param_in("y"), _param_in("x")],
                    x,
                    preprocessing=[
                        v05.ZeroMeanUnitVarianceDescr(
                            kwargs=v05.ZeroMeanUnitVarianceKwargs(axes=[v05.AxisId("y"), v05.AxisId("x")])
                        )
                    ],
                )
            ],
            outputs=[
                _output(v05, "out", [_batch(), _channel(2), _ref_out("y", "raw", 4), _ref_out("x", "raw", 4)], files)
            ],
            weights=_weights(v05, folder, state_dict="weights_state_dict.pt", arch=arch),
        )

    return _finish_v05(folder, make, {"raw": x}, "pytorch_state_dict")


@_in_folder_context
def build_ops_fixed(folder: Path) -> Path:
    """uint8 input; ensure_dtype, scale_linear and fixed_zero_mean_unit_variance per channel,
    clip; postprocessing binarize and ensure_dtype uint8."""
    from bioimageio.spec.model import v0_5 as v05

    folder.mkdir(parents=True, exist_ok=True)
    model = _make_model(folder, "TinyConvNet", {"in_channels": 2, "out_channels": 2, "hidden": 4}, seed=6)
    x = _rng_image(16, (1, 2, 64, 64), dtype=np.uint8, scale=30.0, offset=100.0)
    w = _save_all_weights(folder, model, [x], ["raw"], ["mask"])
    common = _common_fields(
        v05,
        folder,
        "microzoo synthetic ops fixed",
        "Fixed-parameter processing: ensure_dtype, scale_linear, fixed_zero_mean_unit_variance, clip, binarize.",
        x,
    )
    ch = v05.AxisId("channel")
    pre = [
        _ensure_f32(v05),
        v05.ScaleLinearDescr(kwargs=v05.ScaleLinearAlongAxisKwargs(axis=ch, gain=[0.01, 0.02], offset=[-1.0, 0.5])),
        v05.FixedZeroMeanUnitVarianceDescr(
            kwargs=v05.FixedZeroMeanUnitVarianceAlongAxisKwargs(axis=ch, mean=[0.1, 2.5], std=[1.5, 0.5])
        ),
        v05.ClipDescr(kwargs=v05.ClipKwargs(min=-1.5, max=1.5)),
        _ensure_f32(v05),  # else spec appends ensure_dtype to the input's data type (uint8)
    ]
    post = [
        # scalar threshold: core 0.11 fails on BinarizeAlongAxisKwargs (no broadcasting over the axis)
        v05.BinarizeDescr(kwargs=v05.BinarizeKwargs(threshold=0.05)),
        v05.EnsureDtypeDescr(kwargs=v05.EnsureDtypeKwargs(dtype="uint8")),
    ]

    def make(files):
        return v05.ModelDescr(
            **common,
            inputs=[
                _input(
                    v05,
                    folder,
                    "raw",
                    [_batch(), _channel(2), _param_in("y"), _param_in("x")],
                    x,
                    preprocessing=pre,
                    dtype="uint8",
                )
            ],
            outputs=[
                _output(
                    v05,
                    "mask",
                    [_batch(), _channel(2), _ref_out("y", "raw", HALO), _ref_out("x", "raw", HALO)],
                    files,
                    postprocessing=post,
                    dtype="uint8",
                )
            ],
            weights=_weights(v05, folder, torchscript=w["torchscript"], onnx=w["onnx"], parent="torchscript"),
        )

    return _finish_v05(folder, make, {"raw": x}, "torchscript")


@_in_folder_context
def build_ops_stats(folder: Path) -> Path:
    """scale_range (percentiles, per sample and channel); postprocessing scale_linear (scalar)
    and clip (min only)."""
    from bioimageio.spec.model import v0_5 as v05

    folder.mkdir(parents=True, exist_ok=True)
    model = _make_model(folder, "TinyConvNet", {"in_channels": 2, "out_channels": 2, "hidden": 4}, seed=7)
    x = _rng_image(17, (1, 2, 64, 64), scale=20.0, offset=300.0)
    w = _save_all_weights(folder, model, [x], ["raw"], ["restored"])
    common = _common_fields(
        v05,
        folder,
        "microzoo synthetic ops stats",
        "scale_range with percentiles per sample and channel; scale_linear and clip (min only) on the output.",
        x,
    )
    yx = [v05.AxisId("y"), v05.AxisId("x")]
    pre = [v05.ScaleRangeDescr(kwargs=v05.ScaleRangeKwargs(axes=yx, min_percentile=1.0, max_percentile=99.5))]
    post = [
        v05.ScaleLinearDescr(kwargs=v05.ScaleLinearKwargs(gain=2.0, offset=0.5)),
        v05.ClipDescr(kwargs=v05.ClipKwargs(min=-1.0)),
    ]

    def make(files):
        return v05.ModelDescr(
            **common,
            inputs=[
                _input(
                    v05, folder, "raw", [_batch(), _channel(2), _param_in("y"), _param_in("x")], x, preprocessing=pre
                )
            ],
            outputs=[
                _output(
                    v05,
                    "restored",
                    [_batch(), _channel(2), _ref_out("y", "raw", HALO), _ref_out("x", "raw", HALO)],
                    files,
                    postprocessing=post,
                )
            ],
            weights=_weights(v05, folder, torchscript=w["torchscript"], onnx=w["onnx"], parent="torchscript"),
        )

    return _finish_v05(folder, make, {"raw": x}, "torchscript")


@_in_folder_context
def build_ops_scale_mean_variance(folder: Path) -> Path:
    """Postprocessing scale_mean_variance referencing the input tensor (axes y, x: per sample
    and channel). bioimageio.core 0.11 cannot run it (it computes every statistic, those of
    outputs included, before preprocessing: KeyError), so the test output is computed here:
    ``out = (y - mean(y)) / (std(y) + eps) * (std(raw) + eps) + mean(raw)``, statistics in
    float64, std without ddof, ``y`` the network's output, ``raw`` the input as given."""
    import torch
    from bioimageio.spec.model import v0_5 as v05

    model = _make_model(folder, "TinyConvNet", {"in_channels": 2, "out_channels": 2, "hidden": 4}, seed=10)
    x = _rng_image(23, (1, 2, 64, 64), scale=20.0, offset=300.0)
    w = _save_all_weights(folder, model, [x], ["raw"], ["restored"])
    common = _common_fields(
        v05,
        folder,
        "microzoo synthetic ops scale mean variance",
        "scale_mean_variance of the output to the input's mean and std.",
        x,
    )
    yx = [v05.AxisId("y"), v05.AxisId("x")]
    eps = 1e-6
    post = [
        v05.ScaleMeanVarianceDescr(
            kwargs=v05.ScaleMeanVarianceKwargs(reference_tensor=v05.TensorId("raw"), axes=yx, eps=eps)
        )
    ]
    with torch.no_grad():
        y = model(torch.from_numpy(x)).numpy().astype(np.float64)
    x64 = x.astype(np.float64)
    out = (y - y.mean(axis=(2, 3), keepdims=True)) / (y.std(axis=(2, 3), keepdims=True) + eps) * (
        x64.std(axis=(2, 3), keepdims=True) + eps
    ) + x64.mean(axis=(2, 3), keepdims=True)

    def make(files):
        return v05.ModelDescr(
            **common,
            inputs=[_input(v05, folder, "raw", [_batch(), _channel(2), _param_in("y"), _param_in("x")], x)],
            outputs=[
                _output(
                    v05,
                    "restored",
                    [_batch(), _channel(2), _ref_out("y", "raw", HALO), _ref_out("x", "raw", HALO)],
                    files,
                    postprocessing=post,
                )
            ],
            weights=_weights(v05, folder, torchscript=w["torchscript"], onnx=w["onnx"], parent="torchscript"),
        )

    return _finish_v05(folder, make, {"raw": x}, "torchscript", outputs={"restored": out.astype(np.float32)})


def _two_input_ops_package(
    folder: Path,
    *,
    seed: int,
    images: tuple[np.ndarray, np.ndarray],
    name: str,
    description: str,
    pre_a: list,
    pre_b: list,
    post_prob: list,
    post_classes: list,
) -> Path:
    """The TwoHeads network with inputs ``a`` (1 channel, parameterized y/x) and ``b`` (2
    channels, sized by ``a``), outputs ``prob`` and ``classes`` (halo 4), and the given ops."""
    from bioimageio.spec.model import v0_5 as v05

    folder.mkdir(parents=True, exist_ok=True)
    model = _make_model(folder, "TwoHeads", {"hidden": 4}, seed=seed)
    a, b = images
    w = _save_all_weights(folder, model, [a, b], ["a", "b"], ["prob", "classes"])
    common = _common_fields(v05, folder, name, description, a)
    halo = 4

    def make(files):
        return v05.ModelDescr(
            **common,
            inputs=[
                _input(
                    v05, folder, "a", [_batch(), _channel(1), _param_in("y"), _param_in("x")], a, preprocessing=pre_a
                ),
                _input(
                    v05,
                    folder,
                    "b",
                    [_batch(), _channel(2), _ref_in("y", "a"), _ref_in("x", "a")],
                    b,
                    preprocessing=pre_b,
                ),
            ],
            outputs=[
                _output(
                    v05,
                    "prob",
                    [_batch(), _channel(1), _ref_out("y", "a", halo), _ref_out("x", "a", halo)],
                    files,
                    postprocessing=post_prob,
                ),
                _output(
                    v05,
                    "classes",
                    [_batch(), _channel(2), _ref_out("y", "a", halo), _ref_out("x", "a", halo)],
                    files,
                    postprocessing=post_classes,
                ),
            ],
            weights=_weights(v05, folder, torchscript=w["torchscript"], onnx=w["onnx"], parent="torchscript"),
        )

    return _finish_v05(folder, make, {"a": a, "b": b}, "torchscript")


@_in_folder_context
def build_ops_norm_act(folder: Path) -> Path:
    """Batch of 2. ``a``: zero_mean_unit_variance per sample (axes y, x); ``b``: over the batch
    (axes batch, y, x). Outputs ``prob`` (sigmoid) and ``classes`` (softmax over channel)."""
    from bioimageio.spec.model import v0_5 as v05

    a = _rng_image(18, (2, 1, 64, 64), scale=5.0, offset=50.0)
    a[1] = a[1] * 3.0 - 20.0  # the two batch entries differ in statistics
    b = _rng_image(19, (2, 2, 64, 64), scale=2.0, offset=-3.0)
    b[1] = b[1] * 0.5 + 4.0
    y, x = v05.AxisId("y"), v05.AxisId("x")
    return _two_input_ops_package(
        folder,
        seed=8,
        images=(a, b),
        name="microzoo synthetic ops norm act",
        description="zero_mean_unit_variance per sample and over the batch; sigmoid and softmax postprocessing.",
        pre_a=[v05.ZeroMeanUnitVarianceDescr(kwargs=v05.ZeroMeanUnitVarianceKwargs(axes=[y, x]))],
        pre_b=[v05.ZeroMeanUnitVarianceDescr(kwargs=v05.ZeroMeanUnitVarianceKwargs(axes=[v05.AxisId("batch"), y, x]))],
        post_prob=[v05.SigmoidDescr()],
        post_classes=[v05.SoftmaxDescr(kwargs=v05.SoftmaxKwargs(axis=v05.AxisId("channel")))],
    )


@_in_folder_context
def build_ops_chained(folder: Path) -> Path:
    """Batch of 2. Statistics of ops that follow another op: ``a``: scale_linear then
    zero_mean_unit_variance over the batch (per dataset); ``b``: a fixed clip then scale_range
    per sample. bioimageio.core computes every statistic on the raw input tensor, not on the
    output of the ops before it; the test output is core's."""
    from bioimageio.spec.model import v0_5 as v05

    a = _rng_image(24, (2, 1, 64, 64), scale=5.0, offset=50.0)
    a[1] = a[1] * 3.0 - 20.0
    b = _rng_image(25, (2, 2, 64, 64), scale=2.0, offset=-3.0)
    batch, y, x = v05.AxisId("batch"), v05.AxisId("y"), v05.AxisId("x")
    return _two_input_ops_package(
        folder,
        seed=11,
        images=(a, b),
        name="microzoo synthetic ops chained",
        description="Statistics of ops that follow another op: scale_linear then "
        "zero_mean_unit_variance per dataset; clip then scale_range.",
        pre_a=[
            v05.ScaleLinearDescr(kwargs=v05.ScaleLinearKwargs(gain=2.0, offset=30.0)),
            v05.ZeroMeanUnitVarianceDescr(kwargs=v05.ZeroMeanUnitVarianceKwargs(axes=[batch, y, x])),
        ],
        pre_b=[
            v05.ClipDescr(kwargs=v05.ClipKwargs(min=-4.0, max=-1.0)),
            v05.ScaleRangeDescr(kwargs=v05.ScaleRangeKwargs(axes=[y, x], min_percentile=2.0, max_percentile=99.0)),
        ],
        post_prob=[],
        post_classes=[],
    )


@_in_folder_context
def build_three_d(folder: Path) -> Path:
    """(batch, channel, z, y, x); z ParameterizedSize(8, 4), y/x (32, 16); halo z 2, y/x 4."""
    from bioimageio.spec.model import v0_5 as v05

    folder.mkdir(parents=True, exist_ok=True)
    model = _make_model(folder, "TinyConvNet", {"in_channels": 1, "out_channels": 1, "hidden": 2, "dims": 3}, seed=9)
    x = _rng_image(20, (1, 1, 16, 32, 32))
    w = _save_all_weights(folder, model, [x], ["raw"], ["out"])
    common = _common_fields(
        v05, folder, "microzoo synthetic three d", "3-D conv net with parameterized z/y/x and a halo.", x[0, 0, 8]
    )

    def make(files):
        return v05.ModelDescr(
            **common,
            inputs=[
                _input(
                    v05,
                    folder,
                    "raw",
                    [_batch(), _channel(1), _param_in("z", 8, 4), _param_in("y"), _param_in("x")],
                    x,
                    preprocessing=[
                        v05.ZeroMeanUnitVarianceDescr(
                            kwargs=v05.ZeroMeanUnitVarianceKwargs(
                                axes=[v05.AxisId("z"), v05.AxisId("y"), v05.AxisId("x")]
                            )
                        )
                    ],
                )
            ],
            outputs=[
                _output(
                    v05,
                    "out",
                    [_batch(), _channel(1), _ref_out("z", "raw", 2), _ref_out("y", "raw", 4), _ref_out("x", "raw", 4)],
                    files,
                )
            ],
            weights=_weights(v05, folder, torchscript=w["torchscript"], onnx=w["onnx"], parent="torchscript"),
        )

    return _finish_v05(folder, make, {"raw": x}, "torchscript")


def _instance_network():
    """A network with fixed weights whose three output logits (foreground, boundary, distance)
    follow from the input like a trained instance network's: bright blobs on a dark background
    (about 0..1) are objects, their edges boundary, their blurred interior the distance map.
    Receptive field: 5 pixels each way."""
    import torch
    from torch import nn

    find = nn.Conv2d(1, 1, 3, padding=1)  # foreground logit of the 3x3 mean: 12 * (mean - 0.5)
    split = nn.Conv2d(1, 2, 5, padding=2)  # [f, 5x5 mean of f]
    head = nn.Conv2d(2, 3, 5, padding=2)
    with torch.no_grad():
        find.weight.fill_(12.0 / 9)
        find.bias.fill_(-6.0)
        split.weight.zero_()
        split.bias.zero_()
        split.weight[0, 0, 2, 2] = 1.0
        split.weight[1, 0].fill_(1.0 / 25)
        head.weight.zero_()
        head.weight[0, 0, 2, 2] = 16.0  # foreground: 16 * (f - 0.5)
        head.weight[1, 0, 2, 2] = 24.0  # boundary: 24 * (f - mean(f)) - 2
        head.weight[1, 1, 2, 2] = -24.0
        head.weight[2, 1].fill_(10.0 / 25)  # distance: 10 * (mean(mean(f)) - 0.7)
        head.bias.copy_(torch.tensor([-8.0, -2.0, -7.0]))
    model = nn.Sequential(find, nn.Sigmoid(), split, head)
    model.eval()
    return model


def instance_test_image(shape: tuple[int, ...] = (96, 128), *, n: int = 12, seed: int = 0) -> np.ndarray:
    """Bright discs (radius 4..9, some touching) on a dark, slightly noisy background, float32."""
    rng = np.random.default_rng(seed)
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    image = np.zeros(shape, dtype=np.float32)
    for _ in range(n):
        y, x, r = rng.uniform(0, shape[0]), rng.uniform(0, shape[1]), rng.uniform(4, 9)
        image[(yy - y) ** 2 + (xx - x) ** 2 < r**2] = rng.uniform(0.7, 1.0)
    return image + rng.normal(0, 0.05, shape).astype(np.float32)


#: The halo of the ``instances`` package: larger than its objects (radius up to 9) and than its
#: network's receptive field (5), so tiles decode the objects they keep whole.
INSTANCE_HALO = 24

#: The instance settings the ``instances`` package stores (``config.microzoo.instance_settings``).
INSTANCE_SETTINGS = {"foreground_threshold": 0.5, "seed_threshold": 0.5, "boundary_weight": 0.5,
                     "min_seed_size": 2, "min_size": 10}  # fmt: skip


@_in_folder_context
def build_instances(folder: Path) -> Path:
    """An instance package like ``microzoo train instances`` exports: 3 output channels
    (foreground, boundary, distance; logits, sigmoid as postprocessing), y/x
    ParameterizedSize(64, 16), halo ``INSTANCE_HALO``, ``config.microzoo.instance_settings``; fixed weights
    (:func:`_instance_network`), torchscript and onnx."""
    from bioimageio.spec.model import v0_5 as v05

    folder.mkdir(parents=True, exist_ok=True)
    model = _instance_network()
    x = instance_test_image((64, 80), n=6, seed=1)[None, None]
    w = _save_all_weights(folder, model, [x], ["raw"], ["instances"])
    common = _common_fields(
        v05,
        folder,
        "microzoo synthetic instances",
        "Bright blobs to foreground, boundary and distance maps (fixed weights) with instance settings.",
        x,
    )
    maps = [v05.Identifier(n) for n in ("foreground", "boundary", "distance")]

    def make(files):
        return v05.ModelDescr(
            **common,
            inputs=[
                _input(
                    v05,
                    folder,
                    "raw",
                    [_batch(), _channel(1), _param_in("y", 64, 16), _param_in("x", 64, 16)],
                    x,
                    preprocessing=[_ensure_f32(v05)],
                )
            ],
            outputs=[
                _output(
                    v05,
                    "instances",
                    [
                        _batch(),
                        v05.ChannelAxis(channel_names=maps),
                        _ref_out("y", "raw", INSTANCE_HALO),
                        _ref_out("x", "raw", INSTANCE_HALO),
                    ],
                    files,
                    postprocessing=[v05.SigmoidDescr()],
                )
            ],
            weights=_weights(v05, folder, torchscript=w["torchscript"], onnx=w["onnx"], parent="torchscript"),
            config=v05.Config(microzoo={"instance_settings": dict(INSTANCE_SETTINGS)}),
        )

    return _finish_v05(folder, make, {"raw": x}, "torchscript")


@_in_folder_context
def build_keras_only(folder: Path) -> Path:
    """Only keras_hdf5 weights (a dummy file): valid format, but no engine can run it here."""
    from bioimageio.spec import ValidationContext, save_bioimageio_yaml_only
    from bioimageio.spec.model import v0_5 as v05

    folder.mkdir(parents=True, exist_ok=True)
    x = _rng_image(21, (1, 1, 64, 64))
    y = (x * 0.5).astype(np.float32)
    np.save(folder / "test_output_out.npy", y)
    (folder / "weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"microzoo dummy keras weights, not loadable\n")
    common = _common_fields(
        v05,
        folder,
        "microzoo synthetic keras only",
        "Only (dummy) keras_hdf5 weights: for 'unsupported weight format' errors.",
        x,
    )
    with ValidationContext(root=folder, perform_io_checks=False):
        descr = v05.ModelDescr(
            **common,
            inputs=[_input(v05, folder, "raw", [_batch(), _channel(1), _param_in("y"), _param_in("x")], x)],
            outputs=[
                _output(
                    v05,
                    "out",
                    [_batch(), _channel(1), _ref_out("y", "raw"), _ref_out("x", "raw")],
                    {"out": _file(v05, folder, "test_output_out.npy")},
                )
            ],
            weights=v05.WeightsDescr(
                keras_hdf5=v05.KerasHdf5WeightsDescr(
                    source=Path("weights.h5"),
                    sha256=v05.Sha256(sha256_of(folder / "weights.h5")),
                    tensorflow_version=v05.Version("2.15"),
                )
            ),
        )
    rdf = folder / "bioimageio.yaml"
    save_bioimageio_yaml_only(descr, rdf)
    return rdf


_RDF_04 = """\
format_version: 0.4.10
type: model
name: microzoo synthetic format 04
description: Format 0.4 model description (bcyx, min/step shape, zero_mean_unit_variance per_sample).
authors:
  - name: microzoo tests
cite:
  - text: microzoo synthetic test package
    url: https://bioimage.io
license: MIT
documentation: README.md
covers: [cover.png]
tags: [microzoo-test, synthetic]
timestamp: '2024-01-01T00:00:00'
test_inputs: [test_input.npy]
test_outputs: [test_output.npy]
inputs:
  - name: raw
    axes: bcyx
    data_type: float32
    data_range: [-.inf, .inf]
    shape:
      min: [1, 1, 32, 32]
      step: [0, 0, 16, 16]
    preprocessing:
      - name: zero_mean_unit_variance
        kwargs:
          mode: per_sample
          axes: yx
outputs:
  - name: prob
    axes: bcyx
    data_type: float32
    data_range: [-.inf, .inf]
    halo: [0, 0, {halo}, {halo}]
    shape:
      reference_tensor: raw
      scale: [1, 1, 1, 1]
      offset: [0, 0, 0, 0]
weights:
  torchscript:
    source: weights_torchscript.pt
    sha256: {ts_sha}
    pytorch_version: '{torch_version}'
"""


@_in_folder_context
def build_format_04(folder: Path) -> Path:
    """Hand-written format 0.4.10 ``rdf.yaml`` with torchscript weights."""
    from bioimageio.spec import ValidationContext, load_model_description

    folder.mkdir(parents=True, exist_ok=True)
    model = _make_model(folder, "TinyConvNet", {"in_channels": 1, "out_channels": 1, "hidden": 4}, seed=4)
    x = _rng_image(22, (1, 1, 64, 64), scale=10.0, offset=100.0)
    np.save(folder / "test_input.npy", x)
    np.save(folder / "test_output.npy", np.zeros_like(x))  # placeholder, replaced below
    _save_torchscript(model, folder / "weights_torchscript.pt")
    (folder / ARCH_FILE).unlink()  # torchscript only: no architecture in this package
    _write_doc(folder, "microzoo synthetic format 04", "A format 0.4 description.")
    _write_cover(folder, x)
    rdf = folder / "rdf.yaml"
    rdf.write_text(
        _RDF_04.format(halo=HALO, ts_sha=sha256_of(folder / "weights_torchscript.pt"), torch_version=_torch_version())
    )
    with ValidationContext(root=folder, perform_io_checks=False):
        draft = load_model_description(rdf, format_version="discover", perform_io_checks=False)
        out = _core_outputs(draft, {"raw": x}, "torchscript")
    np.save(folder / "test_output.npy", out["prob"])
    return rdf


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "parameterized": build_parameterized,
    "scaled_output": build_scaled_output,
    "two_in_two_out": build_two_in_two_out,
    "format_04": build_format_04,
    "state_dict": build_state_dict,
    "ops_fixed": build_ops_fixed,
    "ops_stats": build_ops_stats,
    "ops_scale_mean_variance": build_ops_scale_mean_variance,
    "ops_norm_act": build_ops_norm_act,
    "ops_chained": build_ops_chained,
    "three_d": build_three_d,
    "keras_only": build_keras_only,
    "instances": build_instances,
}

# the weight formats in each package
WEIGHT_FORMATS: dict[str, tuple[str, ...]] = {
    "parameterized": ("pytorch_state_dict", "torchscript", "onnx"),
    "scaled_output": ("torchscript", "onnx"),
    "two_in_two_out": ("torchscript", "onnx"),
    "format_04": ("torchscript",),
    "state_dict": ("pytorch_state_dict",),
    "ops_fixed": ("torchscript", "onnx"),
    "ops_stats": ("torchscript", "onnx"),
    "ops_scale_mean_variance": ("torchscript", "onnx"),
    "ops_norm_act": ("torchscript", "onnx"),
    "ops_chained": ("torchscript", "onnx"),
    "three_d": ("torchscript", "onnx"),
    "keras_only": ("keras_hdf5",),
    "instances": ("torchscript", "onnx"),
}

# packages bioimageio.core 0.11 cannot run, and why (their test outputs are computed otherwise)
CORE_CANNOT_RUN: dict[str, str] = {
    "ops_scale_mean_variance": "core 0.11 computes output statistics before preprocessing (KeyError)",
    "keras_only": "no tensorflow/keras installed; the weights file is a dummy",
}

_CACHE: dict[str, Path] = {}


def built_package(tmp_path_factory, name: str) -> Path:
    """The rdf path of package ``name``, built once per test session."""
    key = f"{tmp_path_factory.getbasetemp()}::{name}"
    if key not in _CACHE:
        folder = tmp_path_factory.mktemp(f"pkg_{name}", numbered=True)
        _CACHE[key] = BUILDERS[name](folder)
    return _CACHE[key]


def built_packages(tmp_path_factory, names: Sequence[str] | None = None) -> dict[str, Path]:
    """Name -> rdf path for all (or the given) synthetic packages, built once per session.

    Use from a session-scoped fixture::

        @pytest.fixture(scope="session")
        def packages(tmp_path_factory):
            return built_packages(tmp_path_factory)
    """
    return {n: built_package(tmp_path_factory, n) for n in (names or list(BUILDERS))}


# ---------------------------------------------------------------------------------------------
# format 0.4 descriptions bioimageio.spec reads as valid 0.4 but cannot convert to 0.5 (core runs
# them from the 0.4 description). Same network and test tensors as ``format_04``: core runs the
# test input whole, so the halo does not change the test output.


def _build_format_04_again(folder: Path) -> Path:
    """``build_format_04``, which may run more than once a session: it deletes the architecture
    file it imported, so modules whose file is gone are forgotten first (else torch.jit.script
    cannot read their source)."""
    for name, module in list(sys.modules.items()):
        if name.startswith("microzoo_synthetic_arch_") and not Path(getattr(module, "__file__", "") or "").exists():
            del sys.modules[name]
    return build_format_04(folder)


def _format_04_variant(folder: Path, edit: Callable[[str], str]) -> Path:
    rdf = _build_format_04_again(folder)
    rdf.write_text(edit(rdf.read_text()))
    return rdf


def build_format_04_fixed_halo(folder: Path) -> Path:
    """Input and output of fixed shape (1, 1, 64, 64), the output with halo 8: the 0.5 converter
    refuses "output axis with halo and fixed size"."""
    return _format_04_variant(
        folder,
        lambda text: text.replace(
            "    shape:\n      min: [1, 1, 32, 32]\n      step: [0, 0, 16, 16]", "    shape: [1, 1, 64, 64]"
        ).replace(
            "    shape:\n      reference_tensor: raw\n      scale: [1, 1, 1, 1]\n      offset: [0, 0, 0, 0]",
            "    shape: [1, 1, 64, 64]",
        ),
    )


def build_format_04_cite_url(folder: Path) -> Path:
    """Citations with a URL without scheme and an ftp URL: valid 0.4, refused by 0.5's HttpUrl."""
    return _format_04_variant(
        folder,
        lambda text: text.replace(
            "    url: https://bioimage.io\n",
            "    url: bioimage.io\n  - text: the data\n    url: ftp://example.org/data\n"
            "  - text: the method\n    doi: 10.1007/978-3-319-24574-4_28\n    url: ftp://example.org/paper\n",
        ),
    )


BUILDERS["format_04"] = _build_format_04_again
BUILDERS["format_04_fixed_halo"] = build_format_04_fixed_halo
BUILDERS["format_04_cite_url"] = build_format_04_cite_url
WEIGHT_FORMATS["format_04_fixed_halo"] = ("torchscript",)
WEIGHT_FORMATS["format_04_cite_url"] = ("torchscript",)

# packages bioimageio.spec reads as valid 0.4 but cannot convert to 0.5, and why (microzoo repairs
# the field: microzoo.package.format04)
SPEC_CANNOT_CONVERT: dict[str, str] = {
    "format_04_fixed_halo": "output axis with halo and fixed size",
    "format_04_cite_url": "Input should be a valid URL",
}
