"""Features of one image that a biologist can read, shared by fingerprints and image groups.

:func:`image_features` describes a 2-D grey or colour (``yxc``) image with a few numbers;
:mod:`microzoo.trust.fingerprint` summarises them over a model's training images and
:mod:`microzoo.qc.groups` clusters evaluation images by them. :func:`guess_modality` turns them
into a rough guess of how the image was taken.

Features, all computed on a robustly normalised grey copy of each image (0.5th and 99.5th
percentiles mapped to 0 and 1) unless said otherwise:

- ``noise_level``: the wavelet estimate of the noise standard deviation
  (``skimage.restoration.estimate_sigma``); compared on a log scale.
- ``background_level``: where the median pixel lies between dark (0) and bright (1); low for
  fluorescence (dark background), high for brightfield and histology.
- ``contrast``: the standard deviation of the normalised image.
- ``spectral_slope``: slope of the radially averaged power spectrum in log-log; steeper
  (more negative) means smoother images, flatter means more fine detail or noise.
- ``brightness``: the 99.5th percentile of the raw values as a fraction of the dtype's range
  (integer images only; left out for float images).
- ``colour``: mean saturation of a colour image; 0 for grey images.
"""

from __future__ import annotations

import itertools

import numpy as np
from skimage import color, restoration

from microzoo.errors import ImageError
from microzoo.io.axes import to_grayscale

__all__ = ["guess_modality", "image_features"]


def image_features(image: np.ndarray) -> dict[str, float]:
    """The fingerprint features of one 2D grey or colour (``yxc``) image."""
    image = np.asarray(image)
    gray = to_grayscale(image)
    if gray.size < 64 or min(gray.shape) < 8:
        raise ImageError(f"image of shape {image.shape} is too small to describe; give at least 8x8 pixels")
    low, median, high = np.percentile(gray, [0.5, 50, 99.5])
    span = high - low
    normalised = np.clip((gray - low) / span, -0.5, 1.5) if span > 0 else np.zeros_like(gray)
    features = {
        "noise_level": float(restoration.estimate_sigma(_central_crop(normalised))) if span > 0 else 0.0,
        "background_level": float((median - low) / span) if span > 0 else 0.0,
        "contrast": float(normalised.std()),
        "spectral_slope": _spectral_slope(normalised),
        "colour": _colourfulness(image),
    }
    if np.issubdtype(image.dtype, np.integer):
        features["brightness"] = float(high / np.iinfo(image.dtype).max)
    return features


def guess_modality(image: np.ndarray) -> str:
    """A rough guess of how an image was taken, from its appearance alone.

    ``"colour"`` (histology or colour brightfield) when the channels differ (mean saturation
    above 0.05); otherwise ``"fluorescence"`` when the median lies in the darker half between
    the 0.5th and 99.5th percentiles (dark background), else ``"brightfield"`` (bright
    background: brightfield, phase contrast, electron microscopy).
    """
    features = image_features(image)
    if features["colour"] > 0.05:
        return "colour"
    return "fluorescence" if features["background_level"] < 0.5 else "brightfield"


def _central_crop(image: np.ndarray, side: int = 512) -> np.ndarray:
    """At most ``side`` x ``side`` pixels from the centre (features of large images, fast)."""
    top, left = max(image.shape[0] - side, 0) // 2, max(image.shape[1] - side, 0) // 2
    return image[top : top + side, left : left + side]


def _spectral_slope(normalised: np.ndarray) -> float:
    """Slope of log power against log spatial frequency (0.02 to 0.35 cycles per pixel)."""
    crop = _central_crop(normalised)
    window = np.outer(np.hanning(crop.shape[0]), np.hanning(crop.shape[1]))
    power = np.abs(np.fft.fftshift(np.fft.fft2((crop - crop.mean()) * window))) ** 2
    fy = np.fft.fftshift(np.fft.fftfreq(crop.shape[0]))[:, None]
    fx = np.fft.fftshift(np.fft.fftfreq(crop.shape[1]))[None, :]
    radius = np.hypot(fy, fx)
    edges = np.geomspace(0.02, 0.35, 16)
    centres, means = [], []
    for low, high in itertools.pairwise(edges):
        ring = (radius >= low) & (radius < high)
        if ring.any():
            centres.append(np.sqrt(low * high))
            means.append(power[ring].mean())
    means = np.maximum(np.asarray(means), 1e-12)
    if len(centres) < 3:
        return 0.0
    return float(np.polyfit(np.log10(centres), np.log10(means), 1)[0])


def _colourfulness(image: np.ndarray) -> float:
    if image.ndim != 3 or image.shape[-1] < 3:
        return 0.0
    rgb = image[..., :3].astype(np.float64)
    top = rgb.max()
    if top <= 0:
        return 0.0
    return float(color.rgb2hsv(rgb / top)[..., 1].mean())
