"""Classical baselines: denoising, thresholding and seeded watershed.

Every deep-learning result in microzoo is compared with one of these. They are thin,
keyword-only wrappers over scikit-image, SciPy and ``bm3d``, plus a small parameter search
(:func:`tune_denoiser`) that picks each method's parameter on training pairs only, and a
folder runner (:func:`run_classical_on_folder`) that times each image.

Noise-dependent parameters are given as multiples of the noise sigma estimated on each image
(``skimage.restoration.estimate_sigma``): on real fluorescence, noise grows with the signal and
the estimate (taken from the flat background) is too low, so BM3D does best there with about
three times the estimate (W2S); on additive Gaussian noise the best multiple is about one.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from scipy import ndimage as ndi
from skimage import feature, filters, measure, morphology, restoration, segmentation

from microzoo.errors import ConfigError, DataError
from microzoo.io.axes import to_grayscale
from microzoo.io.files import image_stem, list_images
from microzoo.io.read import read_image
from microzoo.progress import ProgressCallback, no_progress
from microzoo.qc.metrics import affine_fit, psnr

DENOISING_METHODS = ("gaussian", "median", "nl_means", "bm3d")
SEGMENTATION_METHODS = ("otsu", "local", "watershed")
Polarity = Literal["auto", "bright", "dark"]

#: The candidates :func:`tune_denoiser` tries when no grid is given.
DEFAULT_GRIDS: dict[str, list[dict[str, float]]] = {
    "gaussian": [{"sigma": s} for s in (0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0)],
    "median": [{"size": s} for s in (3, 5, 7, 9)],
    "nl_means": [{"h_factor": f} for f in (0.6, 0.8, 1.0, 1.5, 2.0, 3.0)],
    "bm3d": [{"sigma_factor": f} for f in (0.75, 1.0, 1.5, 2.0, 3.0, 4.0)],
}


#: Each method's parameters: name -> (lowest, highest, whether the bounds are included, meaning).
PARAMETERS: dict[str, dict[str, tuple[float, float, bool, str]]] = {
    "gaussian": {"sigma": (0.0, 100.0, False, "width in pixels")},
    "median": {"size": (1, 101, True, "window side in pixels")},
    "nl_means": {"h_factor": (0.0, 100.0, False, "filter strength, times the estimated noise sigma"),
                 "patch_size": (1, 51, True, "patch side in pixels"),
                 "patch_distance": (1, 101, True, "search distance in pixels")},
    "bm3d": {"sigma_factor": (0.0, 100.0, False, "times the estimated noise sigma"),
             "sigma": (0.0, float("inf"), False, "noise sigma in the image's units (overrides sigma_factor)")},
    "otsu": {"smoothing_sigma": (0.0, 100.0, True, "Gaussian smoothing first, pixels")},
    "local": {"smoothing_sigma": (0.0, 100.0, True, "Gaussian smoothing first, pixels"),
              "block_size": (3, 1001, True, "odd window side in pixels"),
              "offset": (-float("inf"), float("inf"), True, "image units beyond the local mean")},
    "watershed": {"smoothing_sigma": (0.0, 100.0, True, "Gaussian smoothing first, pixels"),
                  "min_distance": (1, 1000, True, "pixels between seeds"),
                  "min_size": (0, float("inf"), True, "smallest object kept, pixels")},
}  # fmt: skip
#: The parameters a method runs with when none are given (and compare's untuned baselines).
DEFAULT_PARAMS: dict[str, dict[str, float]] = {
    "gaussian": {"sigma": 1.0}, "median": {"size": 5}, "nl_means": {"h_factor": 1.0},
    "bm3d": {"sigma_factor": 1.0}, "otsu": {"smoothing_sigma": 1.0}, "local": {}, "watershed": {},
}  # fmt: skip
_WHOLE = {"size", "patch_size", "patch_distance", "block_size", "min_distance", "min_size"}


def check_params(method: str, params: dict[str, float] | None) -> dict[str, float]:
    """``params`` of ``method`` checked against :data:`PARAMETERS`; a ConfigError names the valid ones.

    >>> check_params("gaussian", {"sigma": 1.5})
    {'sigma': 1.5}
    """
    _check_method(method, DENOISING_METHODS + SEGMENTATION_METHODS)
    allowed = PARAMETERS[method]

    def valid() -> str:
        if not allowed:
            return f"{method} takes no parameters"
        return f"{method} takes " + "; ".join(
            f"{name} in {'[' if closed else '('}{low:g}, {high:g}{']' if closed else ')'} ({meaning})"
            for name, (low, high, closed, meaning) in allowed.items()
        )

    checked: dict[str, float] = {}
    for name, value in (params or {}).items():
        if name not in allowed:
            raise ConfigError(f"unknown parameter {name!r} for {method}: {valid()}")
        low, high, closed, _ = allowed[name]
        number = float(value)
        inside = low <= number <= high if closed else low < number < high
        if not np.isfinite(number) and name != "offset" or not inside:
            raise ConfigError(f"{name}={value} is out of range for {method}: {valid()}")
        if name in _WHOLE:
            if number != round(number):
                raise ConfigError(f"{name}={value} must be a whole number for {method}: {valid()}")
            number = int(number)
        if name == "block_size" and number % 2 == 0:
            raise ConfigError(f"block_size={value} must be odd for {method}: {valid()}")
        checked[name] = number
    return checked


def grey(image: np.ndarray) -> np.ndarray:
    """A float64 grey copy: 2-D ``yx``, colour ``yxc`` (3 or 4 channels, see
    :func:`microzoo.io.axes.to_grayscale`), or a 3-D ``zyx`` volume as it is."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] not in (1, 3, 4):
        return image.astype(np.float64)
    return to_grayscale(image)


def estimate_noise_sigma(image: np.ndarray) -> float:
    """Noise standard deviation of ``image`` in its own units (wavelet estimate)."""
    return float(restoration.estimate_sigma(to_grayscale(image)))


def denoise(image: np.ndarray, *, method: str, params: dict[str, float]) -> np.ndarray:
    """Denoise a 2-D image (or a volume: gaussian, median) with one method; float64 in the input's units.

    ``method`` is one of ``"gaussian"`` (``sigma`` in pixels), ``"median"`` (``size``),
    ``"nl_means"`` (``h_factor`` times the estimated noise sigma) or ``"bm3d"``
    (``sigma_factor`` times the estimated noise sigma; ``sigma`` overrides it when the noise
    level is known, e.g. 25 for the BSD68 protocol).
    """
    gray = grey(image)
    _check_method(method, DENOISING_METHODS)
    params = check_params(method, params)
    if gray.ndim == 3 and method in ("nl_means", "bm3d"):
        raise ConfigError(f"{method} denoises 2-D images; for a volume choose gaussian or median")
    if method == "gaussian":
        return filters.gaussian(gray, sigma=float(params["sigma"]), preserve_range=True)
    if method == "median":
        size = int(params["size"])
        return ndi.median_filter(gray, size=size, mode="reflect")
    if method == "nl_means":
        sigma = estimate_noise_sigma(gray)
        h = float(params.get("h_factor", 1.0)) * sigma
        return restoration.denoise_nl_means(
            gray,
            h=h,
            sigma=sigma,
            patch_size=int(params.get("patch_size", 5)),
            patch_distance=int(params.get("patch_distance", 6)),
            fast_mode=True,
        )
    import bm3d  # optional extra: microzoo[classical]

    if "sigma" in params:
        sigma = float(params["sigma"])
    else:
        sigma = float(params.get("sigma_factor", 1.0)) * estimate_noise_sigma(gray)
    return np.asarray(bm3d.bm3d(gray, sigma_psd=max(sigma, 1e-6)), dtype=np.float64)


def tune_denoiser(
    method: str,
    noisy_train: Sequence[np.ndarray],
    clean_train: Sequence[np.ndarray],
    *,
    data_range: float,
    criterion: Literal["psnr", "psnr_fitted"] = "psnr",
    grid: Sequence[dict[str, float]] | None = None,
    progress: ProgressCallback | None = None,
) -> dict[str, float]:
    """Pick the parameters of ``method`` that give the best mean PSNR on training pairs.

    ``criterion="psnr_fitted"`` scores each output after a least-squares fit ``a * pred + b``
    to the clean image (for data stretched per image, such as W2S). Use training images only;
    a few crops are enough. Returns the best entry of ``grid`` (``DEFAULT_GRIDS[method]``).
    """
    _check_method(method, DENOISING_METHODS)
    if len(noisy_train) != len(clean_train) or not noisy_train:
        raise DataError(
            f"tune_denoiser needs matching noisy and clean training images, got "
            f"{len(noisy_train)} noisy and {len(clean_train)} clean; pair them by name"
        )
    candidates = list(grid if grid is not None else DEFAULT_GRIDS[method])
    progress = progress or no_progress
    total = len(candidates) * len(noisy_train)
    best_score, best_params, done = -np.inf, candidates[0], 0
    for params in candidates:
        scores = []
        for noisy, clean in zip(noisy_train, clean_train, strict=True):
            clean = grey(clean)
            if grey(noisy).shape != clean.shape:
                raise DataError(f"noisy and clean shapes differ: {np.shape(noisy)} vs {clean.shape}")
            output = denoise(noisy, method=method, params=params)
            if criterion == "psnr_fitted":
                output = affine_fit(output, clean)
            scores.append(psnr(clean, output, data_range=data_range))
            done += 1
            progress(done, total, f"tuning {method}")
        if np.mean(scores) > best_score:
            best_score, best_params = float(np.mean(scores)), params
    return dict(best_params)


def detect_polarity(image: np.ndarray) -> Literal["bright", "dark"]:
    """Say whether the objects are brighter (``"bright"``) or darker than the background.

    Rule: after an Otsu threshold the objects are the smaller of the two classes
    (nuclei cover less of the field than the background in fluorescence, brightfield and
    histology alike).
    """
    gray = grey(image)
    if np.ptp(gray) == 0:
        return "bright"
    above = np.mean(gray > filters.threshold_otsu(gray))
    return "bright" if above <= 0.5 else "dark"


def threshold_segmentation(
    image: np.ndarray,
    *,
    method: Literal["otsu", "local"] = "otsu",
    smoothing_sigma: float = 0.0,
    block_size: int = 51,
    offset: float = 0.0,
    polarity: Polarity = "auto",
) -> np.ndarray:
    """Foreground mask by a global Otsu or a local (``block_size``) threshold.

    The image is converted to grayscale and optionally smoothed (Gaussian, ``smoothing_sigma``
    pixels) first. A local threshold keeps pixels that differ from their neighbourhood's mean
    by more than ``offset`` (image units) towards the foreground. ``polarity`` says whether the
    foreground is bright or dark; ``"auto"`` uses :func:`detect_polarity`. Returns a boolean array of the image's shape.
    """
    gray = grey(image)
    if smoothing_sigma > 0:
        gray = filters.gaussian(gray, sigma=smoothing_sigma, preserve_range=True)
    if polarity == "auto":
        polarity = detect_polarity(gray)
    if method == "otsu":
        threshold = filters.threshold_otsu(gray) if np.ptp(gray) > 0 else gray.max()
    elif method == "local":
        if block_size % 2 == 0 or block_size < 3:
            raise ConfigError(f"block_size must be an odd number >= 3, got {block_size}")
        local_mean = filters.threshold_local(gray, block_size=block_size, offset=0.0)
        return gray > local_mean + offset if polarity == "bright" else gray < local_mean - offset
    else:
        raise ConfigError(f"unknown threshold method {method!r}; choose 'otsu' or 'local'")
    return gray > threshold if polarity == "bright" else gray <= threshold


def watershed_instances(
    image: np.ndarray,
    *,
    smoothing_sigma: float = 1.0,
    min_distance: int = 5,
    min_size: int = 15,
    polarity: Polarity = "auto",
) -> np.ndarray:
    """Instance labels by Otsu + distance-transform seeded watershed (0 = background).

    Seeds are the maxima of the distance transform of the Otsu mask at least
    ``min_distance`` pixels apart; objects smaller than ``min_size`` pixels are dropped.
    """
    mask = threshold_segmentation(image, smoothing_sigma=smoothing_sigma, polarity=polarity)
    mask = morphology.remove_small_objects(ndi.binary_fill_holes(mask), max_size=max(min_size - 1, 0))
    if not mask.any():
        return np.zeros(mask.shape, dtype=np.int32)
    distance = ndi.distance_transform_edt(mask)
    smooth_distance = filters.gaussian(distance, sigma=1.0)
    components = measure.label(mask)
    peaks = feature.peak_local_max(smooth_distance, min_distance=min_distance, labels=components, exclude_border=False)
    markers = np.zeros(mask.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    # components without a peak (thin shapes) keep one seed each
    missing = np.setdiff1d(np.unique(components[mask]), np.unique(components[markers > 0]))
    for number, component in enumerate(missing, start=len(peaks) + 1):
        y, x = np.unravel_index(np.argmax(np.where(components == component, distance, -1)), mask.shape)
        markers[y, x] = number
    labels = segmentation.watershed(-smooth_distance, markers, mask=mask)
    return np.asarray(labels, dtype=np.int32)


#: Each segmentation method's function; its keywords are the method's :data:`PARAMETERS`,
#: checked at run time by :func:`check_params`.
_SEGMENTERS: dict[str, Callable[..., np.ndarray]] = {
    "otsu": functools.partial(threshold_segmentation, method="otsu"),
    "local": functools.partial(threshold_segmentation, method="local"),
    "watershed": watershed_instances,
}


def segment(image: np.ndarray, *, method: str, params: dict[str, float] | None = None) -> np.ndarray:
    """Dispatch to :func:`threshold_segmentation` (``"otsu"``, ``"local"``) or
    :func:`watershed_instances` (``"watershed"``) with keyword ``params``."""
    _check_method(method, SEGMENTATION_METHODS)
    return _SEGMENTERS[method](image, **check_params(method, params))


@dataclass(frozen=True)
class FolderRun:
    """What :func:`run_classical_on_folder` did: outputs written and seconds per image."""

    method: str
    params: dict[str, float]
    outputs: list[Path] = field(default_factory=list)
    seconds_per_image: list[float] = field(default_factory=list)

    @property
    def mean_seconds(self) -> float:
        """Mean processing time per image (reading and writing excluded)."""
        return float(np.mean(self.seconds_per_image)) if self.seconds_per_image else 0.0


def run_classical_on_folder(
    method: str,
    in_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    params: dict[str, float] | None = None,
    progress: ProgressCallback | None = None,
) -> FolderRun:
    """Run a denoising or segmentation method on every image in ``in_dir``.

    Outputs are written as TIFF files of the same stem into ``out_dir`` (float32 for
    denoising, uint8 masks, int32 labels), each through a temporary name. Returns the
    paths and the seconds each image took.
    """
    from microzoo.io.atomic import atomic_output

    params = check_params(method, params if params is not None else DEFAULT_PARAMS.get(method))
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    files = list_images(in_dir, role="input")
    if in_dir.resolve() == out_dir.resolve():
        raise ConfigError(f"the output folder {out_dir} is the input folder; choose another one")

    def run(image: np.ndarray) -> np.ndarray:
        if method in DENOISING_METHODS:
            return denoise(image, method=method, params=params).astype(np.float32)
        return _as_output(segment(image, method=method, params=params))

    import tifffile

    result = FolderRun(method=method, params=params)
    progress = progress or no_progress
    out_dir.mkdir(parents=True, exist_ok=True)
    for done, path in enumerate(files, start=1):
        image = np.asarray(read_image(path).data)
        start = time.perf_counter()
        output = run(image)
        result.seconds_per_image.append(time.perf_counter() - start)
        target = out_dir / f"{image_stem(path)}.tif"
        with atomic_output(target) as temporary:
            tifffile.imwrite(temporary, output)
        result.outputs.append(target)
        progress(done, len(files), f"{method} on {path.name}")
    return result


def _as_output(result: np.ndarray) -> np.ndarray:
    return result.astype(np.uint8) * 255 if result.dtype == bool else result.astype(np.int32)


def _check_method(method: str, allowed: Sequence[str]) -> None:
    if method not in allowed:
        raise ConfigError(f"unknown method {method!r}; choose one of {', '.join(allowed)}")
