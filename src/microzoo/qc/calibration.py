"""Calibration of foreground probabilities: of the pixels given 0.8, are 80% foreground?

Arrays in, numbers out, as in :mod:`microzoo.qc.metrics`: ``(probability, truth)`` of the same
shape, the truth a foreground mask (non-zero: foreground). Pixels are put into ``bins``
equal-width bins of the predicted probability; per bin the **confidence** is the mean
probability and the **accuracy** the fraction of its pixels that are foreground (the
"frequency of the positive class" of a binary reliability diagram). The **expected calibration
error** is the mean over pixels of ``|accuracy - confidence|`` of their bin:
``ECE = sum_b n_b / N * |acc_b - conf_b|`` (0: calibrated; Guo et al. 2017, binary form).
Over several images the pixels are pooled; the interval of the ECE resamples whole images.

>>> probability = np.array([0.9, 0.9, 0.1, 0.1])
>>> round(reliability(probability, np.array([1, 1, 0, 0])).ece, 3)
0.1
>>> round(reliability(probability, np.array([1, 0, 0, 1])).ece, 3)
0.4
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from microzoo.errors import DataError

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["Reliability", "calibration_by_method", "foreground_probability", "reliability", "draw_reliability"]


@dataclass(frozen=True)
class Reliability:
    """A reliability diagram's numbers (per bin) and the expected calibration error."""

    edges: np.ndarray  # bins + 1 edges over [0, 1]
    confidence: np.ndarray  # mean predicted probability per bin (NaN: empty bin)
    accuracy: np.ndarray  # fraction of foreground pixels per bin (NaN: empty bin)
    counts: np.ndarray  # pixels per bin
    ece: float
    ece_low: float = float("nan")  # 95% bootstrap interval over images (NaN: one image)
    ece_high: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        def listed(values: np.ndarray) -> list[float | None]:
            return [float(v) if np.isfinite(v) else None for v in values]

        return {
            "edges": listed(self.edges),
            "confidence": listed(self.confidence),
            "accuracy": listed(self.accuracy),
            "counts": [int(c) for c in self.counts],
            "ece": self.ece,
            "ece_interval": listed(np.array([self.ece_low, self.ece_high])),
        }


def _bin_sums(probability: np.ndarray, truth: np.ndarray, bins: int) -> np.ndarray:
    """``(bins, 3)``: pixels, sum of probabilities, foreground pixels, per probability bin."""
    probability, truth = np.asarray(probability), np.asarray(truth)
    if probability.shape != truth.shape:
        raise DataError(f"probability {probability.shape} and truth {truth.shape} differ in shape")
    p = probability.astype(np.float64, copy=False).ravel()
    if p.size and not (np.isfinite(p).all() and p.min() >= 0 and p.max() <= 1):
        raise DataError("calibration needs probabilities within [0, 1] (no NaN): this output is not a probability")
    index = np.minimum((p * bins).astype(np.int64), bins - 1)
    foreground = (truth.ravel() != 0).astype(np.float64)
    return np.stack(
        [
            np.bincount(index, minlength=bins).astype(np.float64),
            np.bincount(index, weights=p, minlength=bins),
            np.bincount(index, weights=foreground, minlength=bins),
        ],
        axis=-1,
    )


def _ece(sums: np.ndarray) -> np.ndarray:
    """ECE from bin sums ``(..., bins, 3)``."""
    total = sums[..., 0].sum(axis=-1)
    gaps = np.abs(sums[..., 2] - sums[..., 1]).sum(axis=-1)
    return np.divide(gaps, total, out=np.full_like(gaps, np.nan), where=total > 0)


def _from_sums(sums: np.ndarray, boot: np.ndarray | None = None) -> Reliability:
    counts = sums[:, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence, accuracy = sums[:, 1] / counts, sums[:, 2] / counts
    low = high = float("nan")
    if boot is not None:
        samples = _ece(boot)
        samples = samples[np.isfinite(samples)]
        if samples.size:
            low, high = float(np.percentile(samples, 2.5)), float(np.percentile(samples, 97.5))
    edges = np.linspace(0.0, 1.0, len(counts) + 1)
    return Reliability(edges, confidence, accuracy, counts.astype(np.int64), float(_ece(sums)), low, high)


def reliability(
    probabilities: np.ndarray | Sequence[np.ndarray],
    truth_foreground: np.ndarray | Sequence[np.ndarray],
    *,
    bins: int = 10,
) -> Reliability:
    """The reliability diagram and ECE of one probability image, or of several pooled."""
    if bins < 1:
        raise DataError(f"bins must be at least 1, got {bins}")
    if isinstance(probabilities, np.ndarray):
        probabilities, truth_foreground = [probabilities], [np.asarray(truth_foreground)]
    if len(probabilities) != len(truth_foreground):
        raise DataError(f"{len(probabilities)} probability images for {len(truth_foreground)} truths: give one each")
    sums = sum(
        (_bin_sums(p, t, bins) for p, t in zip(probabilities, truth_foreground, strict=True)), np.zeros((bins, 3))
    )
    return _from_sums(sums)


def calibration_by_method(
    probabilities: Mapping[str, Sequence[np.ndarray]],
    truths: Sequence[np.ndarray],
    *,
    bins: int = 10,
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> dict[str, Reliability]:
    """Method -> its pooled :class:`Reliability`, the ECE with a bootstrap interval over images."""
    n = len(truths)
    weights = None
    if n >= 2:
        rng = np.random.default_rng(seed)
        weights = np.zeros((n_bootstrap, n))
        np.add.at(weights, (np.arange(n_bootstrap)[:, None], rng.integers(0, n, size=(n_bootstrap, n))), 1)
    results = {}
    for method, arrays in probabilities.items():
        if len(arrays) != n:
            raise DataError(f"method {method!r} has {len(arrays)} probability images for {n} truth images")
        try:
            per_image = np.stack([_bin_sums(p, t, bins) for p, t in zip(arrays, truths, strict=True)])
        except DataError as error:
            raise DataError(f"method {method!r}: {error}") from None
        boot = None if weights is None else np.einsum("bi,ikc->bkc", weights, per_image)
        results[method] = _from_sums(per_image.sum(axis=0), boot)
    return results


def foreground_probability(channels: np.ndarray) -> np.ndarray | None:
    """The foreground probability of a segmentation output ``(channels, *spatial)``: the one
    channel, or 1 - the background (first) channel of a softmax; None when not in [0, 1]."""
    channels = np.asarray(channels)
    if not channels.size or not np.isfinite(channels).all() or channels.min() < 0 or channels.max() > 1:
        return None
    return channels[0] if channels.shape[0] == 1 else 1.0 - channels[0]


def draw_reliability(axes: Axes, results: Mapping[str, Reliability], colours: Sequence[str]) -> None:
    """Accuracy against confidence per method, the diagonal for a calibrated model."""
    axes.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="calibrated")
    for (method, result), colour in zip(results.items(), colours, strict=False):
        shown = result.counts > 0
        label = f"{method} (ECE {result.ece:.3f})"
        axes.plot(result.confidence[shown], result.accuracy[shown], "o-", ms=3, color=colour, label=label)
    axes.set_xlabel("predicted foreground probability (bin mean)")
    axes.set_ylabel("fraction of foreground pixels")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="upper left")
