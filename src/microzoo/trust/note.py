"""The short trust note after a prediction: do these images look like the model's training data?

A package trained by microzoo carries the fingerprint of its training images
(``training_fingerprint.json``); for those, every predicted image is compared with it and the
ones that differ are named with what differs. Packages without a fingerprint get a note that
says so (``microzoo check --train DIR`` computes one from training images the user has).

The note is computed here, from the images already in memory, so the command line, a napari
widget and the zoo show the same words; front ends only render :class:`TrustNote`::

    run = predict_files_with_note(model, paths, out)      # files: read once, predicted, checked
    note = trust_note(model.package, [image], ["image"])  # arrays already in memory
    print(note.headline); print(*note.details, sep="\\n")
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from microzoo.package.load import ModelPackage
from microzoo.progress import ProgressCallback
from microzoo.runtime.batch import FileResult, predict_files
from microzoo.runtime.predict import Model
from microzoo.trust.fingerprint import ATTACHMENT_NAME, Fingerprint, image_views
from microzoo.trust.ood import OODResult, check_images

NO_FINGERPRINT = (
    "this package carries no training fingerprint; to compare your images with the training "
    "data, run `microzoo check --train TRAIN_DIR --test IMAGES`"
)


@dataclasses.dataclass(frozen=True)
class TrustNote:
    """The verdict on a set of predicted images against the model's training data.

    ``checked`` is ``False`` when the package carries no fingerprint (nothing was compared);
    ``unlike`` holds the images that differ, each with what differs.
    """

    checked: bool
    n_images: int
    unlike: tuple[OODResult, ...] = ()
    notes: tuple[str, ...] = ()
    """How images were looked at when not whole (streamed images: an overview)."""

    @property
    def warning(self) -> bool:
        """Whether some image differs from the training data (front ends highlight it)."""
        return bool(self.unlike)

    @property
    def headline(self) -> str:
        """One sentence for the user."""
        if not self.checked:
            return NO_FINGERPRINT
        if not self.unlike:
            return f"all {self.n_images} image(s) look like the model's training data"
        return (
            f"{len(self.unlike)} of {self.n_images} image(s) differ from the model's training data; "
            "check these outputs with care:"
        )

    @property
    def details(self) -> tuple[str, ...]:
        """One line per image that differs: its name and what differs (at most three features);
        then the notes (images compared on an overview)."""
        differ = tuple(f"{r.name}: {'; '.join([d.words for d in r.deviations[:3]] + r.notes)}" for r in self.unlike)
        return differ + self.notes


def package_fingerprint(package: ModelPackage) -> Fingerprint | None:
    """The training fingerprint a package carries as an attachment, or ``None``."""
    for attachment in package.descr.attachments or []:
        if str(attachment.source).replace("\\", "/").split("/")[-1] == ATTACHMENT_NAME:
            return Fingerprint.load(package.file(attachment.source))
    return None


def unlike_training(
    fingerprint: Fingerprint,
    images: Sequence[np.ndarray],
    names: Sequence[str],
    axes: Sequence[str | None] | None = None,
) -> list[OODResult]:
    """The images that differ from the training data the fingerprint describes.

    ``axes`` gives each image's axes (e.g. ``"zyx"``); ``None`` means ``yx``, or ``yxc`` for a
    3-D array of 3 or 4 colours. Stacks are compared plane by plane (:func:`image_views`, the
    views training fingerprints are built from) and differ when at least half their planes do;
    the note then shows the plane that differs most.
    NaN and infinite pixels are left out as in prediction: each is replaced by the median of
    the image's finite pixels first (else every feature of the image would be meaningless)."""
    given = list(axes) if axes is not None else [None] * len(images)
    unlike = []
    for image, name, image_axes in zip(images, names, given, strict=True):
        image = np.asarray(image)
        if image_axes is None:
            image_axes = "yxc" if image.ndim == 3 and image.shape[-1] in (3, 4) else "yx"
        views = [_finite(view) for view in image_views(image, image_axes)]
        results = check_images(fingerprint, views, names=[name] * len(views))
        flagged = [r for r in results if r.out_of_distribution]
        if 2 * len(flagged) >= len(results) and flagged:
            worst = max(flagged, key=lambda r: r.score)
            if len(results) > 1:
                worst = worst.model_copy(
                    update={"notes": [*worst.notes, f"{len(flagged)} of {len(results)} planes differ"]}
                )
            unlike.append(worst)
    return unlike


def _finite(image: np.ndarray) -> np.ndarray:
    if image.dtype.kind not in "fc":
        return image
    good = np.isfinite(image)
    if good.all() or not good.any():
        return image
    return np.where(good, image, np.median(image[good]))


def trust_note(
    package: ModelPackage,
    images: Sequence[np.ndarray],
    names: Sequence[str],
    axes: Sequence[str | None] | None = None,
) -> TrustNote:
    """The trust note for ``images`` (as given to the model, with their ``axes``: see
    :func:`unlike_training`) under ``package``."""
    fingerprint = package_fingerprint(package)
    if fingerprint is None:
        return TrustNote(checked=False, n_images=len(images))
    unlike = unlike_training(fingerprint, images, names, axes)
    return TrustNote(checked=True, n_images=len(images), unlike=tuple(unlike))


@dataclasses.dataclass(frozen=True)
class FilePredictions:
    """What :func:`predict_files_with_note` did: one result per file, and the trust note."""

    results: list[FileResult]
    trust: TrustNote


def predict_files_with_note(
    model: Model, inputs: Sequence[Path], out: Path, *, progress: ProgressCallback | None = None, **options: Any
) -> FilePredictions:
    """:func:`microzoo.runtime.batch.predict_files` (same options), with the trust note computed
    from each image while it is in memory (on the Dask workers too): no image is read twice,
    none is kept. A streamed image is compared on an overview read lazily (every k-th pixel,
    :func:`microzoo.runtime.stream_files.overview`), and the note says so."""
    fingerprint = package_fingerprint(model.package)
    inspect = None if fingerprint is None else functools.partial(_unlike_one, fingerprint)
    results = predict_files(model, inputs, out, progress=progress, on_image=inspect, **options)
    unlike = [found for result in results for found in (result.inspected or ())]
    notes = tuple(
        f"{r.input.name}: compared on an overview of every {_ordinal(r.overview)} pixel of y and x (it was streamed)"
        for r in results
        if fingerprint is not None and r.overview > 1
    )
    note = TrustNote(checked=fingerprint is not None, n_images=len(results), unlike=tuple(unlike), notes=notes)
    return FilePredictions(results, note)


def _ordinal(k: int) -> str:
    """``2`` -> ``"2nd"``, ``11`` -> ``"11th"``."""
    return f"{k}{'th' if 10 <= k % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(k % 10, 'th')}"


def _unlike_one(fingerprint: Fingerprint, path: Path, image: np.ndarray, axes: str) -> list[OODResult]:
    """:func:`unlike_training` for one image (picklable, so Dask workers can run it)."""
    return unlike_training(fingerprint, [image], [path.name], [axes])


__all__ = [
    "FilePredictions",
    "NO_FINGERPRINT",
    "TrustNote",
    "package_fingerprint",
    "predict_files_with_note",
    "trust_note",
    "unlike_training",
]
