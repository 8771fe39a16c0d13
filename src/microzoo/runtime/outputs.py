"""What :meth:`microzoo.Model.predict` returns for every model: output names to arrays."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from microzoo.errors import MicrozooError


class Outputs(Mapping[str, np.ndarray]):
    """A model's outputs, read-only: output tensor id -> array, in the description's order.

    The same type for a model with one output or several. For one output, ``.only`` is its
    array and the mapping itself converts to it (``np.asarray(outputs)``).

    >>> outputs = Outputs({"probability": np.array([[0.1, 0.9]])})
    >>> list(outputs), outputs["probability"].shape
    (['probability'], (1, 2))
    >>> outputs.only
    array([[0.1, 0.9]])
    >>> float(np.asarray(outputs).max())
    0.9
    >>> Outputs({"a": np.zeros(1), "b": np.ones(1)}).only
    Traceback (most recent call last):
    ...
    microzoo.errors.MicrozooError: the model has 2 outputs (a, b): pick one by name, e.g. outputs['a']
    """

    __slots__ = ("_arrays",)

    def __init__(self, arrays: Mapping[str, np.ndarray]) -> None:
        self._arrays = dict(arrays)

    def __getitem__(self, output_id: str) -> np.ndarray:
        try:
            return self._arrays[output_id]
        except KeyError:
            raise KeyError(f"no output {output_id!r}; the model's outputs are {', '.join(self._arrays)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    @property
    def only(self) -> np.ndarray:
        """The array of a one-output model; an error naming the outputs otherwise."""
        if len(self._arrays) != 1:
            names = ", ".join(self._arrays)
            raise MicrozooError(
                f"the model has {len(self._arrays)} outputs ({names}): pick one by name, "
                f"e.g. outputs[{next(iter(self._arrays), '')!r}]"
            )
        return next(iter(self._arrays.values()))

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        array = self.only
        if dtype is not None and np.dtype(dtype) != array.dtype:
            return array.astype(dtype)
        return array.copy() if copy else array

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k!r}: {v.dtype}{list(v.shape)}" for k, v in self._arrays.items())
        return f"Outputs({{{shapes}}})"
