"""What a prediction is compared with: the reference a model package offers.

A package trained by microzoo carries the fingerprint of its training images (strong
evidence: hundreds of images, their spread measured). Any other package still has test
inputs and the outputs the model gave on them, and may document its pixel size;
:func:`package_reference` builds the reference from what there is:

- **Input features** (:func:`microzoo.trust.fingerprint.image_features`) of the package's
  test inputs. A handful of images shows no spread, so each feature is given the spread
  that images of one kind show (``PACKAGE_SCALE``, ``PACKAGE_TOLERANCE``: the robust spread
  and the 99th-percentile |z| of the 383 fluorescence images of DSB2018's *train* split),
  centred on the package's images, and the limit is widened to ``PACKAGE_THRESHOLD`` (chosen
  on that train split: 1.3% of its fluorescence images exceed it against the zoo example
  model's test input, every one of its 86 brightfield and histology images does). The
  DSB2018 *test* split, on which ``benchmarks/trust_rates.py`` reports, played no part.
- **Pixel size**, when the input's space axes document a unit (``scale`` per pixel).
- **Output statistics** of the package's test outputs (:func:`output_statistics`): for
  outputs in [0, 1], the fraction of pixels above 0.5 (foreground) and how confident the
  model is there (median value over the foreground); mean and percentiles for the others.
- For outputs shaped like the input (restoration), how much structure the part the model
  removed from its test input holds (:func:`microzoo.trust.hallucination.residual_structure`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from microzoo.package.load import ModelPackage, sha256_of
from microzoo.trust.fingerprint import (
    ATTACHMENT_NAME,
    QUANTILES,
    FeatureSummary,
    Fingerprint,
    image_features,
    image_views,
)
from microzoo.trust.hallucination import ResidualStructure, residual_structure

#: Robust spread of each feature (its compared scale, log10 for noise) within one kind of images:
#: 1.4826 MAD over DSB2018 train fluorescence (floored like ``fingerprint.SCALE_FLOOR``).
PACKAGE_SCALE = {
    "noise_level": 0.217,
    "background_level": 0.03,
    "contrast": 0.06,
    "spectral_slope": 0.345,
    "brightness": 0.167,
    "colour": 0.03,
}
#: The |z| that 99% of those images stay within, per feature (at least 2).
PACKAGE_TOLERANCE = {
    "noise_level": 2.41,
    "background_level": 3.03,
    "contrast": 2.08,
    "spectral_slope": 4.59,
    "brightness": 4.19,
    "colour": 2.0,
}
#: The limit on an image's score against a package's few images (1.0 against a fingerprint's
#: own calibrated threshold): a single test image is rarely at the centre of its kind.
PACKAGE_THRESHOLD = 1.5

#: Relative pixel size beyond which objects appear at another scale than the model learnt.
PIXEL_SIZE_TOLERANCE = 1.5
_AXIS_LETTERS = {"batch": "b", "index": "i", "channel": "c", "time": "t", "z": "z", "y": "y", "x": "x"}


@dataclasses.dataclass(frozen=True)
class OutputStatistics:
    """What one output looked like: ``probability`` when its values lie in [0, 1]; then
    ``foreground`` (fraction above 0.5) and ``confidence`` (median over the foreground)."""

    probability: bool
    foreground: float
    confidence: float
    mean: float
    percentiles: tuple[float, float, float]  # 1st, 50th, 99th

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def output_statistics(output: np.ndarray) -> OutputStatistics:
    """The statistics of one model output (any shape; NaN left out)."""
    values = np.asarray(output, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return OutputStatistics(False, 0.0, 0.0, float("nan"), (float("nan"),) * 3)
    probability = bool(values.min() >= 0.0 and values.max() <= 1.0)
    foreground = values[values > 0.5]
    low, median, high = np.percentile(values, [1, 50, 99])
    return OutputStatistics(
        probability=probability,
        foreground=float(foreground.size / values.size),
        confidence=float(np.median(foreground)) if foreground.size else 0.0,
        mean=float(values.mean()),
        percentiles=(float(low), float(median), float(high)),
    )


@dataclasses.dataclass(frozen=True)
class Reference:
    """What a package offers to compare new images and outputs with.

    ``kind`` is ``"training fingerprint"`` or ``"package test inputs"``; ``evidence`` says in
    words what the comparison rests on; ``fingerprint`` scores input features (for package
    test inputs, one built from them with the spread of ``PACKAGE_SCALE``); ``outputs`` are
    the test outputs' statistics by output id; ``pixel_size`` in micrometres when documented.
    """

    kind: str
    n_images: int
    evidence: str
    fingerprint: Fingerprint
    outputs: dict[str, OutputStatistics]
    pixel_size: float | None
    residuals: dict[str, ResidualStructure] = dataclasses.field(default_factory=dict)
    """By output id, for outputs shaped like the input: the test input's residual."""

    @property
    def strong(self) -> bool:
        """Whether the reference is a training fingerprint (not a few test inputs)."""
        return self.kind == "training fingerprint"


def package_fingerprint(package: ModelPackage) -> Fingerprint | None:
    """The training fingerprint a package carries as an attachment, or ``None``."""
    for attachment in package.descr.attachments or []:
        if str(attachment.source).replace("\\", "/").split("/")[-1] == ATTACHMENT_NAME:
            return Fingerprint.load(package.file(attachment.source))
    return None


def package_reference(package: ModelPackage) -> Reference:
    """The reference of ``package`` (see the module docstring); computed once per description
    (by its path and sha256)."""
    key = (package.description_path, sha256_of(package.description_path))
    if key not in _CACHE:
        _CACHE[key] = _reference(package)
    return _CACHE[key]


_CACHE: dict[tuple[Path, str], Reference] = {}


def _reference(package: ModelPackage) -> Reference:
    from microzoo.runtime.reproduce import load_test_tensor

    inputs = [(load_test_tensor(package, t), t) for t in package.descr.inputs]
    views = [view for array, tensor in inputs[:1] for view in image_views(array, tensor_axes(tensor))]
    tested = {str(t.id): load_test_tensor(package, t) for t in package.descr.outputs}
    outputs = {oid: output_statistics(array) for oid, array in tested.items()}
    residuals = {}
    for oid, array in tested.items():
        found = residual_structure(inputs[0][0], array) if inputs and not outputs[oid].probability else None
        if found is not None:
            residuals[oid] = found
    pixel_size = documented_pixel_size(inputs[0][1]) if inputs else None
    fingerprint = package_fingerprint(package)
    if fingerprint is not None:
        evidence = (
            f"the fingerprint of the model's {fingerprint.n_images} training images and the outputs on "
            f"the package's test input"
        )
        pixel_size = fingerprint.pixel_size or pixel_size
        return Reference(
            "training fingerprint", fingerprint.n_images, evidence, fingerprint, outputs, pixel_size, residuals
        )
    fingerprint = fingerprint_of_few(views, pixel_size=pixel_size)
    evidence = (
        f"the package's {len(views)} test input plane(s) and the model's outputs on them: weaker evidence than "
        "a training fingerprint (microzoo check --train TRAIN_DIR computes one from training images)"
    )
    return Reference("package test inputs", len(views), evidence, fingerprint, outputs, pixel_size, residuals)


def fingerprint_of_few(images: list[np.ndarray], *, pixel_size: float | None = None) -> Fingerprint:
    """A fingerprint of a few images (a package's test inputs): each feature centred on their
    median, with the spread of one kind of images (``PACKAGE_SCALE``, see the module docstring)."""
    rows = [image_features(np.asarray(image)) for image in images]
    names = [name for name in rows[0] if all(name in row for row in rows) and name in PACKAGE_SCALE]
    features = {}
    for name in names:
        values = np.asarray([row[name] for row in rows], dtype=float)
        log_scale = name == "noise_level"
        compared = np.log10(np.maximum(values, 1e-6)) if log_scale else values
        quantiles = {f"p{round(q * 100):g}": float(np.quantile(values, q)) for q in QUANTILES}
        features[name] = FeatureSummary(
            median=float(np.median(compared)),
            scale=PACKAGE_SCALE[name],
            log_scale=log_scale,
            quantiles=quantiles,
            tolerance=PACKAGE_TOLERANCE[name],
        )
    return Fingerprint(
        n_images=len(images),
        features=features,
        threshold=PACKAGE_THRESHOLD,
        false_alarm_target=0.013,
        shapes=sorted({tuple(int(s) for s in np.shape(image)[:2]) for image in images}),
        dtypes=sorted({str(np.asarray(image).dtype) for image in images}),
        channels=sorted({1 if np.ndim(image) == 2 else int(min(np.shape(image)[-1], 3)) for image in images}),
        pixel_size=pixel_size,
        described="the package's test input" if len(images) == 1 else f"the package's {len(images)} test inputs",
    )


def documented_pixel_size(tensor: Any) -> float | None:
    """Micrometres per pixel along x (or y) of an input tensor description, when its axis
    names a length unit; else ``None``."""
    factors = {"micrometer": 1.0, "nanometer": 1e-3, "millimeter": 1e3, "angstrom": 1e-4}
    for wanted in ("x", "y"):
        for axis in tensor.axes:
            if str(getattr(axis, "id", "")) == wanted and getattr(axis, "unit", None) is not None:
                factor = factors.get(str(axis.unit))
                return None if factor is None else float(axis.scale) * factor
    return None


def tensor_axes(tensor: Any) -> str:
    """A tensor description's axes as letters (``("batch", "channel", "y", "x")`` -> ``"bcyx"``)."""
    return "".join(_AXIS_LETTERS.get(str(axis.id), "i") for axis in tensor.axes)


__all__ = [
    "OutputStatistics",
    "Reference",
    "documented_pixel_size",
    "fingerprint_of_few",
    "output_statistics",
    "package_fingerprint",
    "package_reference",
    "tensor_axes",
]
