"""Classical baselines on the real data, each figure printed beside its reference.

    .venv/bin/python benchmarks/classical_baselines.py            # everything (~45 min on 2 shared cores)
    .venv/bin/python benchmarks/classical_baselines.py --quick    # a subset of each set (~3 min)
    .venv/bin/python benchmarks/classical_baselines.py --only w2s fmd

Parameters are tuned on the train splits only (a small search, see
``microzoo.qc.classical.tune_denoiser``), then applied unchanged to the test splits. Output
is Markdown, pasted into benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _training_common import table as _table  # noqa: E402  (one Markdown table printer for all benchmarks)

from microzoo.io.files import list_images  # noqa: E402
from microzoo.io.read import read_array  # noqa: E402
from microzoo.qc import classical  # noqa: E402
from microzoo.qc.metrics import restoration_metrics, semantic_metrics  # noqa: E402

try:
    from microzoo.qc.metrics import instance_metrics_dataset, match_instances
except ImportError:  # the instance metrics live in their own module
    from microzoo.qc.metrics_instances import instance_metrics_dataset, match_instances

DATA = Path(os.environ.get("MICROZOO_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _pairs(noisy_dir: Path, clean_dir: Path, limit: int | None) -> tuple[list, list, list[str]]:
    files = list_images(noisy_dir)[:limit]
    noisy = [read_array(f) for f in files]
    clean = [read_array(clean_dir / f.name) for f in files]
    return noisy, clean, [f.stem for f in files]


def _crop(image: np.ndarray, size: int = 192) -> np.ndarray:
    y, x = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
    return image[y : y + size, x : x + size]


def _evaluate_denoiser(method, params, noisy, clean, data_range):
    figures, seconds = [], []
    for image, truth in zip(noisy, clean, strict=True):
        start = time.perf_counter()
        output = (
            image.astype(np.float64) if method == "input" else classical.denoise(image, method=method, params=params)
        )
        seconds.append(time.perf_counter() - start)
        figures.append(restoration_metrics(truth.astype(np.float64), output, data_range=data_range))
    return figures, float(np.mean(seconds))


def _mean(figures, key, first=None):
    return float(np.mean([f[key] for f in figures[:first]]))


def dsb2018(quick: bool) -> None:
    print("## DSB2018 test: Otsu + distance-transform watershed\n")
    train = list_images(DATA / "dsb2018" / "train" / "images")[: 40 if quick else 120]
    test = list_images(DATA / "dsb2018" / "test" / "images")[: 25 if quick else None]
    import tifffile

    def score(files, params):
        matchings, seconds = [], []
        for f in files:
            image = read_array(f)
            start = time.perf_counter()
            labels = classical.watershed_instances(image, **params)
            seconds.append(time.perf_counter() - start)
            truth = tifffile.imread(f.parent.parent / "labels" / f"{f.stem}.tif")
            matchings.append(match_instances(truth, labels, thresholds=(0.5,)))
        return instance_metrics_dataset(matchings).at(0.5), float(np.mean(seconds))

    grid = [{"smoothing_sigma": s, "min_distance": d} for s in (0.0, 1.0, 2.0) for d in (3, 5, 8)]
    tuned = max(grid, key=lambda p: score(train, p)[0]["f1"])
    figures, seconds = score(test, tuned)
    print(f"Tuned on {len(train)} train images: {tuned}; {len(test)} test images.\n")
    _table(
        ["figure at IoU 0.5", "ours", "reference"],
        [
            ["F1", figures["f1"], 0.668],
            ["accuracy TP/(TP+FP+FN)", figures["accuracy"], 0.501],
            ["precision", figures["precision"], "-"],
            ["recall", figures["recall"], "-"],
            ["seconds per image", seconds, "-"],
        ],
    )


def isbi2012(quick: bool) -> None:
    print("## ISBI 2012 test: thresholds (membrane = label 0, interior = 255)\n")

    def load(split):
        files = list_images(DATA / "isbi2012" / split / "images")
        return [(read_array(f), read_array(f.parent.parent / "labels" / f.name)) for f in files]

    train, test = load("train")[: 6 if quick else None], load("test")

    def score(pairs, method, params):
        counts = {0: [0, 0, 0], 255: [0, 0, 0]}
        seconds = []
        for image, truth in pairs:
            start = time.perf_counter()
            membrane = classical.threshold_segmentation(image, method=method, polarity="dark", **params)
            seconds.append(time.perf_counter() - start)
            result = semantic_metrics(truth, np.where(membrane, 0, 255).astype(truth.dtype), classes=[0, 255])
            for c in counts:
                n = result["counts"][c]
                counts[c] = [a + b for a, b in zip(counts[c], (n["intersection"], n["truth"], n["pred"]), strict=True)]
        iou = {c: i / (t + p - i) for c, (i, t, p) in counts.items()}
        return iou, float(np.mean(seconds))

    rows = []
    grids = {
        "otsu": [{"smoothing_sigma": s} for s in (0.0, 1.0, 2.0, 3.0, 4.0)],
        "local": [
            {"smoothing_sigma": s, "block_size": b, "offset": o}
            for s in (1.0, 2.0)
            for b in (31, 61, 121)
            for o in (0.0, 5.0, 10.0)
        ],
    }
    for method, grid in grids.items():
        tuned = max(grid, key=lambda p: score(train, method, p)[0][0])
        iou, seconds = score(test, method, tuned)
        rows.append([f"{method} {tuned}", iou[0], iou[255], seconds, "0.41" if method == "otsu" else "-"])
    _table(["method (tuned on train)", "membrane IoU", "cell IoU", "s/image", "reference membrane IoU"], rows)


def denoising(
    name: str, noisy, clean, train_noisy, train_clean, *, data_range, criterion, methods, references, first=None
) -> None:
    rows = []
    for method in ("input",) + tuple(methods):
        params = (
            {}
            if method == "input"
            else methods[method]
            or classical.tune_denoiser(method, train_noisy, train_clean, data_range=data_range, criterion=criterion)
        )
        figures, seconds = _evaluate_denoiser(method, params, noisy, clean, data_range)
        row = [
            f"{method} {params or ''}",
            _mean(figures, "psnr"),
            _mean(figures, "psnr_fitted"),
            _mean(figures, "ssim"),
            _mean(figures, "ssim_fitted"),
        ]
        if first:
            row.append(_mean(figures, "psnr_fitted", first))
        rows.append(row + [seconds, references.get(method, "-")])
    header = ["method (params tuned on train)", "PSNR raw", "PSNR fitted", "SSIM raw", "SSIM fitted"]
    if first:
        header.append(f"PSNR fitted, first {first}")
    _table(header + ["s/image", "reference"], rows)


def w2s(quick: bool) -> None:
    print("## W2S test (channel 0, fields 081-110), peak 255\n")
    root = DATA / "w2s"
    noisy, clean, names = _pairs(root / "test" / "noisy", root / "test" / "clean", 10 if quick else None)
    train_noisy, train_clean, _ = _pairs(root / "train" / "noisy", root / "train" / "clean", 4 if quick else 6)
    train_noisy, train_clean = [_crop(i) for i in train_noisy], [_crop(i) for i in train_clean]
    print(
        f"{len(noisy)} test images ({names[0]}-{names[-1]}); tuning on central 192x192 crops of "
        f"{len(train_noisy)} train fields by fitted PSNR.\n"
    )
    denoising(
        "w2s",
        noisy,
        clean,
        train_noisy,
        train_clean,
        data_range=255.0,
        criterion="psnr_fitted",
        methods={"gaussian": None, "median": None, "nl_means": None, "bm3d": None},
        references={
            "input": "20.38 / 20.53",
            "gaussian": "sigma 1.5: 25.69 / 31.85; first 10: 32.3",
            "bm3d": "3x sigma: 25.9 raw; first 10: 33.3 fitted",
        },
        first=10,
    )


def fmd(quick: bool) -> None:
    print("## FMD Confocal_BPAE_B test field 19 (captures vs gt), peak 255\n")
    root = DATA / "fmd_confocal_bpae_b"
    gt = read_array(root / "test" / "gt" / "19.png")
    captures = list_images(root / "test" / "raw" / "19")[: 8 if quick else None]
    noisy = [read_array(f) for f in captures]
    train_noisy, train_clean = [], []
    for field in sorted((root / "train" / "raw").iterdir())[: 4 if quick else 6]:
        train_noisy.append(_crop(read_array(list_images(field)[0])))
        train_clean.append(_crop(read_array(root / "train" / "gt" / f"{field.name}.png")))
    print(
        f"{len(noisy)} captures; tuning on central crops of one capture of {len(train_noisy)} train fields. "
        f"BM3D (about 10 s per capture) runs on the first {min(10, len(noisy))} captures only.\n"
    )
    denoising(
        "fmd",
        noisy,
        [gt] * len(noisy),
        train_noisy,
        train_clean,
        data_range=255.0,
        criterion="psnr",
        methods={"gaussian": None, "median": None, "nl_means": None},
        references={"input": "32.12", "gaussian": "38.1"},
    )
    denoising(
        "fmd",
        noisy[:10],
        [gt] * len(noisy[:10]),
        train_noisy,
        train_clean,
        data_range=255.0,
        criterion="psnr",
        methods={"bm3d": None},
        references={},
    )


def bsd68(quick: bool) -> None:
    print("## BSD68 test, Gaussian noise sigma 25 (seed 0, not clipped), peak 255\n")
    files = list_images(DATA / "bsd68" / "test")[: 12 if quick else None]
    clean = [read_array(f).astype(np.float64) for f in files]
    rng = np.random.default_rng(0)
    noisy = [image + rng.normal(0.0, 25.0, image.shape) for image in clean]
    train_files = list_images(DATA / "bsd68" / "train400")[:4]
    train_clean = [read_array(f).astype(np.float64) for f in train_files]
    train_noisy = [image + rng.normal(0.0, 25.0, image.shape) for image in train_clean]
    print(
        f"{len(files)} test images; BM3D with the known sigma 25 (the published protocol); Gaussian "
        "and non-local means tuned on 4 noisy Train400 images.\n"
    )
    denoising(
        "bsd68",
        noisy,
        clean,
        train_noisy,
        train_clean,
        data_range=255.0,
        criterion="psnr",
        methods={"gaussian": None, "bm3d": {"sigma": 25.0}, "nl_means": None},
        references={"bm3d": "28.57 published; 28.61 measured before"},
    )


SECTIONS = {"dsb2018": dsb2018, "isbi2012": isbi2012, "w2s": w2s, "fmd": fmd, "bsd68": bsd68}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a subset of each data set")
    parser.add_argument("--only", nargs="*", choices=sorted(SECTIONS), default=list(SECTIONS))
    args = parser.parse_args()
    for name in args.only:
        start = time.perf_counter()
        SECTIONS[name](args.quick)
        print(f"({name}: {time.perf_counter() - start:.0f} s)\n", flush=True)


if __name__ == "__main__":
    main()
