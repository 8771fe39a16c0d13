"""The human side of an exported package: its README and its cover image.

:func:`readme_text` writes the sections a reader of a zoo model needs: what the model does,
its intended use and limits (task by task: restoration outputs must not be used to quantify
intensities; instance maps need the stored settings to become labels), the training data and
parameters, the QC figures against the classical baseline, a ``# Validation`` section (the
spec looks for one) and how to run the package (microzoo, bioimageio.core, deepImageJ).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from microzoo.train.tasks.registry import TASKS
from microzoo.trust.fingerprint import ATTACHMENT_NAME as FINGERPRINT_NAME

if TYPE_CHECKING:
    from microzoo.train.export import ExportSpec


def _table(rows: Sequence[tuple[str, ...]], header: tuple[str, ...]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _qc_rows(qc: dict[str, Any]) -> list[tuple[str, str, str]]:
    baseline = {k[len("baseline ") :]: v for k, v in qc.items() if k.startswith("baseline ")}
    rows = [
        (k, _fmt(v), _fmt(baseline[k]) if k in baseline else "") for k, v in qc.items() if not k.startswith("baseline ")
    ]
    rows += [(k, "", _fmt(v)) for k, v in baseline.items() if k not in qc]
    return rows


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(plain_yaml(value)) if isinstance(value, (dict, list, tuple)) else str(value)


def readme_text(
    spec: ExportSpec,
    *,
    weights: Mapping[str, str],
    opset: int,
    input_id: str,
    modality: str | None = None,
    script_kind: str = "scripted",
    attachments: list[str] | None = None,
) -> str:
    """The package's README.md (Markdown).

    ``weights`` maps each weight format to its file; ``script_kind`` says whether the
    TorchScript was ``"scripted"`` or ``"traced"``; ``attachments`` are file names.
    """
    task = TASKS[spec.task]
    does, limits = task.does, task.limits
    low, high = spec.normalization_percentiles
    attachments = attachments or []
    axes = "zyx" if spec.spatial_dims == 3 else "yx"
    if spec.in_channels > 1:
        axes = "c" + axes
    parts = [
        f"# {spec.name}\n\n{spec.description}\n",
        f"## What the model does\n\n{does} It works on {spec.spatial_dims}-D images with "
        f"{spec.in_channels} input channel(s) and gives {spec.out_channels} output channel(s)"
        + (f", after a {spec.postprocessing}" if spec.postprocessing != "none" else "")
        + ".\n",
        f"## Intended use and limits\n\n{limits}\n",
    ]
    if spec.output_scale is not None:
        gain, offset = spec.output_scale
        parts.insert(
            2,
            "The output is in the intensity units of the input: the package maps the network's "
            f"normalised output back with gain {_fmt(gain)} and offset {_fmt(offset)} (the median "
            f"{low:g} and {high:g} percentiles of the training images; `scale_linear` postprocessing, "
            "which every zoo tool applies). Images exposed unlike the training images come back in "
            "the training images' range.\n",
        )
    if modality:
        parts.append(f"The test image looks like {modality} microscopy (a guess from its appearance).\n")
    if FINGERPRINT_NAME in attachments:
        parts.append(
            f"The attachment `{FINGERPRINT_NAME}` summarises what the training images looked "
            "like; `microzoo check --model PACKAGE --test images/` compares your images with it "
            "and says which are unlike them.\n"
        )
    if spec.task == "instances":
        settings = spec.instance_settings or {}
        rows = [(k, _fmt(v)) for k, v in settings.items()]
        parts.append(
            "## Turning the outputs into labels\n\nThe settings of the instance post-processing "
            "that was checked in quality control are stored in `bioimageio.yaml` under "
            "`config.microzoo.instance_settings`"
            + (":\n\n" + _table(rows, ("setting", "value")) if rows else " (none were given)")
            + "\n\nmicrozoo (`microzoo.runtime.instances_from_output`) reads them to turn the "
            "maps into a label image. Other zoo tools (bioimageio.core, deepImageJ) give only the "
            "maps; make labels from them with the same settings, or the QC figures do not apply.\n"
        )
    training = (
        _table([(k, _fmt(v)) for k, v in spec.training.items()], ("item", "value"))
        if spec.training
        else "No training details were recorded."
    )
    parts.append(
        f"## Training data and parameters\n\n{training}\n\nEvery image is normalised on its own: "
        f"its percentiles {low:g} and {high:g} (per channel, over all spatial axes) are mapped "
        "to 0 and 1. This step is part of the package (`scale_range` preprocessing), so every "
        "zoo tool recomputes it for each image.\n"
    )
    if spec.parent:
        parts[-1] += (
            f"\nTraining started from the weights of the package **{spec.parent['name']}** "
            f"(`{spec.parent['source']}`, weights sha256 `{spec.parent['sha256']}`), not from random ones.\n"
        )
    qc = (
        _table(_qc_rows(spec.qc), ("metric", "this model", "classical baseline"))
        if spec.qc
        else "No quality-control figures were recorded."
    )
    if any(a.startswith("qc_report") for a in attachments):
        qc += "\n\nThe full report (intervals, per-image scores, worst images) is attached: `qc_report.html`."
    parts.append(
        f"## Quality control\n\nFigures on held-out validation images, against the classical baseline:\n\n{qc}\n"
    )
    evaluate_task = task.qc_task
    parts.append(
        "# Validation\n\nBefore trusting the model on your data, check it on a few images of your own "
        "with ground truth"
        + (" (clean, high-quality images of the same fields)" if evaluate_task == "restoration" else " (annotations)")
        + ": predict them, then score the predictions and the classical baseline together:\n\n"
        f"```\nmicrozoo predict PACKAGE images/ -o pred/ --axes {axes}\nmicrozoo evaluate --pred model=pred/ "
        f"--truth truth/ --task {evaluate_task} -o qc/\n```\n\nThe report gives each figure with a 95% "
        "interval. Figures much below those above mean that your images differ from the training data.\n"
    )
    parts.append(
        "## How to run it\n\nWith microzoo (tiled to fit memory, normalisation included):\n\n"
        f"```\nmicrozoo test PACKAGE\nmicrozoo predict PACKAGE image.tif -o out.tif --axes {axes}\n```\n\n"
        "With bioimageio.core (any tool of the BioImage Model Zoo runs the package the same way):\n\n"
        "```python\nfrom bioimageio.core import predict\n"
        f'sample = predict(model="PACKAGE/bioimageio.yaml", inputs={{"{input_id}": image}})'
        f"  # image axes: batch, channel, {', '.join(spec.spatial_axes)}\n```\n\n"
        "or `bioimageio test PACKAGE/bioimageio.yaml`. In Fiji with deepImageJ: zip the package "
        "folder (`bioimageio package PACKAGE/bioimageio.yaml`), install the zip with *DeepImageJ "
        "Install Model* and run it with *DeepImageJ Run*; it uses the TorchScript weights and the "
        "normalisation stored in the package.\n"
    )
    parts.append(
        "## Package contents\n\n"
        f"- weights: `{weights['pytorch_state_dict']}` (PyTorch state dict; architecture "
        f"`{spec.architecture_source.name}`, `{spec.architecture_callable}`), `{weights['torchscript']}` "
        f"(TorchScript, {script_kind}) and `{weights['onnx']}` (ONNX opset {opset}), all checked to give "
        "the same output\n"
        f"- input size: {spec.size_min} + n x {spec.size_step} pixels along "
        f"{', '.join(spec.spatial_axes)}; the outer {spec.halo} pixels of the output are discarded "
        "when tiling\n"
        "- test tensors `test_input.npy` and `test_output.npy` (also as `sample_input.tif` and "
        "`sample_output.tif`), cover `cover.png`"
        + "".join(f"\n- attachment `{a}`" for a in attachments)
        + "\n\nExported by microzoo.\n"
    )
    return "\n".join(parts)


def plain_yaml(value: Any) -> Any:
    """``value`` with NumPy scalars, arrays and paths turned into plain YAML values."""

    def default(obj: Any) -> Any:
        if isinstance(obj, (np.generic, np.ndarray)):
            return obj.tolist()
        return str(obj)

    return json.loads(json.dumps(value, default=default))


def write_cover(path: Path, spec: ExportSpec, x: np.ndarray, y: np.ndarray) -> None:
    """The given cover, else the test input and output side by side (grey, 2:1)."""
    import imageio.v3 as iio

    if spec.cover is not None:
        iio.imwrite(path, np.asarray(spec.cover, dtype=np.uint8))
        return

    def panel(t: np.ndarray, *, classes: bool) -> np.ndarray:
        t = t[0] if t.ndim == 4 else t[0][:, t.shape[2] // 2]  # (c, y, x); 3-D: the middle plane
        if classes and t.shape[0] > 2:
            return (np.argmax(t, axis=0) * (255 // (t.shape[0] - 1))).astype(np.uint8)
        plane = t[-1] if classes else t[0]  # two classes: the foreground's scores
        low, high = np.percentile(plane, [1, 99.8])
        return (np.clip((plane - low) / (high - low + 1e-12), 0, 1) * 255).astype(np.uint8)

    picture = np.concatenate([panel(x, classes=False), panel(y, classes=spec.task == "semantic")], axis=1)
    repeat = max(1, 256 // picture.shape[0])
    picture = np.repeat(np.repeat(picture, repeat, axis=0), repeat, axis=1)
    iio.imwrite(path, np.repeat(picture[..., None], 3, axis=2))
