"""The trust note after a prediction: can these outputs be trusted?

Every predicted image gets a verdict (:class:`microzoo.trust.verdict.ImageTrust`, made by
:func:`microzoo.trust.verdict.judge_image`): ``"similar"`` (like the data the
model is known to work on), ``"differs"`` (its input features or pixel size differ from the
reference, or the output's statistics are unlike those of the package's test output) or
``"uncertain"`` (the prediction changes under flips and rotations on a larger fraction of its
foreground than ``FLIP_FACTOR`` times the model's rate on its test input). A restoration
output also differs when the part the model removed is not noise
(:mod:`microzoo.trust.hallucination`). The reference (:mod:`microzoo.trust.reference`) is the
training fingerprint of a package microzoo trained, else the package's own test inputs and
outputs (weaker evidence; the note says so).

The note is computed here, from the images already in memory, so the command line, a napari
widget and the zoo show the same words; front ends only render :class:`TrustNote`::

    run = predict_files_with_note(model, paths, out)      # files: read once, predicted, checked
    note = trust_note(model.package, [image], ["image"], model=model, outputs=[prediction.outputs])
    print(note.headline); print(*note.details, sep="\\n"); json.dumps(note.to_dict())
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from microzoo.package.load import ModelPackage
from microzoo.progress import ProgressCallback
from microzoo.runtime.batch import FileResult, predict_files
from microzoo.runtime.predict import Model
from microzoo.runtime.uncertainty import (
    TRANSFORMS,
    UncertaintySettings,
    predict_with_uncertainty,
    uncertainty_settings,
)
from microzoo.trust.fingerprint import Fingerprint
from microzoo.trust.ood import OODResult
from microzoo.trust.reference import Reference, package_fingerprint, package_reference
from microzoo.trust.verdict import (
    CHEAP_TRANSFORMS,
    FLIP_FLOOR,
    ImageTrust,
    flip_check,
    flip_limit_for,
    input_check,
    judge_image,
    members_words,
)

NO_FINGERPRINT = (
    "this package carries no training fingerprint; to compare your images with the training "
    "data, run `microzoo check --train TRAIN_DIR --test IMAGES`"
)


@dataclasses.dataclass(frozen=True)
class TrustNote:
    """The verdicts on a set of predicted images.

    ``checked`` is ``False`` when nothing could be compared (a package without test inputs);
    ``unlike`` holds the input checks of the images whose inputs differ; ``images`` one
    :class:`ImageTrust` per image; ``evidence`` what the reference is.
    """

    checked: bool
    n_images: int
    unlike: tuple[OODResult, ...] = ()
    notes: tuple[str, ...] = ()
    """How images were looked at when not whole (streamed images: an overview)."""
    images: tuple[ImageTrust, ...] = ()
    evidence: str = ""
    strong: bool = True
    """Whether the reference is a training fingerprint (else the package's test inputs)."""

    @property
    def flagged(self) -> tuple[ImageTrust, ...]:
        """The images whose verdict is not ``similar``."""
        return tuple(i for i in self.images if i.verdict != "similar")

    @property
    def warning(self) -> bool:
        """Whether some image differs or is uncertain (front ends highlight it)."""
        return bool(self.unlike) or bool(self.flagged)

    @property
    def headline(self) -> str:
        """One sentence for the user."""
        if not self.checked:
            return NO_FINGERPRINT
        what = "the model's training data" if self.strong else "the package's test input"
        weaker = "" if self.strong else " (the package carries no training fingerprint: weaker evidence)"
        differ = sum(i.verdict == "differs" for i in self.images) or len(self.unlike)
        uncertain = sum(i.verdict == "uncertain" for i in self.images)
        if not differ and not uncertain:
            return f"all {self.n_images} image(s) look like {what}{weaker}"
        parts = []
        if differ:
            parts.append(f"{differ} of {self.n_images} image(s) differ from {what}")
        if uncertain:
            parts.append(f"{uncertain} of {self.n_images} image(s) give an uncertain prediction")
        return "; ".join(parts) + f"{weaker}; check these outputs with care:"

    @property
    def details(self) -> tuple[str, ...]:
        """One line per image that is not ``similar``: its name, verdict and reasons (at most
        three); then the notes (images compared on an overview)."""
        if not self.images:  # a note built from input checks only
            lines = tuple(f"{r.name}: {'; '.join([d.words for d in r.deviations[:3]] + r.notes)}" for r in self.unlike)
            return lines + self.notes
        lines = tuple(f"{i.name}: {i.verdict}: {'; '.join(i.reasons[:3])}" for i in self.flagged)
        return lines + self.notes

    def to_dict(self) -> dict[str, Any]:
        """What ``trust.json`` holds: the headline, the evidence, and per image its verdict."""
        return {
            "headline": self.headline,
            "evidence": self.evidence,
            "warning": self.warning,
            "images": {i.name: i.to_dict() for i in self.images},
            "notes": list(self.notes),
        }


def unlike_training(
    fingerprint: Fingerprint,
    images: Sequence[np.ndarray],
    names: Sequence[str],
    axes: Sequence[str | None] | None = None,
    *,
    pixel_size: float | None = None,
) -> list[OODResult]:
    """The images that differ from the images the fingerprint describes.

    ``axes`` gives each image's axes (e.g. ``"zyx"``); ``None`` means ``yx``, or ``yxc`` for a
    3-D array of 3 or 4 colours. Stacks are compared plane by plane (:func:`image_views`, the
    views training fingerprints are built from) and differ when at least half their planes do;
    the note then shows the plane that differs most.
    NaN and infinite pixels are left out as in prediction: each is replaced by the median of
    the image's finite pixels first (else every feature of the image would be meaningless)."""
    given = list(axes) if axes is not None else [None] * len(images)
    checked = [
        input_check(fingerprint, image, name, image_axes, pixel_size=pixel_size)
        for image, name, image_axes in zip(images, names, given, strict=True)
    ]
    return [result for result in checked if result.out_of_distribution]


def trust_note(
    package: ModelPackage,
    images: Sequence[np.ndarray],
    names: Sequence[str],
    axes: Sequence[str | None] | None = None,
    *,
    outputs: Sequence[Mapping[str, Any]] | None = None,
    model: Model | None = None,
    transforms: Sequence[str] = (),
) -> TrustNote:
    """The trust note for ``images`` (as given to the model, with their ``axes``: see
    :func:`unlike_training`) under ``package``; ``outputs`` (one mapping per image) add the
    output check, ``model`` the flip check (``transforms``, by default ``CHEAP_TRANSFORMS``)."""
    reference = package_reference(package)
    given = list(axes) if axes is not None else [None] * len(images)
    found = []
    for index, (image, name, image_axes) in enumerate(zip(images, names, given, strict=True)):
        rate, words = flip_check(model, image, image_axes, transforms=transforms) if model else (None, "")
        found.append(
            judge_image(
                reference, image, name, image_axes,
                outputs=None if outputs is None else outputs[index], flip_rate=rate, flip_check=words,
                flip_limit=flip_limit_for(model, transforms or CHEAP_TRANSFORMS) if model else FLIP_FLOOR,
            )
        )  # fmt: skip
    return _note(reference, found)


def _note(reference: Reference, images: Sequence[ImageTrust], notes: Sequence[str] = ()) -> TrustNote:
    return TrustNote(
        checked=True,
        n_images=len(images),
        unlike=tuple(i.unlike for i in images if i.unlike is not None),
        notes=tuple(notes),
        images=tuple(images),
        evidence=reference.evidence,
        strong=reference.strong,
    )


@dataclasses.dataclass(frozen=True)
class FilePredictions:
    """What :func:`predict_files_with_note` did: one result per file, the trust note, and
    where it was written (``trust.json``)."""

    results: list[FileResult]
    trust: TrustNote
    trust_file: Path | None = None


def predict_files_with_note(
    model: Model,
    inputs: Sequence[Path],
    out: Path,
    *,
    progress: ProgressCallback | None = None,
    flips: str = "cheap",
    **options: Any,
) -> FilePredictions:
    """:func:`microzoo.runtime.batch.predict_files` (same options), with the trust note computed
    from each image and its outputs while they are in memory (on the Dask workers too): no image
    is read twice, none is kept. ``flips``: ``"cheap"`` (``CHEAP_TRANSFORMS``), ``"tta"`` (all 8
    flips and rotations) or ``"off"``. A streamed image is compared on an overview read lazily
    (every k-th pixel, :func:`microzoo.runtime.stream_files.overview`), its outputs unchecked,
    and the note says so. The note is written to :func:`trust_path` (``OUT/trust.json``)."""
    reference = package_reference(model.package)
    transforms = {"cheap": CHEAP_TRANSFORMS, "tta": TRANSFORMS, "off": ()}[flips]
    inspect = functools.partial(_judge_one, reference, transforms, options.get("tile"), options.get("channel"))
    results = predict_files(model, inputs, out, progress=progress, on_image=inspect, **options)
    notes = tuple(_overview_note(r.input.name, r.overview) for r in results if r.overview > 1)
    note = _note(reference, [r.inspected for r in results], notes)
    return FilePredictions(results, note, write_note(note, trust_path(out)) if results else None)


@dataclasses.dataclass(frozen=True)
class ArrayPrediction:
    """What :func:`predict_array_with_note` did for one array (a napari layer's data).

    ``outputs``: output id -> NumPy array (predicted in memory) or the lazily opened level 0
    of the OME-Zarr it was streamed into (``paths``); ``axes``: output id -> the axes letters
    of that array; ``note``: the trust note of this one image (its verdict in
    ``note.images[0]``); ``uncertainty``: the spread of the first output (with ``uncertainty``).
    """

    outputs: dict[str, Any]
    axes: dict[str, str]
    notices: tuple[str, ...]
    note: TrustNote
    uncertainty: np.ndarray | None = None
    paths: dict[str, Path] = dataclasses.field(default_factory=dict)


def predict_array_with_note(
    model: Model,
    image: Any,
    *,
    axes: str,
    tile: int | Mapping[str, int] | None = None,
    channel: int | Sequence[int] | None = None,
    uncertainty: str | UncertaintySettings | None = None,
    stream_to: str | Path | None = None,
    name: str = "image",
    memory_budget: int | None = None,
    overwrite: bool = False,
    flips: str = "cheap",
    pixel_size: Mapping[str, float] | None = None,
    unit: str | None = None,
    progress: ProgressCallback | None = None,
) -> ArrayPrediction:
    """Predict one image given as an array (``axes`` its letters) and judge it as
    :func:`predict_files_with_note` judges a file (``name`` names it in the note).

    A NumPy array is predicted in memory (:meth:`Model.predict_image`, or
    :func:`~microzoo.runtime.uncertainty.predict_with_uncertainty` with ``uncertainty``). Any
    other array (Dask, Zarr, a lazy TIFF) is never loaded whole: it streams into
    ``stream_to/<output id>.ome.zarr`` (:mod:`microzoo.trust.note_stream`), its
    outputs come back opened lazily, its note looks at an overview, and ``uncertainty`` is
    refused. A streamed run cancelled or killed part way continues when run again with the same
    array and settings; ``overwrite`` replaces other outputs in ``stream_to``. ``pixel_size``
    (per axis letter, in ``unit``: the note compares it when it is in micrometres; in memory
    only, as for files: an overview's pixels are larger) is optional.
    ``progress`` raising :class:`~microzoo.errors.Cancelled` stops the work between tiles
    (between batches of tiles when streamed).
    """
    reference = package_reference(model.package)
    transforms = {"cheap": CHEAP_TRANSFORMS, "tta": TRANSFORMS, "off": ()}[flips]
    if not isinstance(image, np.ndarray):
        from microzoo.trust.note_stream import stream_array

        return stream_array(
            model, reference, transforms, image, axes=axes, tile=tile, channel=channel, uncertainty=uncertainty,
            stream_to=stream_to, name=name, memory_budget=memory_budget, overwrite=overwrite, progress=progress,
        )  # fmt: skip
    options: dict[str, Any] = {"axes": axes, "tile": tile, "channel": channel, "memory_budget": memory_budget,
                               "progress": progress}  # fmt: skip
    uncertain = None
    if uncertainty is None:
        prediction = model.predict_image(image, **options)
    else:
        settings = uncertainty_settings(uncertainty)
        uncertain = predict_with_uncertainty(model, image, **settings.options(), **options)
        prediction = uncertain.prediction
    checking = "checking the prediction (trust note)"
    if progress is not None:
        progress(0, 1, checking)
    judged = _judge_one(
        reference, transforms, tile, channel, name, image, axes,
        prediction=prediction, model=model, pixel_size=pixel_size, unit=unit, uncertainty=uncertain,
        progress=None if progress is None else lambda done, total, _: progress(done, total, checking),
    )  # fmt: skip
    if progress is not None:
        progress(1, 1, checking)
    first = model.output_ids[0]
    return ArrayPrediction(
        outputs=dict(prediction.outputs),
        axes=dict(prediction.axes),
        notices=prediction.notices,
        note=_note(reference, [judged]),
        uncertainty=None if uncertain is None else uncertain.spread[first],
    )


def trust_path(out: Path) -> Path:
    """Where the note of a prediction into ``out`` goes: ``OUT/trust.json`` for a folder,
    ``<name>.trust.json`` beside a single output file."""
    from microzoo.io.files import image_stem
    from microzoo.io.read import image_format

    if image_format(out) is None:
        return out / "trust.json"
    return out.parent / f"{image_stem(out)}.trust.json"


def write_note(note: TrustNote, path: Path) -> Path:
    """Write :meth:`TrustNote.to_dict` as JSON to ``path``, atomically."""
    import json

    from microzoo.io.atomic import atomic_output

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as temporary:
        temporary.write_text(json.dumps(note.to_dict(), indent=1))
    return path


def _overview_note(name: str, k: int) -> str:
    return f"{name}: compared on an overview of every {_ordinal(k)} pixel of y and x (it was streamed)"


def _ordinal(k: int) -> str:
    """``2`` -> ``"2nd"``, ``11`` -> ``"11th"``."""
    return f"{k}{'th' if 10 <= k % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(k % 10, 'th')}"


def _judge_one(
    reference: Reference,
    transforms: Sequence[str],
    tile: Any,
    channel: Any,
    path: Path | str,
    image: np.ndarray,
    axes: str,
    *,
    prediction: Any = None,
    model: Model | None = None,
    pixel_size: Mapping[str, float] | None = None,
    unit: str | None = None,
    uncertainty: Any = None,
    progress: ProgressCallback | None = None,
) -> ImageTrust:
    """:func:`judge_image` for one file as :func:`predict_files` read it (picklable, so Dask
    workers can run it), or of one array named ``path``; a streamed image (no ``prediction``)
    gets the input check only. When the prediction was made with ``--uncertainty`` (an
    ``UncertainPrediction``), its flip rate is used instead of a check of its own (the limit
    from all 8 flips and rotations of the test input, whatever the method). ``progress`` hears
    of each prediction of the flip check (and may cancel between them)."""
    rate, words, limit = None, "", FLIP_FLOOR
    rates = [r for r in (uncertainty.flip_rate.values() if uncertainty is not None else ()) if r is not None]
    if rates:
        rate, words = max(rates), members_words(uncertainty.method, uncertainty.members)
        limit = flip_limit_for(model, TRANSFORMS) if model is not None else FLIP_FLOOR
    elif prediction is not None and model is not None and transforms:
        rate, words = flip_check(model, image, axes, transforms=transforms, tile=tile, channel=channel,
                                 progress=progress)  # fmt: skip
        limit = flip_limit_for(model, transforms)
    micrometres = None
    if pixel_size and unit == "micrometer" and "x" in pixel_size:
        micrometres = float(pixel_size["x"])
    return judge_image(
        reference, image, path.name if isinstance(path, Path) else path, axes,
        outputs=None if prediction is None else prediction.outputs,
        pixel_size=micrometres, flip_rate=rate, flip_check=words, flip_limit=limit,
    )  # fmt: skip


__all__ = [
    "ArrayPrediction",
    "FilePredictions",
    "NO_FINGERPRINT",
    "TrustNote",
    "package_fingerprint",
    "predict_array_with_note",
    "predict_files_with_note",
    "trust_note",
    "trust_path",
    "unlike_training",
    "write_note",
]
