"""Does the hallucination check tell a good denoiser from an over-smoothing or wrongly normalised one?

    PYTHONPATH=src .venv/bin/python benchmarks/hallucination.py [--model PACKAGE] [--split test|train]
        [--steps 240] [--work DIR]

Without ``--model``, a CARE model is trained by microzoo on W2S *train* (noisy -> clean, channel 0,
fields 001-060; a fixed budget of ``--steps`` steps of 8 patches of 64x64) and exported. Each
method then restores the W2S noisy images of ``split`` (test: fields 081-110; train: every 4th of
001-060), and the trust note's
verdict is computed for each output (:func:`microzoo.trust.note.judge_image`, as ``microzoo
predict`` does; the reference is the package's test input and output):

- ``CARE``: the package as trained (a good denoiser);
- ``CARE, wrong input scale``: the same package with its input normalised to the 0.5th-60th
  percentiles instead of 0.5th-99.8th (bright structures pushed far outside the range it learnt);
- ``Gaussian sigma 1.5`` (the tuned classical baseline of the data README), ``Gaussian sigma 4``
  (over-smoothed) and ``Gaussian sigma 1.5, output x4 clipped at 255`` (a wrong intensity
  mapping): arrays, judged against the CARE package's reference;
- ``clean average``: the 400-capture average as the output (what an ideal denoiser removes: noise).

Reported: PSNR after the per-image affine fit against the clean average (data README), the
residual's excess power at object scales (1 = noise), and the fraction of images flagged.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import numpy as np
import yaml
from scipy import ndimage

from microzoo.io.files import list_images
from microzoo.io.read import read_array
from microzoo.qc.metrics import affine_fit
from microzoo.runtime.predict import Model
from microzoo.trust.hallucination import residual_structure
from microzoo.trust.reference import package_reference
from microzoo.trust.verdict import judge_image

DATA = Path(os.environ.get("MICROZOO_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def train_care(work: Path, steps: int) -> Path:
    """A CARE package trained on W2S train with a fixed budget of steps; its folder."""
    from microzoo.train.config import care_config
    from microzoo.train.run import train

    w2s = DATA / "w2s" / "train"
    config = care_config(images=w2s / "noisy", targets=w2s / "clean", patch_size=64, batch_size=8,
                         epochs=max(steps // 40, 1), steps_per_epoch=min(steps, 40))  # fmt: skip
    start = time.perf_counter()
    result = train(config, out_dir=work / "care")
    print(f"CARE trained in {time.perf_counter() - start:.0f} s ({steps} steps); package {result.package}")
    return result.package.parent


def wrongly_normalised(package: Path, target: Path) -> Path:
    """A copy of ``package`` whose input is scaled to its 0.5th-60th percentiles."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(package, target)
    description = yaml.safe_load((target / "bioimageio.yaml").read_text())
    for op in description["inputs"][0]["preprocessing"]:
        if op["id"] == "scale_range":
            op["kwargs"]["max_percentile"] = 60.0
    description["name"] = description["name"] + " (wrong input scale)"
    (target / "bioimageio.yaml").write_text(yaml.safe_dump(description, sort_keys=False))
    return target


def psnr_fitted(output: np.ndarray, clean: np.ndarray) -> float:
    """PSNR (peak 255) after the per-image affine fit; infinite for the clean image itself."""
    error = float(np.mean((affine_fit(output, clean) - clean) ** 2))
    return float(10 * np.log10(255.0**2 / error)) if error > 0 else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a restoration package (default: train CARE on W2S train)")
    parser.add_argument("--split", default="test", choices=("test", "train"))
    parser.add_argument("--steps", type=int, default=240)
    parser.add_argument("--work", type=Path, default=Path("/tmp/microzoo-hallucination"))
    args = parser.parse_args()
    package = args.model or train_care(args.work, args.steps)
    good = Model.open(package, threads=2)
    wrong = Model.open(wrongly_normalised(package, args.work / "wrong-scale"), threads=2)
    reference = package_reference(good.package)
    print(f"reference residual excess on the package's test input: "
          f"{ {k: round(v.excess, 3) for k, v in reference.residuals.items()} }")  # fmt: skip
    step = 1 if args.split == "test" else 4
    noisy = list_images(DATA / "w2s" / args.split / "noisy")[::step]
    oid = good.output_ids[0]
    rows: dict[str, list[tuple[float, float, str, bool]]] = {}
    start = time.perf_counter()
    for path in noisy:
        image = read_array(path)
        clean = read_array(DATA / "w2s" / args.split / "clean" / path.name).astype(np.float64)
        outputs = {
            "CARE": np.squeeze(good.predict(image, axes="yx")[oid]),
            "CARE, wrong input scale": np.squeeze(wrong.predict(image, axes="yx")[oid]),
            "Gaussian sigma 1.5 (tuned baseline)": ndimage.gaussian_filter(image.astype(np.float64), 1.5),
            "Gaussian sigma 4 (over-smoothed)": ndimage.gaussian_filter(image.astype(np.float64), 4.0),
            "Gaussian sigma 1.5, output x4 clipped at 255": np.clip(
                ndimage.gaussian_filter(image.astype(np.float64), 1.5) * 4, 0, 255
            ),
            "clean average": clean,
        }
        for method, output in outputs.items():
            verdict = judge_image(reference, image, path.name, "yx", outputs={oid: output})
            found = residual_structure(image, output)
            removed = any("removed is not noise" in r for r in verdict.reasons)
            rows.setdefault(method, []).append((psnr_fitted(output, clean), found.excess, verdict.verdict, removed))
    seconds = time.perf_counter() - start
    print(f"\nW2S {args.split} noisy, {len(noisy)} images, {seconds:.0f} s\n")
    print("| output | PSNR fitted (dB) | residual excess, median (min-max) | residual flagged | verdict differs |")
    print("|---|---|---|---|---|")
    for method, values in rows.items():
        psnr = np.mean([v[0] for v in values])
        excess = np.array([v[1] for v in values])
        differs = sum(v[2] == "differs" for v in values)
        removed = sum(v[3] for v in values)
        print(f"| {method} | {psnr:.2f} | {np.median(excess):.2f} ({excess.min():.2f}-{excess.max():.2f}) "
              f"| {removed}/{len(values)} | {differs}/{len(values)} |")  # fmt: skip
    noisy_psnr = np.mean([psnr_fitted(read_array(p).astype(float), read_array(
        DATA / "w2s" / args.split / "clean" / p.name).astype(float)) for p in noisy])  # fmt: skip
    print(f"| noisy input (for scale) | {noisy_psnr:.2f} | | | |")


if __name__ == "__main__":
    main()
