"""A lazy image seen in a model's axes, and the way back from a model output to the image's.

Streaming never holds the whole image: :class:`ModelView` reads only the region asked for
(in model axes: a batch range and spatial slices) and maps that block with
:func:`microzoo.io.axes.map_to_model`, exactly as the in-memory path maps the whole image.
Image axes the model lacks (``z`` or ``t`` for a 2-D model) are folded into the model's batch
axis; batch index ``b`` is the C-order position over the folded axes::

    image tzyx (3, 4, H, W), 2-D model (batch, channel, y, x):
        model shape (12, 1, H, W);  batch 5 = t 1, z 1

:class:`OutputLayout` is the inverse for one output tensor (:func:`map_from_model` on each
block): the axes of the written image in OME-NGFF order (``t b i c z y x``), its shape, and for a
tile's kept block its region there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from microzoo.io.axes import (
    AxesMapping,
    ids_to_letters,
    letters_to_ids,
    map_from_model,
    map_to_model,
    select_channels,
)
from microzoo.io.ome_zarr import NGFF_ORDER

__all__ = ["ModelView", "OutputLayout"]


class ModelView:
    """An image (any sliceable array with its axes letters) seen as a model input tensor.

    ``shape``, ``dtype`` and ``ndim`` are those of the mapped tensor; ``view[region]`` reads
    and maps only that region (slices in the model's axes, step 1). ``channel`` keeps image
    channels as :func:`microzoo.io.axes.select_channels` does.
    """

    def __init__(
        self,
        data: Any,
        axes: str,
        model_axes: Sequence[str],
        *,
        channels: int | None,
        channel: Sequence[int] | None = None,
        colour: bool = False,
    ) -> None:
        self.data = data
        self.colour = colour
        self.axes = axes
        self.model_axes = tuple(model_axes)
        self.channels = channels
        self.channel = None if channel is None else [int(c) for c in channel]
        image_shape = tuple(int(n) for n in data.shape)
        chosen: tuple[str, ...] = ()
        if self.channel is not None:  # checks the channels as select_channels does, on a stand-in
            if "c" not in axes:  # refused with the image's own shape (nothing is read)
                select_channels(np.broadcast_to(np.zeros((), np.uint8), image_shape), axes, self.channel)
            chosen = (select_channels(np.zeros(image_shape[axes.index("c")]), "c", self.channel)[1],)
        # the mapping from a proxy of the image: model spatial axes of size 1, others as they are
        model_letters = ids_to_letters(self.model_axes)
        proxy_shape = tuple(
            1 if a in "zyx" and a in model_letters else self._channel_count(a, n)
            for a, n in zip(axes, image_shape, strict=True)
        )
        proxy, mapping = map_to_model(np.zeros(proxy_shape, dtype=data.dtype), axes, self.model_axes, channels=channels,
                                      colour=colour)  # fmt: skip
        sizes = dict(zip(axes, image_shape, strict=True))
        self.mapping: AxesMapping = dataclasses.replace(mapping, input_shape=image_shape)
        self.folded = mapping.folded_axes
        self.folded_shape = mapping.folded_shape
        self.dtype = proxy.dtype
        shape = []
        for axis_id, n in zip(self.model_axes, proxy.shape, strict=True):
            letter = ids_to_letters([axis_id])
            shape.append(sizes[letter] if letter in "zyx" and letter in axes else n)
        self.shape = tuple(shape)
        self.ndim = len(self.shape)
        self._block_axes = "".join(a for a in axes if a not in self.folded and a not in mapping.squeezed_axes)
        self.notices: tuple[str, ...] = chosen + mapping.notices
        """Conversions the user should hear about (channels chosen, RGB to grey), as in memory."""

    def _channel_count(self, letter: str, n: int) -> int:
        return len(self.channel) if letter == "c" and self.channel is not None else n

    def sample_index(self, b: int) -> dict[str, int]:
        """The folded image axes' indices of model batch index ``b``."""
        if not self.folded:
            return {}
        return dict(zip(self.folded, (int(i) for i in np.unravel_index(b, self.folded_shape)), strict=True))

    def __getitem__(self, region: Any) -> np.ndarray:
        region = region if isinstance(region, tuple) else (region,)
        region = region + (slice(None),) * (self.ndim - len(region))
        bounds = {}
        for axis_id, sl, n in zip(self.model_axes, region, self.shape, strict=True):
            if isinstance(sl, (int, np.integer)):
                sl = slice(int(sl), int(sl) + 1)
            start, stop, step = sl.indices(n)
            if step != 1:
                raise ValueError(f"a ModelView reads regions with step 1, not {sl}")
            bounds[axis_id] = (start, stop)
        batch = bounds.get("batch", (0, 1))
        blocks = [self._read_sample(b, bounds) for b in range(*batch)]
        if "batch" not in self.model_axes:
            return blocks[0]
        return np.concatenate(blocks, axis=self.model_axes.index("batch")) if len(blocks) > 1 else blocks[0]

    def _read_sample(self, b: int, bounds: dict[str, tuple[int, int]]) -> np.ndarray:
        folded = self.sample_index(b)
        index: list[Any] = []
        for a in self.axes:
            axis_id = letters_to_ids(a)[0]
            if a in folded:
                index.append(folded[a])
            elif a in self.mapping.squeezed_axes:
                index.append(0)
            elif a != "c" and axis_id in bounds:
                index.append(slice(*bounds[axis_id]))
            else:
                index.append(slice(None))
        block = np.asarray(self.data[tuple(index)])
        if self.channel is not None and "c" in self._block_axes:
            block = np.take(block, self.channel, axis=self._block_axes.index("c"))
        mapped, _ = map_to_model(block, self._block_axes, self.model_axes, channels=self.channels, colour=self.colour)
        if "channel" in bounds and "channel" in self.model_axes:  # channels are read whole
            c = self.model_axes.index("channel")
            mapped = mapped[(slice(None),) * c + (slice(*bounds["channel"]),)]
        return mapped


@dataclasses.dataclass(frozen=True)
class OutputLayout:
    """Where one output tensor goes in the written image (OME-NGFF axes order)."""

    tensor_id: str
    model_axes: tuple[str, ...]
    axes: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    mapping: AxesMapping

    @classmethod
    def of(
        cls,
        tensor_id: str,
        model_axes: Sequence[str],
        whole: dict[str, int],
        chunks: dict[str, int],
        view: ModelView,
    ) -> OutputLayout:
        """The layout of output ``tensor_id`` of whole model shape ``whole`` for ``view``'s image."""
        model_axes = tuple(model_axes)
        one = dataclasses.replace(view.mapping, folded_shape=(1,) * len(view.folded))
        proxy = np.zeros(tuple(1 if a == "batch" else min(whole[a], 2) for a in model_axes), np.float32)
        _, axes = map_from_model(proxy, model_axes, one)
        order = "".join(a for a in NGFF_ORDER if a in axes)
        letters = dict(zip(ids_to_letters(model_axes), model_axes, strict=True))
        folded = dict(zip(view.folded, view.folded_shape, strict=True))
        shape, chunk = [], []
        for a in order:
            if a in folded:
                shape.append(folded[a])
                chunk.append(1)
            elif a in letters:
                shape.append(int(whole[letters[a]]))
                chunk.append(int(chunks[letters[a]]))
            else:  # a squeezed singleton axis of the image
                shape.append(1)
                chunk.append(1)
        return cls(tensor_id, model_axes, order, tuple(shape), tuple(chunk), one)

    def place(
        self, block: np.ndarray, sample: dict[str, int], where: Sequence[slice]
    ) -> tuple[tuple[slice, ...], np.ndarray]:
        """A kept block (model axes, batch 1) at ``where`` (whole-output model coordinates) of
        sample ``sample`` (:meth:`ModelView.sample_index`): its region and data in ``axes``."""
        array, axes = map_from_model(block, self.model_axes, self.mapping)
        letters = ids_to_letters(self.model_axes)
        bounds = {letter: sl for letter, sl in zip(letters, where, strict=True)}
        region = []
        for a, n in zip(self.axes, self.shape, strict=True):
            if a in sample:
                region.append(slice(sample[a], sample[a] + 1))
            elif a in bounds and a != "c":
                sl = bounds[a]
                region.append(slice(sl.start, sl.stop if sl.stop is not None else n))
            else:
                region.append(slice(0, n))
        missing = [a for a in self.axes if a not in axes]
        array = array.reshape(array.shape + (1,) * len(missing))
        axes += "".join(missing)
        return tuple(region), np.ascontiguousarray(array.transpose([axes.index(a) for a in self.axes]))
