"""Does high uncertainty go with high error? Test-time augmentation on real nuclei images.

    PYTHONPATH=src .venv/bin/python benchmarks/uncertainty.py [--limit N] [--records FILE] [--summary-only]

The zoo example model (unet2d_nuclei_broad) on the DSB2018 test split (100 images, RGBA PNGs
given as ``yxc``: the runner converts them to grey). Per image:

- the plain prediction (``Model.predict_image``) and the 8-member TTA of
  ``microzoo.runtime.uncertainty`` (flips and 90-degree rotations): the plain prediction is the
  identity member, so the 7 other transforms are predicted and merged with it (Chan's update
  of mean and variance; the votes add up), 8 forwards per image in all;
- error: 1 - F1@0.5 of the instances decoded as ``microzoo compare`` decodes this model's output
  (``get_task("instances").from_output``: a seeded watershed on the probability), and
  1 - foreground IoU (probability > 0.5 against truth > 0); for the plain and the TTA mean;
- uncertainty: the mean spread on the predicted foreground (TTA mean > 0.5; the whole image
  when none), and the flip rate (share of the foreground where the members disagree about 0.5).

Summary: Spearman correlation of uncertainty and error over images; area under the
risk-coverage curve (images kept from the most to the least certain; risk = mean error of those
kept), against the oracle (kept by error) and random (the mean error); the pooled ECE of the
probabilities before and after TTA (``microzoo.qc.calibration``). One JSON line per image goes
to ``--records`` as it is done, so a run cut short can still be summarised (``--summary-only``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

import microzoo
from microzoo.io.read import read_array, read_image
from microzoo.qc.calibration import reliability
from microzoo.qc.metrics_instances import match_instances
from microzoo.qc.tasks import get_task
from microzoo.runtime.uncertainty import TRANSFORMS, flip_rate, predict_with_uncertainty

DATA = Path(os.environ.get("MICROZOO_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def is_fluorescence(image: np.ndarray) -> bool:
    """Grey (R = G = B) with a dark background, as in benchmarks/ood_rates.py."""
    rgb = image[..., :3]
    grey = bool(np.all(rgb[..., 0] == rgb[..., 1]) and np.all(rgb[..., 1] == rgb[..., 2]))
    return grey and float(np.median(rgb[..., 0])) < 128


def _merge(plain: np.ndarray, others_mean: np.ndarray, others_spread: np.ndarray, n_others: int):
    """Mean and spread of {plain} + n_others members (Chan et al.'s parallel variance update)."""
    n = n_others + 1
    delta = others_mean.astype(np.float64) - plain
    mean = plain + delta * n_others / n
    m2 = others_spread.astype(np.float64) ** 2 * n_others + delta**2 * n_others / n
    return mean, np.sqrt(m2 / n)


def _errors(probability: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    decode = get_task("instances").from_output
    labels = decode(probability[np.newaxis], None)
    figures = match_instances(truth, labels, thresholds=(0.5,)).at(0.5)
    foreground, true_foreground = probability > 0.5, truth > 0
    union = np.count_nonzero(foreground | true_foreground)
    iou = np.count_nonzero(foreground & true_foreground) / union if union else 1.0
    return {"f1": figures["f1"], "tp": figures["tp"], "fp": figures["fp"], "fn": figures["fn"], "fg_iou": iou}


def _bins(probability: np.ndarray, truth: np.ndarray) -> list[list[float]]:
    """Per probability bin: pixels, sum of probabilities, foreground pixels (poolable)."""
    result = reliability(probability, truth > 0)
    counts = result.counts.astype(float)
    sums_p = np.nan_to_num(result.confidence) * counts
    sums_t = np.nan_to_num(result.accuracy) * counts
    return np.stack([counts, sums_p, sums_t], axis=-1).tolist()


def measure(model, path: Path, truth_path: Path) -> dict:
    image = read_image(path)
    data, truth = np.asarray(image.data), read_array(truth_path)
    start = time.perf_counter()
    plain = model.predict_image(data, axes=image.axes).outputs["probability"].astype(np.float64)
    others = [t for t in TRANSFORMS if t != "identity"]
    tta = predict_with_uncertainty(model, data, axes=image.axes, transforms=others)
    mean, spread = _merge(plain, tta.prediction.outputs["probability"], tta.spread["probability"], len(others))
    votes = tta.votes["probability"] + (plain > 0.5)
    seconds = time.perf_counter() - start
    foreground = mean > 0.5
    where = foreground if foreground.any() else np.ones_like(foreground)
    return {
        "image": path.name,
        "fluorescence": is_fluorescence(data),
        "seconds": seconds,
        "spread_on_foreground": float(spread[where].mean()),
        "flip_rate": flip_rate(votes, len(TRANSFORMS)),
        "plain": _errors(plain, truth),
        "tta": _errors(mean, truth),
        "bins_plain": _bins(plain, truth),
        "bins_tta": _bins(mean, truth),
    }


def _aurc(uncertainty: np.ndarray, error: np.ndarray) -> float:
    """Area under the risk-coverage curve: mean over k of the mean error of the k most certain."""
    order = np.argsort(uncertainty, kind="stable")
    risks = np.cumsum(error[order]) / np.arange(1, len(error) + 1)
    return float(risks.mean())


def _ece(bins: np.ndarray) -> float:
    return float(np.abs(bins[:, 2] - bins[:, 1]).sum() / bins[:, 0].sum())


def summarise(records: list[dict]) -> str:
    seconds = np.mean([r["seconds"] for r in records])
    lines = [
        f"{len(records)} images ({sum(r['fluorescence'] for r in records)} fluorescence), {seconds:.1f} s per image "
        "for the plain prediction and 7 transforms (images over 512 pixels tiled)",
        "",
        "| images | uncertainty | error | Spearman rho (p) | AURC | oracle | random |",
        "|---|---|---|---|---|---|---|",
    ]
    fluorescence = [r for r in records if r["fluorescence"]]
    for subset, chosen in ((f"all {len(records)}", records), (f"{len(fluorescence)} fluorescence", fluorescence)):
        for u_name in ("spread_on_foreground", "flip_rate"):
            u = np.array([r[u_name] for r in chosen])
            for e_name, error in (
                ("1 - F1@0.5 (plain)", np.array([1 - r["plain"]["f1"] for r in chosen])),
                ("1 - F1@0.5 (TTA mean)", np.array([1 - r["tta"]["f1"] for r in chosen])),
                ("1 - foreground IoU (TTA mean)", np.array([1 - r["tta"]["fg_iou"] for r in chosen])),
            ):
                defined = np.isfinite(error)
                rho, p = spearmanr(u[defined], error[defined])
                lines.append(
                    f"| {subset} | {u_name} | {e_name} | {rho:.3f} ({p:.1g}) | {_aurc(u[defined], error[defined]):.3f}"
                    f" | {_aurc(error[defined], error[defined]):.3f} | {error[defined].mean():.3f} |"
                )
    lines += ["", "| images | prediction | pooled F1@0.5 | mean per-image F1@0.5 | mean foreground IoU | "
              "ECE (10 bins, pooled) |", "|---|---|---|---|---|---|"]  # fmt: skip
    for subset, chosen in ((f"all {len(records)}", records), (f"{len(fluorescence)} fluorescence", fluorescence)):
        for name in ("plain", "tta"):
            tp, fp, fn = (sum(r[name][k] for r in chosen) for k in ("tp", "fp", "fn"))
            f1s = np.array([r[name]["f1"] for r in chosen])
            bins = np.sum([np.array(r[f"bins_{name}"]) for r in chosen], axis=0)
            lines.append(
                f"| {subset} | {'plain' if name == 'plain' else 'TTA mean (8)'} | {2 * tp / (2 * tp + fp + fn):.3f} | "
                f"{np.nanmean(f1s):.3f} | {np.mean([r[name]['fg_iou'] for r in chosen]):.3f} | {_ece(bins):.5f} |"
            )
    for group, keep in (("fluorescence", True), ("brightfield/histology", False)):
        chosen = [r for r in records if r["fluorescence"] == keep]
        if chosen:
            lines.append(
                f"\n{group}: {len(chosen)} images, mean spread on foreground "
                f"{np.mean([r['spread_on_foreground'] for r in chosen]):.4f}, mean flip rate "
                f"{np.mean([r['flip_rate'] for r in chosen]):.3f}, mean 1 - F1@0.5 "
                f"{np.nanmean([1 - r['plain']['f1'] for r in chosen]):.3f}"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, help="the first N test images only")
    parser.add_argument("--records", type=Path, default=Path("uncertainty_records.jsonl"))
    parser.add_argument("--summary-only", action="store_true", help="summarise --records without predicting")
    args = parser.parse_args()
    done = {}
    if args.records.exists():
        done = {r["image"]: r for r in map(json.loads, args.records.read_text().splitlines())}
    if not args.summary_only:
        model = microzoo.load_model(DATA / "bmz" / "unet2d_nuclei_broad")
        folder = DATA / "dsb2018" / "test"
        paths = sorted((folder / "images").glob("*.png"))[: args.limit]
        with args.records.open("a") as out:
            for k, path in enumerate(paths):
                if path.name in done:
                    continue
                done[path.name] = measure(model, path, folder / "labels" / f"{path.stem}.tif")
                out.write(json.dumps(done[path.name]) + "\n")
                out.flush()
                print(f"{k + 1}/{len(paths)} {path.name}: {done[path.name]['seconds']:.1f} s", flush=True)
    print(summarise(list(done.values())))


if __name__ == "__main__":
    main()
