"""DSB2018 nuclei: fine-tuned from a nuclei package against trained from scratch, with 5, 10, 20 images.

    nice -n 5 .venv/bin/python benchmarks/finetune_dsb2018.py --parent-steps 400 --steps 100   # RESULTS.md

The 469 train images in a seeded order (seed 0): the first 20 are the fine-tuning pool (5 and 10
are its first images), the next 8 validate every run (epoch choice, decoding thresholds), the
other 441 train the parent: a nuclei package trained and exported by microzoo on images disjoint
from the fine-tuning ones. Then each size trains twice with the same number of steps: from the
parent's weights (``training.init_from``, `microzoo train instances --from PACKAGE`) and from
random weights. Score: F1 at IoU 0.5 pooled over the 100 test images. Settings: benchmarks/_dsb_budget.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _dsb_budget import OUT, budget_config, f1, log, test_vectors, train_budget, train_names  # noqa: E402

SIZES = (5, 10, 20)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parent-steps", type=int, default=400)
    p.add_argument("--steps", type=int, default=100, help="steps of every fine-tuning / from-scratch run")
    p.add_argument("--steps-per-epoch", type=int, default=25)
    p.add_argument("--phase", choices=("parent", "all"), default="all")
    p.add_argument("--out", type=Path, default=OUT / "finetune_dsb2018")
    args = p.parse_args()

    names = train_names()
    pool, validation, parent_images = names[:20], names[20:28], names[28:]
    parent_config = budget_config("dsb2018-parent", training=parent_images, validation=validation,
                                  steps=args.parent_steps, steps_per_epoch=50)  # fmt: skip
    parent = train_budget(parent_config, args.out / "parent", export=True)
    parent_f1 = f1(*test_vectors(parent_config, args.out / "parent"))
    log(f"parent: test F1 {parent_f1:.3f}")
    if args.phase == "parent":
        return
    rows = []
    for size in SIZES:
        row = {}
        for kind, init in (("fine-tuned", parent["package"]), ("scratch", None)):
            config = budget_config(f"dsb2018-{kind}-{size}", training=pool[:size], validation=validation,
                                   steps=args.steps, steps_per_epoch=args.steps_per_epoch, init_from=init)  # fmt: skip
            run_dir = args.out / f"{kind}_{size}"
            summary = train_budget(config, run_dir)
            vectors, scorer = test_vectors(config, run_dir)
            row[kind] = (f1(vectors, scorer), summary["wall_s"])
            row[f"{kind} vectors"] = vectors
            log(f"{kind} {size} images: test F1 {row[kind][0]:.3f}")
        rows.append((size, row))
    print(f"\nParent: {parent['steps']} steps on {parent['images']} train images, {parent['wall_s'] / 60:.1f} min "
          f"wall (train {parent['train_s'] / 60:.1f} min); test F1 {parent_f1:.3f}.\n")  # fmt: skip
    print(f"Each run below: {args.steps} steps (batch 8, patch 96), 8 validation images.\n")
    print("| training images | fine-tuned F1 | from scratch F1 | difference [95% interval] | wall min (ft / scratch) |")
    print("|---|---|---|---|---|")
    for size, row in rows:
        (ft, ft_s), (sc, sc_s) = row["fine-tuned"], row["scratch"]
        low, high = paired_interval(row["fine-tuned vectors"], row["scratch vectors"], scorer)
        print(f"| {size} | {ft:.3f} | {sc:.3f} | {ft - sc:+.3f} [{low:+.3f}, {high:+.3f}] | "
              f"{ft_s / 60:.1f} / {sc_s / 60:.1f} |")  # fmt: skip
    print(
        "\nIntervals: paired bootstrap over the 100 test images (1000 resamples); one training run each "
        "(seed 0), so they do not include the randomness of training."
    )


def paired_interval(a: np.ndarray, b: np.ndarray, scorer: Any, n: int = 1000) -> tuple[float, float]:
    """95% bootstrap interval of F1(a) - F1(b), the test images resampled together."""
    rng = np.random.default_rng(0)
    weights = np.zeros((n, len(a)))
    np.add.at(weights, (np.arange(n)[:, None], rng.integers(0, len(a), size=(n, len(a)))), 1)
    diff = scorer.aggregate(weights @ a)["f1@0.5"] - scorer.aggregate(weights @ b)["f1@0.5"]
    low, high = np.percentile(diff, [2.5, 97.5])
    return float(low), float(high)


if __name__ == "__main__":
    main()
