"""napari layers in and out of a prediction: what a layer gives the model, and the layers a result becomes.

``layer_input`` takes an Image layer's data as it is (level 0 of a multiscale; a Dask or Zarr
array stays lazy, so the library streams it) with a guess of its axes that the Run widget lets
the user correct. ``output_layers`` turns an :class:`~microzoo.trust.note.ArrayPrediction` into
napari ``LayerDataTuple``\\ s: integer outputs (instance labels) as ``labels``, float maps as an
``image`` with a colormap, the spread map as an ``... uncertainty`` image; each with the input
layer's scale and translate on the spatial axes they share. Nothing here computes a prediction.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from microzoo.errors import AxesError

#: the axes guessed for a layer of n dimensions (not RGB); the user corrects them in the Run widget
GUESSED_AXES = {2: "yx", 3: "zyx", 4: "tzyx", 5: "tczyx"}
#: axes that carry a layer's scale and translate (a channel axis does not)
SPATIAL = "tzyx"


def layer_input(layer: Any) -> tuple[Any, str]:
    """An Image layer's data (level 0 of a multiscale, a lazy array left lazy) and its axes guess:
    RGB(A) -> ``...yxc``; 2-D ``yx``; 3-D ``zyx``; 4-D ``tzyx``; 5-D ``tczyx``."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    ndim = int(data.ndim)
    if getattr(layer, "rgb", False):
        return data, _guess(ndim - 1) + "c"
    return data, _guess(ndim)


def _guess(ndim: int) -> str:
    if ndim not in GUESSED_AXES:
        raise AxesError(f"a layer of {ndim} dimensions: say which axes they are in the Axes field, e.g. yx, zyx, tzyx")
    return GUESSED_AXES[ndim]


def layer_geometry(layer: Any, axes: str) -> tuple[dict[str, float], dict[str, float]]:
    """The layer's scale and translate per axis letter, for the spatial axes of ``axes`` (the
    layer's dimensions in order; an RGB layer's colour axis has none)."""
    letters = axes[:-1] if getattr(layer, "rgb", False) and axes.endswith("c") else axes
    scale = [float(s) for s in layer.scale]
    translate = [float(t) for t in layer.translate]
    if len(letters) != len(scale):
        return {}, {}
    kept = [i for i, a in enumerate(letters) if a in SPATIAL]
    return {letters[i]: scale[i] for i in kept}, {letters[i]: translate[i] for i in kept}


def layer_pixel_size(layer: Any, axes: str) -> tuple[dict[str, float] | None, str | None]:
    """The layer's pixel size per spatial axis letter and its unit (e.g. ``"micrometer"``), or
    ``(None, None)`` when its scale is in pixels (napari's default) or its axes' units differ."""
    scale, _ = layer_geometry(layer, axes)
    letters = axes[:-1] if getattr(layer, "rgb", False) and axes.endswith("c") else axes
    units = {str(u) for a, u in zip(letters, getattr(layer, "units", ()), strict=False) if a in "zyx"}
    if len(units) != 1 or units == {"pixel"} or not scale:
        return None, None
    return {a: size for a, size in scale.items() if a in "zyx"}, units.pop()


def output_layers(prediction: Any, model: Any, layer: Any, axes: str) -> list[tuple[Any, dict[str, Any], str]]:
    """The layers a prediction of ``layer`` (given to the model with ``axes``) becomes, as
    napari ``LayerDataTuple``\\ s ``(data, kwargs, kind)``, in the model's output order, the
    uncertainty map last."""
    scale, translate = layer_geometry(layer, axes)
    layers = []
    for oid, data in prediction.outputs.items():
        out_axes = prediction.axes[oid]
        out_scale = _output_scale(model, oid, scale)
        placed = _placement(out_axes, out_scale, translate)
        name = f"{layer.name} {oid}"
        source = {"source": str(prediction.paths.get(oid, "")) or None, "model": model.package.name, "output": oid}
        if np.issubdtype(np.dtype(data.dtype), np.integer):
            layers.append((data, {"name": name, "metadata": source, **placed}, "labels"))
            continue
        levels = _pyramid(prediction.paths.get(oid), data)
        kwargs = {"name": name, "metadata": source, "colormap": "magma", **placed}
        if levels is not None:
            kwargs["multiscale"] = True
        kwargs["contrast_limits"] = _contrast_limits(levels[-1] if levels else data)
        layers.append((levels or data, kwargs, "image"))
        labels, labels_axes = _instance_labels(model, data, out_axes, prediction.paths.get(oid))
        if labels is not None:
            labels_kwargs = {"name": f"{layer.name} {oid} labels", "metadata": source,
                             **_placement(labels_axes, out_scale, translate)}  # fmt: skip
            if isinstance(labels, list):
                labels_kwargs["multiscale"] = True
            layers.append((labels, labels_kwargs, "labels"))
    if prediction.uncertainty is not None:
        first = next(iter(prediction.outputs))
        out_scale = _output_scale(model, first, scale)
        spread = prediction.uncertainty
        kwargs = {
            "name": f"{layer.name} {first} uncertainty",
            "metadata": {"model": model.package.name, "output": first, "what": "spread over the members"},
            "colormap": "viridis",
            "contrast_limits": _contrast_limits(spread),
            **_placement(prediction.axes[first], out_scale, translate),
        }
        layers.append((spread, kwargs, "image"))
    return layers


def _output_scale(model: Any, oid: str, scale: dict[str, float]) -> dict[str, float]:
    """The input's scale carried to output ``oid`` (a 2x upsampling output has half of it)."""
    from microzoo.runtime.batch import output_pixel_size

    if oid not in model.output_ids:  # e.g. labels decoded from an output: the input's scale
        return scale
    return output_pixel_size(model, oid, scale) or {}


def _placement(axes: str, scale: Mapping[str, float], translate: Mapping[str, float]) -> dict[str, Any]:
    """``scale`` and ``translate`` lists for an array of ``axes`` (1 and 0 where the input has none)."""
    return {
        "scale": [float(scale.get(a, 1.0)) for a in axes],
        "translate": [float(translate.get(a, 0.0)) for a in axes],
    }


def _contrast_limits(data: Any) -> list[float]:
    """[0, 1] for a probability map, else its finite range (a lazy array: of every k-th pixel,
    at most about 256 per axis, so nothing large is read)."""
    if not isinstance(data, np.ndarray):
        data = data[tuple(slice(None, None, max(1, int(n) // 256)) for n in data.shape)]
    values = np.asarray(data, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return [0.0, 1.0]
    low, high = float(finite.min()), float(finite.max())
    if low >= 0.0 and high <= 1.0:
        return [0.0, 1.0]
    return [low, high if high > low else low + 1.0]


def _pyramid(path: Path | None, level0: Any) -> list[Any] | None:
    """The levels of a streamed output's OME-Zarr (lazy), level 0 first; None in memory or without a pyramid."""
    if path is None or isinstance(level0, np.ndarray):
        return None
    from microzoo.io.read import read_image

    first = read_image(path)
    if len(first.levels) < 2:
        return None
    levels = [level0] + [read_image(path, level=k).data for k in range(1, len(first.levels))]
    return levels if all(level.ndim == level0.ndim for level in levels) else None


def _instance_labels(model: Any, data: Any, axes: str, path: Path | None) -> tuple[Any, str]:
    """An instance model's labels and their axes, or ``(None, "")``: a streamed output's
    ``labels/instances`` (lazy, its levels), or decoded from an in-memory output with the
    package's own settings (as ``microzoo predict`` streams them)."""
    from microzoo.runtime.instances import N_TARGET_CHANNELS, instance_settings_of, instances_from_output

    if path is not None:
        return _streamed_labels(path)
    settings = instance_settings_of(model.descr)
    if settings is None or not isinstance(data, np.ndarray) or not axes.startswith("c"):
        return None, ""
    if data.shape[0] != N_TARGET_CHANNELS:
        return None, ""
    return instances_from_output(data, settings=settings), axes[1:]


def _streamed_labels(path: Path) -> tuple[Any, str]:
    """The levels of ``path/labels/instances`` (lazy, the channel axis of length 1 dropped) and their axes."""
    import dask.array as da

    from microzoo.io.read import read_image
    from microzoo.runtime.stitch_job import LABELS_NAME

    folder = Path(path) / "labels" / LABELS_NAME
    if not folder.is_dir():
        return None, ""
    first = read_image(folder)
    levels = [first.data] + [read_image(folder, level=k).data for k in range(1, len(first.levels))]
    if "c" in first.axes:
        where = (slice(None),) * first.axes.index("c") + (0,)
        levels = [da.from_zarr(level)[where] for level in levels]
    return (levels if len(levels) > 1 else levels[0]), first.axes.replace("c", "")
