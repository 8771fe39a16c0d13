"""The compatibility matrix of a package version: which zoo tools run it, and what would make more of them.

A consumer runs a version when it reads the description's format version and the package has a
weight format the consumer runs whose test run passed. Where none does, the matrix names the format
to add and the ``microzoo convert`` line that adds it (convert writes torchscript and onnx from a
state dict or torchscript, checking that the new weights reproduce the test outputs).

What each consumer runs, and where that was checked:

- bioimageio.core 0.11: ``SupportedWeightsFormat`` in ``bioimageio/core/common.py`` and the
  backends in ``bioimageio/core/backends/`` (pytorch_state_dict, torchscript, onnx,
  tensorflow_saved_model_bundle, keras_hdf5, keras_v3); it loads format 0.4 and 0.5 descriptions
  (``create_model_adapter`` takes ``v0_4.ModelDescr | v0_5.ModelDescr``). Read in the installed package.
- deepImageJ 3 runs models through JDLL: ``ModelWeight.supported`` = torchscript,
  tensorflow_saved_model_bundle, onnx (bioimage-io/JDLL,
  src/main/java/io/bioimage/modelrunner/bioimageio/description/weights/ModelWeight.java; the
  deepImageJ 3.0.3 release notes: "Compatibility with Pytorch 2 / Tensorflow 2 / Onnx, changed
  backend to JDLL"); state dicts are not run, as they need Python code. ``ModelDescriptorFactory``
  reads ``format_version`` 0.4.x and 0.5.x only.
- ilastik's neural-network workflow runs models through tiktorch, which predicts with
  bioimageio.core's ``PredictionPipeline`` (ilastik/tiktorch, server/session/backend); ilastik's
  environment brings PyTorch, not TensorFlow, so pytorch_state_dict and torchscript; onnx is
  bioimageio.core's onnxruntime backend (taken from the issue; ilastik's onnxruntime was not checked here).
- microzoo: ``runtime.engines.SUPPORTED_FORMATS``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from microzoo.runtime.engines import SUPPORTED_FORMATS
from microzoo.zoo.summary import PackageSummary

#: formats ``microzoo convert`` adds, and the formats it converts from
CONVERT_TARGETS = ("torchscript", "onnx")
CONVERT_SOURCES = ("pytorch_state_dict", "torchscript")
RESULTS = ("passed", "failed", "error", "not tested")


@dataclasses.dataclass(frozen=True)
class Consumer:
    """A zoo tool: the weight formats it runs (in the order it prefers them) and the format versions it reads."""

    formats: tuple[str, ...]
    format_versions: tuple[str, ...]


CONSUMERS = {
    "bioimageio.core": Consumer(
        ("pytorch_state_dict", "tensorflow_saved_model_bundle", "torchscript", "onnx", "keras_v3", "keras_hdf5"),
        ("0.4", "0.5"),
    ),
    "deepImageJ": Consumer(("torchscript", "onnx", "tensorflow_saved_model_bundle"), ("0.4", "0.5")),
    "ilastik": Consumer(("pytorch_state_dict", "torchscript", "onnx"), ("0.4", "0.5")),
    "microzoo": Consumer(tuple(SUPPORTED_FORMATS), ("0.4", "0.5")),
}


def compat_matrix(summary: PackageSummary, results: Mapping[str, str], *, package: str = "PACKAGE") -> dict[str, Any]:
    """Which consumers run this version, given its test result per weight format.

    ``results``: weight format -> ``passed|failed|error|not tested`` (formats left out are not
    tested). ``package`` is put in the convert lines (the package zip's URL, a path).

    Returns ``{"validation", "format_version", "formats": {format: result}, "consumers": {name:
    {"runs", "formats", "supported", "reason"}}, "missing": {name: {"formats", "command"} or
    {"formats": [], "reason"}}}``; ``missing`` names only consumers that do not run the version.
    """
    formats = {fmt: str(results.get(fmt, "not tested")) for fmt in summary.weight_formats}
    consumers = {
        name: _consumer_entry(consumer, summary.format_version, formats) for name, consumer in CONSUMERS.items()
    }
    missing = {
        name: _what_to_add(CONSUMERS[name], formats, package)
        for name, entry in consumers.items()
        if not entry["runs"] and _reads(CONSUMERS[name], summary.format_version)
    }
    return {
        "validation": "passed",  # ingest refuses what does not validate
        "format_version": summary.format_version,
        "formats": formats,
        "consumers": consumers,
        "missing": missing,
    }


def _reads(consumer: Consumer, format_version: str) -> bool:
    return any(format_version == v or format_version.startswith(v + ".") for v in consumer.format_versions)


def _consumer_entry(consumer: Consumer, format_version: str, formats: Mapping[str, str]) -> dict[str, Any]:
    passed = [fmt for fmt in consumer.formats if formats.get(fmt) == "passed"]
    present = [fmt for fmt in consumer.formats if fmt in formats]
    if not _reads(consumer, format_version):
        reason = f"reads format {' and '.join(consumer.format_versions)} descriptions; this one is {format_version}"
    elif passed:
        reason = f"runs {passed[0]} (test passed)" + (f"; also {', '.join(passed[1:])}" if passed[1:] else "")
    elif present:
        reason = "; ".join(f"its {fmt} weights {_result_words(formats[fmt])}" for fmt in present)
    else:
        reason = f"runs {', '.join(consumer.formats)}; this package has {', '.join(formats) or 'no weights'}"
    return {
        "runs": bool(passed) and _reads(consumer, format_version),
        "formats": passed,
        "supported": list(consumer.formats),
        "reason": reason,
    }


def _what_to_add(consumer: Consumer, formats: Mapping[str, str], package: str) -> dict[str, Any]:
    """The formats ``microzoo convert`` could add for ``consumer``, and the command; or why it cannot."""
    sources = [fmt for fmt in CONVERT_SOURCES if formats.get(fmt) in ("passed", "not tested")]
    targets = [fmt for fmt in CONVERT_TARGETS if fmt in consumer.formats and formats.get(fmt) != "passed"]
    targets = [fmt for fmt in targets if any(source != fmt for source in sources)]
    if not targets:
        have = ", ".join(f"{fmt} ({result})" for fmt, result in formats.items()) or "no weights"
        return {
            "formats": [],
            "reason": "microzoo convert adds torchscript and onnx from working pytorch_state_dict or torchscript "
            f"weights; this package has {have}",
        }
    add = targets[:1]  # one format is enough to run: the consumer's first choice
    return {"formats": add, "command": convert_command(package, add)}


def convert_command(package: str, formats: list[str], out: str = "OUT") -> str:
    """The command line that writes ``package`` with ``formats`` added as a new package ``out``."""
    return f"microzoo convert {package} --to {','.join(formats)} -o {out}"


def _result_words(result: str) -> str:
    return {
        "failed": "failed the test run",
        "error": "could not be test-run (error)",
        "not tested": "are not tested yet",
    }.get(result, f"have test result '{result}'")
