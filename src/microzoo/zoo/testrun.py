"""The zoo's test run of one package, meant to run inside :func:`microzoo.zoo.sandbox.run_limited`.

Test (every weight format reproduces the package's test outputs)::

    python -m microzoo.zoo.testrun PACKAGE_DIR OUT_JSON [--weights torchscript,onnx]

writes a ``TestRunReport`` as JSON::

    {"status": "passed|failed|error",
     "formats": {"onnx": {"status": "passed|failed|error|not tested", "max_abs_diff": 1.2e-06,
                          "mismatched_per_million": 0.0, "message": "..."}, ...},
     "log": "one line per format and output", "seconds": 3.1}

"Try it" (one prediction on an uploaded image, and the trust note)::

    python -m microzoo.zoo.testrun PACKAGE_DIR OUT_JSON --try IMAGE --out DIR

writes ``input.png``, ``output.png``, ``overlay.png`` and ``note.json`` into ``DIR`` and a short
report (``status``, ``note``, ``files``) into ``OUT_JSON``.

Convert (``microzoo convert`` for the zoo: the new package into ``DIR``, checked as there)::

    python -m microzoo.zoo.testrun PACKAGE_DIR OUT_JSON --convert onnx,torchscript --out DIR
 The exit code is 0 whenever a report
was written, whatever its verdict; the worker reads the verdict from the report.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from microzoo.errors import MicrozooError
from microzoo.io.atomic import atomic_output

__all__ = ["test_report", "try_image", "main"]


def test_report(package_dir: Path, *, weights: list[str] | None = None) -> dict[str, Any]:
    """Reproduce the test outputs of the package in ``package_dir`` with each weight format
    (or only ``weights``) and return the ``TestRunReport`` (see the module's docstring)."""
    from microzoo.package.load import open_package
    from microzoo.runtime.engines import SUPPORTED_FORMATS, available_formats
    from microzoo.runtime.reproduce import test_package

    start = time.monotonic()
    try:
        package = open_package(package_dir)
    except MicrozooError as error:
        return _report({}, [f"cannot open the package: {error}"], start, error=str(error))
    formats: dict[str, dict[str, Any]] = {}
    log: list[str] = []
    for fmt in weights or available_formats(package):
        if fmt not in SUPPORTED_FORMATS:
            message = f"the zoo's worker cannot run '{fmt}' weights (it runs {', '.join(SUPPORTED_FORMATS)})"
            formats[fmt] = _entry("not tested", message=message)
            log.append(f"{fmt}: not tested: {message}")
            continue
        try:
            comparisons = test_package(package, weight_format=fmt)
        except MicrozooError as error:
            formats[fmt] = _entry("error", message=str(error))
            log.append(f"{fmt}: error: {error}")
            continue
        formats[fmt] = _format_entry(comparisons)
        for c in comparisons:
            verdict = "passed" if c.passed else "FAILED"
            log.append(
                f"{fmt} {c.output_id}: {verdict}, max |diff| {c.max_abs_diff:.3g}, "
                f"{c.mismatched_per_million:.1f} mismatched per million (allowed {c.allowed_per_million:g})"
                + (f": {c.error}" if c.error else "")
            )
    return _report(formats, log, start)


test_report.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def _format_entry(comparisons: list[Any]) -> dict[str, Any]:
    """One format's verdict over all its outputs: failed if any output failed; the largest difference."""
    errors = [c.error for c in comparisons if c.error]
    failed = [c for c in comparisons if not c.passed]
    diffs = [c.max_abs_diff for c in comparisons if not math.isnan(c.max_abs_diff)]
    ppm = [c.mismatched_per_million for c in comparisons if not math.isnan(c.mismatched_per_million)]
    status = "passed" if not failed else ("error" if errors and len(errors) == len(comparisons) else "failed")
    if failed:
        message = "; ".join(
            c.error
            or f"{c.output_id}: {c.mismatched_per_million:.1f} mismatched elements per million "
            f"(allowed {c.allowed_per_million:g}), max |diff| {c.max_abs_diff:.3g}"
            for c in failed
        )
    else:
        message = "reproduces every test output"
    return _entry(status, max_abs_diff=max(diffs) if diffs else None, ppm=max(ppm) if ppm else None, message=message)


def _entry(status: str, *, message: str, max_abs_diff: float | None = None, ppm: float | None = None) -> dict[str, Any]:
    return {"status": status, "max_abs_diff": max_abs_diff, "mismatched_per_million": ppm, "message": message}


def _report(formats: dict[str, dict[str, Any]], log: list[str], start: float, *, error: str = "") -> dict[str, Any]:
    tested = [f["status"] for f in formats.values() if f["status"] != "not tested"]
    if error or not tested or "error" in tested:
        status = "error"
    else:
        status = "passed" if all(s == "passed" for s in tested) else "failed"
    if not error and not tested:
        log.append("no weight format of this package can be run, so none was tested")
    report: dict[str, Any] = {
        "status": status,
        "formats": formats,
        "log": "\n".join(log),
        "seconds": round(time.monotonic() - start, 3),
    }
    if error:
        report["error"] = error
    return report


# --- try it ---------------------------------------------------------------------------------


def try_image(package_dir: Path, image_path: Path, out_dir: Path, *, axes: str | None = None) -> dict[str, Any]:
    """Predict ``image_path`` with the package, write ``input.png``, ``output.png``,
    ``overlay.png`` and ``note.json`` (the trust note and the outputs' shapes) into ``out_dir``;
    return what ``note.json`` holds."""
    from microzoo.io.read import read_image
    from microzoo.runtime.predict import Model
    from microzoo.trust.note import trust_note

    start = time.monotonic()
    image = read_image(image_path, axes=axes)
    data = np.asarray(image.data)
    model = Model.open(package_dir)
    prediction = model.predict_image(data, axes=image.axes)
    note = trust_note(model.package, [data], [image_path.name], [image.axes], outputs=[prediction.outputs], model=model)
    first = model.output_ids[0]
    shown = _display_plane(np.asarray(prediction.outputs[first]), prediction.axes[first])
    picture = _display_plane(data, image.axes)
    result = {
        "status": "done",
        "model": model.package.name,
        "weight_format": model.weight_format,
        "note": {
            "checked": note.checked,
            "warning": note.warning,
            "headline": note.headline,
            "details": list(note.details),
            "evidence": note.evidence,
            "images": note.to_dict()["images"],
        },
        "notices": list(prediction.notices),
        "outputs": {
            tid: {"axes": prediction.axes[tid], "shape": list(np.shape(array)), "dtype": str(np.asarray(array).dtype)}
            for tid, array in prediction.outputs.items()
        },
        "files": {"input": "input.png", "output": "output.png", "overlay": "overlay.png"},
        "seconds": round(time.monotonic() - start, 3),
    }
    with atomic_output(out_dir) as tmp:
        tmp.mkdir()
        _write_png(tmp / "input.png", picture)
        _write_png(tmp / "output.png", shown)
        _write_png(tmp / "overlay.png", _overlay(picture, shown))
        (tmp / "note.json").write_text(json.dumps(result, indent=1))
    return result


def _display_plane(array: np.ndarray, axes: str) -> np.ndarray:
    """A 2-D plane (or RGB) stretched to 0..1: the first channel, the middle plane of a volume."""
    from microzoo.qc.panels import plane, stretch

    array = np.asarray(array, dtype=np.float64)
    if "c" in axes and not (axes.endswith("c") and array.shape[-1] in (3, 4)):
        array = np.take(array, 0, axis=axes.index("c"))
    colour = array.ndim == 3 and array.shape[-1] in (3, 4) and axes.endswith("c")
    flat = plane(array, colour=colour)
    return stretch(flat) if flat.ndim == 2 else np.stack([stretch(flat[..., i]) for i in range(3)], axis=-1)


def _overlay(picture: np.ndarray, output: np.ndarray) -> np.ndarray:
    """The input in grey with the output in magenta over it (the output resized to the input)."""
    grey = picture.mean(axis=-1) if picture.ndim == 3 else picture
    if output.shape[:2] != grey.shape:
        from skimage.transform import resize

        output = resize(output, grey.shape + output.shape[2:], order=0, preserve_range=True)
    if output.ndim == 3:
        output = output.mean(axis=-1)
    rgb = np.repeat(0.7 * grey[..., None], 3, axis=-1)
    rgb[..., 0] += 0.6 * output
    rgb[..., 2] += 0.6 * output
    return np.clip(rgb, 0, 1)


def _write_png(path: Path, image: np.ndarray) -> None:
    from microzoo.io.write import write_image

    write_image(path, np.round(image * 255).astype(np.uint8), "yxc" if image.ndim == 3 else "yx")


def _convert(package: Path, formats: list[str], out: Path) -> dict[str, Any]:
    from microzoo.runtime.convert import convert_package

    start = time.monotonic()
    try:
        convert_package(package, formats, out_dir=out)
    except MicrozooError as error:
        return {"status": "error", "error": str(error), "seconds": round(time.monotonic() - start, 3)}
    return {"status": "done", "formats": formats, "seconds": round(time.monotonic() - start, 3)}


# --- entry point ----------------------------------------------------------------------------


def _write_json(path: Path, content: dict[str, Any]) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(content, indent=1, allow_nan=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m microzoo.zoo.testrun", description=__doc__.split("\n")[0])
    parser.add_argument("package", type=Path, help="the package folder")
    parser.add_argument("out_json", type=Path, help="where to write the report")
    parser.add_argument("--weights", help="weight formats to test, e.g. torchscript,onnx (default: all)")
    parser.add_argument("--try", dest="try_image", type=Path, help="an image to predict instead of testing")
    parser.add_argument("--axes", help="the image's axes (with --try), e.g. yx, yxc, zyx")
    parser.add_argument("--convert", help="weight formats to add (onnx,torchscript) instead of testing")
    parser.add_argument("--out", type=Path, help="where --try writes its PNGs and note.json, --convert the package")
    args = parser.parse_args(argv)
    if args.try_image is not None:
        if args.out is None:
            parser.error("--try needs --out DIR")
        try:
            result = try_image(args.package, args.try_image, args.out, axes=args.axes)
        except MicrozooError as error:
            result = {"status": "error", "error": str(error)}
        _write_json(args.out_json, result)
        return 0
    if args.convert is not None:
        if args.out is None:
            parser.error("--convert needs --out DIR")
        _write_json(args.out_json, _convert(args.package, args.convert.split(","), args.out))
        return 0
    weights = [w.strip() for w in args.weights.split(",") if w.strip()] if args.weights else None
    _write_json(args.out_json, test_report(args.package, weights=weights))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
