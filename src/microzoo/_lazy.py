"""Lazy re-exports for the subpackages' ``__init__`` (PEP 562), written once.

Each subpackage names its public verbs and the module that defines each; a name is imported on
first use, so ``import microzoo.runtime`` does not import torch or bioimageio.spec::

    __getattr__, __dir__ = lazy_exports(__name__, {"Model": "predict", "plan_tiles": "tiling"})
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, where: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``: each name of ``where`` is loaded from
    ``package.where[name]`` (a module path relative to the package) when first asked for, and kept."""

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{where[name]}"), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *where})

    # A verb named like the module that defines it (``qc.evaluate`` in ``qc/evaluate.py``): importing
    # that module sets the package's attribute to the module, which would then shadow the verb
    # (``from microzoo.qc import evaluate`` gave the module once anything had imported
    # ``microzoo.qc.evaluate``). The package keeps the verb instead.
    shadowed = {name for name, module in where.items() if module == name}
    if shadowed:

        class _Package(types.ModuleType):
            def __setattr__(self, name: str, value: Any) -> None:
                if name in shadowed and isinstance(value, types.ModuleType) and value.__name__ == f"{package}.{name}":
                    value = getattr(value, name)
                super().__setattr__(name, value)

        sys.modules[package].__class__ = _Package

    return __getattr__, __dir__
