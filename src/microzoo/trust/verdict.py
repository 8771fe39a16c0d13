"""The verdict on one predicted image (:class:`ImageTrust`), from a package's reference.

Three checks, each a score in units of its limit (above 1: the check failed):

- the input (:func:`input_check`): its fingerprint features and pixel size against the
  reference (:mod:`microzoo.trust.reference`);
- the output (:func:`output_check`): a probability output's foreground fraction and confidence
  against the test output's; a restoration's residual (:mod:`microzoo.trust.hallucination`);
- the flip check (:func:`flip_check`): how much of the foreground changes under flips and
  rotations, against ``FLIP_FACTOR`` times the model's rate on its test input.

:func:`judge_image` combines them: ``"differs"`` (input or output), else ``"uncertain"`` (flips),
else ``"similar"``. :mod:`microzoo.trust.note` gathers the verdicts into the note.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from microzoo.runtime.predict import Model
from microzoo.runtime.uncertainty import predict_with_uncertainty
from microzoo.trust.fingerprint import Fingerprint, image_views
from microzoo.trust.hallucination import hallucination_reasons, residual_structure
from microzoo.trust.ood import OODResult, check_images
from microzoo.trust.reference import OutputStatistics, Reference, output_statistics

VERDICTS = ("similar", "differs", "uncertain")
#: The flip check's limit: the fraction of the foreground on which its members may disagree is
#: ``FLIP_FACTOR`` times the rate of the same check on the package's test input (at least
#: ``FLIP_FLOOR``), so a model whose outputs are always less crisp is not called uncertain
#: everywhere. Calibrated on DSB2018 *train* (every 4th image) with the zoo example model and the
#: cheap check (benchmarks/trust_rates.py --split train --step 4; its test input's rate is 0.64%,
#: the limit 2.05%): 8 of its 98 fluorescence images exceed it, with mean F1@0.5 0.34 against 0.75
#: for the 86 called similar (Spearman of rate and F1 over the 98: -0.57).
FLIP_FACTOR = 3.2
FLIP_FLOOR = 0.01
#: The cheap default check: two transforms of the y, x plane (two extra forwards).
CHEAP_TRANSFORMS = ("transpose", "rot180")
#: Output statistics unlike the test output's: the foreground may grow to this factor of the test
#: output's (and at least 0.4 of the image), the median foreground value may drop by this much.
FOREGROUND_FACTOR = 2.0
FOREGROUND_FLOOR = 0.4
CONFIDENCE_DROP = 0.08


@dataclasses.dataclass(frozen=True)
class ImageTrust:
    """The verdict on one predicted image: ``score`` is the largest check's value in units of
    its limit (above 1: the check failed); ``reasons`` say why in words; ``evidence`` what the
    comparison rests on; ``checked`` which checks ran."""

    name: str
    verdict: str
    score: float
    reasons: tuple[str, ...] = ()
    evidence: str = ""
    checked: tuple[str, ...] = ()
    unlike: OODResult | None = None  # the input check's result when the input differs

    def to_dict(self) -> dict[str, Any]:
        """What ``trust.json`` holds for the image."""
        return {
            "verdict": self.verdict,
            "score": round(self.score, 4),
            "reasons": list(self.reasons),
            "evidence": self.evidence,
            "checked": list(self.checked),
        }


def input_check(
    fingerprint: Fingerprint, image: np.ndarray, name: str, axes: str | None, *, pixel_size: float | None = None
) -> OODResult:
    """The input check of one image (see :func:`unlike_training`): the plane that differs most
    when at least half its planes differ, else the plane with the highest score."""
    image = np.asarray(image)
    if axes is None:
        axes = "yxc" if image.ndim == 3 and image.shape[-1] in (3, 4) else "yx"
    views = [_finite(view) for view in image_views(image, axes)]
    results = check_images(fingerprint, views, names=[name] * len(views), pixel_size=pixel_size)
    flagged = [r for r in results if r.out_of_distribution]
    if not (flagged and 2 * len(flagged) >= len(results)):
        return max(results, key=lambda r: r.score).model_copy(update={"out_of_distribution": False})
    worst = max(flagged, key=lambda r: r.score)
    if len(results) > 1:
        worst = worst.model_copy(update={"notes": [*worst.notes, f"{len(flagged)} of {len(results)} planes differ"]})
    return worst


def _finite(image: np.ndarray) -> np.ndarray:
    if image.dtype.kind not in "fc":
        return image
    good = np.isfinite(image)
    if good.all() or not good.any():
        return image
    return np.where(good, image, np.median(image[good]))


def output_check(reference: Mapping[str, OutputStatistics], outputs: Mapping[str, Any]) -> tuple[float, list[str]]:
    """Compare each probability output with the test output's statistics: (score, reasons);
    a score above 1 means some output is unlike the test output."""
    score, reasons = 0.0, []
    for oid, expected in reference.items():
        if oid not in outputs or not expected.probability:
            continue
        seen = output_statistics(np.asarray(outputs[oid]))
        if not seen.probability:
            continue
        limit = max(FOREGROUND_FACTOR * expected.foreground, FOREGROUND_FLOOR)
        drop = expected.confidence - seen.confidence
        scores = (seen.foreground / limit, drop / CONFIDENCE_DROP if seen.foreground > 0 else 0.0)
        score = max(score, *scores)
        if scores[0] > 1:
            reasons.append(
                f"output '{oid}' marks {seen.foreground:.0%} of the image as foreground, against "
                f"{expected.foreground:.0%} on the package's test input (background taken for objects?)"
            )
        if scores[1] > 1:
            reasons.append(
                f"output '{oid}' is unsure: its median foreground value is {seen.confidence:.2f}, against "
                f"{expected.confidence:.2f} on the package's test input"
            )
    return score, reasons


def judge_image(
    reference: Reference,
    image: np.ndarray,
    name: str,
    axes: str | None = None,
    *,
    outputs: Mapping[str, Any] | None = None,
    pixel_size: float | None = None,
    flip_rate: float | None = None,
    flip_check: str = "",
    flip_limit: float = FLIP_FLOOR,
) -> ImageTrust:
    """The verdict on one image (see the module docstring). ``outputs`` are the model's outputs
    on it (by output id); ``flip_rate`` the fraction of the foreground on which the flip check's
    members disagree, ``flip_check`` the words for how it was made, ``flip_limit`` its limit
    (:func:`flip_limit_for`)."""
    checked = ["input features"] + (["pixel size"] if pixel_size and reference.pixel_size else [])
    found = input_check(reference.fingerprint, image, name, axes, pixel_size=pixel_size)
    scores = [found.score / found.threshold]
    reasons = found.notes + [d.words for d in found.deviations] if found.out_of_distribution else []
    differs = found.out_of_distribution
    if outputs is not None and any(s.probability for s in reference.outputs.values()):
        checked.append("output statistics")
        output_score, output_reasons = output_check(reference.outputs, outputs)
        scores.append(output_score)
        reasons += output_reasons
        differs = differs or output_score > 1
    if outputs is not None and reference.residuals:
        checked.append("residual of the restoration")
        for oid, expected in reference.residuals.items():
            found_residual = residual_structure(image, outputs[oid]) if oid in outputs else None
            if found_residual is not None:
                residual_score, residual_reasons = hallucination_reasons(found_residual, expected, oid)
                scores.append(residual_score)
                reasons += residual_reasons
                differs = differs or residual_score > 1
    uncertain = False
    if flip_rate is not None:
        checked.append(flip_check or "flips")
        scores.append(flip_rate / flip_limit)
        if flip_rate > flip_limit:
            uncertain = True
            reasons.append(
                f"the model disagrees with itself under {flip_check or 'flips'} on {flip_rate:.1%} of the foreground "
                f"(limit {flip_limit:.1%}, from its rate on the package's test input)"
            )
    verdict = "differs" if differs else "uncertain" if uncertain else "similar"
    return ImageTrust(
        name=name,
        verdict=verdict,
        score=float(max(scores)),
        reasons=tuple(reasons),
        evidence=reference.evidence,
        checked=tuple(checked),
        unlike=found if found.out_of_distribution else None,
    )


def flip_limit_for(model: Model, transforms: Sequence[str]) -> float:
    """The flip-rate limit of a check under ``transforms``: ``FLIP_FACTOR`` times the same check's
    rate on the package's first test input (computed once per package and transforms), at least
    ``FLIP_FLOOR``."""
    from microzoo.package.load import sha256_of
    from microzoo.runtime.reproduce import load_test_tensor
    from microzoo.trust.reference import tensor_axes

    key = (model.package.description_path, sha256_of(model.package.description_path), tuple(transforms))
    if key not in _TEST_FLIP_RATES:
        tensor = model.package.descr.inputs[0]
        rate, _ = flip_check(model, load_test_tensor(model.package, tensor), tensor_axes(tensor), transforms=transforms)
        _TEST_FLIP_RATES[key] = rate
    rate = _TEST_FLIP_RATES[key]
    return FLIP_FLOOR if rate is None else max(FLIP_FLOOR, FLIP_FACTOR * rate)


_TEST_FLIP_RATES: dict[tuple[Path, str, tuple[str, ...]], float | None] = {}


def flip_check(
    model: Model, image: np.ndarray, axes: str | None, *, transforms: Sequence[str] = (), **options: Any
) -> tuple[float | None, str]:
    """The largest flip rate over the model's outputs under ``transforms`` (by default
    ``CHEAP_TRANSFORMS``) and words for the check; ``(None, "")`` when no output is in [0, 1]."""
    transforms = tuple(transforms) or CHEAP_TRANSFORMS
    result = predict_with_uncertainty(model, image, axes=axes, method="tta", transforms=transforms, **options)
    rates = [rate for rate in result.flip_rate.values() if rate is not None]
    words = members_words("tta", len(transforms))
    return (max(rates), words) if rates else (None, "")


def members_words(method: str, members: int) -> str:
    """How the flip rate of an ``UncertainPrediction`` was made, in words."""
    if method == "tta":
        return "all 8 flips and rotations" if members == 8 else f"{members} flips/rotations"
    return {"dropout": f"{members} dropout samples", "ensemble": f"an ensemble of {members} models"}.get(method, method)


__all__ = [
    "CHEAP_TRANSFORMS",
    "FLIP_FACTOR",
    "FLIP_FLOOR",
    "VERDICTS",
    "ImageTrust",
    "flip_check",
    "flip_limit_for",
    "input_check",
    "judge_image",
    "members_words",
    "output_check",
]
