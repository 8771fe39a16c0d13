"""Test helper: the zoo example model with a training fingerprint of DSB2018 fluorescence images."""

from __future__ import annotations

import shutil
from pathlib import Path


def fingerprinted_copy(example_model: Path, shared_data: Path, target: Path, *, n_images: int) -> Path:
    """A copy of ``example_model`` at ``target`` carrying the fingerprint of the first ``n_images``
    fluorescence images (grey, dark background) of DSB2018's training split, as an attachment."""
    import imageio.v3 as iio

    from microzoo.trust.fingerprint import ATTACHMENT_NAME, fingerprint_images

    shutil.copytree(example_model, target)
    fluorescence = []
    for path in sorted((shared_data / "dsb2018" / "train" / "images").glob("*.png")):
        rgb = iio.imread(path)[..., :3]
        if rgb.std(axis=-1).mean() < 1 and rgb.mean() < 60:
            fluorescence.append(rgb[..., 0])
        if len(fluorescence) == n_images:
            break
    fingerprint_images(fluorescence).save(target / ATTACHMENT_NAME)
    text = (target / "bioimageio.yaml").read_text()
    (target / "bioimageio.yaml").write_text(
        text.replace("type: model\n", f"type: model\nattachments:\n  - source: {ATTACHMENT_NAME}\n")
    )
    return target
