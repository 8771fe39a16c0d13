"""A training-data fingerprint: what the images a model learnt from looked like.

A :class:`Fingerprint` summarises a set of training images with a few features per image
that a biologist can read (how noisy, how bright, dark or bright background, colour or
grey, how fine the texture), their typical ranges, the image shapes, dtypes and pixel
size. :mod:`microzoo.trust.ood` scores new images against it. A model package carries it
as the attachment ``training_fingerprint.json``.

Its features are those of :func:`microzoo.qc.image_features.image_features`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import yaml
from pydantic import BaseModel, Field

from microzoo.errors import DataError, ImageError
from microzoo.progress import ProgressCallback, no_progress
from microzoo.qc.image_features import image_features

ATTACHMENT_NAME = "training_fingerprint.json"

#: Smallest robust spread of each feature: below this, differences do not matter in practice.
SCALE_FLOOR = {
    "noise_level": 0.15,  # log10 units: a factor of 1.4
    "background_level": 0.03,
    "contrast": 0.02,
    "spectral_slope": 0.15,
    "brightness": 0.03,
    "colour": 0.03,
}
LOG_FEATURES = ("noise_level",)
QUANTILES = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)

#: the fewest training images a fingerprint learns typical ranges from
MIN_FINGERPRINT_IMAGES = 5


class FeatureSummary(BaseModel):
    """How one feature was distributed over the training images."""

    median: float
    scale: float = Field(description="robust spread (1.4826 MAD, floored), on the compared scale")
    log_scale: bool = Field(description="whether the feature is compared as log10")
    quantiles: dict[str, float] = Field(description="'p5' -> value, on the feature's own scale")
    tolerance: float = Field(default=1.0, description="|z| that 99% of training images stay within")

    def z(self, value: float) -> float:
        """Robust z-score of ``value`` against the training images."""
        compared = np.log10(max(value, 1e-6)) if self.log_scale else value
        return float((compared - self.median) / self.scale)

    def deviation(self, value: float) -> float:
        """Signed z-score in units of the feature's tolerance: beyond +-1 is unusual."""
        return self.z(value) / self.tolerance


class Fingerprint(BaseModel):
    """Summary statistics of a model's training images; see the module docstring."""

    format_version: int = 1
    n_images: int
    features: dict[str, FeatureSummary]
    threshold: float = Field(description="largest |deviation| a training image reaches, at the calibrated quantile")
    false_alarm_target: float = Field(description="fraction of training images above the threshold")
    shapes: list[list[int]] = Field(description="distinct (height, width) of the training images")
    dtypes: list[str]
    channels: list[int] = Field(description="distinct channel counts (1 for grey images)")
    pixel_size: float | None = Field(default=None, description="micrometres per pixel, when known")
    described: str = Field(default="training images", description="what the images are, in words")

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write as JSON (``.json``) or YAML (``.yaml``/``.yml``), atomically."""
        from microzoo.io.atomic import atomic_output

        path = Path(path)
        data = self.model_dump(mode="json")
        with atomic_output(path) as temporary:
            if path.suffix.lower() in (".yaml", ".yml"):
                temporary.write_text(yaml.safe_dump(data, sort_keys=False))
            else:
                temporary.write_text(json.dumps(data, indent=1))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Fingerprint:
        """Read a fingerprint written by :meth:`save`."""
        path = Path(path)
        try:
            text = path.read_text()
            data = yaml.safe_load(text) if path.suffix.lower() in (".yaml", ".yml") else json.loads(text)
            return cls.model_validate(data)
        except (OSError, ValueError, yaml.YAMLError) as error:
            raise DataError(
                f"{path} is not a readable training fingerprint ({error}); create one with "
                "microzoo.trust.fingerprint.fingerprint_images"
            ) from error


def image_views(image: np.ndarray, axes: str, *, most: int = 8) -> list[np.ndarray]:
    """The 2-D views of an image that fingerprints describe: ``yx`` planes, or ``yxc`` colour planes.

    A colour image (a channel axis of 3 or 4) keeps its colour; otherwise the first channel is
    taken, as training does. Stacks (z, t, batch or index axes) give up to ``most`` planes spread
    evenly over them, so a training fingerprint built from the planes of 3-D stacks and the
    check of a new stack compare the same kind of view.

    >>> [v.shape for v in image_views(np.zeros((20, 32, 32)), "zyx", most=3)]
    [(32, 32), (32, 32), (32, 32)]
    >>> image_views(np.zeros((32, 32, 3)), "yxc")[0].shape
    (32, 32, 3)
    """
    image = np.asarray(image)
    axes = axes.lower()
    if len(axes) != image.ndim or not {"y", "x"} <= set(axes) or len(set(axes)) != len(axes):
        raise ImageError(
            f"axes {axes!r} do not describe an image of shape {image.shape}; name each axis once, with y and x"
        )
    if "c" in axes:
        colour = image.shape[axes.index("c")] in (3, 4)
        image = np.moveaxis(image, axes.index("c"), -1)
        axes = axes.replace("c", "") + "c"
        if not colour:
            image, axes = image[..., 0], axes[:-1]
    spatial = "yxc" if axes.endswith("c") else "yx"
    order = [axes.index(a) for a in axes if a not in spatial] + [axes.index(a) for a in spatial]
    stacked = np.transpose(image, order)
    planes = stacked.reshape(-1, *stacked.shape[stacked.ndim - len(spatial) :])
    chosen = np.unique(np.linspace(0, len(planes) - 1, min(most, len(planes))).round().astype(int))
    return [planes[i] for i in chosen]


def fingerprint_images(
    images: Iterable[np.ndarray],
    *,
    pixel_size: float | None = None,
    false_alarm_target: float = 0.01,
    progress: ProgressCallback | None = None,
) -> Fingerprint:
    """Fingerprint a set of training images (2D grey, or ``yxc`` colour).

    Each feature's robust z-score (distance from the training median in units of 1.4826 MAD)
    is divided by its tolerance, the 99th percentile of the training images' own |z| (at
    least 2), so heavy-tailed features do not make the others lax. An image's score is the
    largest of these; the threshold is the ``1 - false_alarm_target`` quantile of the training
    images' scores (at least 1), so about that fraction of images like the training ones is
    flagged.
    """
    progress = progress or no_progress
    images = list(images)
    if len(images) < MIN_FINGERPRINT_IMAGES:
        raise DataError(
            f"a fingerprint needs at least {MIN_FINGERPRINT_IMAGES} training images to learn their typical ranges, "
            f"got {len(images)}; give more images"
        )
    rows, shapes, dtypes, channels = [], set(), set(), set()
    for done, image in enumerate(images, start=1):
        image = np.asarray(image)
        rows.append(image_features(image))
        shapes.add(tuple(int(s) for s in image.shape[:2]))
        dtypes.add(str(image.dtype))
        channels.add(1 if image.ndim == 2 else int(min(image.shape[-1], 3)))
        progress(done, len(images), "fingerprinting training images")
    names = [name for name in rows[0] if all(name in row for row in rows)]
    features = {name: _summarise(name, [row[name] for row in rows]) for name in names}
    scores = [max(abs(features[n].deviation(row[n])) for n in names) for row in rows]
    threshold = max(float(np.quantile(scores, 1.0 - false_alarm_target)), 1.0)
    return Fingerprint(
        n_images=len(images),
        features=features,
        threshold=threshold,
        false_alarm_target=false_alarm_target,
        shapes=sorted(list(s) for s in shapes),
        dtypes=sorted(dtypes),
        channels=sorted(channels),
        pixel_size=pixel_size,
    )


def _summarise(name: str, values: Sequence[float]) -> FeatureSummary:
    array = np.asarray(values, dtype=float)
    log_scale = name in LOG_FEATURES
    compared = np.log10(np.maximum(array, 1e-6)) if log_scale else array
    median = float(np.median(compared))
    spread = 1.4826 * float(np.median(np.abs(compared - median)))
    quantiles = {f"p{round(q * 100):g}": float(np.quantile(array, q)) for q in QUANTILES}
    scale = max(spread, SCALE_FLOOR.get(name, 1e-3))
    tolerance = max(float(np.quantile(np.abs(compared - median) / scale, 0.99)), 2.0)
    return FeatureSummary(median=median, scale=scale, log_scale=log_scale, quantiles=quantiles, tolerance=tolerance)
