"""A selection's ranking in a widget: each figure with its interval as the report prints it, and the verdict."""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import (
    QAbstractItemView,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from microzoo.qc.report import format_estimate


def best_model(ranking: Any) -> str | None:
    """The best-ranked model of ``ranking`` (a :class:`~microzoo.selection.rank.Ranking`), not a baseline."""
    return next((e.method for e in ranking.entries if e.kind != "baseline"), None)


def header_of(table: QTableWidget, *, vertical: bool = False) -> QHeaderView:
    """A table's horizontal (or vertical) header (a QTableWidget always has both)."""
    header = table.verticalHeader() if vertical else table.horizontalHeader()
    assert header is not None
    return header


class RankingView(QGroupBox):
    """The ranking, best first, with 95% intervals; ``report_button`` and ``best_button`` for the owner to connect."""

    def __init__(self) -> None:
        super().__init__("Ranking")
        form = QVBoxLayout(self)
        self.title_label = QLabel("No selection run yet.")
        self.title_label.setWordWrap(True)
        self.table = QTableWidget(0, 0)
        header_of(self.table, vertical=True).setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setToolTip("Best first; the interval is the 95% bootstrap interval over your images.")
        self.statements_label = QLabel()
        self.statements_label.setWordWrap(True)
        self.verdict_label = QLabel()
        self.verdict_label.setWordWrap(True)
        self.verdict_label.setStyleSheet("font-weight: bold")
        self.verdict_label.setToolTip("The best model against the classical baseline, and what to do.")
        self.report_button = QPushButton("Open the report")
        self.report_button.setToolTip("selection.html in your browser: every figure on every image, and panels.")
        self.best_button = QPushButton("Use the best model")
        self.best_button.setToolTip("Choose the best-ranked model (a baseline cannot be chosen) for the Run widget.")
        buttons = QHBoxLayout()
        for button in (self.report_button, self.best_button):
            button.setEnabled(False)
            buttons.addWidget(button)
        for widget in (self.title_label, self.table, self.statements_label, self.verdict_label):
            form.addWidget(widget)
        form.addLayout(buttons)

    def clear(self) -> None:
        """Empty, while a new selection runs."""
        self.table.setRowCount(0)
        for label in (self.statements_label, self.verdict_label):
            label.setText("")
        self.title_label.setText("Running…")

    def show(self, selection: Any) -> str | None:  # type: ignore[override]
        """Render ``selection`` (a :class:`~microzoo.selection.select.Selection`); returns its best model."""
        ranking = selection.ranking
        metric = ranking.metric
        trust = any(e.trusted is not None for e in ranking.entries)
        headers = ["Rank", "Method", "Kind", f"{metric.split(' (')[0]} [95% interval]"]
        self.table.clear()
        self.table.setColumnCount(len(headers) + trust)
        self.table.setHorizontalHeaderLabels([*headers, *(["Trusted images"] if trust else [])])
        self.table.setRowCount(len(ranking.entries))
        for row, e in enumerate(ranking.entries):
            cells = [str(e.rank), e.method, e.kind, format_estimate(e.value, e.low, e.high, metric)]
            if trust:
                cells.append("–" if e.trusted is None else f"{e.trusted:.0%}")
            for column, text in enumerate(cells):
                self.table.setItem(row, column, QTableWidgetItem(text))
        self.table.resizeColumnsToContents()
        header = header_of(self.table)
        header.setStretchLastSection(True)
        self.table.setMinimumWidth(header.length() + 4)  # every figure readable: the dock widens, nothing clipped
        rows = sum(self.table.rowHeight(r) for r in range(self.table.rowCount()))
        self.table.setFixedHeight(header.height() + rows + 4)
        self.title_label.setText(
            f"{ranking.task}: {ranking.n_images} images, ranked by {metric}. Evidence: {ranking.evidence}."
        )
        notes = [
            *(f"Note: {notice}" for notice in selection.notices),
            *(f"Not run: {reason}" for reason in selection.left_out),
            *ranking.statements,
        ]
        self.statements_label.setText("\n".join(notes))
        self.verdict_label.setText(ranking.verdict or "")
        self.report_button.setEnabled("report" in selection.paths)
        return best_model(ranking)
