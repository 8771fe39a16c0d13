"""Packages changed in one way for the convert and zoo worker tests: weights dropped, a test
output altered. Each maker writes a writable copy of a package folder (``_hostile.writable_copy``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from _hostile import writable_copy

DESCRIPTION = "bioimageio.yaml"


def _edit_description(folder: Path, edit) -> None:  # type: ignore[no-untyped-def]
    path = folder / DESCRIPTION
    content = yaml.safe_load(path.read_text())
    edit(content)
    path.write_text(yaml.safe_dump(content, sort_keys=False))


def without_weights(package: Path, target: Path, formats: list[str]) -> Path:
    """A copy without the weight ``formats`` (their files removed too); the first remaining
    format loses its ``parent`` if that was removed."""
    folder = writable_copy(package, target)

    def edit(content: dict) -> None:  # type: ignore[type-arg]
        for fmt in formats:
            (folder / content["weights"].pop(fmt)["source"]).unlink()
        for entry in content["weights"].values():
            if entry.get("parent") in formats:
                entry.pop("parent")

    _edit_description(folder, edit)
    return folder


def with_altered_test_output(package: Path, target: Path, *, by: float = 0.5) -> Path:
    """A copy whose first test output is ``by`` larger everywhere (its sha256 updated): no weights
    reproduce it."""
    from microzoo.package.load import sha256_of

    folder = writable_copy(package, target)

    def edit(content: dict) -> None:  # type: ignore[type-arg]
        tensor = content["outputs"][0]["test_tensor"]
        path = folder / tensor["source"]
        np.save(path, np.load(path) + np.float32(by))
        tensor["sha256"] = sha256_of(path)

    _edit_description(folder, edit)
    return folder
