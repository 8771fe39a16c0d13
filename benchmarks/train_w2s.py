"""W2S widefield denoising: CARE and Noise2Void trained on the train fields, scored on the test fields,
then both applied to the FMD Confocal_BPAE_B test field 19.

    .venv/bin/python benchmarks/train_w2s.py --method both --minutes 30 --features 32 --steps-per-epoch 100  # run 2
    .venv/bin/python benchmarks/train_w2s.py --method both --eval-only --tta --features 32 --steps-per-epoch 100
    .venv/bin/python benchmarks/train_w2s.py --method both --minutes 30    # the issue's full budget, each

Training: CARE (:func:`~microzoo.train.config.care_config`: residual U-Net, MAE) on the 60 train
pairs (noisy, clean); Noise2Void (:func:`~microzoo.train.config.n2v_config`, N2V2 variant) on
the 60 noisy train fields alone (their clean images serve only the library's QC). 15% of the
fields validate.

W2S test (fields 081-110): every image of this copy was stretched to 0..255 on its own, so
figures are PSNR (peak 255) raw and after a per-image least-squares fit ``a * pred + b`` to
the clean image; methods are compared on the fitted figure, over the first 10 fields and all
30. Network outputs are mapped back to the input's units with its percentiles.

Baselines, in the same run: a Gaussian filter and BM3D (``sigma_factor`` times the estimated
noise sigma), each tuned by fitted PSNR on central 192x192 crops of 6 train fields (the grids of
``microzoo.qc.classical``); BM3D runs on the first ``--bm3d-fields`` test fields only (10-30 s
per field on this shared CPU).

FMD field 19: the networks trained on W2S (not retrained on FMD) on all 50 captures against
the averaged ground truth; raw PSNR (the published figures are raw) and fitted; baseline a
Gaussian tuned by raw PSNR on central crops of one capture of 6 FMD train fields.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _training_common import (  # noqa: E402
    DATA,
    OUT,
    TTA_SUFFIX,
    apply_budget_settings,
    load_network,
    log,
    parser,
    psnr_pair,
    restore,
    run_line,
    table,
    train_run,
)

from microzoo.io.files import list_images  # noqa: E402
from microzoo.io.read import read_array  # noqa: E402
from microzoo.qc import classical  # noqa: E402


def _crop(image: np.ndarray, size: int = 192) -> np.ndarray:
    y, x = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
    return image[y : y + size, x : x + size]


def _pairs(noisy_dir: Path, clean_dir: Path, limit: int | None = None):
    files = list_images(noisy_dir)[:limit]
    return (
        [read_array(f).astype(np.float64) for f in files],
        [read_array(clean_dir / f.name).astype(np.float64) for f in files],
        [f.stem for f in files],
    )


def train_method(method: str, args) -> tuple[object, dict, str]:
    from microzoo.train.config import care_config, n2v_config

    root = DATA / "w2s" / "train"
    common = dict(patch_size=args.patch, batch_size=args.batch, steps_per_epoch=args.steps_per_epoch,
                  epochs=10_000, seed=args.seed, max_minutes=args.minutes)  # fmt: skip
    if method == "care":
        config = care_config(images=root / "noisy", targets=root / "clean", name="w2s-care", **common)
        settings = f"residual U-Net, {config.loss.upper()} loss"
    else:
        config = n2v_config(
            images=root / "noisy", targets=root / "clean", name="w2s-n2v", variant=args.variant, **common
        )
        config.masked_fraction = args.masked_fraction
        settings = f"{args.variant.upper()}, {args.masked_fraction:.1%} of pixels masked per patch"
    apply_budget_settings(config, args)
    out = (args.out or OUT) / f"train_w2s_{method}"
    summary = train_run(config, out, eval_only=args.eval_only, threads=args.threads)
    settings += (
        f"; patch {args.patch}, batch {args.batch}, U-Net depth {args.depth} with {args.features} base "
        f"features, AdamW lr {args.lr:g} (cosine over the time budget), seed {args.seed}; 51 train fields, 9 validate"
    )
    return load_network(config, out, in_channels=1, out_channels=1), summary, settings


def main() -> None:
    p = parser(__doc__, minutes=10.0)
    p.add_argument("--method", choices=["care", "n2v", "both"], default="both")
    p.add_argument("--patch", type=int, default=96)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--features", type=int, default=16)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--steps-per-epoch", type=int, default=25)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--variant", choices=["n2v", "n2v2"], default="n2v2")
    p.add_argument("--masked-fraction", type=float, default=0.01, help="N2V: pixels masked per patch")
    p.add_argument("--bm3d-fields", type=int, default=10, help="BM3D on the first N test fields (0: none)")
    p.add_argument("--fmd-captures", type=int, default=50)
    p.add_argument(
        "--tta", action="store_true", help="also score the networks with 8-fold test-time augmentation (W2S)"
    )
    args = p.parse_args()
    methods = ["care", "n2v"] if args.method == "both" else [args.method]

    label = {"care": "CARE", "n2v": args.variant.upper()}  # each network's name in the tables
    networks, summaries = {}, {}
    for method in methods:
        networks[method], *summaries[method] = train_method(method, args)
    depth = args.depth

    root = DATA / "w2s"
    noisy, clean, names = _pairs(root / "test" / "noisy", root / "test" / "clean")
    tn, tc, _ = _pairs(root / "train" / "noisy", root / "train" / "clean", 6)
    tn, tc = [_crop(i) for i in tn], [_crop(i) for i in tc]
    start = time.monotonic()
    gauss = classical.tune_denoiser("gaussian", tn, tc, data_range=255.0, criterion="psnr_fitted")
    bm3d = None
    if args.bm3d_fields:
        # the full grid on 6 crops, as benchmarks/classical_baselines.py: the run of 2026-11-25 searched
        # only factors 2, 3, 4 on 3 crops, chose 2 and scored 3.6 dB below factor 3 on the test fields
        bm3d = classical.tune_denoiser("bm3d", tn, tc, data_range=255.0, criterion="psnr_fitted")
    log(f"W2S baselines tuned in {time.monotonic() - start:.0f} s: Gaussian {gauss}, BM3D {bm3d}")

    results: dict[str, list[tuple[float, float]]] = {}
    seconds: dict[str, list[float]] = {}

    def score(name, function, images):
        results[name], seconds[name] = [], []
        for image, truth in zip(noisy[:images], clean[:images], strict=True):
            t = time.perf_counter()
            output = function(image)
            seconds[name].append(time.perf_counter() - t)
            results[name].append(psnr_pair(truth, output))
        log(f"{name}: {np.mean([r[1] for r in results[name][:10]]):.2f} dB fitted on the first 10")

    score("noisy input", lambda x: x, len(noisy))
    score(f"Gaussian {gauss}", lambda x: classical.denoise(x, method="gaussian", params=gauss), len(noisy))
    if bm3d:
        score(f"BM3D {bm3d}", lambda x: classical.denoise(x, method="bm3d", params=bm3d), args.bm3d_fields)
    for method, network in networks.items():
        score(label[method], lambda x, net=network: restore(net, x, depth=depth), len(noisy))
        if args.tta:
            score(label[method] + TTA_SUFFIX, lambda x, net=network: restore(net, x, depth=depth, tta=True), len(noisy))

    print(
        f"## W2S test (channel 0, fields {names[0]}-{names[-1]}): "
        + ", ".join(f"{m.upper()} trained {summaries[m][0]['minutes']:.0f} min" for m in methods)
        + " on this CPU vs Gaussian and BM3D\n"
    )
    for method in methods:
        print(f"{method.upper()}: ", end="")
        run_line(*summaries[method])
    rows = []
    for name, r in results.items():
        raw, fit = [x[0] for x in r], [x[1] for x in r]
        n = len(r)
        rows.append([name, float(np.mean(raw[:10])), float(np.mean(fit[:10])),
                     float(np.mean(raw)) if n == len(noisy) else "-", float(np.mean(fit)) if n == len(noisy) else "-",
                     float(np.mean(seconds[name]))])  # fmt: skip
    table(["method (baselines tuned on train)", "PSNR raw, first 10", "PSNR fitted, first 10", "PSNR raw, all 30",
           "PSNR fitted, all 30", "s/field"], rows)  # fmt: skip
    classical_names = [k for k in results if k.startswith(("Gaussian", "BM3D"))]
    best_name = max(classical_names, key=lambda k: np.mean([x[1] for x in results[k][:10]]))
    best = float(np.mean([x[1] for x in results[best_name][:10]]))
    for method in methods:
        for name in (label[method], label[method] + TTA_SUFFIX):
            if name not in results:
                continue
            value = float(np.mean([x[1] for x in results[name][:10]]))
            margin = 0.5 if method == "care" else 0.0
            verdict = "met" if value >= best + margin else f"not met (gap {best + margin - value:.2f} dB)"
            print(
                f"{name}: {value:.2f} dB fitted on the first 10 fields against the best classical {best:.2f} dB "
                f"({best_name}; measured before: BM3D 33.3, Gaussian 32.3); target >= best + {margin:g} dB: {verdict}."
            )
    print(flush=True)

    # FMD Confocal_BPAE_B field 19
    fmd = DATA / "fmd_confocal_bpae_b"
    gt = read_array(fmd / "test" / "gt" / "19.png").astype(np.float64)
    captures = [read_array(f).astype(np.float64)
                for f in list_images(fmd / "test" / "raw" / "19")[: args.fmd_captures]]  # fmt: skip
    fn, fc = [], []
    for field in sorted((fmd / "train" / "raw").iterdir())[:6]:
        fn.append(_crop(read_array(list_images(field)[0]).astype(np.float64)))
        fc.append(_crop(read_array(fmd / "train" / "gt" / f"{field.name}.png").astype(np.float64)))
    fgauss = classical.tune_denoiser("gaussian", fn, fc, data_range=255.0, criterion="psnr")
    fmd_methods = {
        "noisy input": lambda x: x,
        f"Gaussian {fgauss} (tuned on FMD train)": lambda x: classical.denoise(x, method="gaussian", params=fgauss),
    }
    for method, network in networks.items():
        fmd_methods[f"{label[method]} (trained on W2S)"] = lambda x, net=network: restore(net, x, depth=depth)
    rows, fmd_figures = [], {}
    for name, function in fmd_methods.items():
        r = [psnr_pair(gt, function(c)) for c in captures]
        fmd_figures[name] = [float(np.mean([x[0] for x in r])), float(np.mean([x[1] for x in r]))]
        rows.append([name, *fmd_figures[name]])
    print(f"## FMD Confocal_BPAE_B test field 19 ({len(captures)} captures vs the 50-capture average), peak 255\n")
    table(["method", "PSNR raw", "PSNR fitted"], rows)
    print("References: noisy input 32.12 dB, tuned Gaussian 38.1 dB (raw).\n", flush=True)
    (OUT / f"train_w2s_{args.method}_figures.json").write_text(
        json.dumps({"w2s": {k: v for k, v in results.items()}, "fmd": fmd_figures}, indent=1)
    )


if __name__ == "__main__":
    main()
