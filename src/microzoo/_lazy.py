"""Lazy re-exports for the subpackages' ``__init__`` (PEP 562), written once.

Each subpackage names its public verbs and the module that defines each; a name is imported on
first use, so ``import microzoo.runtime`` does not import torch or bioimageio.spec::

    __getattr__, __dir__ = lazy_exports(__name__, {"Model": "predict", "plan_tiles": "tiling"})
"""

from __future__ import annotations

import importlib
import sys
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

    return __getattr__, __dir__
