"""Engines: run a model's weights on arrays.

All framework code lives here. Each engine takes float arrays in the model's input order
(axes as in the description) and returns the raw outputs in the description's output order.
Frameworks are imported lazily, only when their format is used; when none of a package's
formats can be loaded, the errors of every attempt are reported together.

Supported: ``torchscript`` and ``pytorch_state_dict`` (torch), ``onnx`` (onnxruntime).
Keras and TensorFlow weights are recognised and refused with a message naming what is supported.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from microzoo.errors import PackageError, WeightFormatError
from microzoo.package.architecture import architecture_callable, library_callable
from microzoo.package.load import ModelPackage
from microzoo.runtime.resources import thread_count

#: formats microzoo runs, in the order tried when the user does not choose
SUPPORTED_FORMATS = ("torchscript", "onnx", "pytorch_state_dict")
#: formats the zoo knows that microzoo does not run
UNSUPPORTED_FORMATS = ("keras_hdf5", "keras_v3", "tensorflow_saved_model_bundle", "tensorflow_js")


class Engine(Protocol):
    """What the predictor needs from an engine."""

    weight_format: str
    device: str

    def forward(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """Run the model on a batch; inputs and outputs in the description's order."""
        ...


def available_formats(package: ModelPackage) -> list[str]:
    """Weight formats present in a package (every format, supported or not)."""
    weights = package.descr.weights
    return [name for name in SUPPORTED_FORMATS + UNSUPPORTED_FORMATS if getattr(weights, name, None)]


def choose_format(package: ModelPackage, requested: str | None = None) -> str:
    """The weight format to run: ``requested`` if given and present, else the first supported."""
    present = available_formats(package)
    if requested is not None:
        if requested not in SUPPORTED_FORMATS + UNSUPPORTED_FORMATS:
            raise WeightFormatError(
                f"unknown weight format '{requested}': choose one of {', '.join(SUPPORTED_FORMATS)}"
            )
        if requested in UNSUPPORTED_FORMATS:
            raise WeightFormatError(_unsupported_message(requested, present))
        if requested not in present:
            raise WeightFormatError(
                f"this package has no '{requested}' weights; it has: {', '.join(present) or 'none'}"
            )
        return requested
    for name in SUPPORTED_FORMATS:
        if name in present:
            return name
    raise WeightFormatError(_unsupported_message(present[0] if present else "none", present))


def load_engine(
    package: ModelPackage, weight_format: str | None = None, *, device: str | None = None, threads: int | None = None
) -> Engine:
    """Load the weights of ``package`` in ``weight_format`` (default: the first supported one).

    ``device`` is ``"cpu"``, ``"cuda"`` (or ``"cuda:N"``); by default a GPU is used where present.
    ``threads`` sets the CPU threads (default: all cores).
    """
    chosen = choose_format(package, weight_format)
    entry = getattr(package.descr.weights, chosen)
    path = package.file(entry.source)
    try:
        if chosen == "onnx":
            return OnnxEngine(path, device=device, threads=threads)
        if chosen == "torchscript":
            return TorchscriptEngine(path, device=device, threads=threads)
        return StateDictEngine(package, entry, path, device=device, threads=threads)
    except ImportError as error:
        raise WeightFormatError(
            f"cannot run '{chosen}' weights: {error}. Install the missing package, or choose "
            f"another format with --weights ({', '.join(available_formats(package))})"
        ) from error


def _unsupported_message(fmt: str, present: Sequence[str]) -> str:
    return (
        f"microzoo cannot run '{fmt}' weights (this package has: {', '.join(present) or 'none'}). "
        f"Supported formats: {', '.join(SUPPORTED_FORMATS)}. Convert the model (for example with "
        "bioimageio.core or the zoo's converters) or ask its authors for torchscript/onnx weights"
    )


def _quiet_openmp_threads() -> None:
    """Let torch's OpenMP threads sleep between runs instead of spinning (before torch loads).

    As with onnxruntime's spinning: spinning threads take the cores from the work between tiles.
    On a 4096x4096 image the work outside the forwards fell from about 1.0 s to 0.25-0.7 s with
    forwards no slower. ``setdefault``: a user's own ``OMP_WAIT_POLICY`` wins, and it has no
    effect when torch was imported before microzoo loads an engine.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _torch_device(device: str | None) -> Any:
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def _set_torch_threads(threads: int | None) -> int:
    """Set torch's (process-wide) CPU threads; return the count. Called at every forward too:
    results differ by about 1e-6 between thread counts, so an engine always runs with its own
    (another engine in the same process may have changed it)."""
    import torch

    count = thread_count(threads)
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count


class TorchscriptEngine:
    """TorchScript weights (``torch.jit.load``)."""

    weight_format = "torchscript"

    def __init__(self, path: Path, *, device: str | None = None, threads: int | None = None) -> None:
        _quiet_openmp_threads()
        import torch

        self._threads = _set_torch_threads(threads)
        self._device = _torch_device(device)
        self.device = str(self._device)
        try:
            with warnings.catch_warnings():
                # torch 2.10+ deprecates TorchScript in favour of torch.export; the zoo format
                # still ships TorchScript, so loading it is what we must do
                warnings.filterwarnings(
                    "ignore", message=".*torch.jit.load.* is deprecated", category=DeprecationWarning
                )
                self._module = torch.jit.load(str(path), map_location=self._device).eval()
        except RuntimeError as error:
            raise PackageError(f"cannot load the TorchScript weights {path.name}: {error}") from error
        if self._device.type == "cpu":
            self._module = _optimized_for_inference(self._module)

    def forward(self, *inputs: np.ndarray) -> list[np.ndarray]:
        _set_torch_threads(self._threads)
        return torch_forward(self._module, self._device, inputs)


def _optimized_for_inference(module: Any) -> Any:
    """The module frozen and optimised for CPU inference (weights folded in as constants), or the
    module itself where TorchScript cannot optimise it.

    On the zoo's example U-Net a 512x512 forward took 175 ms instead of 190-198 ms, with
    identical outputs; ``microzoo test`` checks every package's outputs against its test tensors.
    """
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.jit.optimize_for_inference(torch.jit.freeze(module))
    except Exception:  # noqa: BLE001 - scripted modules TorchScript cannot freeze run as they are
        return module


class StateDictEngine:
    """``pytorch_state_dict`` weights: the architecture from the package's source file.

    The source file is code from the package: it is executed because the user chose to open
    this package. Weights are loaded with ``weights_only=True`` (no pickled code).
    """

    weight_format = "pytorch_state_dict"

    def __init__(
        self, package: ModelPackage, entry: Any, path: Path, *, device: str | None = None, threads: int | None = None
    ) -> None:
        _quiet_openmp_threads()
        import torch

        self._threads = _set_torch_threads(threads)
        self._device = _torch_device(device)
        self.device = str(self._device)
        architecture = entry.architecture
        if hasattr(architecture, "source"):
            factory = architecture_callable(package.file(architecture.source), str(architecture.callable))
        else:  # ArchitectureFromLibraryDescr
            factory = library_callable(str(architecture.import_from), str(architecture.callable))
        model = factory(**dict(architecture.kwargs or {}))
        if not isinstance(model, torch.nn.Module):
            raise PackageError(f"the architecture '{architecture.callable}' did not return a torch.nn.Module")
        try:
            state = torch.load(str(path), map_location=self._device, weights_only=True)
        except Exception as error:  # torch raises UnpicklingError/RuntimeError variants
            # torch's own message advises loading the file unsafely; never pass that on
            raise PackageError(
                f"cannot load the state dict {path.name} safely: the file holds more than weights "
                f"(Python objects whose loading could run code: {type(error).__name__}), so microzoo "
                "does not load it. Choose another weight format of the package (--weights), or ask its "
                "authors for torchscript or onnx weights, or for a plain state dict of tensors"
            ) from None
        model.load_state_dict(state, strict=bool(getattr(entry, "strict", True)))
        self._module = model.to(self._device).eval()

    @property
    def module(self) -> Any:
        """The network with its weights loaded (``torch.nn.Module``, in eval mode)."""
        return self._module

    def forward(self, *inputs: np.ndarray) -> list[np.ndarray]:
        _set_torch_threads(self._threads)
        return torch_forward(self._module, self._device, inputs)


def torch_forward(module: Any, device: Any, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """A torch module's outputs for NumPy inputs, as a list of NumPy arrays (one tensor, a tuple
    or a dict of tensors returned)."""
    import torch

    with torch.inference_mode():
        tensors = [torch.from_numpy(np.ascontiguousarray(x)).to(device) for x in inputs]
        result = module(*tensors)
    if isinstance(result, torch.Tensor):
        result = [result]
    elif isinstance(result, dict):
        result = list(result.values())
    return [r.detach().cpu().numpy() for r in result]


class OnnxEngine:
    """ONNX weights (onnxruntime)."""

    weight_format = "onnx"

    def __init__(self, path: Path, *, device: str | None = None, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = thread_count(threads)
        options.log_severity_level = 3
        # onnxruntime's threads spin after every run by default, taking the cores from the
        # stitching and processing between tiles; without spinning a 2048x2048 image ran in
        # 9.2 s instead of 11.0 s on a shared 2-core machine, and single forwards were no slower
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        if device != "cpu" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self._session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as error:  # onnxruntime raises its own exception types
            raise PackageError(f"cannot load the ONNX weights {path.name}: {error}") from error
        self.device = "cuda" if providers[0].startswith("CUDA") else "cpu"
        self._input_names = [i.name for i in self._session.get_inputs()]

    def forward(self, *inputs: np.ndarray) -> list[np.ndarray]:
        # not strict: a graph input the description does not list is left to onnxruntime to refuse
        feed = {name: np.ascontiguousarray(x) for name, x in zip(self._input_names, inputs, strict=False)}
        return list(self._session.run(None, feed))
