"""The record of a job over many image files, so that a rerun continues it and another job is refused.

A resumable run over files (:func:`microzoo.runtime.distributed.predict_files_on_dask`) writes
``.microzoo-job.json`` into its output folder before it computes anything: the model (its
description and weights by sha256, the weight format, the threads of each forward and the device)
and every setting that changes the outputs. Outputs are written atomically, so an output that
exists is complete. Started again:

- under the same record, the inputs whose outputs all exist are skipped, the others predicted;
- under another record (another model, threads or setting), it is refused with the differences
  named, unless ``overwrite``;
- with ``overwrite`` it starts again: this job's existing outputs are removed first, so the new
  record never stands for an output an earlier job wrote.

>>> differences({"a": 1, "s": {"tile": 256}}, {"a": 1, "s": {"tile": 512}})
['s.tile: 256 -> 512']
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from microzoo.errors import OutputError
from microzoo.io.atomic import atomic_output

if TYPE_CHECKING:
    from microzoo.runtime.predict import Model

RECORD_NAME = ".microzoo-job.json"


def model_identity(model: Model) -> dict[str, Any]:
    """What makes a model's outputs what they are: the description and weights (path and sha256),
    the weight format, the threads of each forward (torch's results change in the last bit with
    the thread count) and the device."""
    from microzoo.package.load import sha256_of

    package = model.package
    weights = package.file(getattr(package.descr.weights, model.weight_format).source)
    return {
        "description": str(package.description_path.resolve()),
        "description_sha256": sha256_of(package.description_path),
        "weight_format": model.weight_format,
        "weights_sha256": sha256_of(weights),
        "threads": model.threads,
        "device": model.device,
    }


def job_record(model: Model, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The record of a job: the microzoo version, :func:`model_identity` and ``settings`` (JSON values)."""
    from microzoo import __version__

    record = {
        "job": "predict files",
        "microzoo": __version__,
        "model": model_identity(model),
        "settings": dict(settings),
    }
    return json.loads(json.dumps(record))  # the same values as when read back (tuples become lists)


def differences(old: Mapping[str, Any], new: Mapping[str, Any], where: str = "") -> list[str]:
    """The fields where two records differ, as ``"path: old -> new"``."""
    found = []
    for key in dict.fromkeys([*old, *new]):
        a, b, name = old.get(key), new.get(key), f"{where}{key}"
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            found += differences(a, b, f"{name}.")
        elif a != b:
            found.append(f"{name}: {a} -> {b}")
    return found


def recorded_threads(folder: Path) -> int | None:
    """The threads per forward of the job recorded in ``folder`` (None: no readable record)."""
    try:
        threads = json.loads((folder / RECORD_NAME).read_text())["model"]["threads"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return threads if isinstance(threads, int) and not isinstance(threads, bool) and threads > 0 else None


def start_or_resume(
    folder: Path, record: Mapping[str, Any], plans: Sequence[Mapping[str, Path]], *, overwrite: bool = False
) -> list[int] | None:
    """The indices of ``plans`` still to compute when ``folder`` holds a job with the same
    ``record``; ``None`` for a new job (no record there, or ``overwrite``, which starts again:
    the caller checks the outputs and calls :func:`begin`).

    Raises OutputError when ``folder`` holds another job's record and not ``overwrite``.
    """
    path = folder / RECORD_NAME
    if overwrite or not path.is_file():
        return None
    try:
        existing = json.loads(path.read_text())
    except (OSError, ValueError):
        existing = {}
    if existing == record:
        return [i for i, plan in enumerate(plans) if not all(target.exists() for target in plan.values())]
    changed = differences(existing, record) if isinstance(existing, Mapping) else ["an unreadable record"]
    raise OutputError(
        f"{folder} holds the outputs of another job ({'; '.join(changed[:4])}"
        f"{'; ...' if len(changed) > 4 else ''}): run the same command as before to continue it, "
        "pass --overwrite to replace its outputs, or choose another output folder with -o"
    )


def begin(folder: Path, record: Mapping[str, Any], plans: Sequence[Mapping[str, Path]]) -> None:
    """Start a new job in ``folder``: remove the outputs ``plans`` name that exist (the caller
    has checked they may be replaced), then write ``record``."""
    for plan in plans:
        for target in plan.values():
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
    with atomic_output(folder / RECORD_NAME) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
