"""The main job on real data, as ``make demo`` runs it.

Tests the BioImage Model Zoo example model (every weight format), predicts nuclei on a few
DSB2018 test images of different sizes (tiled where they exceed the model's 512x512 input),
and writes each probability map and an overlay PNG to the output folder. Each image gets its
trust note (:mod:`microzoo.trust.note`): the model was trained on fluorescence nuclei, and
the colour histology image among them is called ``differs``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from microzoo.io.atomic import atomic_output
from microzoo.io.files import shared_data_dir
from microzoo.progress import ProgressCallback
from microzoo.trust.note import TrustNote

#: how many DSB2018 test images the demo predicts (one per image size, smallest first)
N_IMAGES = 4


@dataclasses.dataclass(frozen=True)
class DemoResult:
    model_name: str
    test_passed: bool
    test_lines: tuple[str, ...]
    outputs: tuple[Path, ...]
    overlays: tuple[Path, ...]
    notices: tuple[str, ...]
    trust: TrustNote | None = None  # one verdict per predicted image


def pick_images(folder: Path, n: int = N_IMAGES) -> list[Path]:
    """The first image of each distinct size, up to ``n``, smallest first (sizes read from headers)."""
    import imageio.v3 as iio

    by_size: dict[tuple[int, ...], Path] = {}
    for path in sorted(folder.glob("*.png")):
        shape = iio.improps(path).shape[:2]
        by_size.setdefault(shape, path)
    return [by_size[s] for s in sorted(by_size, key=lambda s: s[0] * s[1])][:n]


def run_demo(out: Path, *, data: Path | None = None, progress: ProgressCallback | None = None) -> DemoResult:
    """Test the example model and predict nuclei on real DSB2018 images into ``out``."""
    from microzoo.io.read import read_image
    from microzoo.io.write import write_image
    from microzoo.package.load import open_package
    from microzoo.runtime.predict import Model
    from microzoo.runtime.reproduce import test_package

    data = data or shared_data_dir()
    package = open_package(data / "bmz" / "unet2d_nuclei_broad")
    results = test_package(package, progress=progress)
    lines = tuple(
        f"{r.weight_format}: {r.output_id} max |diff| {r.max_abs_diff:.2g}, "
        f"{r.mismatched_per_million:.1f} mismatched per million -> {'pass' if r.passed else 'FAIL'}"
        for r in results
    )
    model = Model(package)
    images = pick_images(data / "dsb2018" / "test" / "images")
    outputs: list[Path] = []
    overlays: list[Path] = []
    notices: list[str] = []
    seen: list[tuple[np.ndarray, str, str, Any]] = []  # image, name, axes, outputs: for the trust note
    for done, path in enumerate(images):
        if progress:
            progress(done, len(images), f"predicting {path.name[:12]}")
        image = read_image(path)
        prediction = model.predict_image(np.asarray(image.data), axes=image.axes)
        probability = prediction.outputs[model.output_ids[0]]
        stem = path.stem[:12]
        outputs.append(write_image(out / f"{stem}_probability.tif", probability, prediction.axes[model.output_ids[0]]))
        overlays.append(
            write_overlay(
                out / f"{stem}_overlay.png",
                np.asarray(image.data),
                probability,
                title=f"{path.stem[:12]}  {image.data.shape[0]}x{image.data.shape[1]}, {prediction.n_tiles} tile(s)",
            )
        )
        notices.extend(prediction.notices)
        seen.append((np.asarray(image.data), path.name, image.axes, prediction.outputs))
    if progress:
        progress(len(images), len(images), "done")
    return DemoResult(
        package.name,
        all(r.passed for r in results),
        lines,
        tuple(outputs),
        tuple(overlays),
        tuple(dict.fromkeys(notices)),
        _trust_note(package, model, seen),
    )


def _trust_note(package: Any, model: Any, seen: list[tuple[np.ndarray, str, str, Any]]) -> TrustNote | None:
    """The trust note of the predicted images (image, name, axes, outputs), or None without any."""
    from microzoo.trust.note import trust_note

    if not seen:
        return None
    images, names, axes, outputs = (list(column) for column in zip(*seen, strict=True))
    return trust_note(package, images, names, axes, outputs=outputs, model=model)


def write_overlay(path: Path, image: np.ndarray, probability: np.ndarray, *, title: str = "") -> Path:
    """Save the image beside the image with the probability > 0.5 outline drawn on it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rgb = (image[..., :3] if image.ndim == 3 else np.stack([image] * 3, axis=-1)).astype(np.float32)
    low, high = np.percentile(rgb, (1, 99.8))
    rgb = np.clip((rgb - low) / max(high - low, 1e-6), 0, 1)  # display contrast only
    probability = np.squeeze(probability)
    figure, axes = plt.subplots(1, 2, figsize=(10, 5.4), dpi=100)
    axes[0].imshow(rgb)
    axes[0].set_title("input (contrast stretched)")
    axes[1].imshow(rgb)
    axes[1].imshow(np.ma.masked_less(probability, 0.5), cmap="autumn", alpha=0.45, vmin=0.5, vmax=1)
    axes[1].contour(probability, levels=[0.5], colors="yellow", linewidths=0.8)
    axes[1].set_title("nuclei (probability > 0.5)")
    for ax in axes:
        ax.axis("off")
    figure.suptitle(title)
    figure.tight_layout(rect=(0, 0, 1, 0.95))
    with atomic_output(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)
    return path
