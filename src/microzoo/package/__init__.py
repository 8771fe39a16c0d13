"""Model packages: open, validate and read what a package holds, safely.

The verbs, importable from here (loaded on first use, so ``import microzoo.package`` stays cheap)::

    open_package(source)                      a ModelPackage: description (format 0.5) and files
    validate_package(source)                  a ValidationReport: every error and warning at once
    architecture_callable(source, name)       a package's network class or factory (runs its code)
    cache_dir()                               where downloads and extracted zips go

Safety limits (paths inside the package, zip sizes, YAML aliases) and the format 0.4 repairs are
described in ``docs/runner.md``, "Safety limits and compatibility".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from microzoo._lazy import lazy_exports

if TYPE_CHECKING:  # pragma: no cover
    from microzoo.package.architecture import architecture_callable
    from microzoo.package.download import cache_dir
    from microzoo.package.load import ModelPackage, open_package
    from microzoo.package.validate import Problem, ValidationReport, validate_package

#: public name -> the module that defines it
_EXPORTS = {
    "architecture_callable": "architecture",
    "cache_dir": "download",
    "ModelPackage": "load", "open_package": "load",
    "Problem": "validate", "ValidationReport": "validate", "validate_package": "validate",
}  # fmt: skip
__all__ = [
    "ModelPackage",
    "Problem",
    "ValidationReport",
    "architecture_callable",
    "cache_dir",
    "open_package",
    "validate_package",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
