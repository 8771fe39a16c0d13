"""The classical baseline of each QC task: what training QC and ``compare --classical`` run.

One place decides which classical method a deep-learning result is compared with, and how its
parameters are chosen, so the QC report written after training and ``microzoo compare
--classical`` show the same baseline on the same images. The methods themselves are those of
:mod:`microzoo.qc.classical`, which ``microzoo baseline`` runs on a folder.

- restoration: a Gaussian filter whose width is tuned on training pairs (fitted PSNR, on
  central crops) when they are given, else :data:`~microzoo.qc.classical.DEFAULT_PARAMS`
  (1 pixel; said in a notice); ``compare`` also runs
  BM3D (noise level estimated per image; the ``classical`` extra).
- semantic: Otsu's threshold (multi-Otsu for more than two classes) after a 1-pixel Gaussian;
  the foreground's polarity (bright or dark) is chosen on training pairs when given, else
  detected per image (:func:`~microzoo.qc.classical.detect_polarity`).
- instances: Otsu + distance-transform seeded watershed in 2-D
  (:func:`~microzoo.qc.classical.watershed_instances`); Otsu and connected components in 3-D.

Images are 2-D (``yx``, or ``yxc`` colour) or 3-D volumes (``zyx``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi
from skimage import filters

from microzoo.errors import DataError
from microzoo.qc import classical
from microzoo.qc.metrics import mean_class_iou

__all__ = ["Baseline", "baselines_for", "instances_baseline", "restoration_baselines", "semantic_baseline"]

#: smoothing before Otsu's threshold, in pixels (what ``microzoo baseline otsu`` uses too)
SEMANTIC_SMOOTHING = classical.DEFAULT_PARAMS["otsu"]["smoothing_sigma"]


@dataclass(frozen=True)
class Baseline:
    """A classical method with its parameters chosen: call it on an image."""

    name: str  # the label in reports, e.g. "Gaussian (sigma 1.5)"
    method: str
    params: Mapping[str, float | str]
    run: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    notice: str | None = None

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.run(image)


def _crop(image: np.ndarray, side: int = 256) -> np.ndarray:
    spatial = image.shape[:2] if image.ndim == 3 and image.shape[-1] in (3, 4) else image.shape
    box = tuple(slice(max((n - side) // 2, 0), max((n - side) // 2, 0) + side) for n in spatial)
    return image[box]


_NAMES = {"gaussian": "Gaussian (sigma {sigma:g})", "bm3d": "BM3D (noise sigma x{sigma_factor:g})",
          "median": "median ({size:g} px)", "nl_means": "NL-means (h x{h_factor:g})"}  # fmt: skip


def restoration_baselines(
    *,
    train_noisy: Sequence[np.ndarray] = (),
    train_clean: Sequence[np.ndarray] = (),
    data_range: float | None = None,
    methods: Sequence[str] = ("gaussian",),
) -> list[Baseline]:
    """Denoising baselines (``"gaussian"``, ``"bm3d"``), tuned on up to 4 training pairs when given."""
    if len(train_noisy) != len(train_clean):
        raise DataError(f"give one clean image per noisy one, got {len(train_noisy)} and {len(train_clean)}")
    pairs = list(zip(train_noisy, train_clean, strict=True))[:4]
    noisy, clean = [_crop(n) for n, _ in pairs], [_crop(c) for _, c in pairs]
    if data_range is None and pairs:
        data_range = max(float(np.ptp(classical.grey(c))) for c in clean) or 1.0
    baselines = []
    for method in methods:
        if pairs:
            params = classical.tune_denoiser(method, noisy, clean, data_range=float(data_range or 1.0),
                                             criterion="psnr_fitted")  # fmt: skip
            notice = None
        else:
            params = dict(classical.DEFAULT_PARAMS[method])
            notice = f"{method}: fixed parameters {params} (give training pairs to tune them)"
        name = _NAMES.get(method, method).format(**params)
        run = functools.partial(classical.denoise, method=method, params=dict(params))
        baselines.append(Baseline(name, method, dict(params), run, notice))
    return baselines


def _otsu_classes(image: np.ndarray, *, n_classes: int, polarity: str) -> np.ndarray:
    grey = classical.grey(image)
    if SEMANTIC_SMOOTHING > 0:
        grey = filters.gaussian(grey, sigma=SEMANTIC_SMOOTHING, preserve_range=True)
    if np.ptp(grey) == 0:
        return np.zeros(grey.shape, dtype=np.int64)
    if polarity == "auto":
        polarity = classical.detect_polarity(grey)
    if n_classes == 2:
        above = grey > filters.threshold_otsu(grey)
        return (above if polarity == "bright" else ~above).astype(np.int64)
    classes = np.digitize(grey, filters.threshold_multiotsu(grey, classes=n_classes)).astype(np.int64)
    return classes if polarity == "bright" else (n_classes - 1 - classes)


def semantic_baseline(
    *, train_images: Sequence[np.ndarray] = (), train_classes: Sequence[np.ndarray] = (), n_classes: int = 2
) -> Baseline:
    """Otsu (multi-Otsu) classes; polarity chosen on up to 5 training pairs, else per image."""
    if n_classes < 2:
        raise DataError(f"a semantic baseline needs at least 2 classes, got {n_classes}")
    if len(train_images) != len(train_classes):
        raise DataError(f"give one class map per image, got {len(train_images)} images and {len(train_classes)}")
    pairs = list(zip(train_images, train_classes, strict=True))[:5]
    polarity = "auto"
    if pairs:
        scores = {
            p: float(
                np.mean(
                    [
                        mean_class_iou(t, _otsu_classes(i, n_classes=n_classes, polarity=p), n_classes=n_classes)
                        for i, t in pairs
                    ]
                )
            )
            for p in ("bright", "dark")
        }
        polarity = max(scores, key=lambda p: scores[p])
    params: dict[str, float | str] = {"smoothing_sigma": SEMANTIC_SMOOTHING, "polarity": polarity, "classes": n_classes}
    name = f"Otsu ({polarity})" if polarity != "auto" else "Otsu"
    return Baseline(name, "otsu", params, lambda image: _otsu_classes(image, n_classes=n_classes, polarity=polarity))


def _instances(image: np.ndarray) -> np.ndarray:
    grey = classical.grey(image)
    if grey.ndim == 2:
        return classical.watershed_instances(grey).astype(np.int64)
    if np.ptp(grey) == 0:
        return np.zeros(grey.shape, dtype=np.int64)
    mask = grey > filters.threshold_otsu(grey)
    if mask.mean() > 0.5:  # objects are the smaller class
        mask = ~mask
    return ndi.label(mask)[0].astype(np.int64)


def instances_baseline() -> Baseline:
    """Otsu + seeded watershed (2-D), Otsu + connected components (3-D)."""
    return Baseline("Otsu+watershed", "watershed", {}, _instances)


_FACTORIES: dict[str, Callable[..., list[Baseline]]] = {
    "restoration": lambda images, truths, data_range, n_classes, methods: restoration_baselines(
        train_noisy=images, train_clean=truths, data_range=data_range, methods=methods
    ),
    "semantic": lambda images, truths, data_range, n_classes, methods: [
        semantic_baseline(train_images=images, train_classes=truths, n_classes=n_classes)
    ],
    "instances": lambda images, truths, data_range, n_classes, methods: [instances_baseline()],
}


def baselines_for(
    task: str,
    *,
    train_images: Sequence[np.ndarray] = (),
    train_truths: Sequence[np.ndarray] = (),
    data_range: float | None = None,
    n_classes: int = 2,
    restoration_methods: Sequence[str] = ("gaussian", "bm3d"),
) -> list[Baseline]:
    """The classical baselines of a QC task, chosen on the training pairs when given.

    ``compare --classical`` runs these; training QC calls the per-task functions above with its
    own training pairs (and the Gaussian only, for restoration: BM3D is slow and optional).
    """
    if task not in _FACTORIES:
        raise DataError(f"no classical baseline for task {task!r}; choose one of {', '.join(_FACTORIES)}")
    return _FACTORIES[task](list(train_images), list(train_truths), data_range, n_classes, restoration_methods)
