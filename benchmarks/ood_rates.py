"""False-alarm and detection rates of the out-of-distribution check on real data.

    .venv/bin/python benchmarks/ood_rates.py [--quick] [--save fingerprint.json]

A fingerprint is built from the DSB2018 *train* fluorescence images, then every other set is
checked against it. Fluorescence rule for the RGBA PNGs of DSB2018: grey (R = G = B in every
pixel) and median grey value below 128 (dark background); it keeps 383 of 469 train and 84
of 100 test images (the others are colour histology or grey brightfield).

- false alarms: DSB2018 *test* fluorescence images flagged (should be near the 1% target);
- detections: W2S noisy single captures flagged (widefield, far noisier than DSB2018);
- for information: W2S clean averages, FMD confocal raw captures, DSB2018 test non-fluorescence,
  ISBI 2012 EM, BSD68 natural images.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np

from microzoo.io.files import list_images
from microzoo.io.read import read_array as read_image
from microzoo.trust.fingerprint import fingerprint_images
from microzoo.trust.ood import check_images

DATA = Path(os.environ.get("MICROZOO_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def is_fluorescence(image: np.ndarray) -> bool:
    rgb = image[..., :3]
    grey = bool(np.all(rgb[..., 0] == rgb[..., 1]) and np.all(rgb[..., 1] == rgb[..., 2]))
    return grey and float(np.median(rgb[..., 0])) < 128


def _images(folders: list[Path], limit: int | None, keep=lambda image: True) -> list[np.ndarray]:
    files = [f for folder in folders for f in list_images(folder)]
    images = (read_image(f) for f in files)
    return [image for image in images if keep(image)][:limit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100 training images, 20 per checked set")
    parser.add_argument("--save", type=Path, help="write the DSB2018 fingerprint here (.json or .yaml)")
    args = parser.parse_args()
    limit = 20 if args.quick else None
    dsb = DATA / "dsb2018"
    start = time.perf_counter()
    training = _images([dsb / "train" / "images"], 100 if args.quick else None, is_fluorescence)
    fingerprint = fingerprint_images(training)
    print(
        f"Fingerprint of {len(training)} DSB2018 train fluorescence images in "
        f"{time.perf_counter() - start:.0f} s; threshold {fingerprint.threshold:.2f}.\n"
    )
    if args.save:
        fingerprint.save(args.save)
    fmd = DATA / "fmd_confocal_bpae_b"
    sets = {
        "DSB2018 test fluorescence (false alarms)": _images([dsb / "test" / "images"], limit, is_fluorescence),
        "W2S noisy, train + test (detections)": _images([DATA / "w2s" / s / "noisy" for s in ("train", "test")], limit),
        "W2S clean averages (info)": _images([DATA / "w2s" / s / "clean" for s in ("train", "test")], limit),
        "FMD confocal raw captures, field 19 (info)": _images([fmd / "test" / "raw" / "19"], limit),
        "DSB2018 test brightfield/histology (info)": _images(
            [dsb / "test" / "images"], limit, lambda image: not is_fluorescence(image)
        ),
        "ISBI 2012 EM, train + test (info)": _images(
            [DATA / "isbi2012" / s / "images" for s in ("train", "test")], limit
        ),
        "BSD68 test (info)": _images([DATA / "bsd68" / "test"], limit),
    }
    print("| images checked | n | flagged | rate | features most often off |")
    print("|---|---|---|---|---|")
    for name, images in sets.items():
        results = check_images(fingerprint, images)
        flagged = [r for r in results if r.out_of_distribution]
        reasons = Counter(d.feature for r in flagged for d in r.deviations)
        top = ", ".join(f"{feature} ({count})" for feature, count in reasons.most_common(3)) or "-"
        print(f"| {name} | {len(results)} | {len(flagged)} | {len(flagged) / len(results):.1%} | {top} |", flush=True)
    print(f"\n({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
