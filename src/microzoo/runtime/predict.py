"""Run a model package on arrays, exactly as its description says.

The flow for one prediction::

    image (its own axes) --map_to_model--> input tensors (model axes)
      --bind preprocessing on the WHOLE input (statistics never per tile)-->
      --tile plan (size rules, halo, memory budget) --> batches of tiles --> engine -->
      --keep each tile's inner region --> raw outputs (whole)
      --bind + apply postprocessing on the whole raw output--> outputs
      --map_from_model--> arrays in the image's layout

An input that is itself a valid input size and fits the memory budget runs in one forward,
as bioimageio.core does by default; larger inputs are tiled with the output halo as overlap.
"""

from __future__ import annotations

import dataclasses
import numbers
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from microzoo.errors import ImageError, TilingError
from microzoo.package.load import ModelPackage, open_package
from microzoo.progress import ProgressCallback
from microzoo.runtime import resources
from microzoo.runtime.engines import Engine, choose_format, load_engine
from microzoo.runtime.outputs import Outputs

if TYPE_CHECKING:  # imported where used, to keep start-up short
    from microzoo.runtime.geometry import ModelGeometry
    from microzoo.runtime.tiling import TilePlan


@dataclasses.dataclass(frozen=True)
class Prediction:
    """The outputs of one prediction in the image's layout, with what the user should know.

    Attributes
    ----------
    outputs : Outputs
        Output tensor id -> array (``.only`` for a one-output model).
    axes : dict
        Output tensor id -> axes string of that array (e.g. ``"yx"``, ``"cyx"``).
    notices : tuple of str
        Things done on the user's behalf (e.g. RGB converted to grayscale).
    n_tiles : int
        Forward passes needed (1 when the image ran whole).
    """

    outputs: Outputs
    axes: dict[str, str]
    notices: tuple[str, ...] = ()
    n_tiles: int = 1


class Model:
    """A model package ready to run. Open with :func:`microzoo.load_model`::

    model = microzoo.load_model("unet2d_nuclei_broad")
    outputs = model.predict(image, axes="yx")
    probability = outputs["probability"]  # or outputs.only
    """

    def __init__(
        self,
        package: ModelPackage,
        *,
        weights: str | None = None,
        device: str | None = None,
        threads: int | None = None,
    ) -> None:
        self.package = package
        self.descr = package.descr
        self.weight_format = choose_format(package, weights)
        self._device = device
        self._threads = threads
        self._engine: Engine | None = None
        self._engine_lock = threading.Lock()  # forwards in several threads load the weights once
        self._geometry: ModelGeometry | None = None

    @classmethod
    def open(
        cls,
        source: Any,
        *,
        weights: str | None = None,
        device: str | None = None,
        threads: int | None = None,
        progress: ProgressCallback | None = None,
    ) -> Model:
        """Open a package (see :func:`microzoo.package.load.open_package`) to run it."""
        package = source if isinstance(source, ModelPackage) else open_package(source, progress=progress)
        return cls(package, weights=weights, device=device, threads=threads)

    def __repr__(self) -> str:
        return f"<microzoo.Model {self.package.name!r} ({self.weight_format})>"

    def with_threads(self, threads: int) -> Model:
        """This model with ``threads`` CPU threads per forward (itself when it has them)."""
        if self._threads == threads:
            return self
        return Model(self.package, weights=self.weight_format, device=self._device, threads=threads)

    @property
    def engine(self) -> Engine:
        """The loaded weights (loaded on first use)."""
        with self._engine_lock:
            if self._engine is None:
                self._engine = load_engine(self.package, self.weight_format, device=self._device, threads=self._threads)
            return self._engine

    @property
    def threads(self) -> int | None:
        """CPU threads of each forward as given (``None``: :func:`~microzoo.runtime.resources.thread_count`)."""
        return self._threads

    @property
    def device(self) -> str | None:
        """The device as given (``None``: a GPU where present, else the CPU)."""
        return self._device

    @property
    def input_ids(self) -> list[str]:
        return [str(t.id) for t in self.descr.inputs]

    @property
    def output_ids(self) -> list[str]:
        return [str(t.id) for t in self.descr.outputs]

    def tensor_axes(self, tensor: Any) -> tuple[str, ...]:
        return tuple(str(a.id) for a in tensor.axes)

    @property
    def geometry(self) -> ModelGeometry:
        if self._geometry is None:
            from microzoo.runtime.tiling import geometry_from_descr

            self._geometry = geometry_from_descr(self.descr)
        return self._geometry

    # --- user-facing ---------------------------------------------------------------------

    def predict(
        self,
        image: np.ndarray | Mapping[str, np.ndarray],
        *,
        axes: str | Mapping[str, str] | None = None,
        tile: int | Mapping[str, int] | None = None,
        memory_budget: int | None = None,
        channel: int | Sequence[int] | None = None,
        progress: ProgressCallback | None = None,
    ) -> Outputs:
        """Predict on an image given in its own axes; returns output id -> array in the image's layout.

        The same :class:`~microzoo.runtime.outputs.Outputs` mapping for every model; for a
        one-output model ``.only`` (or ``np.asarray(outputs)``) is the array.

        Parameters
        ----------
        image
            The image, or a dict input id -> image for a model with several inputs.
        axes
            The image's axes, e.g. ``"yx"``, ``"yxc"``, ``"zyx"`` (a dict for several inputs).
            Needed unless the image is 2-D (``"yx"``).
        tile
            Tile size: one int for every spatial axis, or a dict axis id -> size.
            Default: the largest tile that fits ``memory_budget``.
        memory_budget
            Bytes one forward pass may use (default: :func:`microzoo.runtime.resources.memory_budget`).
        channel
            The image channel(s) to give the model, numbered from 0 (e.g. ``0`` or ``[0, 2]``);
            by default all of them (RGB(A) to a one-channel model: converted to grayscale).
        """
        return self.predict_image(
            image, axes=axes, tile=tile, memory_budget=memory_budget, channel=channel, progress=progress
        ).outputs

    def predict_image(
        self,
        image: np.ndarray | Mapping[str, np.ndarray],
        *,
        axes: str | Mapping[str, str] | None = None,
        tile: int | Mapping[str, int] | None = None,
        memory_budget: int | None = None,
        channel: int | Sequence[int] | None = None,
        progress: ProgressCallback | None = None,
    ) -> Prediction:
        """Like :meth:`predict`, returning a :class:`Prediction` with axes and notices."""
        from microzoo.io.axes import is_colour_model, map_from_model, map_to_model, select_channels

        if tile is not None:
            _checked_tile(tile)
        resources.memory_budget(memory_budget)  # refuses a budget below one byte before any work
        images = self._per_input(image, "image")
        axes_given = self._per_input(axes, "axes") if axes is not None else {}
        tensors: dict[str, np.ndarray] = {}
        mappings = {}
        notices: list[str] = []
        for tensor in self.descr.inputs:
            tid = str(tensor.id)
            data = np.asarray(images[tid])
            image_axes = axes_given.get(tid) or _default_axes(data, tid)
            if channel is not None:
                data, notice = select_channels(data, image_axes, channel)
                notices.append(notice)
            model_axes = self.tensor_axes(tensor)
            channels = _channel_count(tensor)
            tensors[tid], mappings[tid] = map_to_model(data, image_axes, model_axes, channels=channels,
                                                       colour=is_colour_model(_channel_names(tensor)))  # fmt: skip
            notices.extend(mappings[tid].notices)
        raw_outputs, n_tiles, run_notices = self._predict_tensors(
            tensors, tile=tile, memory_budget=memory_budget, progress=progress
        )
        notices.extend(run_notices)
        # outputs follow the layout of the first input (the usual single-input case)
        reference = mappings[self.input_ids[0]]
        outputs, out_axes = {}, {}
        for output in self.descr.outputs:
            tid = str(output.id)
            outputs[tid], out_axes[tid] = map_from_model(raw_outputs[tid], self.tensor_axes(output), reference)
        return Prediction(
            outputs=Outputs(outputs), axes=out_axes, notices=tuple(dict.fromkeys(notices)), n_tiles=n_tiles
        )

    def predict_tensors(
        self,
        inputs: Mapping[str, np.ndarray],
        *,
        tile: int | Mapping[str, int] | None = None,
        memory_budget: int | None = None,
        tiled: bool | None = None,
        progress: ProgressCallback | None = None,
    ) -> dict[str, np.ndarray]:
        """Predict on tensors already in the model's axes (as the test tensors are).

        ``tiled=False`` runs every input whole in one forward (the inputs must be valid sizes);
        ``tiled=True`` always tiles; by default inputs run whole when they can.
        """
        outputs, _, _ = self._predict_tensors(
            inputs, tile=tile, memory_budget=memory_budget, tiled=tiled, progress=progress
        )
        return outputs

    # --- the pipeline ----------------------------------------------------------------------

    def _predict_tensors(
        self,
        inputs: Mapping[str, np.ndarray],
        *,
        tile: int | Mapping[str, int] | None,
        memory_budget: int | None,
        tiled: bool | None = None,
        progress: ProgressCallback | None = None,
    ) -> tuple[dict[str, np.ndarray], int, tuple[str, ...]]:
        """Outputs (model axes), forward passes, and notices (non-finite input pixels)."""
        from microzoo.runtime.non_finite import describe, fill_non_finite, mark_non_finite
        from microzoo.runtime.ops import bind_ops

        raw = {tid: np.asarray(inputs[tid]) for tid in self.input_ids if tid in inputs}
        missing = [tid for tid in self.input_ids if tid not in raw]
        if missing:
            raise ImageError(f"the model needs the input(s) {', '.join(missing)}; give one image per input")
        for tensor in self.descr.inputs:
            _check_content(raw[str(tensor.id)], str(tensor.id), self.tensor_axes(tensor))
        sample = {
            tid: (raw[tid], self.tensor_axes(t)) for tid, t in zip(self.input_ids, self.descr.inputs, strict=True)
        }
        processed, non_finite = {}, []
        for tensor in self.descr.inputs:
            tid = str(tensor.id)
            pipeline = bind_ops(tensor.preprocessing, raw[tid], self.tensor_axes(tensor), sample=sample)
            filled, where = fill_non_finite(raw[tid], self.tensor_axes(tensor), tid)
            non_finite += [where] if where is not None else []
            processed[tid] = np.ascontiguousarray(pipeline(filled))

        shapes = {
            tid: dict(zip(self.tensor_axes(t), processed[tid].shape, strict=True))
            for tid, t in zip(self.input_ids, self.descr.inputs, strict=True)
        }
        budget = resources.memory_budget(memory_budget)
        if tiled is False or (tiled is None and self._runs_whole(shapes, budget, tile)):
            if progress:
                progress(0, 1, "predicting")
            results = self.engine.forward(*(processed[tid] for tid in self.input_ids))
            # not strict: outputs a model returns beyond those its description names are dropped
            raw_outputs = dict(zip(self.output_ids, results, strict=False))
            n_tiles = 1
            if progress:
                progress(1, 1, "predicting")
        else:
            from microzoo.runtime.tiling import plan_tiles

            plan = plan_tiles(self.geometry, shapes, tile=_tile_request(tile, shapes), memory_budget=budget)
            raw_outputs = self._run_plan(plan, processed, progress)
            n_tiles = plan.n_tiles

        outputs = {}
        post_sample = dict(sample)
        post_sample.update(
            {
                tid: (raw_outputs[tid], self.tensor_axes(t))
                for tid, t in zip(self.output_ids, self.descr.outputs, strict=True)
            }
        )
        for output in self.descr.outputs:
            tid = str(output.id)
            pipeline = bind_ops(output.postprocessing, raw_outputs[tid], self.tensor_axes(output), sample=post_sample)
            outputs[tid] = pipeline(raw_outputs[tid])
        notices = []
        for where in non_finite:
            marked = [
                tid
                for tid, t in zip(self.output_ids, self.descr.outputs, strict=True)
                if mark_non_finite(outputs[tid], self.tensor_axes(t), where)
            ]
            notices.append(describe(where, marked, [tid for tid in self.output_ids if tid not in marked]))
        return outputs, n_tiles, tuple(notices)

    def _runs_whole(
        self, shapes: Mapping[str, Mapping[str, int]], budget: int, tile: int | Mapping[str, int] | None
    ) -> bool:
        """Whether every input is a valid input size as it is and one forward fits the budget."""
        from microzoo.runtime.tiling import estimate_forward_bytes

        if tile is not None or not _valid_as_is(self.geometry, shapes):
            return False
        frozen = {tid: dict(s) for tid, s in shapes.items()}
        return estimate_forward_bytes(frozen, frozen) <= budget

    def _run_plan(
        self, plan: TilePlan, processed: Mapping[str, np.ndarray], progress: ProgressCallback | None
    ) -> dict[str, np.ndarray]:
        from microzoo.runtime.tiling import extract_tile

        outputs: dict[str, np.ndarray] = {}
        tiles = list(plan.tiles)
        batch = max(1, int(plan.batch_size))
        # the description's padding mode, as bioimageio.core: symmetric unless the input says otherwise
        pad_modes = {
            str(t.id): (str(pad.mode) if (pad := getattr(t, "pad", None)) is not None else "symmetric")
            for t in self.descr.inputs
        }
        batch_axis = {
            tid: _batch_index(self.tensor_axes(t))
            for tid, t in zip(
                self.input_ids + self.output_ids, list(self.descr.inputs) + list(self.descr.outputs), strict=True
            )
        }
        for start in range(0, len(tiles), batch):
            group = tiles[start : start + batch]
            if progress:
                progress(start, len(tiles), "predicting tiles")
            arrays = []
            for tid in self.input_ids:
                pieces = [extract_tile(processed[tid], t.inputs[tid], pad_mode=pad_modes[tid]) for t in group]
                axis = batch_axis[tid]
                arrays.append(np.concatenate(pieces, axis=axis) if axis is not None and len(pieces) > 1 else pieces[0])
            results = self.engine.forward(*arrays)
            for tid, result in zip(self.output_ids, results, strict=False):  # undescribed outputs dropped
                if tid not in outputs:
                    shape = tuple(plan.output_shapes[tid][a] for a in self._out_axes(tid))
                    outputs[tid] = np.zeros(shape, dtype=result.dtype)
                axis = batch_axis[tid]
                for k, t in enumerate(group):
                    inner_in_tile, inner_in_output = t.outputs[tid]
                    piece = result if axis is None else np.take(result, [k], axis=axis)
                    outputs[tid][inner_in_output] = piece[inner_in_tile]
        if progress:
            progress(len(tiles), len(tiles), "predicting tiles")
        return outputs

    def _out_axes(self, tid: str) -> tuple[str, ...]:
        return self.tensor_axes(self.descr.outputs[self.output_ids.index(tid)])

    def _per_input(self, value: Any, what: str) -> dict[str, Any]:
        if isinstance(value, Mapping):
            unknown = set(value) - set(self.input_ids)
            if unknown:
                raise ImageError(
                    f"unknown input(s) {', '.join(sorted(unknown))} in {what}; "
                    f"the model's inputs are {', '.join(self.input_ids)}"
                )
            return dict(value)
        if len(self.input_ids) != 1:
            raise ImageError(
                f"this model has {len(self.input_ids)} inputs ({', '.join(self.input_ids)}): "
                f"give the {what} as a dict input id -> {what}"
            )
        return {self.input_ids[0]: value}


def _default_axes(data: np.ndarray, tid: str) -> str:
    if data.ndim == 2:
        return "yx"
    from microzoo.errors import AxesError

    raise AxesError(
        f"the image for input '{tid}' has {data.ndim} dimensions {data.shape}: say which axes they are, "
        "e.g. axes='zyx', 'cyx' or 'yxc' (on the command line: --axes)"
    )


def _channel_count(tensor: Any) -> int | None:
    names = _channel_names(tensor)
    return None if names is None else len(names)


def _channel_names(tensor: Any) -> list[str] | None:
    for axis in tensor.axes:
        if str(axis.type) == "channel":
            return [str(n) for n in axis.channel_names]
    return None


def _batch_index(axes: Sequence[str]) -> int | None:
    return axes.index("batch") if "batch" in axes else None


def _tile_request(
    tile: int | Mapping[str, int] | None, shapes: Mapping[str, Mapping[str, int]]
) -> dict[str, int] | None:
    if tile is None:
        return None
    if isinstance(tile, Mapping):
        request = {str(a): int(size) for a, size in _checked_tile(tile).items()}
    else:
        spatial = {a for s in shapes.values() for a in s if a not in ("batch", "channel", "index")}
        request = {a: int(_checked_tile(tile)) for a in spatial}
    return request or None


def _checked_tile(tile: Any) -> Any:
    """``tile`` if every size in it is a positive whole number; a TilingError otherwise."""
    sizes = tile.values() if isinstance(tile, Mapping) else [tile]
    if any(isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1 for v in sizes):
        raise TilingError(
            f"tile sizes must be positive whole numbers of pixels, not {tile!r}; give e.g. "
            "--tile 256 (tile=256), or leave it out to fit the memory budget"
        )
    return tile


def _check_content(data: np.ndarray, tid: str, axes: Sequence[str]) -> None:
    if data.ndim != len(axes):
        raise ImageError(
            f"input '{tid}' has {data.ndim} dimensions {data.shape}, the model expects {len(axes)} ({', '.join(axes)})"
        )
    if data.size == 0:
        raise ImageError(f"input '{tid}' is empty (shape {data.shape})")
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).any():
        raise ImageError(
            f"input '{tid}' holds no finite values (all NaN or infinite): check the image "
            "file, or the channel/slice you chose"
        )


def _valid_as_is(geometry: ModelGeometry, shapes: Mapping[str, Mapping[str, int]]) -> bool:
    """Whether whole inputs of these shapes satisfy every input axis's size rule."""
    from microzoo.runtime.geometry import FixedSize, ParameterizedSize, SizeReference

    for tensor in geometry.inputs:
        for axis in tensor.axes:
            size, rule = shapes[tensor.id][axis.id], axis.size
            if isinstance(rule, FixedSize) and size != rule.size:
                return False
            if isinstance(rule, ParameterizedSize) and not rule.is_valid(size):
                return False
            if isinstance(rule, SizeReference):
                reference = geometry.tensor(rule.tensor_id).axis(rule.axis_id)
                wanted = int(shapes[rule.tensor_id][rule.axis_id] * reference.scale / axis.scale) + rule.offset
                if size != wanted:
                    return False
    return True
