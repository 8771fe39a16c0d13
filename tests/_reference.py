"""bioimageio.core (0.11.0) as the reference runner for microzoo's runtime tests.

``reference_predict``: whole-image prediction (no tiling), pre- and postprocessing included.
By default the input is **not** padded by the output halo and the output halo is **not**
cropped: the model sees exactly the given arrays, as in core's own test_model ("reproduce
test outputs"). Notes on core's semantics that a runner must match:

- all statistics (sample and dataset measures) are computed on the *raw* input tensors by one
  ``UpdateStats`` step placed before every preprocessing op, not on the output of the preceding
  op;
- measures whose axes include ``batch`` are dataset measures; without a dataset they are
  computed from the sample(s) given (the whole batch);
- ``pad_halo=True`` reproduces core's default ``predict``: inputs padded (symmetric, before
  preprocessing, so statistics include the padding) by the halo and outputs cropped again.
"""

from __future__ import annotations

import contextlib
import gc
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np


@contextlib.contextmanager
def quiet_core() -> Iterator[None]:
    """torch 2.13 deprecates ``torch.jit.load``/``script`` (which core's torchscript backend
    calls) and the legacy onnx exporter; those warnings are not ours to fix.

    Also freezes the objects alive now (``gc.freeze``) for the duration: core calls
    ``gc.collect()`` whenever it unloads a model, which otherwise walks torch's whole heap
    (~0.3 s a call); objects created inside are still collected, and all are unfrozen after."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*TorchScript.*", category=DeprecationWarning)
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()


def _load(rdf: Path | str | Any):
    from bioimageio.spec import load_model_description

    if isinstance(rdf, (str, Path)):
        return load_model_description(rdf, format_version="discover", perform_io_checks=False)
    return rdf


def reference_predict_descr(
    descr: Any, inputs: Mapping[str, np.ndarray], *, weight_format: str, pad_halo: bool = False
) -> dict[str, np.ndarray]:
    """Predict with an already loaded (0.4 or 0.5) model description; see ``reference_predict``."""
    from bioimageio.core import create_prediction_pipeline
    from bioimageio.core.digest_spec import create_sample_for_model

    sample = create_sample_for_model(descr, inputs={k: np.asarray(v) for k, v in inputs.items()}, sample_id="reference")
    with quiet_core(), create_prediction_pipeline(descr, weight_format=weight_format, devices=["cpu"]) as pp:
        out = pp.predict_sample_without_blocking(
            sample, skip_input_padding=not pad_halo, skip_output_cropping=not pad_halo
        )
    # tensor dims follow the description's axis order
    return {str(m): np.asarray(t.data) for m, t in out.members.items()}


def reference_predict(
    rdf: Path | str, inputs: Mapping[str, np.ndarray], *, weight_format: str, pad_halo: bool = False
) -> dict[str, np.ndarray]:
    """Whole-image prediction by bioimageio.core with ``weight_format``.

    ``inputs``: tensor id (0.4: tensor name) -> array with the description's axes (all of them,
    batch included). Returns output tensor id -> array with the description's axes, after
    postprocessing (its final dtype).
    """
    return reference_predict_descr(_load(rdf), inputs, weight_format=weight_format, pad_halo=pad_halo)


def reference_test(rdf: Path | str, weight_format: str | None = None):
    """Run ``bioimageio.core.test_model`` (reproduce the test outputs, then parameterized
    inference with batch sizes and size parameters n = 0, 1, 2). Returns the
    ``ValidationSummary``: ``test_passed(summary)`` says whether it passed and
    ``failure_messages(summary)`` lists what failed."""
    from bioimageio.core import test_model

    with quiet_core():
        return test_model(rdf, weight_format=weight_format, devices=["cpu"])


def test_passed(summary) -> bool:
    """Whether a ``reference_test`` summary has no failed detail (core's ``status`` field is not
    reliable: it can stay "valid-format" although inference failed)."""
    return summary.status in ("passed", "valid-format") and not failure_messages(summary)


test_passed.__test__ = False  # not a pytest test


def failure_messages(summary) -> list[str]:
    """The error messages of every failed detail of a ``ValidationSummary``."""
    msgs = []
    for d in summary.details:
        if d.status == "failed":
            msgs.extend(f"{d.name}: {e.msg}" for e in d.errors)
            if not d.errors:
                msgs.append(d.name)
    return msgs
