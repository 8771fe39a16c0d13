"""The Model widget: choose a model (a package folder, zip or description, or a zoo search), see what it
does, test it, and make it the viewer's model for the other widgets.

Opening, searching and testing run in a :class:`~microzoo.napari._jobs.Job`; what they compute is the
library's (what ``microzoo info``, ``microzoo test`` and ``microzoo zoo search`` show). The settings
panel at the bottom edits the persistent settings (:mod:`microzoo.napari.settings`).
"""

from __future__ import annotations

import html
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtGui import QPixmap
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from microzoo.errors import ConfigError, MicrozooError
from microzoo.napari._jobs import Job
from microzoo.napari._state import ChosenModel, state_of
from microzoo.napari.model_choice import OpenedModel, describe_model, open_model, search_zoo, test_words, zoo_test_words
from microzoo.napari.settings import Settings, load_settings, save_settings, settings_path, zoo_url
from microzoo.runtime.engines import SUPPORTED_FORMATS

COVER_WIDTH = 260
AUTOMATIC_FORMAT = "automatic (the first the model has)"


class ModelWidget(QWidget):
    """Choose the model the other microzoo widgets use; see its description, test it, edit settings."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.opened: OpenedModel | None = None
        self.job: Job | None = None
        problem = None
        try:
            self.settings = load_settings()
        except ConfigError as error:
            self.settings, problem = Settings(), str(error)
        content = QWidget()
        layout = QVBoxLayout(content)
        layout.addWidget(self._choose_box())
        layout.addWidget(self._details_box())
        layout.addWidget(self._settings_box())
        layout.addStretch(1)
        scroll = QScrollArea()  # a long description scrolls instead of squeezing the labels
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(content)
        self._scroll, self._content = scroll, content
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        self._show_settings()
        self._set_running(False)
        state_of(napari_viewer).model_changed.connect(self._model_chosen)
        if problem:
            self._status(problem, error=True)

    def showEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        """Once styled (napari's theme widens buttons), keep the scroll area as wide as its content."""
        super().showEvent(event)
        self._fit_width()

    def _fit_width(self) -> None:
        bar = self._scroll.verticalScrollBar()
        width = bar.sizeHint().width() if bar is not None else 16
        self._scroll.setMinimumWidth(self._content.minimumSizeHint().width() + width + 2)

    # -- the panels
    def _choose_box(self) -> QGroupBox:
        box = QGroupBox("Choose a model")
        form = QVBoxLayout(box)
        self.source_edit = QLineEdit()
        self.source_edit.setPlaceholderText("model folder, .zip, .yaml or zoo:NAME")
        self.source_edit.setToolTip(
            "Where the model is: a package folder, its .zip or its bioimageio.yaml on this computer, "
            "or zoo:NAME/VERSION for a model of the zoo set under Settings"
        )
        self.source_edit.returnPressed.connect(self._open_typed)
        self.open_button = _button("Open", "Open the model named in the field", self._open_typed)
        self.folder_button = _button("Choose folder…", "Choose a model package folder", self._choose_folder)
        self.file_button = _button(
            "Choose .zip or .yaml…", "Choose a model package .zip or its bioimageio.yaml", self._choose_file
        )
        form.addLayout(_row(self.source_edit, self.open_button))
        form.addLayout(_row(self.folder_button, self.file_button))
        self.search_edit = QLineEdit()
        self.search_edit.setPlaceholderText("search the zoo, e.g. nuclei")
        self.search_edit.setToolTip("Search the published models of the zoo set under Settings")
        self.search_edit.returnPressed.connect(self._search_typed)
        self.search_button = _button("Search zoo", "Search the zoo's published models", self._search_typed)
        form.addLayout(_row(self.search_edit, self.search_button))
        self.results_list = QListWidget()
        self.results_list.setToolTip("Models the zoo found; double-click one to open it")
        self.results_list.setVisible(False)
        self.results_list.itemDoubleClicked.connect(self._open_result)
        form.addWidget(self.results_list)
        self.progress_bar = QProgressBar()
        self.progress_bar.setTextVisible(True)
        self.cancel_button = _button("Cancel", "Stop opening, searching or testing", self._cancel)
        form.addLayout(_row(self.progress_bar, self.cancel_button))
        self.status_label = _label("Open a model package or search the zoo.")
        form.addWidget(self.status_label)
        return box

    def _details_box(self) -> QGroupBox:
        box = QGroupBox("Chosen model")
        layout = QVBoxLayout(box)
        self.cover_label = QLabel()
        self.cover_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.name_label = _label("No model chosen yet.")
        self.name_label.setStyleSheet("font-weight: bold; font-size: 14px")
        self.description_label = _label("")
        self.inputs_label = _label("")
        self.outputs_label = _label("")
        self.licence_label = _label("")
        self.authors_label = _label("")
        self.citation_label = _label("")
        self.test_label = _label("")
        self.test_button = _button(
            "Test", "Run the model on its own test input and compare with its test output (microzoo test)", self.test
        )
        for widget in (self.cover_label, self.name_label, self.description_label, self.inputs_label):
            layout.addWidget(widget)
        for widget in (
            self.outputs_label,
            self.authors_label,
            self.licence_label,
            self.citation_label,
            self.test_label,
        ):
            layout.addWidget(widget)
        layout.addLayout(_row(self.test_button, stretch=True))
        return box

    def _settings_box(self) -> QGroupBox:
        box = QGroupBox("Settings (kept for next time)")
        form = QFormLayout(box)
        self.zoo_edit = QLineEdit()
        from_environment = zoo_url(Settings(cache_dir=self.settings.cache_dir))
        self.zoo_edit.setPlaceholderText(from_environment or "e.g. http://127.0.0.1:8000")
        self.zoo_edit.setToolTip(
            "The address of the zoo to search and download models from (empty: $MICROZOO_ZOO"
            + (f", now {from_environment})" if from_environment else ", not set)")
        )
        self.zoo_edit.editingFinished.connect(self._save_settings)
        self.weights_combo = QComboBox()
        self.weights_combo.addItems([AUTOMATIC_FORMAT, *SUPPORTED_FORMATS])
        self.weights_combo.setToolTip("The weights to run when a model has several; others are used if it lacks them")
        self.weights_combo.currentIndexChanged.connect(self._save_settings)
        self.tile_spin = QSpinBox()
        self.tile_spin.setRange(0, 8192)
        self.tile_spin.setSingleStep(64)
        self.tile_spin.setSpecialValueText("automatic")
        self.tile_spin.setSuffix(" px")
        self.tile_spin.setToolTip("Default tile edge for large images (automatic: chosen from the model and memory)")
        self.tile_spin.editingFinished.connect(self._save_settings)
        form.addRow("Zoo address", self.zoo_edit)
        form.addRow("Weight format", self.weights_combo)
        form.addRow("Tile size", self.tile_spin)
        box.setToolTip(f"Saved in {settings_path()}")
        return box

    # -- public actions (tests call these)
    def open_source(self, text: str) -> Job:
        """Open the model at ``text`` (path or ``zoo:NAME[/VERSION]``) in a Job; chosen in the viewer when done."""
        text = text.strip()
        settings = self.settings
        self._status(f"Opening {text} …")
        return self._start(lambda progress: open_model(text, settings, progress), self._show_model)

    def search(self, words: str) -> Job:
        """Search the zoo for ``words`` in a Job; the results fill the list."""
        settings = self.settings
        self.results_list.clear()
        self._status(f"Searching the zoo for '{words}' …")
        return self._start(lambda progress: search_zoo(words, settings, progress), self._show_results)

    def test(self) -> Job:
        """Reproduce the chosen model's test output from its test input (``microzoo test``) in a Job."""
        from microzoo.runtime.reproduce import test_package

        if self.opened is None:
            raise ConfigError("open a model first")
        package = self.opened.model.package
        self.test_label.setText("Testing: running the model on its test input …")
        self.test_label.setStyleSheet("")
        return self._start(
            lambda progress: test_package(package, progress=progress),
            self._show_test,
            stopped=lambda message: self.test_label.setText(f"Test not finished: {message}"),
        )

    # -- job plumbing
    def _start(self, work: Any, show: Any, stopped: Any = None) -> Job:
        """Run ``work`` in a Job: ``show(result)`` on success, ``stopped(message)`` on failure or cancel."""
        job = Job(work, parent=self)
        job.succeeded.connect(show)
        job.progressed.connect(self._progressed)
        job.failed.connect(lambda message: self._status(message, error=True))
        job.cancelled.connect(lambda message: self._status(f"Stopped ({message})."))
        if stopped is not None:
            job.failed.connect(stopped)
            job.cancelled.connect(stopped)
        job.ended.connect(lambda: self._set_running(False))
        self.job = job
        self._set_running(True)
        return job.start()

    def _set_running(self, running: bool) -> None:
        for button in (self.open_button, self.folder_button, self.file_button, self.search_button):
            button.setEnabled(not running)
        self.test_button.setEnabled(not running and self.opened is not None)
        self.cancel_button.setEnabled(running)
        self.progress_bar.setVisible(running)
        self.cancel_button.setVisible(running)
        if not running:
            self.progress_bar.setRange(0, 1)
            self.progress_bar.setValue(0)
            self.progress_bar.setFormat("")

    def _progressed(self, done: int, total: int, description: str) -> None:
        self.progress_bar.setRange(0, max(total, 1))
        self.progress_bar.setValue(min(done, max(total, 1)))
        self.progress_bar.setFormat(f"{description} %v/%m" if total > 1 else description)

    def _cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()

    def _status(self, text: str, *, error: bool = False) -> None:
        self.status_label.setText(text)
        self.status_label.setStyleSheet("color: #e05050" if error else "")

    # -- showing results
    def _model_chosen(self, chosen: ChosenModel | None) -> None:
        """Another widget chose a model (Train's "Use this model", Check's "Use the best"): show it."""
        if chosen is None or (self.opened is not None and chosen.model is self.opened.model):
            return
        try:
            self._show_model(describe_model(chosen.source, chosen.model), choose=False)
        except Exception as error:  # noqa: BLE001 - a model another widget chose must not break this one
            self._status(f"Chosen elsewhere: {chosen.source} (cannot describe it: {error})", error=True)

    def _show_model(self, opened: OpenedModel, *, choose: bool = True) -> None:
        self.opened = opened
        s = opened.summary
        self.name_label.setText(s.name)
        self.description_label.setText(s.description)
        self.inputs_label.setText(_tensors_html("Input", s.inputs))
        self.outputs_label.setText(_tensors_html("Output", s.outputs))
        self.licence_label.setText(f"<b>Licence:</b> {html.escape(s.license or 'not stated')}")
        authors = ", ".join(a.split(";")[0] for a in s.authors) or "not stated"
        weights = f"{', '.join(s.weight_formats) or 'none microzoo runs'} (runs {opened.model.weight_format})"
        self.authors_label.setText(f"<b>Authors:</b> {html.escape(authors)}<br><b>Weights:</b> {html.escape(weights)}")
        citations = "<br>".join(html.escape(c) for c in s.citations) or "none given"
        self.citation_label.setText(f"<b>Cite:</b> {citations}")
        self.test_label.setStyleSheet("")
        if opened.zoo_version is not None:
            self.test_label.setText(zoo_test_words(opened.zoo_version))
        else:
            self.test_label.setText("Not tested yet: press Test to check that it reproduces its test output.")
        pixmap = QPixmap(str(opened.cover)) if opened.cover else QPixmap()
        if not pixmap.isNull():
            pixmap = pixmap.scaledToWidth(COVER_WIDTH, Qt.TransformationMode.SmoothTransformation)
        self.cover_label.setPixmap(pixmap)
        self.cover_label.setVisible(not pixmap.isNull())
        notices = " ".join(opened.model.package.notices)
        weights = opened.model.weight_format
        self._status(f"Chosen: {s.name} ({weights} weights). The Run, Check and Train widgets use it. {notices}")
        if choose:
            state_of(self.viewer).choose(ChosenModel(opened.source, opened.model))
        self._fit_width()
        self._set_running(False)

    def _show_results(self, items: list[dict[str, Any]]) -> None:
        self.results_list.clear()
        for item in items:
            summary = item.get("summary") or {}
            ref = f"{item['name']}/{item['version']}"
            text = f"{summary.get('title') or item['name']}  ({ref}, test {item.get('test_status', 'unknown')})"
            entry = QListWidgetItem(text)
            entry.setData(Qt.ItemDataRole.UserRole, f"zoo:{ref}")
            entry.setToolTip(summary.get("description") or "")
            self.results_list.addItem(entry)
        self.results_list.setVisible(bool(items))
        rows = min(max(len(items), 1), 4)
        self.results_list.setFixedHeight(
            self.results_list.sizeHintForRow(0) * rows + 2 * self.results_list.frameWidth() + 4
        )
        found = f"{len(items)} model(s) found: double-click one to open it." if items else "No model found."
        self._status(found)

    def _show_test(self, results: list[Any]) -> None:
        passed = bool(results) and all(r.passed for r in results)
        head = "Test passed: the model reproduces its test output." if passed else "Test FAILED."
        self.test_label.setText(f"{head}\n{test_words(results)}")
        self.test_label.setStyleSheet("color: #40a040" if passed else "color: #e05050")

    # -- user input
    def _open_typed(self) -> None:
        self.open_source(self.source_edit.text())

    def _search_typed(self) -> None:
        self.search(self.search_edit.text())

    def _open_result(self, item: QListWidgetItem) -> None:
        self.open_source(str(item.data(Qt.ItemDataRole.UserRole)))

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a model package folder")
        if folder:
            self.source_edit.setText(folder)
            self.open_source(folder)

    def _choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Choose a model package", "", "Model packages (*.zip *.yaml *.yml);;All files (*)"
        )
        if path:
            self.source_edit.setText(path)
            self.open_source(path)

    def _show_settings(self) -> None:
        for widget in (self.zoo_edit, self.weights_combo, self.tile_spin):
            widget.blockSignals(True)
        self.zoo_edit.setText(self.settings.zoo_url)
        self.weights_combo.setCurrentIndex(max(self.weights_combo.findText(self.settings.weight_format), 0))
        self.tile_spin.setValue(self.settings.tile_size or 0)
        for widget in (self.zoo_edit, self.weights_combo, self.tile_spin):
            widget.blockSignals(False)

    def _save_settings(self) -> None:
        weights = self.weights_combo.currentText()
        try:
            settings = Settings(
                zoo_url=self.zoo_edit.text(),
                weight_format="" if weights == AUTOMATIC_FORMAT else weights,
                tile_size=self.tile_spin.value() or None,
                cache_dir=self.settings.cache_dir,
            )
            if settings != self.settings:
                save_settings(settings)
        except (MicrozooError, OSError) as error:
            self._status(f"Settings not saved: {error}", error=True)
            return
        self.settings = settings


def _tensors_html(kind: str, tensors: Any) -> str:
    """Inputs or outputs in words: id, description, sizes (batch left out) and processing."""
    parts = []
    for t in tensors:
        sizes = ", ".join(rule for rule in t.size_rules if not rule.startswith("batch:"))
        steps = ", ".join(t.processing) or "none"
        about = f" – {html.escape(t.description)}" if t.description else ""
        when = "before the network" if kind == "Input" else "after the network"
        parts.append(
            f"<b>{kind} '{html.escape(t.id)}'</b>{about}<br>sizes: {html.escape(sizes)}<br>{when}: {html.escape(steps)}"
        )
    if kind == "Input":
        parts.append("Images of other sizes are split into tiles that fit, padded at the border.")
    return "<br>".join(parts)


def _label(text: str) -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


def _button(text: str, tip: str, slot: Any) -> QPushButton:
    button = QPushButton(text)
    button.setToolTip(tip)
    button.clicked.connect(lambda _checked=False: slot())
    return button


def _row(*widgets: QWidget, stretch: bool = False) -> QHBoxLayout:
    row = QHBoxLayout()
    for widget in widgets:
        row.addWidget(widget)
    if stretch:
        row.addStretch(1)
    return row
