"""How often the trust note flags images it should, and whether its verdict predicts bad results.

    PYTHONPATH=src .venv/bin/python benchmarks/trust_rates.py [--split test|train] [--step N]
        [--model PACKAGE] [--others] [--flips cheap|tta|off] [--json OUT.json]

The model (default: the zoo example model, which carries no training fingerprint, so its note
rests on the package's test input) predicts every ``step``-th DSB2018 image of ``split``; each
image gets the note's verdict (:func:`microzoo.trust.note.judge_image`, the code ``microzoo
predict`` runs: input features, pixel size, output statistics, the flip check).

- detection: DSB2018 images that are not fluorescence (brightfield, histology) called
  ``differs`` (and not ``similar``); target >= 0.9 on the test split's 16;
- false alarms: fluorescence images (the rule of ``benchmarks/ood_rates.py``) called
  ``differs`` (and not ``similar``); target <= 0.1 on the test split's 84;
- per-image F1 at IoU 0.5 (the output decoded into instances as ``microzoo compare`` does:
  ``TASKS["instances"].from_output``) of images called ``differs``/``uncertain``
  against those called ``similar``.

``--split train`` gives the figures the thresholds were calibrated on (``trust/reference.py``,
``trust/note.py``); the test split played no part in choosing them. ``--others`` adds W2S noisy
test images and ISBI 2012 EM slices (all should be called ``differs`` by a model trained on
DSB2018).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from microzoo.io.files import list_images
from microzoo.io.read import read_array, read_image
from microzoo.qc.metrics_instances import match_instances
from microzoo.qc.tasks import TASKS
from microzoo.runtime.instances import instance_settings_of
from microzoo.runtime.predict import Model
from microzoo.trust.reference import output_statistics, package_reference
from microzoo.trust.verdict import CHEAP_TRANSFORMS, flip_check, flip_limit_for, judge_image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ood_rates import is_fluorescence  # noqa: E402

DATA = Path(os.environ.get("MICROZOO_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
EXAMPLE = DATA / "bmz" / "unet2d_nuclei_broad"


def judge_file(model: Model, path: Path, transforms: tuple[str, ...]) -> dict:
    """Predict one file and judge it; the raw figures beside the verdict."""
    image = read_image(path)
    data = np.asarray(image.data)
    prediction = model.predict_image(data, axes=image.axes)
    rate, words = flip_check(model, data, image.axes, transforms=transforms) if transforms else (None, "")
    reference = package_reference(model.package)
    limit = flip_limit_for(model, transforms) if transforms else 1.0
    verdict = judge_image(reference, data, path.name, image.axes, outputs=prediction.outputs, flip_rate=rate,
                          flip_check=words, flip_limit=limit)  # fmt: skip
    first = model.output_ids[0]
    stats = output_statistics(prediction.outputs[first])
    return {
        "verdict": verdict.verdict,
        "score": verdict.score,
        "reasons": list(verdict.reasons),
        "flip_rate": rate,
        "foreground": stats.foreground,
        "confidence": stats.confidence,
        "output": (prediction.outputs[first], prediction.axes[first]),
    }


def instances_f1(model: Model, output: np.ndarray, axes: str, truth: np.ndarray) -> float:
    """F1 at IoU 0.5 of the output decoded as ``microzoo compare`` decodes it."""
    channels = np.asarray(output)
    channels = np.moveaxis(channels, axes.index("c"), 0) if "c" in axes else channels[None]
    labels = TASKS["instances"].from_output(channels, instance_settings_of(model.descr))
    return float(match_instances(truth, labels, thresholds=(0.5,)).at(0.5)["f1"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", default="test", choices=("test", "train"))
    parser.add_argument("--step", type=int, default=1, help="every N-th image of the split")
    parser.add_argument("--model", type=Path, default=EXAMPLE)
    parser.add_argument("--others", action="store_true", help="also W2S noisy test and ISBI 2012 images")
    parser.add_argument("--flips", default="cheap", choices=("cheap", "tta", "off"))
    parser.add_argument("--json", type=Path, help="write the per-image figures here")
    args = parser.parse_args()
    from microzoo.runtime.uncertainty import TRANSFORMS

    transforms = {"cheap": CHEAP_TRANSFORMS, "tta": TRANSFORMS, "off": ()}[args.flips]
    model = Model.open(args.model, threads=2)
    reference = package_reference(model.package)
    print(f"model {model.package.name}; reference: {reference.kind} ({reference.evidence})")
    root = DATA / "dsb2018" / args.split
    rows = {}
    start = time.perf_counter()
    for path in list_images(root / "images")[:: args.step]:
        row = judge_file(model, path, transforms)
        output, axes = row.pop("output")
        row["group"] = "fluorescence" if is_fluorescence(read_array(path)) else "other"
        row["f1"] = instances_f1(model, output, axes, read_array(root / "labels" / f"{path.stem}.tif"))
        rows[f"dsb2018/{path.stem}"] = row
    if args.others:
        others = {"w2s": list_images(DATA / "w2s" / "test" / "noisy")[::3],
                  "isbi2012": list_images(DATA / "isbi2012" / "test" / "images")}  # fmt: skip
        for group, paths in others.items():
            for path in paths:
                row = judge_file(model, path, transforms)
                row.pop("output")
                rows[f"{group}/{path.stem}"] = {**row, "group": group}
    seconds = time.perf_counter() - start
    report(rows, args, seconds)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


def report(rows: dict, args: argparse.Namespace, seconds: float) -> None:
    groups = sorted({r["group"] for r in rows.values()})
    print(f"\nDSB2018 {args.split} (every {args.step}), flips: {args.flips}; {len(rows)} images in {seconds:.0f} s\n")
    print("| images | n | differs | uncertain | similar | flagged (not similar) |")
    print("|---|---|---|---|---|---|")
    for group in groups:
        chosen = [r for r in rows.values() if r["group"] == group]
        counts = {v: sum(r["verdict"] == v for r in chosen) for v in ("differs", "uncertain", "similar")}
        n = len(chosen)
        differs, uncertain, similar = counts["differs"], counts["uncertain"], counts["similar"]
        print(f"| {group} | {n} | {differs} ({differs / n:.3f}) | {uncertain} ({uncertain / n:.3f}) | {similar} "
              f"| {(n - similar) / n:.3f} |")  # fmt: skip
    scored = [r for r in rows.values() if "f1" in r]
    print("\n| called | n | mean F1@0.5 | median F1 | fluorescence images among them |")
    print("|---|---|---|---|---|")
    for called in (("similar",), ("differs",), ("uncertain",), ("differs", "uncertain")):
        chosen = [r for r in scored if r["verdict"] in called]
        if chosen:
            f1 = np.array([r["f1"] for r in chosen])
            fluo = sum(r["group"] == "fluorescence" for r in chosen)
            print(f"| {' or '.join(called)} | {len(chosen)} | {f1.mean():.3f} | {np.median(f1):.3f} | {fluo} |")
    fluo = [r for r in scored if r["group"] == "fluorescence"]
    for name in ("flip_rate", "foreground", "confidence"):
        for group in groups:
            values = np.array([r[name] for r in rows.values() if r["group"] == group and r[name] is not None])
            if values.size:
                q = np.round(np.percentile(values, [0, 5, 50, 95, 100]), 3)
                print(f"{name} {group}: min/p5/median/p95/max {q.tolist()}")
    if fluo:
        within = [r for r in fluo if r["verdict"] != "differs"]
        f1 = np.array([r["f1"] for r in within])
        uncertain = np.array([r["verdict"] == "uncertain" for r in within])
        if uncertain.any() and (~uncertain).any():
            print(f"fluorescence only: uncertain {uncertain.sum()} mean F1 {f1[uncertain].mean():.3f}, "
                  f"similar {(~uncertain).sum()} mean F1 {f1[~uncertain].mean():.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
