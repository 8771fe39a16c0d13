"""The short trust note after a prediction: do these images look like the model's training data?

A package trained by microzoo carries the fingerprint of its training images
(``training_fingerprint.json``); for those, every predicted image is compared with it and the
ones that differ are named with what differs. Packages without a fingerprint get no note
(``microzoo check --train DIR`` computes one from training images the user has).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from microzoo.package.load import ModelPackage
from microzoo.trust.fingerprint import ATTACHMENT_NAME, Fingerprint
from microzoo.trust.ood import OODResult, check_images


def package_fingerprint(package: ModelPackage) -> Fingerprint | None:
    """The training fingerprint a package carries as an attachment, or ``None``."""
    for attachment in package.descr.attachments or []:
        if str(attachment.source).replace("\\", "/").split("/")[-1] == ATTACHMENT_NAME:
            return Fingerprint.load(package.file(attachment.source))
    return None


def unlike_training(fingerprint: Fingerprint, images: Sequence[np.ndarray], names: Sequence[str]) -> list[OODResult]:
    """The images that differ from the training data the fingerprint describes."""
    return [r for r in check_images(fingerprint, images, names=names) if r.out_of_distribution]
