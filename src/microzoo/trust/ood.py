"""Out-of-distribution check: do these images look like the model's training data?

Each image's fingerprint features (:func:`microzoo.qc.image_features.image_features`) are
turned into robust z-scores against the training images (distance from the training median
in units of the training spread), each divided by that feature's tolerance (the |z| that 99%
of training images stay within). The image's score is the largest of these; it is flagged
when that exceeds the fingerprint's threshold, which was calibrated on the training images
themselves (by default only 1% of them exceed it); 1 means "at the edge of the training
range". Each feature past the threshold is described in words, with the training range, so
a user can see *why*.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from pydantic import BaseModel

from microzoo.progress import ProgressCallback, no_progress
from microzoo.qc.image_features import image_features
from microzoo.trust.fingerprint import FeatureSummary, Fingerprint

#: How each feature is described: (name in words, word when higher, word when lower).
WORDS = {
    "noise_level": ("noise level", "noisier", "less noisy"),
    "background_level": (
        "background",
        "brighter background (brightfield- or histology-like)",
        "darker background (fluorescence-like)",
    ),
    "contrast": ("contrast", "higher contrast", "lower contrast (flatter)"),
    "spectral_slope": ("texture", "more fine-grained detail or grain", "smoother, blurrier structures"),
    "brightness": (
        "signal brightness",
        "brighter (uses more of the intensity range)",
        "dimmer (uses less of the intensity range)",
    ),
    "colour": ("colour", "more colourful (e.g. stained histology)", "less colourful"),
}
PIXEL_SIZE_TOLERANCE = 1.5


class FeatureDeviation(BaseModel):
    """One feature of one image that lies outside what the training images showed.

    ``deviation`` is the robust z-score in units of the feature's training tolerance.
    """

    feature: str
    value: float
    typical_low: float
    typical_high: float
    deviation: float
    words: str


class OODResult(BaseModel):
    """The verdict on one image."""

    name: str
    score: float
    threshold: float
    out_of_distribution: bool
    deviations: list[FeatureDeviation]
    notes: list[str]

    @property
    def summary(self) -> str:
        """One or two sentences for the user."""
        if not self.out_of_distribution:
            text = f"{self.name}: looks like the training images (score {self.score:.1f}, limit {self.threshold:.1f})."
        else:
            reasons = "; ".join(d.words for d in self.deviations)
            text = (
                f"{self.name}: unlike the training images (score {self.score:.1f}, limit "
                f"{self.threshold:.1f}): {reasons}."
            )
        return " ".join([text, *self.notes])


def check_images(
    fingerprint: Fingerprint,
    images: Iterable[np.ndarray],
    *,
    names: Sequence[str] | None = None,
    pixel_size: float | None = None,
    progress: ProgressCallback | None = None,
) -> list[OODResult]:
    """Score each image against ``fingerprint``; see the module docstring.

    ``pixel_size`` (micrometres per pixel of the new images) is compared with the
    fingerprint's when both are known: objects then appear at another scale, which a
    flag reports regardless of the intensity features.
    """
    images = list(images)
    names = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
    if len(names) != len(images):
        from microzoo.errors import DataError

        raise DataError(f"got {len(images)} images but {len(names)} names; give one name per image")
    progress = progress or no_progress
    results = []
    for done, (name, image) in enumerate(zip(names, images, strict=True), start=1):
        results.append(_check_one(fingerprint, np.asarray(image), name, pixel_size))
        progress(done, len(images), "comparing with the training data")
    return results


def _check_one(fingerprint: Fingerprint, image: np.ndarray, name: str, pixel_size: float | None) -> OODResult:
    features = image_features(image)
    scores = {
        feature: summary.deviation(features[feature])
        for feature, summary in fingerprint.features.items()
        if feature in features
    }
    score = max((abs(z) for z in scores.values()), default=0.0)
    deviations = [
        _describe(feature, features[feature], fingerprint.features[feature], z, fingerprint.described)
        for feature, z in sorted(scores.items(), key=lambda item: -abs(item[1]))
        if abs(z) > fingerprint.threshold
    ]
    notes = []
    flagged = score > fingerprint.threshold
    if pixel_size and fingerprint.pixel_size:
        ratio = fingerprint.pixel_size / pixel_size
        if max(ratio, 1 / ratio) > PIXEL_SIZE_TOLERANCE:
            flagged = True
            notes.append(
                f"Its pixels are {pixel_size:g} um against {fingerprint.pixel_size:g} um for the model: "
                f"objects appear {ratio:.2g}x as large as the model learnt; rescale the image first."
            )
    height, width = image.shape[:2]
    smallest = min(min(shape) for shape in fingerprint.shapes)
    if min(height, width) < smallest / 4:
        notes.append(f"It is much smaller ({height}x{width}) than any training image; few objects fit in it.")
    return OODResult(
        name=name,
        score=score,
        threshold=fingerprint.threshold,
        out_of_distribution=flagged,
        deviations=deviations,
        notes=notes,
    )


def _describe(
    feature: str, value: float, summary: FeatureSummary, z: float, described: str = "training images"
) -> FeatureDeviation:
    """Words for one deviation; ``z`` is the feature's deviation (tolerance units); ``described``
    names the reference images."""
    label, higher, lower = WORDS.get(feature, (feature, "higher", "lower"))
    low, high, typical = summary.quantiles["p5"], summary.quantiles["p95"], summary.quantiles["p50"]
    direction = higher if z > 0 else lower
    if summary.log_scale and typical > 0:
        factor = value / typical
        amount = f"{factor:.1f}x" if factor >= 1 else f"1/{1 / max(factor, 1e-9):.1f}"
        words = f"{direction}: {label} {value:.3g} is {amount} the typical value"
    else:
        words = f"{direction}: {label} {value:.3g}"
    if summary.quantiles["p0"] == summary.quantiles["p100"]:
        words += f" ({described}: {typical:.3g})"
    else:
        words += f" (90% of {described}: {low:.3g} to {high:.3g})"
    return FeatureDeviation(feature=feature, value=value, typical_low=low, typical_high=high, deviation=z, words=words)
