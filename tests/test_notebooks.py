"""Training notebooks: each one runs from top to bottom with tiny settings and writes its outputs.

The parameters cell (tagged ``parameters``, papermill's convention) gets tiny settings appended:
a few 128x128 crops of the real data in tmp folders, 1 epoch of 2 steps on 32-pixel patches,
``quick = True`` (a depth-2 network with 8 features). The kernel runs in a tmp folder, so every
output lands there. About 30-60 s per notebook on 2 cores.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import imageio.v3 as iio
import nbformat
import numpy as np
import pytest
import tifffile

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
CELL_TIMEOUT = 600  # seconds; a tiny run takes well under a minute
CROP = (slice(100, 228), slice(100, 228))

pytestmark = pytest.mark.slow


def _crop_copy(source: Path, target: Path, names: list[str]) -> Path:
    """Copy 128x128 crops of the named files of ``source`` into ``target``."""
    target.mkdir(parents=True)
    for name in names:
        path = source / name
        if path.suffix == ".tif":
            tifffile.imwrite(target / name, tifffile.imread(path)[CROP])
        else:
            iio.imwrite(target / name, iio.imread(path)[CROP])
    return target


def _first(folder: Path, n: int) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_file())[:n]


def _pairs(source: Path, target: Path, roles: tuple[str, str], n: int) -> dict[str, Path]:
    """Crops of the first ``n`` images of ``source/roles[0]`` and their partners of ``source/roles[1]``."""
    images = _first(source / roles[0], n)
    partners = {p.stem: p.name for p in (source / roles[1]).iterdir()}
    return {
        roles[0]: _crop_copy(source / roles[0], target / roles[0], images),
        roles[1]: _crop_copy(source / roles[1], target / roles[1], [partners[Path(n).stem] for n in images]),
    }


TINY = """
output_dir = "out"
model_name = "tiny-{name}"
authors = ["microzoo tests"]
resume = False
patch_size = 32
epochs = 1
steps_per_epoch = 2
batch_size = 2
max_minutes = 5
depth = 2
base_features = 8
seed = 0
n_examples = 1
n_test_images = 1
n_panels = 1
quick = True
quick_images = 4
"""


def _data(notebook: str, shared: Path, root: Path) -> str:
    """Tiny data folders for one notebook, as the data lines of its parameters cell."""
    if notebook == "train_semantic_segmentation":
        train = _pairs(shared / "isbi2012" / "train", root / "train", ("images", "labels"), 4)
        test = _pairs(shared / "isbi2012" / "test", root / "test", ("images", "labels"), 1)
        folders = {"train_images": train["images"], "train_labels": train["labels"],
                   "test_images": test["images"], "test_labels": test["labels"]}  # fmt: skip
    elif notebook == "train_instances_nuclei":
        # the first DSB images are large enough for the 128x128 crop and hold nuclei in it
        train = _pairs(shared / "dsb2018" / "train", root / "train", ("images", "labels"), 4)
        test = _pairs(shared / "dsb2018" / "test", root / "test", ("images", "labels"), 1)
        folders = {"train_images": train["images"], "train_labels": train["labels"],
                   "test_images": test["images"], "test_labels": test["labels"]}  # fmt: skip
    else:
        train = _pairs(shared / "w2s" / "train", root / "train", ("noisy", "clean"), 4)
        test = _pairs(shared / "w2s" / "test", root / "test", ("noisy", "clean"), 1)
        targets = "train_targets" if notebook == "train_care_denoising" else "qc_targets"
        folders = {"train_images": train["noisy"], targets: train["clean"],
                   "test_images": test["noisy"], "test_targets": test["clean"]}  # fmt: skip
    return "\n".join(f"{key} = {str(value)!r}" for key, value in folders.items())


def _parameters_cell(nb) -> nbformat.NotebookNode:
    tagged = [cell for cell in nb.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code", "exactly one code cell tagged 'parameters'"
    return tagged[0]


def _names(source: str) -> set[str]:
    return {target.id for node in ast.parse(source).body if isinstance(node, ast.Assign)
            for target in node.targets if isinstance(target, ast.Name)}  # fmt: skip


def _text(nb) -> str:
    """Every text and error output of the executed notebook."""
    parts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.append(output.get("data", {}).get("text/plain", ""))
            parts.append(output.get("data", {}).get("text/markdown", ""))
    return "\n".join(parts)


def _images(nb) -> int:
    return sum("image/png" in output.get("data", {}) or "<img" in output.get("data", {}).get("text/html", "")
               for cell in nb.cells for output in cell.get("outputs", []))  # fmt: skip


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_notebook_is_saved_clean_with_a_parameters_cell(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    source = _parameters_cell(nb).source
    assert {"output_dir", "patch_size", "epochs", "steps_per_epoch", "batch_size", "max_minutes", "seed",
            "quick", "train_images", "test_images"} <= _names(source)  # fmt: skip
    for cell in nb.cells:  # committed without outputs, so diffs stay readable
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path.name} was saved with outputs"


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_notebook_uses_only_the_public_api(path: Path) -> None:
    """No private module, name or attribute (``_x``) of microzoo; training through ``microzoo.train``'s verbs."""
    nb = nbformat.read(path, as_version=4)
    used = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        code = "\n".join(line for line in cell.source.splitlines() if not line.startswith(("%", "!")))
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("microzoo"):
                used += [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                used += [a.name for a in node.names if a.name.startswith("microzoo")]
            elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                used.append(f"attribute {node.attr}")
    private = [name for name in used if any(part.startswith("_") and not part.startswith("__")
                                            for part in name.replace("attribute ", "_").split("."))]  # fmt: skip
    assert not private, f"{path.name} reaches into private helpers: {private}"
    assert not any(m in used for m in ("microzoo.train.config", "microzoo.train.run", "microzoo.train.tasks")), used


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_notebook_is_a_short_sequence_of_calls(path: Path) -> None:
    """The helpers live in microzoo.notebook: no function or class defined in a cell, no step past 14 lines."""
    nb = nbformat.read(path, as_version=4)
    code = [cell.source for cell in nb.cells if cell.cell_type == "code"]
    for source in code:
        defined = [node for node in ast.walk(ast.parse(source))
                   if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda))]  # fmt: skip
        assert not defined, f"{path.name} defines {[getattr(n, 'name', 'lambda') for n in defined]}: put it in microzoo"
    # after the parameters cell: the configuration is the longest step (13 lines), the others 1 to 9
    assert max(len(source.splitlines()) for source in code[1:]) <= 14
    assert "from microzoo import notebook" in "\n".join(code)


@pytest.mark.parametrize(
    "notebook", ["train_semantic_segmentation", "train_instances_nuclei", "train_care_denoising", "train_noise2void"]
)
def test_notebook_trains_checks_predicts_and_exports(
    notebook: str, shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nbclient import NotebookClient

    # the kernel spec "python3" of this environment (ipykernel installs it in sys.prefix), ahead of
    # any user-wide one; its command "python" is started as this interpreter (sys.executable)
    monkeypatch.setenv("JUPYTER_PATH", str(Path(sys.prefix) / "share" / "jupyter"))

    nb = nbformat.read(NOTEBOOKS / f"{notebook}.ipynb", as_version=4)
    cell = _parameters_cell(nb)
    tiny = _data(notebook, shared_data, tmp_path / "data") + TINY.format(name=notebook.removeprefix("train_"))
    unknown = _names(tiny) - _names(cell.source)
    assert not unknown, f"the test sets parameters the notebook does not have: {sorted(unknown)}"
    cell.source += "\n\n# tiny settings injected by tests/test_notebooks.py\n" + tiny
    work = tmp_path / "work"
    work.mkdir()
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(work)}})  # fmt: skip
    try:
        client.execute()  # raises CellExecutionError, with the cell and traceback, if any cell fails
    finally:
        nbformat.write(nb, work / f"{notebook}.ipynb")  # the executed notebook, to look at a failure

    out = work / "out"
    for name in ("config.yaml", "curves/loss.csv", "curves/loss.png", "qc/report.html", "qc/metrics.json",
                 "package/bioimageio.yaml", "package/weights_torchscript.pt", "package/weights.onnx"):  # fmt: skip
        assert (out / name).is_file(), f"{notebook} did not write {name}"
    assert len(list((out / "predictions").glob("*.tif"))) == 1
    assert (out / f"tiny-{notebook.removeprefix('train_')}.zip").is_file()
    metrics = json.loads((out / "qc" / "metrics.json").read_text())
    assert len(metrics["methods"]) >= 2  # the model and the classical baseline
    text = _text(nb)
    assert "package test: PASSED" in text and "Traceback" not in text
    assert "| method |" in text  # the QC summary table
    assert "Verdict: " in text and "the classical baseline" in text  # the one-line verdict
    # data, curves, QC panel(s) and predictions were drawn
    assert _images(nb) >= 4
    prediction = tifffile.imread(next((out / "predictions").glob("*.tif")))
    assert prediction.shape[-2:] == (128, 128) and np.isfinite(prediction).all()
