"""Helpers that keep a training notebook a short sequence of calls a biologist can read.

A front end (like the CLI and the napari plugin): it only resolves folders, draws and shows;
the work is the library's. Every helper returns an object Jupyter shows as a picture or a
table (its ``_repr_html_`` / ``_repr_markdown_``) and that prints as text elsewhere, so
nothing here needs IPython except the live loss plot's redrawing, which falls back to text
lines outside a notebook. Example (the cells of ``notebooks/train_*.ipynb``)::

    from microzoo import notebook
    from microzoo.train import semantic_config

    images = notebook.data_folder(None, default="isbi2012/train/images")
    labels = notebook.data_folder(None, default="isbi2012/train/labels")
    notebook.show_data(images, labels, task="semantic", n=3)
    config = semantic_config(images=images, labels=labels)
    result = notebook.train_live(config, out_dir="runs/unet")
    notebook.qc_table(result)
    notebook.qc_panels(result, n=2)
    notebook.predict_images(result.package, images, task=result.task, out="runs/unet/predictions")
    notebook.check_package(result.package)

Drawing uses matplotlib's object API (no pyplot, no display needed).
"""

from __future__ import annotations

from microzoo._lazy import lazy_exports

#: public name -> the module that defines it
_EXPORTS = {
    "Picture": "display", "Pictures": "display", "Table": "display",
    "check_config": "data", "data_folder": "data", "output_folder": "data", "quick_config": "data", "show_data": "data",
    "LiveLossPlot": "live", "loss_figure": "live", "read_loss_csv": "live", "train_live": "live",
    "qc_panels": "quality", "qc_table": "quality",
    "check_package": "package", "predict_images": "package", "zip_package": "package",
}  # fmt: skip
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
