"""Refuse weights whose pickles hold more than tensors, without running any pickled code.

Two weight formats are pickles inside a zip:

- ``pytorch_state_dict``: loaded on the CPU with ``torch.load(weights_only=True)`` (memory-mapped
  where the file is a zip), torch's restricted unpickler: it builds tensors, containers and
  primitives only and refuses any other global before calling it. A file it refuses is refused.
- ``torchscript``: ``torch.jit.load`` reads ``data.pkl`` and ``constants.pkl`` with torch's C++
  unpickler, which calls no Python: it resolves ``__torch__.*`` names as TorchScript classes and
  a few ``torch``/``collections`` names, and fails on any other global. The zoo checks that the
  file is a zip archive holding a ``*/data.pkl``, and unpickles every pickle in it (``*.pkl``,
  ``*.debug_pkl``) with :class:`_TorchScriptUnpickler`: every global must be one the C++
  unpickler knows (:data:`TORCHSCRIPT_GLOBALS`, ``__torch__.*``), and is replaced by an inert
  placeholder, so nothing from the file is imported or called. TorchScript code
  (``code/**/*.py``) is compiled by torch's TorchScript compiler, not imported by Python; it is
  not checked here: it runs only in the worker's limited child process, never in the server.

Other formats (onnx, tensorflow, keras) hold no Python pickles and are not loaded here.
"""

from __future__ import annotations

import io
import pickle
import re
import zipfile
from pathlib import Path

from microzoo.errors import UploadError
from microzoo.package.load import ModelPackage

#: the globals torch's C++ unpickler resolves in a TorchScript archive, besides ``__torch__.*``
#: classes and ``torch.<Type>Storage`` (torch/csrc/jit/serialization/unpickler.cpp, readGlobal)
TORCHSCRIPT_GLOBALS = {
    "collections": {"OrderedDict"},
    "builtins": {"set"},
    # a device, and the enums a quantized tensor names (its qscheme and dtype)
    "torch": {"device"} | set(
        "per_tensor_affine per_channel_affine per_tensor_symmetric per_channel_symmetric "
        "per_channel_affine_float_qparams float float32 float64 double float16 half bfloat16 uint8 int8 int16 "
        "short int32 int int64 long bool complex64 complex128 qint8 quint8 qint32 quint4x2 quint2x4".split()
    ),
    "torch._utils": {"_rebuild_tensor_v2", "_rebuild_qtensor", "_rebuild_sparse_tensor"},
    "torch.jit._pickle": {
        "build_intlist", "build_tensorlist", "build_doublelist", "build_boollist",
        "build_tensor_from_id", "restore_type_tag",
    },
}  # fmt: skip
#: the largest pickle read from a TorchScript archive (the module's structure, not its tensors:
#: a few KiB to a few MiB)
MAX_PICKLE_BYTES = 64 << 20
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def check_pickled_weights(package: ModelPackage) -> None:
    """Refuse (400) a package whose ``pytorch_state_dict`` or ``torchscript`` weights hold more than tensors."""
    weights = package.descr.weights
    if weights.pytorch_state_dict is not None:
        _check_state_dict(package.file(weights.pytorch_state_dict.source))
    if weights.torchscript is not None:
        _check_torchscript(package.file(weights.torchscript.source))


def _refuse(path: Path, what: str) -> UploadError:
    return UploadError(
        f"the weights {path.name} {what}; the zoo stores no weights whose loading could run code. "
        "Export the weights again as a plain state dict of tensors (torch.save(model.state_dict(), ...)), "
        "or as torchscript or onnx",
        status=400,
    )


def _check_state_dict(path: Path) -> None:
    import torch

    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as error:  # torch raises UnpicklingError/RuntimeError variants
        # torch's message advises loading the file unsafely: only the name of the global is kept
        found = _REFUSED_GLOBAL.search(str(error))
        what = (
            f"the Python callable {found.group(1)}"
            if found
            else f"data torch cannot load safely ({type(error).__name__})"
        )
        raise _refuse(path, f"hold {what}, which loading with torch.load(weights_only=True) refuses") from None
    del state


def _check_torchscript(path: Path) -> None:
    if not zipfile.is_zipfile(path):
        raise _refuse(path, "are not a TorchScript archive (a zip file, as torch.jit.save writes)")
    with zipfile.ZipFile(path) as archive:
        members = [m for m in archive.infolist() if m.filename.endswith((".pkl", ".debug_pkl"))]
        if not any(m.filename.endswith("/data.pkl") or m.filename == "data.pkl" for m in members):
            raise _refuse(path, "are a zip without data.pkl, so not a TorchScript archive")
        for member in members:
            if member.file_size > MAX_PICKLE_BYTES:
                raise _refuse(path, f"hold a pickle {member.filename} of {member.file_size:,} bytes")
            try:
                _TorchScriptUnpickler(io.BytesIO(archive.read(member))).load()
            except _RefusedGlobal as refused:
                raise _refuse(path, f"name the Python callable {refused} in {member.filename}") from None
            except Exception as error:  # a truncated or malformed pickle
                raise _refuse(path, f"hold a pickle {member.filename} that cannot be read ({error})") from None


class _RefusedGlobal(pickle.UnpicklingError):
    """A global outside what torch.jit.load resolves; the message is ``module.name``."""


class _Inert:
    """What every allowed global becomes: accepts any construction and state, does nothing."""

    def __new__(cls, *args: object, **kwargs: object) -> _Inert:
        return object.__new__(cls)

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __call__(self, *args: object, **kwargs: object) -> _Inert:
        return _Inert()

    def __setstate__(self, state: object) -> None:
        pass

    def __setitem__(self, key: object, value: object) -> None:
        pass

    def append(self, item: object) -> None:
        pass

    def extend(self, items: object) -> None:
        pass


class _TorchScriptUnpickler(pickle.Unpickler):
    """Reads a TorchScript pickle's structure; every global is checked, none is imported or called."""

    def find_class(self, module: str, name: str) -> type[_Inert]:
        allowed = (
            module == "__torch__"
            or module.startswith("__torch__.")
            or name in TORCHSCRIPT_GLOBALS.get(module, ())
            or (module == "torch" and name.endswith("Storage"))
        )
        if not allowed:
            raise _RefusedGlobal(f"{module}.{name}")
        return _Inert

    def persistent_load(self, pid: object) -> _Inert:  # tensor storages live beside the pickle
        return _Inert()
