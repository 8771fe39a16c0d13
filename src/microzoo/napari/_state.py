"""What the plugin's widgets share in one viewer: the model chosen in the Model widget."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

from psygnal import Signal


@dataclass(frozen=True)
class ChosenModel:
    """A model opened to run: ``source`` as the user gave it (a path, a zip, ``zoo:NAME/VERSION``)
    and the opened :class:`microzoo.runtime.predict.Model`."""

    source: str
    model: Any


class ViewerState:
    """The plugin's state in one viewer; ``model_changed`` is emitted with the new :class:`ChosenModel`."""

    model_changed = Signal(object)

    def __init__(self) -> None:
        self.model: ChosenModel | None = None

    def choose(self, chosen: ChosenModel | None) -> None:
        self.model = chosen
        self.model_changed.emit(chosen)


_STATES: weakref.WeakKeyDictionary[Any, ViewerState] = weakref.WeakKeyDictionary()


def state_of(viewer: Any) -> ViewerState:
    """The plugin's state in ``viewer`` (created on first use, gone with the viewer)."""
    if viewer not in _STATES:
        _STATES[viewer] = ViewerState()
    return _STATES[viewer]
