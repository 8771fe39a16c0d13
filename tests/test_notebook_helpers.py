"""microzoo.notebook: the helpers of the training notebooks, on crops of the real data, one tiny
real training (ISBI 2012, 2 epochs of 2 steps) and the example package, as a notebook calls them."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from microzoo import notebook
from microzoo.errors import ConfigError, DataError
from microzoo.io.files import shared_data_dir
from microzoo.qc.report import format_estimate
from microzoo.train import semantic_config, train

N = 5  # ISBI crops for training


def _crops(source: Path, target: Path, names: list[str], window: tuple[slice, slice]) -> Path:
    target.mkdir(parents=True)
    for name in names:
        iio.imwrite(target / name, iio.imread(source / name)[window])
    return target


@pytest.fixture(scope="module")
def isbi(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64x64 crops of 5 ISBI training slices and of 1 test slice, images and labels."""
    root = tmp_path_factory.mktemp("isbi")
    window = (slice(200, 264), slice(200, 264))
    for split, names in (("train", [f"{i:02d}.png" for i in range(N)]), ("test", ["20.png"])):
        for role in ("images", "labels"):
            _crops(shared_data / "isbi2012" / split / role, root / split / role, names, window)
    return root


@pytest.fixture(scope="module")
def run(isbi: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """A tiny real training with the live plot as its callbacks (text mode): (result, live, text)."""
    config = semantic_config(images=isbi / "train" / "images", labels=isbi / "train" / "labels", patch_size=32,
                             epochs=2, steps_per_epoch=2, batch_size=4, name="tiny-isbi")  # fmt: skip
    config.network.depth, config.network.base_features = 2, 8
    config.data.validation_patches = 4
    config.training.export = False  # the package helpers run on the example package (test below)
    out_dir = tmp_path_factory.mktemp("run")
    text = io.StringIO()
    live = notebook.LiveLossPlot(out_dir, jupyter=False, out=text, every_seconds=0)
    result = train(config, out_dir=out_dir, progress=live, on_epoch=live.on_epoch)
    return result, live, text


# ---------------------------------------------------------------- the live loss plot


def test_live_plot_follows_the_loss_csv_of_a_real_run(run: tuple) -> None:
    result, live, text = run
    rows = notebook.read_loss_csv(result.curves_csv)
    assert [r["epoch"] for r in rows] == [1.0, 2.0] and live.rows() == rows
    for row, kept in zip(rows, result.history, strict=True):
        assert row["train_loss"] == pytest.approx(kept["train_loss"])
    printed = text.getvalue()
    # outside Jupyter: the status lines of progress, and one line per epoch with its figures
    for row in rows:
        assert f"epoch {int(row['epoch'])}: train_loss {row['train_loss']:.4g}" in printed
    assert "[" in printed and "/" in printed and live.redraws == 0
    figure = notebook.loss_figure(rows)
    losses, other = figure.axes
    assert [len(line.get_xdata()) for line in losses.lines] == [2, 2]  # training and validation loss
    figures = [key for key in rows[0] if key.startswith("val_") and key != "val_loss"]
    assert figures and [line.get_label() for line in other.lines] == figures
    picture = live.finish(result)
    assert picture.png.startswith(b"\x89PNG") and "2 epochs" in picture.lines[0]
    assert f"epoch {result.best_epoch} were kept" in text.getvalue()


def test_live_plot_redraws_one_display_in_a_kernel(run: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    import IPython.display

    result, _, _ = run
    shown: list = []

    class Handle:
        def update(self, obj: object) -> None:
            shown.append(("update", obj))

    def display(obj: object, display_id: bool = False) -> Handle:
        shown.append(("display", obj))
        return Handle()

    monkeypatch.setattr(IPython.display, "display", display)
    live = notebook.LiveLossPlot(result.out_dir, jupyter=True, every_seconds=0)
    live.on_epoch(result.history[0])
    live(3, 4, "epoch 2/2 loss 0.5")
    live.finish(result)
    assert [kind for kind, _ in shown] == ["display", "update", "update"]  # one output, redrawn in place
    assert all(isinstance(obj, notebook.Picture) and obj.png.startswith(b"\x89PNG") for _, obj in shown)
    assert "epoch 2/2 loss 0.5  [3/4]" in shown[1][1].lines


def test_live_plot_before_the_first_epoch_is_a_status_line(tmp_path: Path) -> None:
    text = io.StringIO()
    live = notebook.LiveLossPlot(tmp_path, jupyter=False, out=text, every_seconds=3600)
    live(0, 10, "epoch 1/5 loss 0.9")
    live(1, 10, "epoch 1/5 loss 0.8")  # within every_seconds: not printed
    live(10, 10, "epoch 5/5 loss 0.1")  # the last one always is
    assert live.rows() == [] and text.getvalue().splitlines() == [
        "epoch 1/5 loss 0.9  [0/10]",
        "epoch 5/5 loss 0.1  [10/10]",
    ]


# ---------------------------------------------------------------- quality control


def test_qc_table_numbers_are_those_of_the_metrics_json(run: tuple) -> None:
    result, _, _ = run
    document = json.loads(result.metrics.read_text())
    table = notebook.qc_table(result)
    assert table.columns == ("method", *document["headline_metrics"])
    assert [row[0] for row in table.rows] == document["methods"] and len(document["methods"]) == 2
    for row in table.rows:
        for name, cell in zip(document["headline_metrics"], row[1:], strict=True):
            figure = document["summary"][row[0]][name]
            assert cell == format_estimate(figure["value"], figure["low"], figure["high"], name)
    assert table.after[-1] == result.verdict.line and "| method |" in table.markdown()
    # the same table from the file alone (any evaluation's metrics.json), verdict recomputed
    assert notebook.qc_table(result.metrics) == table


def test_qc_panels_are_the_reports_panels(run: tuple) -> None:
    result, _, _ = run
    document = json.loads(result.metrics.read_text())
    panels = notebook.qc_panels(result, n=2)
    expected = [f"{p['image']} ({p['reason']})" for p in document["figures"]["panels"]][:2]
    assert [p.title for p in panels] == expected
    for picture in panels:
        pixels = iio.imread(picture.png)
        assert pixels.shape[1] > 2 * pixels.shape[0]  # a row: input, truth, 2 methods and their errors
    assert dict(panels.links)["the whole report"].endswith("report.html")
    assert panels._repr_html_().count("<img") == len(panels)


def test_qc_without_truth_says_so(run: tuple) -> None:
    from dataclasses import replace

    result, _, _ = run
    no_qc = replace(result, metrics=None, report=None, verdict=None)
    assert "No QC" in notebook.qc_table(no_qc).markdown() and len(notebook.qc_panels(no_qc)) == 0


# ---------------------------------------------------------------- data


def test_show_data_draws_real_images_with_their_labels(isbi: Path) -> None:
    shown = notebook.show_data(isbi / "train" / "images", isbi / "train" / "labels", task="semantic", n=2)
    assert len(shown) == 2 and shown.lines == (f"{N} images in {isbi / 'train' / 'images'}",)
    first = shown[0]
    assert first.lines[0] == "00.png: shape (64, 64), axes 'yx', uint8, values " + _range(isbi / "train/images/00.png")
    assert first.lines[1].startswith("labels 00.png: shape (64, 64)")
    assert iio.imread(first.png).shape[1] > 2.5 * iio.imread(first.png).shape[0]  # image, labels, overlay
    assert "<img" in shown._repr_html_() and "[picture" in str(shown)
    with pytest.raises(ConfigError, match="semantic, instances, care, n2v"):
        notebook.show_data(isbi / "train" / "images", task="denoising")


def _range(path: Path) -> str:
    data = iio.imread(path)
    return f"{data.min():g}..{data.max():g}"


def test_show_data_of_noisy_images_alone_zooms_in(shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / "w2s" / "train" / "noisy"
    folder = tmp_path / "noisy"
    folder.mkdir()
    tifffile.imwrite(folder / "001.tif", tifffile.imread(source / "001.tif")[:128, :128])
    shown = notebook.show_data(folder, None, task="n2v", n=3)
    assert len(shown) == 1 and len(shown[0].lines) == 1  # no partner
    height, width = iio.imread(shown[0].png).shape[:2]
    assert width > 1.5 * height  # the image and its zoomed corner


def test_data_folder_defaults_to_the_shared_data(tmp_path: Path) -> None:
    assert notebook.data_folder(None, default="isbi2012/test/images") == shared_data_dir() / "isbi2012/test/images"
    assert notebook.data_folder("", default="isbi2012/test/labels", optional=True) is None
    assert notebook.data_folder(str(tmp_path), default="unused") == tmp_path.resolve()
    with pytest.raises(DataError, match="check the folders in the parameters cell"):
        notebook.data_folder(tmp_path / "missing", default="unused")
    out = notebook.output_folder(tmp_path / "runs" / "a")
    assert out.is_dir()


def test_quick_config_takes_the_first_pairs_and_a_tiny_network(isbi: Path, tmp_path: Path) -> None:
    config = semantic_config(images=isbi / "train" / "images", labels=isbi / "train" / "labels", patch_size=64)
    quick = notebook.quick_config(config, n_images=2, into=tmp_path / "quick")
    assert sorted(p.name for p in quick.data.images.iterdir()) == ["00.png", "01.png"]
    assert sorted(p.name for p in quick.data.labels.iterdir()) == ["00.png", "01.png"]
    assert (quick.network.depth, quick.network.base_features, quick.training.epochs) == (2, 8, 2)
    assert quick.training.steps_per_epoch == 4 and config.network.depth == 3  # the original is left as it was
    assert "depth: 2" in notebook.check_config(quick).markdown()


# ---------------------------------------------------------------- the package


def test_predict_check_and_zip_a_package(example_model: Path, shared_data: Path, tmp_path: Path) -> None:
    """The example nuclei package on a 128x128 crop of a DSB 2018 test image (RGBA, turned grey)."""
    source = shared_data / "dsb2018" / "test"
    name = sorted(p.name for p in (source / "images").iterdir())[0]
    stem = Path(name).stem
    images = _crops(source / "images", tmp_path / "images", [name], (slice(0, 128), slice(0, 128)))
    (tmp_path / "labels").mkdir()
    truth = tifffile.imread(source / "labels" / f"{stem}.tif")[:128, :128]
    tifffile.imwrite(tmp_path / "labels" / f"{stem}.tif", truth)
    shown = notebook.predict_images(example_model, images, task="semantic", out=tmp_path / "pred", n=3,
                                    truths=tmp_path / "labels")  # fmt: skip
    saved = tifffile.imread(tmp_path / "pred" / f"{stem}.tif")
    assert saved.shape == (128, 128) and set(np.unique(saved)) <= {0, 1}  # the class map the QC scores
    assert saved.any() and (saved.astype(bool) & (truth > 0)).sum() > 0.5 * saved.sum()  # nuclei found
    assert len(shown) == 1 and shown[0].lines[-1].startswith("against the truth: mean_iou ")
    assert any("grey" in line or "gray" in line for line in shown[0].lines)  # the RGB(A) notice
    table = notebook.check_package(example_model)
    assert table.after == ("package test: PASSED",) and all(row[-1] == "yes" for row in table.rows)
    assert {row[0] for row in table.rows} >= {"torchscript", "onnx"}
    archive = notebook.zip_package(example_model / "bioimageio.yaml", tmp_path / "example.zip")
    assert sorted(zipfile.ZipFile(archive).namelist()) == sorted(p.name for p in example_model.iterdir())


# ---------------------------------------------------------------- without Jupyter


def test_imports_and_prints_without_ipython_or_pyplot(tmp_path: Path) -> None:
    code = f"""
import sys
sys.modules["IPython"] = None  # as if IPython were not installed
from microzoo import notebook
from microzoo.errors import ConfigError
live = notebook.LiveLossPlot({str(tmp_path)!r})
assert live.jupyter is False
live(1, 1, "done")
try:
    row = {{"epoch": 1.0, "train_loss": 0.5, "val_loss": 0.6, "learning_rate": 0.001, "seconds": 2.0}}
    notebook.LiveLossPlot({str(tmp_path)!r}, jupyter=True).on_epoch(row)
except ConfigError as error:
    print("error:", error)
print("pyplot" in str([m for m in sys.modules if m.startswith("matplotlib.pyplot")]))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = done.stdout.splitlines()
    assert lines[0] == "done  [1/1]" and "pip install jupyterlab" in lines[1] and lines[2] == "False"
