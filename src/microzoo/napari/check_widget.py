"""The Check widget: rank models and the classical baseline on the user's own images (``microzoo select``).

Images (and optionally their truth) come from layers, written as TIFF files into a fresh folder
under the settings' cache folder, or from folders. The candidates are the model chosen in the
Model widget, packages added from files, and (optionally) the configured zoo's models for the
task. :func:`microzoo.selection.select.select_models` runs in a :class:`~microzoo.napari._jobs.Job`;
the widget shows its ranking with the intervals as the report prints them, the verdict line, and
opens ``selection.html``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qtpy.QtCore import Qt, QUrl
from qtpy.QtGui import QDesktopServices
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from microzoo.errors import ConfigError, DataError, MicrozooError
from microzoo.napari._jobs import Job
from microzoo.napari._ranking_view import RankingView, best_model, header_of
from microzoo.napari._state import ChosenModel, state_of
from microzoo.napari.layer_files import LayerPair, write_pairs
from microzoo.napari.settings import load_settings, zoo_url
from microzoo.progress import ProgressCallback

#: the tasks select ranks on, with what a biologist calls them
TASKS = {
    "instances": "Instances: separate objects (nuclei, cells)",
    "semantic": "Semantic: foreground / classes per pixel",
    "restoration": "Restoration: denoised or restored images",
}
NO_TRUTH = "(no truth)"


def _button(text: str, tip: str, slot: Callable[[], object]) -> QPushButton:
    """A push button with its tooltip, calling ``slot`` (its return value ignored) when clicked."""
    button = QPushButton(text)
    button.setToolTip(tip)
    _on_click(button, slot)
    return button


def _on_click(button: QPushButton, slot: Callable[[], object]) -> None:
    def clicked(*_: object) -> None:
        slot()

    button.clicked.connect(clicked)


class CheckWidget(QWidget):
    """Check and select models on your images: the ranking with 95% intervals against the classical baseline.

    Public for tests: :meth:`run` (returns the Job), :meth:`cancel`, :meth:`add_model`,
    :meth:`open_report`, :meth:`use_best`; ``table``, ``verdict_label``, ``status``, ``selection``.
    """

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.selection: Any = None
        self.job: Job | None = None
        self._chosen_item: QListWidgetItem | None = None
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea()  # a dock is as tall as the window: scroll rather than squeeze the ranking
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        outer.addWidget(scroll)
        self.content = QWidget()
        scroll.setWidget(self.content)
        layout = QVBoxLayout(self.content)
        intro = QLabel(
            "Rank models and the classical baseline on your own images. With truth (annotations) the "
            "ranking uses the task's metric with 95% intervals; without it, agreement and trust (weaker)."
        )
        intro.setWordWrap(True)
        layout.addWidget(intro)
        layout.addWidget(self._images_box())
        layout.addWidget(self._models_box())
        layout.addLayout(self._run_row())
        self.ranking = RankingView()
        self.table, self.verdict_label = self.ranking.table, self.ranking.verdict_label
        self.report_button, self.best_button = self.ranking.report_button, self.ranking.best_button
        _on_click(self.report_button, self.open_report)
        _on_click(self.best_button, self.use_best)
        layout.addWidget(self.ranking)
        layout.addStretch(1)
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        state = state_of(self.viewer)
        state.model_changed.connect(self._on_model_changed)
        self._refresh_layers()
        self._on_model_changed(state.model)

    # --- the form -------------------------------------------------------------------------------

    def _images_box(self) -> QGroupBox:
        box = QGroupBox("Images and truth")
        form = QVBoxLayout(box)
        self.task = QComboBox()
        for key, text in TASKS.items():
            self.task.addItem(text, key)
        self.task.setToolTip("What the models do; it chooses the metric and the classical baseline.")
        self.task.currentIndexChanged.connect(self._refresh_layers)
        row = QFormLayout()
        row.addRow("Task", self.task)
        form.addLayout(row)
        self.source_tabs = QTabWidget()
        self.layers_table = QTableWidget(0, 2)
        self.layers_table.setHorizontalHeaderLabels(["Image layer", "Truth layer"])
        header_of(self.layers_table).setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        header_of(self.layers_table, vertical=True).setVisible(False)
        self.layers_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.layers_table.setToolTip(
            "Tick the image layers to check on. Truth: the labels layer annotated on that image (for "
            "restoration: the clean image). Give truth for every image or for none. A 3-D grey layer "
            "counts as a stack of 2-D images."
        )
        self.source_tabs.addTab(self.layers_table, "From layers")
        folders = QWidget()
        folder_form = QFormLayout(folders)
        self.images_dir = QLineEdit()
        self.truth_dir = QLineEdit()
        folder_form.addRow("Images", self._folder_row(self.images_dir, "A folder of your images (TIFF, PNG, ...)."))
        folder_form.addRow(
            "Truth", self._folder_row(self.truth_dir, "Optional: annotations with the same file names as the images.")
        )
        self.source_tabs.addTab(folders, "From folders")
        form.addWidget(self.source_tabs)
        return box

    def _folder_row(self, edit: QLineEdit, tip: str) -> QWidget:
        row = QWidget()
        line = QHBoxLayout(row)
        line.setContentsMargins(0, 0, 0, 0)
        edit.setToolTip(tip)
        edit.setPlaceholderText("optional" if "Optional" in tip else "folder")
        browse = _button(
            "Browse…", tip, lambda: edit.setText(QFileDialog.getExistingDirectory(self, tip) or edit.text())
        )
        line.addWidget(edit)
        line.addWidget(browse)
        return row

    def _models_box(self) -> QGroupBox:
        box = QGroupBox("Models to compare")
        form = QVBoxLayout(box)
        self.models = QListWidget()
        self.models.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.models.setToolTip("The model packages to rank; the classical baseline of the task always runs.")
        self.models.setMaximumHeight(90)
        form.addWidget(self.models)
        buttons = QHBoxLayout()
        add_file = _button("Add file…", "Add a model package: a .zip or an rdf.yaml.", self._add_file)
        add_folder = _button("Add folder…", "Add a model package folder (it holds rdf.yaml).", self._add_folder)
        remove = _button(
            "Remove", "Remove the selected models from the list.",
            lambda: [self.models.takeItem(self.models.row(i)) for i in self.models.selectedItems()],
        )  # fmt: skip
        for button in (add_file, add_folder, remove):
            buttons.addWidget(button)
        form.addLayout(buttons)
        self.use_zoo = QCheckBox("Also select from the zoo")
        self.use_zoo.setToolTip("Add the zoo's published 2-D models for the task that take these images.")
        self.search_words = QLineEdit()
        self.search_words.setPlaceholderText("search words, e.g. nuclei fluorescence")
        self.search_words.setToolTip("Words the zoo's models must match (title, tags, description).")
        zoo_row = QHBoxLayout()
        zoo_row.addWidget(self.use_zoo)
        zoo_row.addWidget(self.search_words)
        form.addLayout(zoo_row)
        self.zoo_label = QLabel()
        self.zoo_label.setWordWrap(True)
        form.addWidget(self.zoo_label)
        self._show_zoo()
        return box

    def _run_row(self) -> QVBoxLayout:
        column = QVBoxLayout()
        row = QHBoxLayout()
        self.run_button = _button("Run selection", "Run every model and the baseline, and rank them.", self.run)
        self.cancel_button = _button("Cancel", "Stop at the next image or model (nothing is ranked).", self.cancel)
        self.cancel_button.setEnabled(False)
        row.addWidget(self.run_button)
        row.addWidget(self.cancel_button)
        column.addLayout(row)
        self.progress_bar = QProgressBar()
        self.progress_bar.setTextVisible(True)
        self.status = QLabel("Pick images and models, then run the selection.")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        column.addWidget(self.progress_bar)
        column.addWidget(self.status)
        return column

    # --- layers and models ----------------------------------------------------------------------

    def _refresh_layers(self, *_: Any) -> None:
        """One row per image layer (kept ticks and truth choices); truth paired by name by default."""
        from napari.layers import Image, Labels

        kept = {
            self._row_name(r): (self._row_ticked(r), self._row_truth(r)) for r in range(self.layers_table.rowCount())
        }
        images = [layer for layer in self.viewer.layers if isinstance(layer, Image)]
        kind = Image if self.task.currentData() == "restoration" else Labels
        self.layers_table.setRowCount(len(images))
        for row, layer in enumerate(images):
            item = QTableWidgetItem(layer.name)
            item.setToolTip(layer.name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            ticked, truth = kept.get(layer.name, (True, None))
            item.setCheckState(Qt.CheckState.Checked if ticked else Qt.CheckState.Unchecked)
            self.layers_table.setItem(row, 0, item)
            choices = [t.name for t in self.viewer.layers if isinstance(t, kind) and t is not layer]
            combo = QComboBox()
            combo.addItems([NO_TRUTH, *choices])
            paired = [c for c in choices if c.startswith(layer.name)]
            combo.setCurrentText(truth if truth in choices else (paired[0] if paired else NO_TRUTH))
            combo.setToolTip(f"The truth of {layer.name}: a {kind.__name__.lower()} layer drawn on it, or none.")
            self.layers_table.setCellWidget(row, 1, combo)
        self.layers_table.setMinimumHeight(min(40 + 32 * max(len(images), 1), 220))  # up to 6 rows, then it scrolls

    def _row_name(self, row: int) -> str:
        item = self.layers_table.item(row, 0)
        return item.text() if item is not None else ""

    def _row_ticked(self, row: int) -> bool:
        item = self.layers_table.item(row, 0)
        return item is not None and item.checkState() == Qt.CheckState.Checked

    def _row_truth(self, row: int) -> str | None:
        combo = self.layers_table.cellWidget(row, 1)
        return None if combo is None or combo.currentText() == NO_TRUTH else combo.currentText()

    def layer_pairs(self) -> list[LayerPair]:
        """The ticked image layers with their truth layers' data (read in the main thread)."""
        pairs = []
        for row in range(self.layers_table.rowCount()):
            if not self._row_ticked(row):
                continue
            name, truth = self._row_name(row), self._row_truth(row)
            try:
                layer, truth_data = self.viewer.layers[name], (self.viewer.layers[truth].data if truth else None)
            except KeyError as error:
                raise DataError(f"the layer {error} was renamed or removed: pick the layers again") from None
            data = layer.data[0] if layer.multiscale else layer.data
            pairs.append(LayerPair(layer.name, data, bool(layer.rgb), truth_data))
        if not pairs:
            raise DataError("no image layer is ticked: open images in napari and tick them, or use 'From folders'")
        return pairs

    def add_model(self, source: str, note: str = "") -> QListWidgetItem:
        """Add a model package (path, zip, yaml, ``zoo:NAME/VERSION``) to the candidates."""
        item = QListWidgetItem(f"{source}{note}")
        item.setData(Qt.ItemDataRole.UserRole, source)
        item.setToolTip(source)
        self.models.addItem(item)
        return item

    def _add_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "A model package", "", "Model packages (*.zip *.yaml *.yml)")
        if path:
            self.add_model(path)

    def _add_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "A model package folder")
        if path:
            self.add_model(path)

    def _on_model_changed(self, chosen: ChosenModel | None) -> None:
        """The model chosen in the Model widget is a candidate (it replaces the previous choice)."""
        if self._chosen_item is not None and self.models.row(self._chosen_item) >= 0:
            self.models.takeItem(self.models.row(self._chosen_item))
        self._chosen_item = None
        if chosen is not None:
            self._chosen_item = self.add_model(chosen.source, "   (chosen in the Model widget)")

    def _show_zoo(self) -> str | None:
        try:
            url = zoo_url(load_settings())
        except ConfigError as error:
            url, problem = None, str(error)
        else:
            problem = "No zoo is set: give its address in the Model widget's settings to search it."
        self.use_zoo.setEnabled(url is not None)
        self.search_words.setEnabled(url is not None)
        self.zoo_label.setText(f"Zoo: {url}" if url else problem)
        return url

    # --- running --------------------------------------------------------------------------------

    def run(self) -> Job | None:
        """Start the selection in a Job; None (with the reason in ``status``) when the form is incomplete."""
        try:
            work = self._work()
        except MicrozooError as error:  # an incomplete form, unreadable settings: said in words
            self._say(str(error), error=True)
            return None
        self.selection = None
        self.ranking.clear()
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.report_button.setEnabled(False)
        self.best_button.setEnabled(False)
        self.progress_bar.setRange(0, 0)
        self._say("Starting the selection…")
        self.job = Job(work, parent=self)
        self.job.progressed.connect(self._on_progress)
        self.job.succeeded.connect(self._show_selection)
        self.job.failed.connect(lambda message: self._say(f"The selection failed: {message}", error=True))
        self.job.cancelled.connect(lambda message: self._say(f"Cancelled: {message}"))
        self.job.ended.connect(self._on_ended)
        return self.job.start()

    def cancel(self) -> None:
        if self.job is not None and self.job.running:
            self.job.cancel()
            self._say("Cancelling at the next image…")

    def _work(self) -> Any:
        """The selection to run, with every choice read now (in the main thread)."""
        from microzoo.package.zoo_ref import fetch_zoo_package, is_zoo_ref
        from microzoo.selection.select import select_models

        settings = load_settings()
        url = self._show_zoo()
        task = str(self.task.currentData())
        items = [self.models.item(i) for i in range(self.models.count())]
        models = [str(item.data(Qt.ItemDataRole.UserRole)) for item in items if item is not None]
        zoo = url if self.use_zoo.isChecked() and url else None
        words = self.search_words.text().strip()
        if not models and zoo is None:
            raise DataError("no models to compare: choose one in the Model widget, add package files, or tick the zoo")
        from_layers = self.source_tabs.currentIndex() == 0
        pairs = self.layer_pairs() if from_layers else []
        images_text, truth_text = self.images_dir.text().strip(), self.truth_dir.text().strip()
        if not from_layers and not images_text:
            raise DataError("give the folder of your images (or pick layers under 'From layers')")

        def work(progress: ProgressCallback) -> Any:
            settings.cache_dir.mkdir(parents=True, exist_ok=True)
            folder = Path(tempfile.mkdtemp(prefix="check-", dir=settings.cache_dir))
            if from_layers:
                written = write_pairs(pairs, folder)
                images, truth = written["images"], written.get("truth")
            else:
                images, truth = Path(images_text), (Path(truth_text) if truth_text else None)
            sources = [str(fetch_zoo_package(m, zoo=url)) if is_zoo_ref(m) else m for m in models]
            return select_models(
                images_dir=images, truth_dir=truth, task=task, out_dir=folder / "selection", models=sources,
                zoo=zoo, search=words, progress=progress,
            )  # fmt: skip

        return work

    def _on_progress(self, done: int, total: int, description: str) -> None:
        self.progress_bar.setRange(0, max(total, 1))
        self.progress_bar.setValue(min(done, max(total, 1)))
        self._say(description)

    def _on_ended(self) -> None:
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(1 if self.selection is not None else 0)

    def _say(self, text: str, *, error: bool = False) -> None:
        self.status.setText(text)
        self.status.setStyleSheet("color: #e05050" if error else "")

    # --- results --------------------------------------------------------------------------------

    def _show_selection(self, selection: Any) -> None:
        self.selection = selection
        best = self.ranking.show(selection)
        self.best_button.setEnabled(best is not None)
        self.best_button.setText(f"Use the best model: {best}" if best else "Use the best model")
        self._say(f"Done. The report: {selection.paths.get('report', '')}")

    def best_model(self) -> str | None:
        """The best-ranked model (not a baseline) of the last selection."""
        return None if self.selection is None else best_model(self.selection.ranking)

    def open_report(self) -> Path | None:
        """Open ``selection.html`` in the browser; returns its path."""
        if self.selection is None or "report" not in self.selection.paths:
            return None
        path = Path(self.selection.paths["report"])
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))
        return path

    def use_best(self) -> Job | None:
        """Open the best-ranked model and choose it in this viewer (the Run widget then uses it)."""
        best = self.best_model()
        if best is None:
            return None
        source = self.selection.sources[best]

        def work(progress: ProgressCallback) -> ChosenModel:
            from microzoo.runtime.predict import Model

            return ChosenModel(source, Model.open(source, progress=progress))

        self.job = Job(work, parent=self)

        def chosen(model: ChosenModel) -> None:
            state_of(self.viewer).choose(model)
            self._say(f"Chosen: {best}. The Run widget runs it.")

        self.job.succeeded.connect(chosen)
        self.job.failed.connect(lambda message: self._say(f"Could not open {best}: {message}", error=True))
        self._say(f"Opening {best}…")
        return self.job.start()
