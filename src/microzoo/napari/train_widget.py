"""The Train widget: train a model on layers or folders, watch its loss, stop early, check, use and publish it.

The same run as ``microzoo train TASK --images ...`` (:func:`microzoo.train.run.train`): the
task's configuration comes from its factory (:data:`microzoo.train.tasks.registry.TASKS`), so
every parameter starts at the library's default. Layers are written as TIFF files into a new
folder under the settings' cache folder first, as the library trains from folders. The loss
curve is drawn from the library's ``on_epoch`` rows (sent from the training thread through a Qt
signal); "Stop early" ends training after the current step and still checks and exports what
was learnt, "Cancel" abandons the run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from microzoo.errors import DataError, MicrozooError
from microzoo.napari._jobs import Job
from microzoo.napari.layer_files import LayerPair, write_pairs
from microzoo.napari.train_inputs import PARTNERS, default_config, new_folder, task_partner
from microzoo.napari.train_result import ResultPanel, start_slot
from microzoo.progress import ProgressCallback
from microzoo.train.tasks.registry import TASKS


class TrainWidget(QWidget):
    """Train, stop early, see the QC verdict, use the model, publish it to the zoo."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.job: Job | None = None
        self.result: Any = None
        self.curve_points: list[dict[str, float]] = []
        self._stop_early = threading.Event()
        self._trainings: list[Job] = []  # cancelled when the widget goes (the viewer closes)
        self.destroyed.connect(_canceller(self._trainings))
        layout = QVBoxLayout(self)
        layout.addWidget(self._task_box())
        layout.addWidget(self._data_box())
        layout.addWidget(self._parameter_box())
        layout.addLayout(self._buttons())
        layout.addWidget(self._curve())
        self.result_panel = ResultPanel(napari_viewer, self._say)
        layout.addWidget(self.result_panel)
        layout.addStretch(1)
        # each epoch's row (a dict) from the training thread; the relay outlives the widget, so a
        # run still going when the viewer closes never emits on a deleted object
        self._relay = _Relay()
        self.epoch_finished = self._relay.row
        self.epoch_finished.connect(self._add_point)
        for event in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            event.connect(self._refresh_layers)
        self._task_changed()

    # ------------------------------------------------------------------ the form

    def _task_box(self) -> QGroupBox:
        box = QGroupBox("What to learn")
        form = QFormLayout(box)
        self.task = QComboBox()
        for name, task in TASKS.items():
            self.task.addItem(f"{name}: {task.summary}", name)
            self.task.setItemData(self.task.count() - 1, task.does, 3)  # 3: Qt's tooltip role
        self.task.setCurrentIndex(list(TASKS).index("n2v"))
        self.task.setToolTip("What the model learns, and from what (the same tasks as `microzoo train`).")
        self.task.currentIndexChanged.connect(self._task_changed)
        form.addRow("Task", self.task)
        self.three_d = QCheckBox("3-D (train on z stacks)")
        self.three_d.setToolTip("Train a 3-D network on z stacks; unticked, every plane is a 2-D training image.")
        self.three_d.toggled.connect(self._task_changed)
        form.addRow("", self.three_d)
        self.name = QLineEdit()
        self.name.setPlaceholderText("automatic: task and image name")
        self.name.setToolTip("The model's name in its package and in the zoo.")
        form.addRow("Model name", self.name)
        return box

    def _data_box(self) -> QGroupBox:
        box = QGroupBox("Training data")
        column = QVBoxLayout(box)
        choice = QHBoxLayout()
        self.from_layers = QRadioButton("from layers")
        self.from_folders = QRadioButton("from folders")
        self.from_layers.setChecked(True)
        self.from_layers.setToolTip("Train on layers open in the viewer (written as TIFF to the cache folder).")
        self.from_folders.setToolTip("Train on folders of images (TIFF, PNG, Zarr); partners are named alike.")
        self.from_layers.toggled.connect(self._task_changed)
        choice.addWidget(QLabel("Source:"))
        choice.addWidget(self.from_layers)
        choice.addWidget(self.from_folders)
        choice.addStretch(1)
        column.addLayout(choice)
        self.layer_panel, self.folder_panel = QWidget(), QWidget()
        layer_form, folder_form = QFormLayout(self.layer_panel), QFormLayout(self.folder_panel)
        for form in (layer_form, folder_form):
            form.setContentsMargins(0, 0, 0, 0)
        self.image_layer, self.partner_layer = QComboBox(), QComboBox()
        self.image_layer.setToolTip("The images to learn from (the noisy images for denoising).")
        self.partner_layer.setToolTip("Labels (segmentation) or clean images (CARE; N2V: for QC only), same size.")
        self.partner_label = QLabel("Partner layer")
        layer_form.addRow("Image layer", self.image_layer)
        layer_form.addRow(self.partner_label, self.partner_layer)
        self.image_folder, self.partner_folder = _FolderField("input images"), _FolderField("partner images")
        self.partner_folder_label = QLabel("Partner folder")
        folder_form.addRow("Image folder", self.image_folder)
        folder_form.addRow(self.partner_folder_label, self.partner_folder)
        column.addWidget(self.layer_panel)
        column.addWidget(self.folder_panel)
        output = QFormLayout()
        self.output = _FolderField("the output (a new folder)")
        self.output.edit.setPlaceholderText("automatic: a new folder in the cache folder")
        output.addRow("Output folder", self.output)
        column.addLayout(output)
        return box

    def _parameter_box(self) -> QGroupBox:
        box = QGroupBox("Main parameters (library defaults)")
        form = QFormLayout(box)
        self.epochs, self.steps, self.batch = QSpinBox(), QSpinBox(), QSpinBox()
        for spin, top in ((self.epochs, 100000), (self.steps, 100000), (self.batch, 1024)):
            spin.setRange(1, top)
        self.patch = QLineEdit()
        self.rate = QDoubleSpinBox()
        self.rate.setDecimals(6)
        self.rate.setRange(1e-6, 1.0)
        self.rate.setSingleStep(1e-4)
        self.validation = QDoubleSpinBox()
        self.validation.setRange(0.01, 0.9)
        self.validation.setSingleStep(0.05)
        rows = (("Epochs", self.epochs, "Passes of 'steps per epoch' batches; training may stop sooner "
                 "(no progress for a while, or 'Stop early')."),
                ("Steps per epoch", self.steps, "Batches of random patches per epoch."),
                ("Patch size", self.patch, "Pixels per patch: y x (3-D: z y x), multiples of 2^network depth."),
                ("Batch size", self.batch, "Patches per step; lower it if memory runs out."),
                ("Learning rate", self.rate, "Step size of the optimiser (AdamW)."),
                ("Validation fraction", self.validation, "Share of the images kept aside to pick the best epoch "
                 "and to compare with the classical baseline (one image is cut in two)."))  # fmt: skip
        for label, field, tip in rows:
            field.setToolTip(tip)
            form.addRow(label, field)
        return box

    def _buttons(self) -> QVBoxLayout:
        column = QVBoxLayout()
        row = QHBoxLayout()
        self.train_button = QPushButton("Train")
        self.stop_button = QPushButton("Stop early")
        self.cancel_button = QPushButton("Cancel")
        self.train_button.setToolTip("Train, check against the classical baseline and export the package.")
        self.stop_button.setToolTip("End training after this step; the model learnt so far is checked and exported.")
        self.cancel_button.setToolTip("Abandon the run: nothing is exported.")
        self.train_button.clicked.connect(start_slot(self.train))
        self.stop_button.clicked.connect(self.stop_early)
        self.cancel_button.clicked.connect(self.cancel)
        for button in (self.train_button, self.stop_button, self.cancel_button):
            row.addWidget(button)
        self.progress = QProgressBar()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        column.addLayout(row)
        column.addWidget(self.progress)
        column.addWidget(self.status)
        self._set_running(False)
        return column

    def _curve(self) -> QWidget:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator

        figure = Figure(figsize=(4, 2.4), layout="constrained")
        self.canvas = FigureCanvasQTAgg(figure)
        self.canvas.setMinimumHeight(180)
        self.axes = figure.add_subplot(1, 1, 1)
        (self.train_line,) = self.axes.plot([], [], "o-", label="training loss", markersize=3)
        (self.val_line,) = self.axes.plot([], [], "o-", label="validation loss", markersize=3)
        self.axes.set(xlabel="epoch", ylabel="loss", title="Loss per epoch")
        self.axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        self.axes.legend(fontsize="small")
        self.canvas.setToolTip("Both should fall; a validation loss rising while training loss falls is over-fitting.")
        return self.canvas

    # ------------------------------------------------------------------ form state

    def _task_changed(self, *_: Any) -> None:
        """Show the library's defaults for the task and the partner it trains with."""
        task = self.task.currentData()
        config = default_config(task, 3 if self.three_d.isChecked() else 2)
        self.epochs.setValue(config.training.epochs)
        self.steps.setValue(config.training.steps_per_epoch)
        self.batch.setValue(config.training.batch_size)
        self.rate.setValue(config.training.learning_rate)
        self.validation.setValue(config.data.validation_fraction)
        self.patch.setText(" x ".join(str(s) for s in config.data.patch_size))
        self.layer_panel.setVisible(self.from_layers.isChecked())
        self.folder_panel.setVisible(not self.from_layers.isChecked())
        role, required = task_partner(task)
        for widget in (self.partner_label, self.partner_layer, self.partner_folder_label, self.partner_folder):
            widget.setVisible(role is not None)
        if role is not None:
            suffix = "" if required else " (optional, for QC)"
            self.partner_label.setText(PARTNERS[role][1] + suffix)
            self.partner_folder_label.setText(PARTNERS[role][2] + suffix)
        self._refresh_layers()

    def _refresh_layers(self, *_: Any) -> None:
        role, required = task_partner(self.task.currentData())
        kind = PARTNERS[role][0] if role else "Image"
        placeholder = "(none)" if not required else "(choose a layer)"
        for combo, wanted, first in ((self.image_layer, "Image", None), (self.partner_layer, kind, placeholder)):
            current = combo.currentText()
            combo.clear()
            if first:
                combo.addItem(first)
            combo.addItems([layer.name for layer in self.viewer.layers if type(layer).__name__ == wanted])
            if current:
                combo.setCurrentText(current)

    def _set_running(self, running: bool) -> None:
        self.train_button.setEnabled(not running)
        self.stop_button.setEnabled(running)
        self.cancel_button.setEnabled(running)

    def _say(self, text: str, *, error: bool = False) -> None:
        self.status.setText(text)
        self.status.setStyleSheet("color: #d62728" if error else "")

    # ------------------------------------------------------------------ training

    def train(self) -> Job | None:
        """Start training (a :class:`Job`); None with the reason in the status line when the form is incomplete."""
        from microzoo.napari.settings import load_settings
        from microzoo.train.config import package_name, short_form_config
        from microzoo.train.run import train

        try:
            settings = load_settings()
            task, dims = self.task.currentData(), 3 if self.three_d.isChecked() else 2
            patch = tuple(int(p) for p in self.patch.text().replace("x", " ").replace(",", " ").split())
            prepare, source_name = self._data_source(task, dims, settings.cache_dir)
            name = self.name.text().strip() or package_name(f"{task}-{source_name}")
            out = Path(self.output.text()) if self.output.text() else new_folder(settings.cache_dir / "models", name)
            options: dict[str, Any] = {
                "epochs": self.epochs.value(), "steps_per_epoch": self.steps.value(), "name": name,
                "batch_size": self.batch.value(), "patch_size": patch, "spatial_dims": dims,
            }  # fmt: skip
        except (MicrozooError, ValueError) as error:
            self._say(f"Cannot train: {error}", error=True)
            return None
        rate, fraction = self.rate.value(), self.validation.value()
        relay, stop = self._relay, self._stop_early  # the work holds these, not the widget

        def work(progress: ProgressCallback) -> Any:
            config = short_form_config(task, **prepare(), **options)
            config.training.learning_rate, config.data.validation_fraction = rate, fraction
            return train(config, out_dir=out, progress=progress, on_epoch=relay.row.emit,
                         should_stop=stop.is_set)  # fmt: skip

        self._stop_early.clear()
        self.curve_points.clear()
        self._draw_curve()
        self.result_panel.show_result(None)
        self._say(f"Training {task} into {out} ...")
        self._set_running(True)
        self.job = Job(work)
        self._trainings[:] = [self.job]
        self.job.progressed.connect(self._progressed)
        self.job.succeeded.connect(self._trained)
        self.job.failed.connect(self._failed)
        self.job.cancelled.connect(self._cancelled)
        self.job.ended.connect(self._ended)
        return self.job.start()

    def _data_source(self, task: str, dims: int, cache: Path) -> tuple[Any, str]:
        """A function giving the factory's folders (writing layers first, in the worker), and the data's name."""
        role, required = task_partner(task)
        if self.from_folders.isChecked():
            images = self.image_folder.text()
            if not images:
                raise DataError("choose the folder of input images")
            partner = self.partner_folder.text() if role else ""
            if role and required and not partner:
                raise DataError(f"{task} needs a folder of {PARTNERS[role][2].lower()}")
            folders = {"images": Path(images), **({role: Path(partner)} if role and partner else {})}
            return (lambda: folders), Path(images).name
        layers = {layer.name: layer for layer in self.viewer.layers}
        image = layers.get(self.image_layer.currentText())  # None for the placeholder
        if image is None:
            raise DataError("open an image layer to train on (or choose 'from folders')")
        partner_layer = layers.get(self.partner_layer.currentText()) if role else None
        if role and required and partner_layer is None:
            raise DataError(f"{task} needs a {PARTNERS[role][1].lower()} of the same size as the image layer")
        level0 = image.data[0] if getattr(image, "multiscale", False) else image.data
        pair = LayerPair(image.name, level0, bool(image.rgb), None if partner_layer is None else partner_layer.data)
        folder = new_folder(cache / "training-data", image.name)
        return (lambda: write_pairs([pair], folder, truth_role=role or "truth", spatial_dims=dims)), image.name

    def stop_early(self) -> None:
        """End training after the current step; the model is still checked and exported."""
        if self.job is not None and self.job.running:
            self._stop_early.set()
            self._say("Stopping after this step: the model learnt so far is checked and exported ...")

    def cancel(self) -> None:
        """Abandon the run at the next step (nothing is exported)."""
        if self.job is not None and self.job.running:
            self.job.cancel()
            self._say("Cancelling ...")

    def _progressed(self, done: int, total: int, description: str) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(min(done, max(total, 1)))
        if not self._stop_early.is_set():
            self.status.setText(description)

    def _add_point(self, row: dict[str, float]) -> None:
        self.curve_points.append(row)
        self._draw_curve()

    def _draw_curve(self) -> None:
        epochs = [row["epoch"] for row in self.curve_points]
        self.train_line.set_data(epochs, [row["train_loss"] for row in self.curve_points])
        validation = [row.get("val_loss", float("nan")) for row in self.curve_points]
        self.val_line.set_data(epochs, validation)
        self.axes.relim()
        self.axes.autoscale_view()
        self.canvas.draw_idle()

    # the jobs' slots are the widget's methods: Qt drops them with the widget (a run may outlive it)

    def _trained(self, result: Any) -> None:
        self.result = result
        self._say("Done: the model is checked and exported." if result.package else "Done (export switched off).")
        self.result_panel.show_result(result)

    def _failed(self, message: str) -> None:
        self._say(f"Training failed: {message}", error=True)

    def _cancelled(self, message: str) -> None:
        self._say(f"Training cancelled: {message}; nothing was exported.")

    def _ended(self) -> None:
        self._set_running(False)


class _Relay(QObject):
    """Carries rows from the training thread to the widget in the main thread (a queued signal)."""

    row = Signal(object)


def _canceller(jobs: list[Job]) -> Callable[..., None]:
    """A slot cancelling ``jobs`` (it holds the list, not the widget, which is gone when it runs)."""

    def cancel(*_: Any) -> None:
        for job in jobs:
            job.cancel()

    return cancel


class _FolderField(QWidget):
    """A path field with a "Browse" button opening a folder dialog."""

    def __init__(self, what: str) -> None:
        super().__init__()
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        self.edit = QLineEdit()
        self.edit.setToolTip(f"The folder of {what}.")
        browse = QPushButton("Browse...")
        browse.clicked.connect(lambda: self.edit.setText(QFileDialog.getExistingDirectory(self, f"Choose {what}")))
        row.addWidget(self.edit)
        row.addWidget(browse)

    def text(self) -> str:
        return self.edit.text().strip()

    def setText(self, text: str) -> None:  # noqa: N802 - Qt's naming
        self.edit.setText(text)
