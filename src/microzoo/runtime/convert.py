"""Add weight formats to a model package: TorchScript and ONNX from its state dict or TorchScript.

deepImageJ runs ``torchscript`` and ``onnx`` weights, not ``pytorch_state_dict``; a package
that lacks a format a consumer needs gets it here::

    convert_package("my-model/", ["onnx", "torchscript"], out_dir=Path("my-model-converted"))

The network is loaded from the package's ``pytorch_state_dict`` (preferred: the original; its
architecture is the package's own code, run because the user chose this package) or its
``torchscript`` weights. Each new format is checked twice before the new package is moved into
place: its raw outputs against the source network's on the preprocessed test inputs (and on
inputs one size step larger with a batch of two, where the description allows other sizes),
then the whole package's test outputs reproduced with it (:func:`~microzoo.runtime.reproduce.test_package`).

The weights are written by :mod:`microzoo.runtime.torch_export`, as a trained network's are
(:mod:`microzoo.train.export`): one way to script or trace, one way to export ONNX.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from microzoo.errors import ConfigError, OutputError, PackageError, WeightFormatError
from microzoo.io.atomic import atomic_output
from microzoo.package.load import DESCRIPTION_NAMES, ModelPackage, open_package
from microzoo.progress import ProgressCallback, no_progress
from microzoo.runtime.torch_export import (
    ONNX_FILE,
    OPSET,
    TORCHSCRIPT_FILE,
    Check,
    network_outputs,
    quiet_torch,
    save_description,
    save_onnx,
    save_torchscript,
)

__all__ = ["CONVERTIBLE", "convert_package"]

#: the formats convert writes, and the sources it reads them from (in the order preferred)
CONVERTIBLE = ("torchscript", "onnx")
SOURCES = {"torchscript": ("pytorch_state_dict",), "onnx": ("pytorch_state_dict", "torchscript")}
# --- converting a package -----------------------------------------------------------------


def convert_package(
    source: str | Path | ModelPackage,
    formats: Sequence[str],
    *,
    out_dir: Path,
    progress: ProgressCallback | None = None,
) -> Path:
    """Write a copy of the package with ``formats`` added into ``out_dir``; return its
    ``bioimageio.yaml``. ``out_dir`` is written whole or not at all (replaced if it holds a
    package, refused if it holds anything else or is the package's own folder).

    Raises
    ------
    ConfigError
        A format that convert does not write.
    WeightFormatError
        A format the package has already, or no source format (state dict, TorchScript) to convert from.
    PackageError
        The new weights do not reproduce the network or the package's test outputs.
    OutputError
        ``out_dir`` cannot be written.
    """
    progress = progress or no_progress
    package = source if isinstance(source, ModelPackage) else open_package(source)
    wanted = _checked_formats(package, formats)
    out_dir = Path(out_dir)
    _check_out_dir(package, out_dir)
    steps = 2 * len(wanted) + 3  # load; convert each; validate; test each; move
    progress(0, steps, "loading the network")
    module, source_fmt = _source_network(package, wanted)
    checks = _checks(package, module)
    new_entries: dict[str, Any] = {}
    with atomic_output(out_dir) as tmp:
        _copy_package_files(package, tmp)
        for i, fmt in enumerate(wanted):
            progress(1 + i, steps, f"converting {source_fmt} to {fmt}")
            new_entries[fmt] = _write_format(package, module, fmt, source_fmt, tmp, checks)
        progress(1 + len(wanted), steps, "validating the description")
        rdf = save_description(
            package.descr.model_copy(update={"weights": package.descr.weights.model_copy(update=new_entries)}),
            tmp,
            fix="report this package to microzoo",
        )
        _test_new_formats(tmp, wanted, progress, steps)
        progress(steps - 1, steps, "moving the package into place")
    progress(steps, steps, "package written")
    return out_dir / rdf.name


def _checked_formats(package: ModelPackage, formats: Sequence[str]) -> list[str]:
    from microzoo.runtime.engines import available_formats

    wanted = list(dict.fromkeys(f.strip() for f in formats if f.strip()))
    unknown = [f for f in wanted if f not in CONVERTIBLE]
    if not wanted or unknown:
        raise ConfigError(f"cannot convert to {', '.join(unknown) or 'nothing'}: choose from {', '.join(CONVERTIBLE)}")
    present = available_formats(package)
    there = [f for f in wanted if f in present]
    if there:
        missing = [f for f in CONVERTIBLE if f not in present]
        raise WeightFormatError(
            f"this package has {', '.join(there)} weights already; ask only for formats it lacks "
            f"({', '.join(missing) or 'it has every format convert writes'})"
        )
    for fmt in wanted:
        if not any(s in present for s in SOURCES[fmt]):
            raise WeightFormatError(
                f"{fmt} weights are made from {' or '.join(SOURCES[fmt])} weights, and this package has only "
                f"{', '.join(present) or 'none'}; ask its authors for a state dict, or convert with the "
                "framework it was trained in"
            )
    return wanted


def _check_out_dir(package: ModelPackage, out_dir: Path) -> None:
    if out_dir.resolve() == package.root.resolve() or package.root.resolve().is_relative_to(out_dir.resolve()):
        raise OutputError(f"{out_dir} holds the package being converted; give a new folder with -o")
    if out_dir.exists() and (
        not out_dir.is_dir() or (any(out_dir.iterdir()) and not any((out_dir / n).exists() for n in DESCRIPTION_NAMES))
    ):
        raise OutputError(f"{out_dir} exists and is not a model package; choose a new or empty folder")


def _source_network(package: ModelPackage, wanted: Sequence[str]) -> tuple[Any, str]:
    """The network (CPU, eval mode) from the first source format every wanted format accepts."""
    import torch

    from microzoo.runtime.engines import StateDictEngine, available_formats

    has_state_dict = "pytorch_state_dict" in available_formats(package)
    # the state dict where there is one (and TorchScript is made only from it), else TorchScript
    source_fmt = "pytorch_state_dict" if has_state_dict or "torchscript" in wanted else "torchscript"
    entry = getattr(package.descr.weights, source_fmt)
    path = package.file(entry.source)
    if source_fmt == "pytorch_state_dict":
        return StateDictEngine(package, entry, path, device="cpu").module, source_fmt
    with quiet_torch():
        return torch.jit.load(str(path), map_location="cpu").eval(), source_fmt


def _checks(package: ModelPackage, module: Any) -> list[Check]:
    """The network's raw outputs for the preprocessed test inputs (last: tracing uses it) and,
    where the description allows other sizes, for inputs one step larger with a batch of two."""
    from microzoo.runtime.reproduce import load_test_tensor

    descr = package.descr
    raw = {str(t.id): load_test_tensor(package, t) for t in descr.inputs}
    inputs = [_preprocessed(descr, raw, t) for t in descr.inputs]
    checks = [(inputs, network_outputs(module, inputs))]
    grown = _grown_inputs(descr, inputs)
    if grown is not None:
        checks.insert(0, (grown, network_outputs(module, grown)))
    return checks


def _preprocessed(descr: Any, raw: Mapping[str, np.ndarray], tensor: Any) -> np.ndarray:
    from microzoo.runtime.ops import bind_ops

    def axes(t: Any) -> tuple[str, ...]:
        return tuple(str(a.id) for a in t.axes)

    sample = {str(t.id): (raw[str(t.id)], axes(t)) for t in descr.inputs}
    x = raw[str(tensor.id)]
    return np.ascontiguousarray(bind_ops(tensor.preprocessing, x, axes(tensor), sample=sample)(x), dtype=np.float32)


def _grown_inputs(descr: Any, inputs: Sequence[np.ndarray]) -> list[np.ndarray] | None:
    """The inputs with every parameterized axis one step larger (axes that reference it follow)
    and a batch of two where the batch is free; ``None`` if the sizes are fixed."""
    from microzoo.runtime.geometry import FixedSize, ParameterizedSize, SizeReference, geometry_from_descr

    geometry = geometry_from_descr(descr)
    sizes = {
        (t.id, a.id): n
        for t, x in zip(geometry.inputs, inputs, strict=True)
        for a, n in zip(t.axes, x.shape, strict=True)
    }
    grown = dict(sizes)
    for t in geometry.inputs:
        for a in t.axes:
            if isinstance(a.size, ParameterizedSize):
                grown[(t.id, a.id)] = sizes[(t.id, a.id)] + a.size.step
            elif a.kind == "batch" and not isinstance(a.size, FixedSize):
                grown[(t.id, a.id)] = 2
    for t in geometry.inputs:  # references follow what they reference (same scale only)
        for a in t.axes:
            if isinstance(a.size, SizeReference):
                ref = geometry.tensor(a.size.tensor_id).axis(a.size.axis_id)
                if ref.scale != a.scale:
                    return None
                grown[(t.id, a.id)] = grown[(a.size.tensor_id, a.size.axis_id)] + a.size.offset
    if grown == sizes:
        return None
    result = []
    for t, x in zip(geometry.inputs, inputs, strict=True):
        for d, a in enumerate(t.axes):
            extra = grown[(t.id, a.id)] - x.shape[d]
            if a.kind == "batch" and extra > 0:
                x = np.concatenate([x] * grown[(t.id, a.id)], axis=d)[: grown[(t.id, a.id)]]
            elif extra > 0:
                x = np.pad(x, [(0, extra if i == d else 0) for i in range(x.ndim)], mode="symmetric")
        result.append(np.ascontiguousarray(x))
    return result


def _copy_package_files(package: ModelPackage, tmp: Path) -> None:
    """Every file of the package folder (contents only, writable) but its description, written
    anew, and links."""
    root = package.root.resolve()
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        target = tmp / here.relative_to(root)
        target.mkdir(parents=True, exist_ok=True)
        dirs[:] = [d for d in dirs if not (here / d).is_symlink()]
        for name in files:
            if (here / name).is_symlink() or (here == root and name in DESCRIPTION_NAMES):
                continue
            shutil.copyfile(here / name, target / name)


def _write_format(
    package: ModelPackage, module: Any, fmt: str, source_fmt: str, tmp: Path, checks: Sequence[Check]
) -> Any:
    """Write one format's weights into ``tmp`` (checked against ``checks``); return its entry."""
    import torch
    from bioimageio.spec import ValidationContext
    from bioimageio.spec.model import v0_5

    from microzoo import __version__
    from microzoo.package.load import sha256_of
    from microzoo.runtime.geometry import FixedSize, geometry_from_descr

    path = _free_name(tmp, TORCHSCRIPT_FILE if fmt == "torchscript" else ONNX_FILE)
    comment = f"converted from {source_fmt} by microzoo {__version__}"
    if fmt == "torchscript":
        kind, _ = save_torchscript(module, path, checks)
        extra: dict[str, Any] = {"pytorch_version": v0_5.Version(torch.__version__.split("+")[0])}
        comment += f" ({kind})"
    else:
        geometry = geometry_from_descr(package.descr)
        dynamic = {
            t.id: {d: f"{t.id}_{a.id}" for d, a in enumerate(t.axes) if not isinstance(a.size, FixedSize)}
            for t in geometry.inputs + geometry.outputs
        }
        names = [t.id for t in geometry.inputs], [t.id for t in geometry.outputs]
        save_onnx(module, path, checks, input_names=names[0], output_names=names[1], dynamic_axes=dynamic)
        extra = {"opset_version": OPSET}
    cls = v0_5.TorchscriptWeightsDescr if fmt == "torchscript" else v0_5.OnnxWeightsDescr
    with ValidationContext(root=tmp, perform_io_checks=False):
        return cls(
            source=Path(path.name), sha256=v0_5.Sha256(sha256_of(path)), parent=source_fmt, comment=comment, **extra
        )


def _free_name(folder: Path, name: str) -> Path:
    path, n = folder / name, 1
    while path.exists():
        stem, dot, suffix = name.partition(".")
        path, n = folder / f"{stem}_{n}{dot}{suffix}", n + 1
    return path


def _test_new_formats(folder: Path, formats: Sequence[str], progress: ProgressCallback, steps: int) -> None:
    """Reproduce the package's test outputs with each new format; raise naming any that fails."""
    from microzoo.runtime.reproduce import test_package

    converted = open_package(folder)
    for i, fmt in enumerate(formats):
        progress(2 + len(formats) + i, steps, f"reproducing the test outputs with {fmt}")
        failed = [r for r in test_package(converted, weight_format=fmt) if not r.passed]
        if failed:
            details = "; ".join(
                r.error
                or f"{r.output_id}: max |diff| {r.max_abs_diff:.3g}, {r.mismatched_per_million:.1f} "
                f"mismatched per million (allowed {r.allowed_per_million:g})"
                for r in failed
            )
            raise PackageError(
                f"the converted {fmt} weights do not reproduce the package's test outputs ({details}); "
                "nothing was written. Check that the package's own weights pass `microzoo test`"
            )
