"""Groups of evaluation images that look alike, so that figures can be split by group.

A pooled figure can hide a group on which a method fails (colour histology images among
fluorescence ones, say). :func:`find_groups` describes each image with a few features
(:func:`microzoo.qc.image_features.image_features`: colour, background level, texture;
plus the typical object size), clusters them (Ward linkage on features in units of a
difference that matters) and keeps the clustering only when its groups are clearly apart
(mean silhouette at least :data:`MIN_SILHOUETTE`) and each holds at least ``min_size``
images. Each group is named in words from what sets it apart, e.g. ``"colour, bright
background (histology-like)"``. :func:`microzoo.qc.evaluate.evaluate` takes the groups'
names per image (``groups=``) and reports each group's figures with their intervals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist, squareform
from skimage import filters, measure

from microzoo.errors import DataError
from microzoo.io.axes import to_grayscale
from microzoo.progress import ProgressCallback, no_progress
from microzoo.qc.image_features import image_features

__all__ = ["GROUP_FEATURES", "MIN_SILHOUETTE", "ImageGroups", "find_groups", "group_features", "groups_of"]

#: the features groups are found by, and the difference in each that counts as one unit
GROUP_FEATURES = {"colour": 0.1, "background_level": 0.2, "spectral_slope": 0.5, "object_size": 0.2}
#: the mean silhouette (-1..1) a clustering needs to count as distinct groups
MIN_SILHOUETTE = 0.5


@dataclass(frozen=True)
class ImageGroups:
    """Which group each image belongs to, and each group's name and typical features."""

    names: tuple[str, ...]  # one per group, in order of size (largest first)
    labels: tuple[int, ...]  # per image: the index of its group in ``names``
    features: dict[str, tuple[float, ...]]  # per group feature: each group's median
    silhouette: float

    def of_images(self) -> tuple[str, ...]:
        """Each image's group name, what ``evaluate(groups=...)`` takes."""
        return tuple(self.names[k] for k in self.labels)

    def sizes(self) -> tuple[int, ...]:
        return tuple(self.labels.count(k) for k in range(len(self.names)))

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "labels": list(self.labels), "sizes": list(self.sizes()),
                "features": {k: list(v) for k, v in self.features.items()}, "silhouette": self.silhouette}  # fmt: skip


def _plane(image: np.ndarray) -> np.ndarray:
    """A 2-D grey or ``yxc`` colour view: a volume's middle plane, a leading channel axis moved last."""
    image = np.squeeze(np.asarray(image))
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        return image
    if image.ndim == 3 and image.shape[0] in (3, 4):
        return np.moveaxis(image, 0, -1)
    while image.ndim > 2:
        image = image[image.shape[0] // 2]
    return image


def object_size(image: np.ndarray) -> float:
    """Typical object diameter in pixels: the root of the median area of the Otsu objects.

    Objects are the smaller of the two Otsu classes (as in
    :func:`microzoo.qc.classical.detect_polarity`); specks under 4 pixels are left out.
    """
    grey = to_grayscale(image)
    if np.ptp(grey) == 0:
        return 1.0
    mask = grey > filters.threshold_otsu(grey)
    if mask.mean() > 0.5:
        mask = ~mask
    areas = np.bincount(measure.label(mask).ravel())[1:]
    areas = areas[areas >= 4]
    return float(np.sqrt(np.median(areas))) if areas.size else 1.0


def group_features(image: np.ndarray) -> dict[str, float]:
    """The features of one image that groups are found by (object size as log10 of pixels)."""
    plane = _plane(image)
    features = image_features(plane)
    chosen = {name: features[name] for name in GROUP_FEATURES if name in features}
    chosen["object_size"] = float(np.log10(object_size(plane)))
    return chosen


def _silhouette(distances: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette of a clustering (Rousseeuw 1987), from the square distance matrix."""
    values = []
    for i in range(len(labels)):
        own = labels == labels[i]
        if own.sum() < 2:
            values.append(0.0)
            continue
        a = distances[i, own].sum() / (own.sum() - 1)
        b = min(distances[i, labels == k].mean() for k in np.unique(labels) if k != labels[i])
        values.append((b - a) / max(a, b) if max(a, b) > 0 else 0.0)
    return float(np.mean(values))


def find_groups(
    images: Sequence[np.ndarray],
    *,
    max_groups: int = 4,
    min_size: int = 5,
    progress: ProgressCallback | None = None,
) -> ImageGroups | None:
    """Cluster ``images`` (2-D grey, ``yxc`` colour, or volumes: their middle plane) into groups.

    Returns None when they form one group: fewer than ``2 * min_size`` images, or no
    clustering into 2..``max_groups`` groups of at least ``min_size`` images each with a mean
    silhouette of :data:`MIN_SILHOUETTE` or more. Among those that qualify, the one with the
    highest silhouette is kept.
    """
    progress = progress or no_progress
    if max_groups < 2 or min_size < 1:
        raise DataError(f"max_groups must be 2 or more and min_size 1 or more, got {max_groups} and {min_size}")
    if len(images) < 2 * min_size:
        return None
    rows = []
    for done, image in enumerate(images, start=1):
        rows.append(group_features(image))
        progress(done, len(images), "describing images for groups")
    names = [name for name in GROUP_FEATURES if all(name in row for row in rows)]
    table = np.array([[row[name] for name in names] for row in rows])
    scaled = table / np.array([GROUP_FEATURES[name] for name in names])
    tree = linkage(scaled, method="ward")
    distances = squareform(pdist(scaled))
    best: tuple[float, np.ndarray] | None = None
    for k in range(2, max_groups + 1):
        labels = fcluster(tree, t=k, criterion="maxclust")
        counts = np.bincount(labels)[1:]
        if len(counts) != k or counts.min() < min_size:
            continue
        score = _silhouette(distances, labels)
        if score >= MIN_SILHOUETTE and (best is None or score > best[0]):
            best = (score, labels)
    if best is None:
        return None
    score, labels = best
    order = sorted(np.unique(labels), key=lambda k: (-np.sum(labels == k), k))
    index = {k: i for i, k in enumerate(order)}
    medians = {name: tuple(float(np.median(table[labels == k, j])) for k in order) for j, name in enumerate(names)}
    return ImageGroups(
        names=_names(medians, [float(np.mean(table[labels == k, names.index("colour")] > 0.05)) for k in order]),
        labels=tuple(index[k] for k in labels),
        features=medians,
        silhouette=score,
    )


def groups_of(images: Sequence[np.ndarray], *, progress: ProgressCallback | None = None) -> tuple[str, ...] | None:
    """Each image's group name when the images fall into groups (what ``evaluate(groups=)`` takes), else None.

    What ``compare``, ``predict --truth`` and the QC after training use.
    """
    found = find_groups(images, progress=progress)
    return None if found is None else found.of_images()


def _names(medians: dict[str, tuple[float, ...]], colour_share: Sequence[float]) -> tuple[str, ...]:
    """Name each group by the features that set the groups apart (a unit or more between medians)."""
    apart = {name: max(v) - min(v) >= GROUP_FEATURES[name] for name, v in medians.items()}
    names = []
    for k, share in enumerate(colour_share):
        bright = medians["background_level"][k] >= 0.5
        colour = "colour" if share >= 0.8 else "grey" if share <= 0.2 else "colour and grey"
        words = [colour]
        if apart.get("background_level"):
            words.append("bright background" if bright else "dark background")
        if apart.get("spectral_slope"):
            slope = medians["spectral_slope"][k]
            words.append("fine texture" if slope > np.median(medians["spectral_slope"]) else "smooth texture")
        if apart.get("object_size"):
            words.append(f"objects ~{10 ** medians['object_size'][k]:.0f} px")
        like = {"colour": "histology", "grey": "brightfield" if bright else "fluorescence"}.get(
            colour, "histology- or brightfield" if bright else "mixed"
        )
        names.append(f"{', '.join(words)} ({like}-like)")
    for name in set(names):  # two groups alike in words: number them
        same = [i for i, other in enumerate(names) if other == name]
        for j, i in enumerate(same[1:], start=2):
            names[i] = f"{name} {j}"
    return tuple(names)
