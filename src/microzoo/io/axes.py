"""Map an image's axes onto a model's axes and a model's output back onto the image's.

Users speak in axes letters (``"yx"``, ``"yxc"``, ``"tczyx"``); model descriptions name their
axes by id (``("batch", "channel", "y", "x")``). :func:`map_to_model` turns an image into a
model input, :func:`map_from_model` turns the model's output back into the image's layout:

- the image is transposed into the model's order;
- singleton batch, channel, time and index axes are added where the image lacks them;
- image axes the model lacks (time, or z for a 2-D model) are folded into the model's batch
  axis, so a 2-D model runs slice by slice over a z-stack or time series, and are unfolded
  again afterwards;
- an RGB(A) image given to a one-channel model is converted to grayscale; given to a
  three-channel (colour) model, its alpha channel is dropped; a grey image given to a
  three-channel model is repeated into its three channels.

>>> import numpy as np
>>> stack = np.zeros((5, 64, 48), dtype="float32")
>>> x, mapping = map_to_model(stack, "zyx", ("batch", "channel", "y", "x"), channels=1)
>>> x.shape
(5, 1, 64, 48)
>>> out, axes = map_from_model(x, ("batch", "channel", "y", "x"), mapping)
>>> out.shape, axes
((5, 64, 48), 'zyx')
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from microzoo.errors import AxesError, ImageError

__all__ = [
    "AXES_LETTERS",
    "AxesMapping",
    "check_axes",
    "is_colour_model",
    "ids_to_letters",
    "letters_to_ids",
    "map_from_model",
    "map_to_model",
    "select_channels",
    "COLOUR_CHANNELS",
    "RGB_WEIGHTS",
    "rgb_to_grey",
    "to_grayscale",
]

#: every axes letter microzoo knows, in its canonical order
AXES_LETTERS = "bitczyx"
_LETTER_TO_ID = {
    "b": "batch",
    "i": "index",
    "t": "time",
    "c": "channel",
    "z": "z",
    "y": "y",
    "x": "x",
}
_ID_TO_LETTER = {v: k for k, v in _LETTER_TO_ID.items()}
_LETTER_HELP = "b batch, i index, c channel, t time, z y x space"
_SPATIAL = "zyx"
#: luminance weights of skimage.color.rgb2gray (ITU-R BT.709), applied to raw values
RGB_WEIGHTS = (0.2125, 0.7154, 0.0721)


@dataclass(frozen=True)
class AxesMapping:
    """How an image was mapped onto a model input; :func:`map_from_model` undoes it.

    Attributes
    ----------
    input_axes, input_shape
        The image's axes letters and shape as given to :func:`map_to_model`.
    model_axes
        The model input's axis ids.
    folded_axes, folded_shape
        Image axes (in image order) folded into the model's batch axis, and their sizes.
    squeezed_axes
        Singleton image axes dropped because the model has no such axis.
    added_axes
        Letters of singleton axes added because the image lacks them (e.g. ``"bc"``).
    notices
        Conversions a user should hear about, e.g. RGB to grayscale.
    """

    input_axes: str
    input_shape: tuple[int, ...]
    model_axes: tuple[str, ...]
    folded_axes: str = ""
    folded_shape: tuple[int, ...] = ()
    squeezed_axes: str = ""
    added_axes: str = ""
    notices: tuple[str, ...] = ()
    converted_to_gray: bool = False

    @property
    def input_had_channel(self) -> bool:
        """Whether the image had a channel axis of its own (RGB turned gray does not count)."""
        return "c" in self.input_axes and not self.converted_to_gray


def check_axes(axes: str, *, ndim: int | None = None, name: str = "the image") -> str:
    """Return ``axes`` in lower case after checking its letters (and length against ``ndim``).

    Raises
    ------
    AxesError
        Unknown or repeated letters, or a length that differs from ``ndim``.
    """
    if not isinstance(axes, str):
        raise AxesError(f"axes must be a string of letters such as 'zyx', got {axes!r}")
    norm = axes.strip().lower()
    unknown = sorted(set(norm) - set(AXES_LETTERS))
    if unknown:
        raise AxesError(
            f"axes {axes!r} contain unknown letters {''.join(unknown)!r}; "
            f"use one letter per dimension from {_LETTER_HELP}, e.g. 'zyx' or 'cyx'"
        )
    repeated = sorted({a for a in norm if norm.count(a) > 1})
    if repeated:
        raise AxesError(f"axes {axes!r} repeat {''.join(repeated)!r}; each letter may appear once ({_LETTER_HELP})")
    if ndim is not None and len(norm) != ndim:
        raise AxesError(
            f"axes {axes!r} have {len(norm)} letters but {name} has {ndim} dimensions; "
            f"give one letter per dimension ({_LETTER_HELP})"
        )
    return norm


def letters_to_ids(axes: str) -> tuple[str, ...]:
    """Axis ids of a model description for axes letters.

    >>> letters_to_ids("bcyx")
    ('batch', 'channel', 'y', 'x')
    """
    return tuple(_LETTER_TO_ID[a] for a in check_axes(axes))


def ids_to_letters(ids: Sequence[str]) -> str:
    """Axes letters for a model's axis ids: ``("batch", "channel", "y", "x")`` -> ``"bcyx"``.

    Raises
    ------
    AxesError
        An id with no letter (a custom axis id).

    >>> ids_to_letters(("batch", "channel", "y", "x"))
    'bcyx'
    """
    letters = []
    for axis_id in ids:
        key = str(axis_id).lower()
        if key not in _ID_TO_LETTER:
            raise AxesError(
                f"the model has an axis {axis_id!r} that microzoo cannot map onto image axes; "
                f"it understands {', '.join(_ID_TO_LETTER)} only"
            )
        letters.append(_ID_TO_LETTER[key])
    result = "".join(letters)
    return check_axes(result)


def map_to_model(
    data: np.ndarray,
    axes: str,
    model_axes: Sequence[str],
    *,
    channels: int | None,
    colour: bool = False,
) -> tuple[np.ndarray, AxesMapping]:
    """Arrange an image as a model input.

    Parameters
    ----------
    data
        The image.
    axes
        Its axes letters, one per dimension.
    model_axes
        The model input's axis ids, e.g. ``("batch", "channel", "y", "x")``.
    channels
        How many channels the model's input takes; None if it has no channel axis or if any
        number is accepted.
    colour
        The model takes red, green and blue (:func:`is_colour_model`): an RGBA image loses its
        alpha channel, a grey image is repeated into the three.

    Returns
    -------
    tuple
        The array in the model's axis order (C-contiguous; it may share memory with ``data``,
        so copy it before changing it in place) and the :class:`AxesMapping` that undoes it.

    Raises
    ------
    AxesError
        The image cannot be mapped: a channel mismatch, a spatial axis the model needs that the
        image lacks, or axes to fold while the model has no batch axis.
    """
    array = np.asarray(data)
    axes = check_axes(axes, ndim=array.ndim)
    model = ids_to_letters(model_axes)
    notices: list[str] = []

    array, cur = _match_channels(array, axes, model, channels, notices, colour=colour)
    gray_from_rgb = any(notice.startswith(_TO_GREY) for notice in notices)

    missing_space = [a for a in model if a in _SPATIAL and a not in cur]
    if missing_space:
        raise AxesError(
            f"the model needs a {''.join(missing_space)} axis ({model}) but the image has axes "
            f"{axes!r} with shape {tuple(array.shape)}; it is a "
            f"{sum(a in _SPATIAL for a in model)}-D model: give it an image with those axes, or "
            "pass --axes if the image's axes were read wrongly"
        )

    extra = [a for a in cur if a not in model or a == "b"]
    squeezed = ""
    if "b" not in model:
        squeezed = "".join(a for a in extra if array.shape[cur.index(a)] == 1)
        if squeezed:
            array = array.squeeze(axis=tuple(cur.index(a) for a in squeezed))
            cur = "".join(a for a in cur if a not in squeezed)
            extra = [a for a in extra if a not in squeezed]
        if extra:
            sizes = {a: axes_size for a, axes_size in zip(cur, array.shape, strict=True) if a in extra}
            raise AxesError(
                f"the image has axes {axes!r} (shape {tuple(np.shape(data))}) and the model "
                f"({model}) has no {'/'.join(extra)} axis {sizes} and no batch axis to run "
                "over them; pick a single plane or time point first, or use a model with "
                "these axes"
            )
    folded = "".join(extra)
    folded_shape = tuple(array.shape[cur.index(a)] for a in folded)
    rest = [a for a in model if a != "b" and a in cur]
    array = array.transpose([cur.index(a) for a in folded + "".join(rest)])
    batch = math.prod(folded_shape)
    if "b" in model:
        array = array.reshape((batch,) + array.shape[len(folded) :])
        cur = "b" + "".join(rest)
    else:
        cur = "".join(rest)
    added = "".join(a for a in model if a not in cur)
    array = array.reshape(array.shape + (1,) * len(added))
    cur += added
    array = np.ascontiguousarray(array.transpose([cur.index(a) for a in model]))
    mapping = AxesMapping(
        input_axes=axes,
        input_shape=tuple(np.shape(data)),
        model_axes=tuple(model_axes),
        folded_axes=folded,
        folded_shape=folded_shape,
        squeezed_axes=squeezed,
        added_axes="".join(a for a in added if a not in axes),
        notices=tuple(notices),
        converted_to_gray=gray_from_rgb,
    )
    return array, mapping


def select_channels(data: np.ndarray, axes: str, channels: int | Sequence[int]) -> tuple[np.ndarray, str]:
    """Keep only the given channels (0-based, in the order given) of an image's ``c`` axis.

    Returns the image (the ``c`` axis kept, even for one channel) and a notice.

    >>> rgb = np.zeros((4, 5, 3))
    >>> picked, notice = select_channels(rgb, "yxc", [0, 2])
    >>> picked.shape, notice
    ((4, 5, 2), 'used channel(s) 0, 2 of 3')
    """
    array = np.asarray(data)
    axes = check_axes(axes, ndim=array.ndim)
    wanted = [channels] if isinstance(channels, (int, np.integer)) else list(channels)
    if "c" not in axes:
        raise AxesError(
            f"channel(s) {', '.join(map(str, wanted))} were chosen but the image has axes {axes!r} "
            f"(shape {array.shape}) with no channel axis; leave out --channel, or say with --axes "
            "which axis holds the channels (e.g. --axes cyx)"
        )
    n = array.shape[axes.index("c")]
    bad = [c for c in wanted if not 0 <= int(c) < n]
    if not wanted or bad:
        raise AxesError(
            f"channel(s) {', '.join(map(str, bad or wanted)) or 'none'} do not exist: the image has {n} "
            f"channel(s), numbered 0 to {n - 1}; choose among them, e.g. --channel 0"
        )
    picked = np.take(array, [int(c) for c in wanted], axis=axes.index("c"))
    return picked, f"used channel(s) {', '.join(map(str, wanted))} of {n}"


_TO_GREY = "converted RGB to grayscale"

#: the input channel names of a colour model (what microzoo's colour training exports)
COLOUR_CHANNELS = ("red", "green", "blue")


def is_colour_model(channel_names: Sequence[object] | None) -> bool:
    """Whether a model input's channels are red, green and blue (by name).

    >>> is_colour_model(["red", "green", "blue"]), is_colour_model(["channel0", "channel1", "channel2"])
    (True, False)
    """
    names = tuple(str(n).lower() for n in channel_names or ())
    return names in (COLOUR_CHANNELS, ("r", "g", "b"))


def _match_channels(
    array: np.ndarray, axes: str, model: str, channels: int | None, notices: list[str], *, colour: bool = False
) -> tuple[np.ndarray, str]:
    """Reconcile the image's channel axis with the model's; may convert RGB(A) to gray."""
    has_c = "c" in axes
    n = array.shape[axes.index("c")] if has_c else 1
    if "c" not in model:
        if n > 1:
            raise AxesError(
                f"the image has axes {axes!r} with {n} channels but the model takes no channel "
                "axis; choose one channel with --channel (e.g. --channel 0; in Python channel=0), or "
                "pass --axes if the image's axes were read wrongly"
            )
        return array, axes
    if channels is None or n == channels:
        return array, axes
    spatial_only = set(axes) - {"b"} == {"c", "y", "x"}
    if channels == 1 and n in (3, 4) and spatial_only:
        gray = rgb_to_grey(array, channel_axis=axes.index("c"))
        notices.append(_TO_GREY + " for a 1-channel model" + (" (alpha dropped)" if n == 4 else ""))
        return np.expand_dims(gray, axes.index("c")), axes
    if colour and channels == 3 and n == 4 and spatial_only:
        notices.append("dropped the alpha channel of an RGBA image for a 3-channel (colour) model")
        return np.take(array, [0, 1, 2], axis=axes.index("c")), axes
    if colour and channels == 3 and n == 1:
        notices.append("repeated a grey image into the 3 channels of a colour model")
        if not has_c:
            array, axes = array[..., np.newaxis], axes + "c"
        return np.repeat(array, 3, axis=axes.index("c")), axes
    what = f"{n} channels" if has_c else "no channel axis"
    raise AxesError(
        f"the image has axes {axes!r} (shape {tuple(array.shape)}) with {what}, but the model "
        f"takes {channels} channel{'s' if channels != 1 else ''}; "
        + (
            "choose the channel(s) to use with --channel (e.g. --channel 0 or --channel 0,2; in "
            "Python channel=[0, 2]), or pass --axes if another axis holds the channels "
            "(e.g. --axes cyx or --axes yxc)"
            if has_c
            else "if one of the image's axes holds the channels, say so with --axes (e.g. --axes cyx or --axes yxc)"
        )
    )


def map_from_model(output: np.ndarray, output_axes: Sequence[str], mapping: AxesMapping) -> tuple[np.ndarray, str]:
    """Turn a model output back into the layout of the image it was computed from.

    The batch axis is unfolded into the axes :func:`map_to_model` folded into it (or dropped
    if it was added), singleton axes that were added are dropped, and the channel axis is kept
    only if the output has more than one channel or the image had a channel axis. Spatial sizes
    may differ from the input's (a model may change them).

    Returns
    -------
    tuple
        The array and its axes letters, in the image's order (new axes before the spatial ones).

    Raises
    ------
    AxesError
        The output's batch size does not match the folded axes.
    """
    array = np.asarray(output)
    cur = ids_to_letters(output_axes)
    if len(cur) != array.ndim:
        raise AxesError(f"the model output has {array.ndim} dimensions but {len(cur)} axes {tuple(output_axes)}")
    folded = mapping.folded_axes
    if "b" in cur:
        b = cur.index("b")
        batch = array.shape[b]
        expected = math.prod(mapping.folded_shape)
        if batch != expected:
            raise AxesError(
                f"the model output has batch size {batch} but {expected} was expected from "
                f"the folded axes {folded!r} {mapping.folded_shape}"
            )
        array = np.moveaxis(array, b, 0)
        array = array.reshape(mapping.folded_shape + array.shape[1:])
        cur = folded + cur.replace("b", "")
    elif folded:
        raise AxesError(f"the model output has no batch axis, so the folded axes {folded!r} cannot be restored")
    drop = [
        a
        for a in cur
        if array.shape[cur.index(a)] == 1
        and (not mapping.input_had_channel if a == "c" else a not in mapping.input_axes)
    ]
    if drop:
        array = array.squeeze(axis=tuple(cur.index(a) for a in drop))
        cur = "".join(a for a in cur if a not in drop)
    for a in mapping.squeezed_axes:
        if a not in cur:
            array = array[np.newaxis]
            cur = a + cur
    order = _output_order(cur, mapping.input_axes)
    array = array.transpose([cur.index(a) for a in order])
    return array, order


def _output_order(cur: str, input_axes: str) -> str:
    """Order ``cur`` like ``input_axes``; axes the input lacks go before its spatial axes."""
    known = [a for a in input_axes if a in cur]
    new = [a for a in AXES_LETTERS if a in cur and a not in input_axes]
    first_space = next((i for i, a in enumerate(known) if a in _SPATIAL), len(known))
    return "".join(known[:first_space] + new + known[first_space:])


def rgb_to_grey(array: np.ndarray, *, channel_axis: int = -1) -> np.ndarray:
    """Grey from an RGB(A) array: :data:`RGB_WEIGHTS` on the first three channels, alpha dropped.

    The channel axis is removed; the result is floating point (float32 for integer or float32
    input, float64 for float64) in the input's units.

    >>> rgb_to_grey(np.array([[[255, 0, 0, 255]]], np.uint8)).tolist()
    [[54.1875]]
    """
    array = np.asarray(array)
    rgb = np.moveaxis(array, channel_axis, -1)[..., :3]
    if rgb.shape[-1] != 3:
        raise AxesError(f"an RGB(A) image needs 3 or 4 channels, got {array.shape[channel_axis]}")
    weights = np.asarray(RGB_WEIGHTS, dtype=np.result_type(array.dtype, np.float32))
    return np.tensordot(rgb, weights, axes=1)


def to_grayscale(image: np.ndarray) -> np.ndarray:
    """A float64 grey copy of a 2-D image: ``"yx"``, or ``"yxc"`` with 1, 3 or 4 channels.

    Colour images get :func:`rgb_to_grey` (alpha dropped; an RGB image whose three channels are
    equal keeps its values exactly), so the units stay those of the input.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        return image.astype(np.float64)
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        rgb = image[..., :3].astype(np.float64)
        if np.all(rgb[..., 0] == rgb[..., 1]) and np.all(rgb[..., 1] == rgb[..., 2]):
            return rgb[..., 0].copy()
        return rgb_to_grey(rgb)
    if image.ndim == 3 and image.shape[-1] == 1:
        return image[..., 0].astype(np.float64)
    raise ImageError(
        f"expected a 2D image (y, x) or a colour image (y, x, 3|4), got shape {image.shape}; pass one plane at a time"
    )
