"""Trust: the training-data fingerprint, out-of-distribution checks, good-practice checks.

The verbs, importable from here (loaded on first use)::

    fingerprint_images(images)                 a Fingerprint of the training images
    check_images(fingerprint, images)          which images are unlike the training data
    find_near_duplicates(train, test)          test images that repeat training images
    run_checks(...) / check_folders(...)       every good-practice check (`microzoo check`)
    trust_note(package, images, names)         the note shown beside a prediction (per image: ImageTrust)
    package_reference(package)                 what a package offers to compare predictions with
    residual_structure(image, output)          whether what a restoration removed is noise
"""

from __future__ import annotations

from microzoo._lazy import lazy_exports

#: public name -> the module that defines it
_EXPORTS = {
    "Finding": "checks", "check_folders": "checks", "load_model_claims": "checks", "run_checks": "checks",
    "Fingerprint": "fingerprint", "fingerprint_images": "fingerprint",
    "NearDuplicate": "leakage", "find_near_duplicates": "leakage",
    "ImageTrust": "verdict", "TrustNote": "note", "trust_note": "note",
    "package_reference": "reference", "residual_structure": "hallucination",
    "OODResult": "ood", "check_images": "ood",
}  # fmt: skip
__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
