"""What the zoo stores and indexes about a package: :class:`PackageSummary`, made from its description.

The task, modality and dimensionality are read from the description (``config.bioimageio``, tags,
input axes), in the zoo's own few words so that search facets stay short; tensors and their
processing are described with the runtime's phrases (``microzoo info`` shows the same).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from microzoo.package.load import ModelPackage
from microzoo.runtime.ops import describe_op
from microzoo.runtime.summary import describe_axis

TASKS = ("segmentation", "instance-segmentation", "denoising", "restoration", "classification", "other")
MODALITIES = ("fluorescence", "brightfield", "electron-microscopy", "histology", "other")

#: words in a description's task or tags -> the zoo's task; the first that matches wins, so
#: "instance segmentation" is not plain segmentation, and N2V (tagged denoising and restoration)
#: is denoising
_TASK_WORDS = (
    ("instance-segmentation", ("instance segmentation", "instance-segmentation", "stardist", "cellpose")),
    ("segmentation", ("segmentation",)),
    ("denoising", ("denoising", "denoise", "noise2void", "n2v", "noise2noise")),
    ("restoration", ("restoration", "super-resolution", "deconvolution", "care")),
    ("classification", ("classification",)),
)
_MODALITY_WORDS = (
    ("electron-microscopy", ("electron", "em", "tem", "sem", "fib-sem", "fibsem", "ssem", "cryo-em")),
    ("histology", ("histology", "histopathology", "pathology", "h&e", "he-stain", "ihc", "colour", "color")),
    ("brightfield", ("brightfield", "bright-field", "bright field", "transmitted light")),
    ("fluorescence", ("fluorescence", "fluorescent", "fluorescence-light-microscopy", "confocal", "widefield")),
)
_LETTER = {"batch": "b", "channel": "c", "index": "i", "time": "t"}


class PackageSummary(BaseModel):
    """The zoo's record of one package version (stored as JSON beside the version's row)."""

    name_in_package: str | None  # the description's ``id``, if any
    version_in_package: str | None
    title: str  # the description's ``name``
    description: str
    tags: list[str]
    authors: list[str]
    license: str
    format_version: str
    task: str  # one of TASKS
    modality: str  # one of MODALITIES
    dims: str  # "2d" | "3d"
    weight_formats: list[str]  # as in the description
    inputs: list[dict[str, Any]]  # id, axes ("bcyx"), sizes, data_type, processing, description
    outputs: list[dict[str, Any]]
    covers: list[str]
    documentation: str | None  # the documentation's file name
    cite: list[dict[str, str | None]]  # text, doi, url
    has_qc: bool


def summarize_package(package: ModelPackage) -> PackageSummary:
    """The zoo's summary of an opened package."""
    d = package.descr
    tags = [str(t) for t in d.tags]
    bioimageio = d.config.bioimageio
    return PackageSummary(
        name_in_package=None if d.id is None else str(d.id),
        version_in_package=None if d.version is None else str(d.version),
        title=str(d.name),
        description=str(d.description),
        tags=tags,
        authors=[str(a.name) for a in d.authors],
        license=str(d.license),
        format_version=package.original_format,
        task=_first_match(_TASK_WORDS, [str(bioimageio.task or ""), *tags]),
        modality=_first_match(_MODALITY_WORDS, [*tags, str(bioimageio.modality or "")]),
        dims="3d" if any(_has_space_axis(t, "z") for t in d.inputs) else "2d",
        weight_formats=list(d.weights.available_formats),
        inputs=[_tensor(t, t.preprocessing) for t in d.inputs],
        outputs=[_tensor(t, t.postprocessing) for t in d.outputs],
        covers=[str(c.source) for c in d.covers],
        documentation=None if d.documentation is None else str(d.documentation.source),
        cite=[{"text": str(c.text), "doi": _text(c.doi), "url": _text(c.url)} for c in d.cite],
        has_qc=_has_qc(package),
    )


def _first_match(table: tuple[tuple[str, tuple[str, ...]], ...], texts: list[str]) -> str:
    """The first entry of ``table`` with a word in one of ``texts`` (lower-cased): words of up to four
    letters ("em", "care") must be a whole text, longer ones may be part of one ("fluorescence-light-microscopy")."""
    lowered = [t.lower().strip() for t in texts if t]
    for value, words in table:
        if any(text == word or (len(word) > 4 and word in text) for word in words for text in lowered):
            return value
    return "other"


def _has_space_axis(tensor: Any, axis_id: str) -> bool:
    return any(str(a.type) == "space" and str(a.id) == axis_id for a in tensor.axes)


def _tensor(tensor: Any, ops: Any) -> dict[str, Any]:
    data = tensor.data if isinstance(tensor.data, (list, tuple)) else [tensor.data]
    return {
        "id": str(tensor.id),
        "axes": "".join(_LETTER.get(str(a.type), str(a.id)) for a in tensor.axes),
        "sizes": [describe_axis(a) for a in tensor.axes],
        "data_type": "/".join(dict.fromkeys(str(x.type) for x in data)),
        "processing": [describe_op(op) for op in ops],
        "description": str(tensor.description or ""),
    }


def _has_qc(package: ModelPackage) -> bool:
    """A QC report attached, or QC figures in ``config.microzoo`` (what microzoo's export writes)."""
    microzoo = (package.descr.config.model_extra or {}).get("microzoo") or {}
    attached = any(str(a.source).rsplit("/", 1)[-1].startswith("qc_report") for a in package.descr.attachments)
    return attached or bool(isinstance(microzoo, dict) and (microzoo.get("qc") or microzoo.get("qc_report")))


def _text(value: object) -> str | None:
    return None if value is None else str(value)
