"""Write a torch network as TorchScript or ONNX weights, each checked against the network.

The one way microzoo scripts or traces a network and exports ONNX: :mod:`microzoo.runtime.convert`
(new formats for a package) and :mod:`microzoo.train.export` (a trained network) both call these.
A *check* is a pair (inputs, the network's raw outputs for them), arrays in the description's
order; the last check's inputs are the example that tracing and the ONNX exporter run.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from microzoo.errors import PackageError

__all__ = [
    "Check",
    "OPSET",
    "ONNX_FILE",
    "TORCHSCRIPT_FILE",
    "assert_reproduces",
    "network_outputs",
    "quiet_torch",
    "save_description",
    "save_onnx",
    "save_torchscript",
]

OPSET = 17
TORCHSCRIPT_FILE, ONNX_FILE = "weights_torchscript.pt", "weights.onnx"
RTOL, ATOL = 1e-3, 1e-3  # as the spec's reproducibility defaults

#: (inputs, expected raw outputs) of the network, in the description's order
Check = tuple[list[np.ndarray], list[np.ndarray]]


@contextlib.contextmanager
def quiet_torch() -> Iterator[None]:
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


def network_outputs(module: Any, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The module's outputs on the CPU for NumPy inputs."""
    import torch

    from microzoo.runtime.engines import torch_forward

    return torch_forward(module, torch.device("cpu"), inputs)


def assert_reproduces(what: str, actual: Sequence[np.ndarray], expected: Sequence[np.ndarray]) -> None:
    """Raise :class:`PackageError` unless every output is close to the expected one."""
    for got, want in zip(actual, expected, strict=True):
        if got.shape != want.shape or not np.allclose(got, want, rtol=RTOL, atol=ATOL):
            diff = float(np.max(np.abs(got - want))) if got.shape == want.shape else float("nan")
            raise PackageError(
                f"the {what} weights do not reproduce the network (shape {got.shape} vs "
                f"{want.shape}, largest difference {diff:.3g}); the network may use "
                "operations that this format cannot express"
            )


def save_torchscript(module: Any, path: Path, checks: Sequence[Check]) -> tuple[str, list[list[np.ndarray]]]:
    """Script ``module`` (trace it with the last check's inputs if scripting fails) into ``path``;
    return ``"scripted"`` or ``"traced"`` and the saved module's outputs for every check."""
    import torch

    failures = []
    for kind in ("scripted", "traced"):
        try:
            with quiet_torch():
                example = tuple(torch.from_numpy(x) for x in checks[-1][0])
                saved = (
                    torch.jit.script(module)
                    if kind == "scripted"
                    else torch.jit.trace(module, example, check_trace=False)
                )
                saved.save(str(path))
                loaded = torch.jit.load(str(path)).eval()
            outputs = [network_outputs(loaded, inputs) for inputs, _ in checks]
            for output, (_, expected) in zip(outputs, checks, strict=True):
                assert_reproduces(f"{kind} TorchScript", output, expected)
            return kind, outputs
        except Exception as error:  # scripting raises many error types; any means: try the next way
            failures.append(f"{kind}: {str(error).splitlines()[0] if str(error) else type(error).__name__}")
    path.unlink(missing_ok=True)
    raise PackageError(
        "the network cannot be converted to TorchScript (" + "; ".join(failures) + "); "
        "avoid data-dependent Python control flow in forward, or make it scriptable"
    )


def save_onnx(
    module: Any,
    path: Path,
    checks: Sequence[Check],
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]],
    opset: int = OPSET,
) -> None:
    """Export ``module`` (an ``nn.Module`` or TorchScript) to ONNX with the last check's inputs,
    and check every check with onnxruntime.

    TorchScript is first converted to an exported program and decomposed into core operators,
    as bioimageio.core's converter does (the TorchScript-based exporter cannot type scripted
    networks such as the zoo's U-Nets); where that conversion fails, it is exported as it is.
    The checks say whether the numbers were kept.
    """
    import torch

    example = tuple(torch.from_numpy(x) for x in checks[-1][0])
    options = {
        "input_names": list(input_names),
        "output_names": list(output_names),
        "dynamic_axes": {k: dict(v) for k, v in dynamic_axes.items()},
    }
    attempts = [module]
    if isinstance(module, torch.jit.ScriptModule):
        try:
            attempts.insert(0, _as_exported_program(module, example))
        except Exception:  # noqa: BLE001 - the converter raises many error types: export the TorchScript itself
            pass
    failures = []
    for candidate in attempts:
        try:
            _export_onnx(candidate, example, path, opset, options)
            break
        except Exception as error:  # the exporter raises many error types
            failures.append(str(error).splitlines()[0] if str(error) else type(error).__name__)
    else:
        raise PackageError(f"the network cannot be exported to ONNX opset {opset}: {'; '.join(failures)}")
    _check_onnx(path, checks, input_names)


def _export_onnx(module: Any, example: tuple[Any, ...], path: Path, opset: int, options: dict[str, Any]) -> None:
    import torch

    with quiet_torch(), torch.no_grad():
        torch.onnx.export(
            module,
            example,
            str(path),
            dynamo=False,
            opset_version=opset,
            training=torch.onnx.TrainingMode.PRESERVE,  # exported programs cannot switch mode
            **options,
        )


def _as_exported_program(module: Any, example: tuple[Any, ...]) -> Any:
    from torch._export.converter import TS2EPConverter

    with quiet_torch():
        return TS2EPConverter(module, example).convert().run_decompositions().module()


def _check_onnx(path: Path, checks: Sequence[Check], input_names: Sequence[str]) -> None:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for inputs, expected in checks:
        feed = dict(zip(input_names, inputs, strict=True))
        assert_reproduces("ONNX", session.run(None, feed)[: len(expected)], expected)


def save_description(descr: Any, folder: Path, *, fix: str = "fix the fields named") -> Path:
    """Write ``descr`` as ``folder/bioimageio.yaml`` and check it (files and hashes included)."""
    from bioimageio.spec import InvalidDescr, load_model_description, save_bioimageio_yaml_only

    rdf = folder / "bioimageio.yaml"
    save_bioimageio_yaml_only(descr, rdf)
    loaded = load_model_description(rdf, perform_io_checks=True)
    if isinstance(loaded, InvalidDescr):
        errors = [f"{'.'.join(map(str, e.loc))}: {e.msg}" for d in loaded.validation_summary.details for e in d.errors]
        raise PackageError(f"the written description is not valid for bioimageio.spec: {'; '.join(errors[:8])}; {fix}")
    return rdf
