"""Hallucination check for restoration models: the part a denoiser removes should look like noise.

The residual is the input minus the output, after the output is mapped onto the input by
least squares (:func:`microzoo.qc.metrics.affine_fit`: a model that outputs normalised values
is compared in the input's units). Noise is (near) white: a denoiser that removes only noise
leaves a residual whose power is the same at every spatial frequency, the level of the input's
noise, which the input's highest frequencies show (0.4 to 0.5 cycles per pixel hold little
signal in a microscope image). :func:`residual_structure` gives ``excess``, the residual's power
at 0.03 to 0.15 cycles per pixel (objects of about 3 to 15 pixels) over that noise floor: about 1
when the removed part is noise (0.98 to 1.04 for the clean W2S averages taken as the output),
below 1 when the model removes less than the noise, above 1 when it removes (or invents)
structure: over-smoothing, a wrong intensity mapping.

An output is flagged when ``excess`` exceeds ``EXCESS_LIMIT`` and the package's own test
output's by a factor (``EXCESS_FACTOR``). The limit was set from four W2S test fields (081, 090,
100, 110: clean averages 0.98-1.04, Gaussian sigma 2 0.44-0.93, sigma 4 1.39-3.95) and checked
on W2S *train* (``benchmarks/hallucination.py --split train``); see benchmarks/RESULTS.md.
"""

from __future__ import annotations

import dataclasses

import numpy as np

#: spatial frequencies (cycles per pixel): structures, and the noise floor
STRUCTURE_BAND = (0.03, 0.15)
NOISE_BAND = (0.4, 0.5)
EXCESS_LIMIT = 1.3
EXCESS_FACTOR = 1.3


@dataclasses.dataclass(frozen=True)
class ResidualStructure:
    """How much the removed part (input - output) looks like structure rather than noise:
    ``excess`` (see the module docstring) and ``removed``, the residual's standard deviation
    as a fraction of the input's."""

    excess: float
    removed: float


def residual_structure(image: np.ndarray, output: np.ndarray) -> ResidualStructure | None:
    """The residual figures of one restoration (see the module docstring); ``None`` when the
    image and the output do not have the same 2-D shape once squeezed (or are under 32 pixels)."""
    image_plane, output_plane = _plane(image), _plane(output)
    if image_plane is None or output_plane is None:
        return None
    if image_plane.shape != output_plane.shape or min(image_plane.shape) < 32:
        return None
    image, output = _central(image_plane), _central(output_plane)
    from microzoo.qc.metrics import affine_fit

    good = np.isfinite(image) & np.isfinite(output)
    if not good.any():
        return None
    image = np.where(good, image, np.median(image[good]))
    output = np.where(good, output, np.median(output[good]))
    residual = image - affine_fit(output, image)
    residual_power, frequency = _power(residual)
    image_power, _ = _power(image)
    noise = image_power[(frequency >= NOISE_BAND[0]) & (frequency <= NOISE_BAND[1])].mean()
    structure = residual_power[(frequency >= STRUCTURE_BAND[0]) & (frequency <= STRUCTURE_BAND[1])].mean()
    excess = float(structure / noise) if noise > 0 else 0.0
    return ResidualStructure(excess, float(residual.std() / max(image.std(), 1e-12)))


def hallucination_reasons(
    found: ResidualStructure, reference: ResidualStructure | None, output_id: str
) -> tuple[float, list[str]]:
    """(score, reasons): the score is above 1 when the residual of ``output_id`` carries structure."""
    limit = max(EXCESS_LIMIT, EXCESS_FACTOR * reference.excess) if reference is not None else EXCESS_LIMIT
    score = found.excess / limit
    reasons = []
    if score > 1:
        on_test = f"; {reference.excess:.2g} on the package's test input" if reference is not None else ""
        reasons.append(
            f"output '{output_id}': the part the model removed is not noise: at the scale of objects it holds "
            f"{found.excess:.2g}x the image's noise power (noise alone: about 1{on_test}); the model may have "
            "smoothed away or invented detail"
        )
    return score, reasons


def _central(plane: np.ndarray, side: int = 1024) -> np.ndarray:
    """At most ``side`` x ``side`` pixels from the centre (large images, fast)."""
    top, left = max(plane.shape[0] - side, 0) // 2, max(plane.shape[1] - side, 0) // 2
    return plane[top : top + side, left : left + side]


def _power(plane: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The power spectrum of a plane (Hann window) and each coefficient's radial frequency."""
    centred = plane - plane.mean()
    window = np.outer(np.hanning(plane.shape[0]), np.hanning(plane.shape[1]))
    power = np.abs(np.fft.fft2(centred * window)) ** 2
    frequency = np.hypot(np.fft.fftfreq(plane.shape[0])[:, None], np.fft.fftfreq(plane.shape[1])[None, :])
    return power, frequency


def _plane(array: np.ndarray) -> np.ndarray | None:
    """A 2-D float64 plane: squeezed, colour (last axis 3 or 4) made grey."""
    from microzoo.io.axes import to_grayscale

    array = np.squeeze(np.asarray(array))
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        array = to_grayscale(array)
    return array.astype(np.float64) if array.ndim == 2 else None


__all__ = ["ResidualStructure", "hallucination_reasons", "residual_structure"]
