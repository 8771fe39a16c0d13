"""Import the architecture code of a model: the one guarded import of a package's Python source.

A ``pytorch_state_dict`` package ships its network as a Python file (or names a module of an
installed library); exporting a trained network checks that its source file rebuilds it. This
module imports that code. Importing executes it, so microzoo does so only when the user runs a
package's state dict (``runtime.engines``) or exports their own network (``train.export``);
opening, validating or describing a package never does.

A file is imported once per process for each content: the module's name holds the file's
sha256, so a changed file is imported afresh and an unchanged one is not executed again.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from microzoo.errors import PackageError


def architecture_callable(source: Path, name: str) -> Callable[..., Any]:
    """The callable ``name`` (a class or factory) defined by the Python file ``source``.

    Raises
    ------
    PackageError
        The file cannot be imported (syntax error, a missing dependency, an error of its own),
        or defines no ``name``.
    """
    from microzoo.package.load import sha256_of

    source = Path(source)
    module_name = f"microzoo_architecture_{sha256_of(source)[:24]}"
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, source)
        if spec is None or spec.loader is None:
            raise PackageError(f"cannot import the architecture source {source}: it is not a Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException as error:  # any error of the package's own code, SyntaxError included
            del sys.modules[module_name]
            if isinstance(error, (KeyboardInterrupt, SystemExit)):
                raise
            raise PackageError(
                f"cannot import the architecture source {source.name} ({type(error).__name__}: {error}): "
                "install what it imports, or ask the package's authors for torchscript or onnx weights"
            ) from error
    factory = getattr(module, name, None)
    if not callable(factory):
        raise PackageError(f"the architecture source {source.name} defines no '{name}'")
    return factory


def library_callable(module_name: str, name: str) -> Callable[..., Any]:
    """The callable ``name`` of the installed module ``module_name`` (an architecture named by
    ``import_from`` instead of a file)."""
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise PackageError(
            f"the architecture is imported from '{module_name}', which is not installed ({error}): install it, "
            "or choose another weight format with --weights"
        ) from error
    factory = getattr(module, name, None)
    if not callable(factory):
        raise PackageError(f"the module '{module_name}' has no callable '{name}'")
    return factory
