"""The Run widget: apply the chosen model to an image layer, with progress, cancel and the trust note.

The prediction is the library's :func:`microzoo.trust.note.predict_array_with_note` (what
``microzoo predict`` runs, with the same trust note), started in a :class:`~microzoo.napari._jobs.Job`
so the viewer keeps answering. A NumPy layer is predicted in memory; a Dask or Zarr layer
streams tile by tile into an OME-Zarr in the settings' cache folder and is never loaded whole.
The results arrive as layers (:mod:`microzoo.napari.layers`); the note is shown beside them.
"""

from __future__ import annotations

import html
import time
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from microzoo.napari._jobs import Job
from microzoo.napari._state import ChosenModel, state_of
from microzoo.napari.layers import layer_input, layer_pixel_size, output_layers
from microzoo.napari.settings import load_settings

#: the colour of each verdict in the trust note panel
VERDICT_COLOURS = {"similar": "#2e7d32", "uncertain": "#ef6c00", "differs": "#c62828"}
#: uncertainty choices: label shown -> the library's method (None: a single prediction)
UNCERTAINTY = {
    "none": None,
    "flips and rotations (tta)": "tta",
    "dropout samples": "dropout",
}


class RunWidget(QWidget):
    """Run the model chosen in the Model widget on an image layer; outputs arrive as layers."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.state = state_of(napari_viewer)
        self.job: Job | None = None
        self._run_input: tuple[Any, str] | None = None  # the layer and axes of the running job
        self._layers: list[Any] = []  # the image layers listed in the picker, in its order
        settings = load_settings()
        self.cache_dir = settings.cache_dir
        self._default_format = settings.weight_format

        self.model_label = QLabel()
        self.model_label.setWordWrap(True)
        self.layer_box = QComboBox()
        self.layer_box.setToolTip("The image layer to predict (2-D, 3-D, time series or RGB).")
        self.axes_edit = QLineEdit()
        self.axes_edit.setToolTip(
            "What each dimension of the layer is, in order: y, x (rows, columns), z (planes), t (time), "
            "c (channels). Guessed from the layer; correct it if the guess is wrong, e.g. cyx."
        )
        self.tile_box = QSpinBox()
        self.tile_box.setRange(0, 8192)
        self.tile_box.setSingleStep(64)
        self.tile_box.setSpecialValueText("automatic")
        self.tile_box.setValue(settings.tile_size or 0)
        self.tile_box.setToolTip(
            "Edge of the tiles the image is cut into, in pixels. 'automatic': the largest tile that fits "
            "in memory. Smaller tiles use less memory and cancel sooner."
        )
        self.format_box = QComboBox()
        self.format_box.setToolTip("The model's weights to run; the results agree across formats.")
        self.uncertainty_box = QComboBox()
        self.uncertainty_box.setToolTip(
            "Predict several times and show how much the predictions disagree as an extra layer: "
            "flips and rotations (8 predictions), or dropout samples (offered for models with PyTorch weights: "
            "choose pytorch_state_dict; the network needs dropout layers). "
            "Not for layers that stream (Dask or Zarr data)."
        )
        self.run_button = QPushButton("Run")
        self.run_button.setToolTip("Predict the layer with the model; the outputs arrive as new layers.")
        self.run_button.clicked.connect(self._run_clicked)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop at the next tile; nothing is added.")
        self.cancel_button.clicked.connect(self.cancel)
        self.progress_bar = QProgressBar()
        self.progress_bar.setTextVisible(True)
        self.progress_bar.setFormat("")
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        self.verdict_label = QLabel("")
        self.verdict_label.setToolTip("Whether the image looks like the data the model is known to work on.")
        self.note_label = QLabel("")
        self.note_label.setWordWrap(True)
        self.note_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._layout()

        self.layer_box.currentIndexChanged.connect(self._layer_chosen)
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self._refresh_layers)
        self.state.model_changed.connect(self._model_chosen)
        self._refresh_layers()
        self._model_chosen(self.state.model)

    def _layout(self) -> None:
        form = QFormLayout()
        form.addRow("Model:", self.model_label)
        form.addRow("Image layer:", self.layer_box)
        form.addRow("Axes:", self.axes_edit)
        form.addRow("Tile size:", self.tile_box)
        form.addRow("Weight format:", self.format_box)
        form.addRow("Uncertainty:", self.uncertainty_box)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status_label)
        layout.addWidget(self.verdict_label)
        layout.addWidget(self.note_label)
        layout.addStretch(1)
        self._set_running(False)

    # --- choices -----------------------------------------------------------------------

    def _image_layers(self) -> list[Any]:
        from napari.layers import Image

        return [layer for layer in self.viewer.layers if isinstance(layer, Image)]

    def _refresh_layers(self, *_: Any) -> None:
        """The picker lists the viewer's image layers (after an insert, a removal or a rename), keeping the choice."""
        current = self.selected_layer()
        self._layers = self._image_layers()
        self.layer_box.blockSignals(True)
        self.layer_box.clear()
        self.layer_box.addItems([layer.name for layer in self._layers])
        if current in self._layers:
            self.layer_box.setCurrentIndex(self._layers.index(current))
        self.layer_box.blockSignals(False)
        for layer in self._layers:
            layer.events.name.connect(self._refresh_layers)  # connecting twice keeps one connection
        if self.selected_layer() is not current:
            self._layer_chosen()
        self._set_running(self.running)

    def _layer_chosen(self, *_: Any) -> None:
        layer = self.selected_layer()
        if layer is None:
            self.axes_edit.setText("")
            return
        try:
            self.axes_edit.setText(layer_input(layer)[1])
        except Exception as error:  # noqa: BLE001 - an unusual layer: the user types the axes
            self.axes_edit.setText("")
            self._status(str(error), error=True)

    def _model_chosen(self, chosen: ChosenModel | None) -> None:
        from microzoo.runtime.engines import SUPPORTED_FORMATS, available_formats

        self.format_box.clear()
        if chosen is None:
            self.model_label.setText("none: choose one in the Model widget")
        else:
            self.model_label.setText(f"<b>{chosen.model.package.name}</b>")
            formats = [f for f in available_formats(chosen.model.package) if f in SUPPORTED_FORMATS]
            self.format_box.addItems(formats)
            wanted = self._default_format if self._default_format in formats else chosen.model.weight_format
            self.format_box.setCurrentText(wanted)
        self.uncertainty_box.clear()
        offered = [label for label, method in UNCERTAINTY.items() if method != "dropout" or "pytorch_state_dict" in
                   (available_formats(chosen.model.package) if chosen is not None else [])]  # fmt: skip
        self.uncertainty_box.addItems(offered)
        self._set_running(self.running)

    def selected_layer(self) -> Any:
        """The image layer chosen in the picker, or None."""
        index = self.layer_box.currentIndex()
        return self._layers[index] if 0 <= index < len(self._layers) else None

    # --- running -----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.job is not None and self.job.running

    def run(self) -> Job | None:
        """Start predicting the chosen layer; returns the Job (None when something is missing: the status says what)."""
        from microzoo.runtime.predict import Model

        chosen, layer = self.state.model, self.selected_layer()
        if chosen is None or layer is None:
            self._status("choose a model in the Model widget and an image layer first", error=True)
            return None
        data = layer_input(layer)[0]
        axes = self.axes_edit.text().strip().lower()
        if len(axes) != data.ndim:
            self._status(f"the layer has {data.ndim} dimensions {tuple(data.shape)}: give {data.ndim} axes letters, "
                         f"not '{axes}'", error=True)  # fmt: skip
            return None
        model = chosen.model
        weights = self.format_box.currentText()
        if weights and weights != model.weight_format:
            model = Model(model.package, weights=weights, device=model.device, threads=model.threads)
        tile = self.tile_box.value() or None
        pixel_size, unit = layer_pixel_size(layer, axes)
        uncertainty = UNCERTAINTY[self.uncertainty_box.currentText()]
        stream_to = self.cache_dir / "predictions" / f"{_safe(layer.name)}-{time.strftime('%Y%m%d-%H%M%S')}"

        def work(progress: Any) -> Any:
            from microzoo.trust.note import predict_array_with_note

            return predict_array_with_note(
                model, data, axes=axes, tile=tile, uncertainty=uncertainty,
                stream_to=stream_to, name=layer.name, pixel_size=pixel_size, unit=unit, progress=progress,
            )  # fmt: skip

        self._run_input = (layer, axes)
        self.job = Job(work, parent=self)
        self.job.progressed.connect(self._progressed)
        self.job.succeeded.connect(lambda result: self._succeeded(result, model))
        self.job.failed.connect(lambda message: self._status(message, error=True))
        self.job.cancelled.connect(lambda _: self._status("cancelled: no layer was added"))
        self.job.ended.connect(lambda: self._set_running(False))
        self._show_note(None)
        self.progress_bar.setRange(0, 0)  # busy until the first progress report
        self._status(f"predicting {layer.name} with {chosen.model.package.name}…")
        self._set_running(True)
        return self.job.start()

    def _run_clicked(self) -> None:
        self.run()

    def cancel(self) -> None:
        """Stop the running prediction at its next tile (nothing is added)."""
        if self.running and self.job is not None:
            self.job.cancel()
            self._status("cancelling at the next tile…")

    def _progressed(self, done: int, total: int, description: str) -> None:
        self.progress_bar.setRange(0, max(total, 1))
        self.progress_bar.setValue(min(done, max(total, 1)))
        counted = f"{done}/{total}" in description  # the streaming runner says "tile 5/169, ..."
        self.progress_bar.setFormat(description if counted else f"{description}: %v of %m")

    def _succeeded(self, prediction: Any, model: Any) -> None:
        assert self._run_input is not None
        layer, axes = self._run_input
        added = []
        for data, kwargs, kind in output_layers(prediction, model, layer, axes):
            added.append(getattr(self.viewer, f"add_{kind}")(data, **kwargs).name)
        where = f"; written to {', '.join(str(p) for p in prediction.paths.values())}" if prediction.paths else ""
        notices = "".join(f"<br>{_text(n)}" for n in prediction.notices)
        self._status(_text(f"added {', '.join(added)}{where}") + notices, rich=True)
        self._show_note(prediction.note)

    # --- display -----------------------------------------------------------------------

    def _set_running(self, running: bool) -> None:
        ready = self.state.model is not None and self.layer_box.count() > 0
        self.run_button.setEnabled(ready and not running)
        self.cancel_button.setEnabled(running)
        for box in (self.layer_box, self.axes_edit, self.tile_box, self.format_box, self.uncertainty_box):
            box.setEnabled(not running)
        if not running:
            self.progress_bar.setRange(0, 1)
            self.progress_bar.setValue(0)
            self.progress_bar.setFormat("ready")

    def _status(self, text: str, *, error: bool = False, rich: bool = False) -> None:
        self.status_label.setStyleSheet(f"color: {VERDICT_COLOURS['differs']};" if error else "")
        self.status_label.setText(text if rich else _text(text))

    def _show_note(self, note: Any) -> None:
        """The trust note beside the result: the verdict in colour, the headline and the reasons."""
        if note is None:
            self.verdict_label.setText("")
            self.verdict_label.setStyleSheet("")
            self.note_label.setText("")
            return
        image = note.images[0] if note.images else None
        verdict = image.verdict if image is not None else "not checked"
        colour = VERDICT_COLOURS.get(verdict, "#616161")
        self.verdict_label.setText(f"Trust: {verdict}")
        self.verdict_label.setStyleSheet(
            f"background-color: {colour}; color: white; font-weight: bold; padding: 4px; border-radius: 3px;"
        )
        reasons = list(image.reasons) if image is not None and verdict != "similar" else []
        lines = [_text(note.headline)] + [f"• {_text(r)}" for r in reasons] + [_text(n) for n in note.notes]
        if image is not None and image.evidence:
            lines.append(f"<i>{_text(image.evidence)}</i>")
        self.note_label.setText("<br>".join(lines))


def _safe(name: str) -> str:
    """A layer name as a folder name."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:60] or "layer"


def _text(words: str) -> str:
    """Library words shown in a rich-text label (``<`` and ``&`` kept as they are)."""
    return html.escape(words, quote=False)
