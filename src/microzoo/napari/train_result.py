"""The Train widget's result panel: the verdict against the classical baseline, the QC report,
"Use this model" and "Publish to the zoo" (library work in a :class:`~microzoo.napari._jobs.Job`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from qtpy.QtCore import QUrl
from qtpy.QtGui import QDesktopServices
from qtpy.QtWidgets import QGroupBox, QHBoxLayout, QLabel, QLineEdit, QPushButton, QVBoxLayout

from microzoo.errors import MicrozooError
from microzoo.napari._jobs import Job
from microzoo.napari._state import ChosenModel, state_of
from microzoo.progress import ProgressCallback

#: the verdict's colour: green better than the classical baseline, orange no clear difference, red worse
VERDICT_COLOURS = {"better": "#2e9e44", "no clear difference": "#e08a00", "worse": "#d62728"}

#: why training stopped (``TrainingResult.stopped``), in words
_STOPPED = {"epochs": "all epochs done", "early stopping": "the validation figure stopped improving"}


class ResultPanel(QGroupBox):
    """A :class:`~microzoo.train.run.TrainingResult` shown; ``say(text, error=False)`` writes the widget's status."""

    def __init__(self, viewer: Any, say: Callable[..., None]) -> None:
        super().__init__("Result")
        self.viewer, self._say = viewer, say
        self.result: Any = None
        self.job: Job | None = None
        self._doing, self._opened, self._zoo_url = "", Path(), ""
        column = QVBoxLayout(self)
        self.verdict = QLabel("Train a model to see how it compares with a classical method.")
        self.verdict.setWordWrap(True)
        self.package_label = QLabel("")
        self.package_label.setWordWrap(True)
        self.report_button = QPushButton("Open the QC report")
        self.report_button.setToolTip("The model against the classical baseline on the validation images (HTML).")
        self.use_button = QPushButton("Use this model")
        self.use_button.setToolTip("Choose the trained model in the Model and Run widgets.")
        self.report_button.clicked.connect(self.open_report)
        self.use_button.clicked.connect(start_slot(self.use_model))
        row = QHBoxLayout()
        row.addWidget(self.report_button)
        row.addWidget(self.use_button)
        publish = QHBoxLayout()
        self.token = QLineEdit()
        self.token.setEchoMode(QLineEdit.Password)
        self.token.setPlaceholderText("zoo upload token")
        self.token.setToolTip("A token with the uploader role, from the zoo's administrator (never saved).")
        self.publish_button = QPushButton("Publish to the zoo")
        self.publish_button.setToolTip("Upload the package to the zoo in the settings; it is tested, then reviewed.")
        self.publish_button.clicked.connect(start_slot(self.publish))
        publish.addWidget(self.token)
        publish.addWidget(self.publish_button)
        for item in (self.verdict, self.package_label):
            column.addWidget(item)
        column.addLayout(row)
        column.addLayout(publish)
        self.show_result(None)

    def show_result(self, result: Any) -> None:
        """The verdict in its colour, why training stopped, the package; buttons enabled for what exists."""
        self.result = result
        verdict, package = getattr(result, "verdict", None), getattr(result, "package", None)
        self.verdict.setStyleSheet(f"color: {VERDICT_COLOURS[verdict.kind]}" if verdict else "")
        if result is None:
            self.verdict.setText("Train a model to see how it compares with a classical method.")
            self.package_label.setText("")
        else:
            self.verdict.setText(verdict.line if verdict else (
                "No comparison with a classical method: it needs clean images or labels of the validation "
                "images (N2V: give clean images of the same fields)."))  # fmt: skip
            why = _STOPPED.get(result.stopped, result.stopped)
            lines = [f"Trained {len(result.history)} epochs ({why}); {result.kept}."]
            self.package_label.setText("\n".join(lines + ([f"Package: {package.parent}"] if package else [])))
        self.report_button.setEnabled(getattr(result, "report", None) is not None)
        self.use_button.setEnabled(package is not None)
        self.publish_button.setEnabled(package is not None)
        self.token.setPlaceholderText(f"upload token for {self._zoo() or 'the zoo (set its address in Model)'}")

    @staticmethod
    def _zoo() -> str | None:
        """The zoo address from the settings (None when unset or unreadable)."""
        from microzoo.napari.settings import load_settings, zoo_url

        try:
            return zoo_url(load_settings())
        except MicrozooError:
            return None

    def open_report(self) -> None:
        """Open the QC report in the web browser."""
        if self.result is not None and self.result.report is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.result.report)))

    def use_model(self) -> Job | None:
        """Open the exported package and choose it in this viewer (a :class:`Job`)."""
        from microzoo.runtime.predict import Model

        if self.result is None or self.result.package is None:
            return None
        folder = self.result.package.parent
        job = Job(lambda progress: Model.open(folder, progress=progress))
        job.succeeded.connect(self._chosen)
        job.failed.connect(self._failed)
        self.job, self._doing, self._opened = job, "Opening the model", folder
        return job.start()

    def _chosen(self, model: Any) -> None:
        state_of(self.viewer).choose(ChosenModel(str(self._opened), model))
        self._say(f"Chosen: {model.package.name}; run it in the Run widget.")

    def publish(self) -> Job | None:
        """Upload the package to the settings' zoo with the token given (a :class:`Job`)."""
        from microzoo.napari.settings import load_settings, zoo_url
        from microzoo.zoo.client import ZooClient

        if self.result is None or self.result.package is None:
            return None
        try:
            url = zoo_url(load_settings())
        except MicrozooError as error:
            self._say(str(error), error=True)
            return None
        token = self.token.text().strip()
        if not url or not token:
            missing = "no zoo address: set it in the Model widget's settings" if not url else "give an upload token"
            self._say(f"Cannot publish: {missing}.", error=True)
            return None
        folder = self.result.package.parent

        def work(progress: ProgressCallback) -> dict[str, Any]:
            with ZooClient(url, token=token) as client:
                return client.push(folder)

        job = Job(work)
        job.succeeded.connect(self._published)
        job.failed.connect(self._failed)
        self._say(f"Uploading to {url} ...")
        self.job, self._doing, self._zoo_url = job, "Publishing", url
        return job.start()

    def _published(self, answer: dict[str, Any]) -> None:
        self._say(f"Uploaded to {self._zoo_url} as {answer['name']}/{answer['version']} ({answer.get('status', '')}): "
                  "the zoo tests it, then a reviewer publishes it.")  # fmt: skip

    # the jobs' slots are the widget's methods: Qt drops them with the widget (a run may outlive it)

    # the jobs' slots are the panel's methods: Qt drops them with the panel

    def _failed(self, message: str) -> None:
        self._say(f"{self._doing} failed: {message}", error=True)


def start_slot(start: Callable[[], Any]) -> Callable[..., None]:
    """A button's slot calling ``start`` (which returns its Job, for tests), whatever the signal passes."""

    def slot(*_: Any) -> None:
        start()

    return slot
