"""DSB2018 nuclei: does the learning curve predict the figure of the whole train split?

    nice -n 5 .venv/bin/python benchmarks/learning_curve_dsb2018.py --steps 60 --steps-per-epoch 20   # RESULTS.md

The training pool is the 441 train images the fine-tuning benchmark's parent trains on (the
train split in a seeded order, seed 0, less the 20 fine-tuning and the 8 validation images);
the same 8 images validate every run. Runs on 10, 25 and 50% of the pool (nested subsets, the
order `microzoo learning-curve` uses) and on 100%, each with the same number of steps
(benchmarks/_dsb_budget.py). Each run is scored on the 100 test images (F1 at IoU 0.5, pooled);
the curve is fitted to the three fractions with :func:`microzoo.train.learning_curve.curve_from_vectors`
(the function `microzoo learning-curve` fits with; intervals by resampling the seeds of each size,
then the test images) and
its prediction for 441 images is compared with the run on all of them. Target: within 0.03 F1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _dsb_budget import OUT, budget_config, f1, log, test_vectors, train_budget, train_names  # noqa: E402

FRACTIONS = (0.1, 0.25, 0.5)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=60, help="steps of every run")
    p.add_argument("--steps-per-epoch", type=int, default=20)
    p.add_argument("--out", type=Path, default=OUT / "learning_curve_dsb2018")
    p.add_argument("--seeds", type=int, default=1,
                   help="train every size with seeds 0..N-1 and average each test image's scores "
                   "(as `microzoo learning-curve --repeats N` does)")  # fmt: skip
    args = p.parse_args()

    from microzoo.train.learning_curve import curve_from_vectors

    names = train_names()
    validation, pool = names[20:28], names[28:]
    order = [pool[i] for i in np.random.default_rng(0).permutation(len(pool))]
    sizes = [max(1, round(f * len(pool))) for f in FRACTIONS] + [len(pool)]
    vectors, stacks, walls, scorer = [], [], [], None
    per_seed: dict[int, list[float]] = {}
    for size in sizes:
        seed_vectors = []
        for seed in range(args.seeds):
            config = budget_config(f"dsb2018-lc-{size}" + (f"-seed-{seed}" if seed else ""), training=order[:size],
                                   validation=validation, steps=args.steps, steps_per_epoch=args.steps_per_epoch,
                                   seed=seed)  # fmt: skip
            run_dir = args.out / (f"images_{size:04d}" + (f"_seed_{seed}" if seed else ""))
            walls.append(train_budget(config, run_dir)["wall_s"])
            vector, scorer = test_vectors(config, run_dir)
            seed_vectors.append(vector)
            per_seed.setdefault(size, []).append(f1(vector, scorer))
            log(f"{size} images, seed {seed}: test F1 {f1(vector, scorer):.3f}")
        vectors.append(np.mean(seed_vectors, axis=0))
        stacks.append(np.stack(seed_vectors))  # the curve resamples the seeds too (its interval covers them)
    curve = curve_from_vectors(sizes[:-1], stacks[:-1], scorer.aggregate, metric="f1@0.5", fractions=FRACTIONS,
                               predict_at=[len(pool)], n_bootstrap=500, task="instances")  # fmt: skip
    predicted, low, high = curve.predictions[len(pool)]
    measured = f1(vectors[-1], scorer)
    wall = ", ".join(f"{w / 60:.1f}" for w in walls)
    print(f"\nEach run: {args.steps} steps (batch 8, patch 96; wall min per run {wall}); 8 validation images; "
          "F1@0.5 pooled over the 100 test images.\n")  # fmt: skip
    seeds = f"{args.seeds} seeds: mean of their per-image scores" if args.seeds > 1 else "seed 0"
    print(f"| training images | test F1 ({seeds}) | each seed's F1 | fitted curve |")
    print("|---|---|---|---|")
    for size, vector in zip(sizes, vectors, strict=True):
        each = ", ".join(f"{v:.3f}" for v in per_seed[size])
        print(f"| {size} | {f1(vector, scorer):.3f} | {each} | {float(curve.fit.predict(size)):.3f} |")
    print(f"\nCurve on 10/25/50%: a={curve.fit.a:.4f}, b={curve.fit.b:.4f}, c={curve.fit.c:.2f}"
          f"{'' if curve.fit.exponent_fitted else ' (fixed)'}. Predicted for {len(pool)} images: {predicted:.3f} "
          f"[{low:.3f}, {high:.3f}]; measured {measured:.3f}; |predicted - measured| = {abs(predicted - measured):.3f} "
          f"(target <= 0.03: {'met' if abs(predicted - measured) <= 0.03 else 'missed'}).")  # fmt: skip


if __name__ == "__main__":
    main()
