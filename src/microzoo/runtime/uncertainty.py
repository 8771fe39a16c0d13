"""How sure is a prediction: the spread of several predictions of the same image.

Three ways to get the members (``method``):

- ``"tta"``: test-time augmentation. The image is flipped / rotated by 90 degrees in its
  y, x plane (the 8 transforms of :data:`TRANSFORMS`), each predicted with
  :meth:`Model.predict_image`, and each output turned back. Outputs without both y and x are
  averaged as they are (a transform should not change them); outputs whose turned-back shape
  differs from the first member's (y and x scaled differently) skip that transform, with a
  notice. Vector-valued outputs (flows, offsets) change sign under a flip: their spread is
  not meaningful.
- ``"dropout"``: Monte-Carlo dropout, ``samples`` forwards with the network's Dropout layers
  active. Needs ``pytorch_state_dict`` weights (TorchScript and ONNX fold dropout away) and a
  network that has Dropout layers; refused otherwise.
- ``"ensemble"``: the model and the ``ensemble`` models, which must have the same outputs.

The members are combined by a running mean and variance (Welford): never all kept at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from microzoo.errors import ImageError, MicrozooError
from microzoo.progress import ProgressCallback, no_progress
from microzoo.runtime.outputs import Outputs
from microzoo.runtime.predict import Model, Prediction, _default_axes

__all__ = [
    "METHODS",
    "TRANSFORMS",
    "UncertainPrediction",
    "UncertaintySettings",
    "flip_rate",
    "predict_with_uncertainty",
    "uncertainty_settings",
]

METHODS = ("tta", "dropout", "ensemble")

#: transform name -> (quarter turns of np.rot90 in the (y, x) plane, applied after flipping x)
_DIHEDRAL = {
    "identity": (0, False),
    "flip_x": (0, True),
    "flip_y": (2, True),
    "rot90": (1, False),
    "rot180": (2, False),
    "rot270": (3, False),
    "transpose": (1, True),
    "anti_transpose": (3, True),
}
#: the 8 dihedral transforms of the (y, x) plane
TRANSFORMS: tuple[str, ...] = tuple(_DIHEDRAL)


@dataclasses.dataclass(frozen=True)
class UncertainPrediction:
    """A prediction averaged over members, with how much the members disagree.

    Attributes
    ----------
    prediction : Prediction
        The mean of the members, with the axes and notices of :meth:`Model.predict_image`
        (``n_tiles``: forwards of all members together).
    spread : dict
        Output id -> standard deviation over the members (float32, the output's shape).
    flip_rate : dict
        Output id -> the fraction of the foreground (pixels where any member is > 0.5) on which
        the members disagree about > 0.5; ``None`` when the output is not within [0, 1].
    members : int
        How many predictions were combined.
    method : str
        ``"tta"``, ``"dropout"`` or ``"ensemble"``.
    votes : dict
        Output id -> per pixel, how many members are > 0.5 (uint16); ``None`` as for ``flip_rate``.
    """

    prediction: Prediction
    spread: dict[str, np.ndarray]
    flip_rate: dict[str, float | None]
    members: int
    method: str
    votes: dict[str, np.ndarray | None] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class UncertaintySettings:
    """How :func:`predict_with_uncertainty` gets its members (its arguments of the same names)."""

    method: str = "tta"
    transforms: tuple[str, ...] = TRANSFORMS
    ensemble: tuple[Model, ...] = ()
    samples: int = 8

    def __post_init__(self) -> None:
        _check_options(self.method, self.transforms, self.ensemble, self.samples)

    def options(self) -> dict[str, Any]:
        """These settings as keyword arguments of :func:`predict_with_uncertainty`."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def uncertainty_settings(value: str | UncertaintySettings) -> UncertaintySettings:
    """Settings from a method name (``"tta"``, ``"dropout"``) or the settings themselves."""
    return value if isinstance(value, UncertaintySettings) else UncertaintySettings(method=value)


def predict_with_uncertainty(
    model: Model,
    image: np.ndarray | Mapping[str, np.ndarray],
    *,
    axes: str | Mapping[str, str] | None = None,
    method: str = "tta",
    transforms: Sequence[str] = TRANSFORMS,
    ensemble: Sequence[Model] = (),
    samples: int = 8,
    tile: int | Mapping[str, int] | None = None,
    memory_budget: int | None = None,
    channel: int | Sequence[int] | None = None,
    progress: ProgressCallback | None = None,
) -> UncertainPrediction:
    """Predict ``image`` several times (see the module docstring) and combine the members.

    ``transforms`` (names from :data:`TRANSFORMS`) is used by ``"tta"``, ``samples`` (forwards)
    by ``"dropout"``, ``ensemble`` (the other models) by ``"ensemble"``; the other options are
    those of :meth:`Model.predict_image`.
    """
    _check_options(method, transforms, ensemble, samples)
    progress = progress or no_progress
    options = {"tile": tile, "memory_budget": memory_budget, "channel": channel}
    if method == "tta":
        runs = _tta_runs(model, image, axes, list(dict.fromkeys(transforms)), options)
    elif method == "dropout":
        runs = _dropout_runs(model, image, axes, samples, options)
    else:
        runs = _ensemble_runs([model, *ensemble], image, axes, options)
    return _combine(runs, method, progress)


def _check_options(method: str, transforms: Sequence[str], ensemble: Sequence[Model], samples: int) -> None:
    """Refuse options that cannot work, before any prediction."""
    if method not in METHODS:
        raise MicrozooError(f"unknown uncertainty method {method!r}: choose one of {', '.join(METHODS)}")
    unknown = [t for t in transforms if t not in _DIHEDRAL]
    if method == "tta" and (unknown or not transforms):
        raise MicrozooError(
            f"unknown transform(s) {', '.join(unknown) or '(none given)'}: choose from {', '.join(TRANSFORMS)}"
        )
    if method == "dropout" and samples < 2:
        raise MicrozooError(f"dropout needs at least 2 samples, not {samples}")
    if method == "ensemble" and not ensemble:
        raise MicrozooError("an ensemble needs other models besides this one: give them (--ensemble MODEL ...)")


# --- the members -----------------------------------------------------------------------------

#: a member's prediction already turned back to the image's layout, or None when it is skipped
_Run = tuple[int, Iterator[tuple[Prediction | None, tuple[str, ...]]]]


def _image_axes(model: Model, image: Any, axes: Any) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Input id -> image, and -> its axes, resolved as :meth:`Model.predict_image` resolves them."""
    images = {k: np.asarray(v) for k, v in model._per_input(image, "image").items()}
    given = model._per_input(axes, "axes") if axes is not None else {}
    return images, {tid: given.get(tid) or _default_axes(data, tid) for tid, data in images.items()}


def _turn(array: np.ndarray, axes: str, name: str, *, inverse: bool = False) -> np.ndarray | None:
    """``array`` (with ``axes``) under transform ``name`` (or its inverse); None without y and x."""
    if "y" not in axes or "x" not in axes:
        return None
    quarter_turns, flip = _DIHEDRAL[name]
    plane = (axes.index("y"), axes.index("x"))
    if inverse:
        array = np.rot90(array, -quarter_turns, axes=plane)
        return np.flip(array, plane[1]) if flip else array
    array = np.flip(array, plane[1]) if flip else array
    return np.rot90(array, quarter_turns, axes=plane)


def _tta_runs(model: Model, image: Any, axes: Any, names: list[str], options: dict[str, Any]) -> _Run:
    images, image_axes = _image_axes(model, image, axes)
    for tid, data in images.items():
        if _turn(data, image_axes[tid], "identity") is None:
            raise ImageError(
                f"test-time augmentation turns the y, x plane, but the image for input '{tid}' has "
                f"axes '{image_axes[tid]}': give its axes with y and x"
            )

    def members() -> Iterator[tuple[Prediction | None, tuple[str, ...]]]:
        shapes: dict[str, tuple[int, ...]] = {}
        for name in names:
            turned = {tid: np.ascontiguousarray(_turn(d, image_axes[tid], name)) for tid, d in images.items()}
            prediction = model.predict_image(turned, axes=image_axes, **options)
            outputs, notices = {}, []
            for oid, out in prediction.outputs.items():
                back = _turn(out, prediction.axes[oid], name, inverse=True)
                if back is None:
                    back = out
                    notices.append(f"output '{oid}' has no y and x axes: averaged over the transforms as it is")
                if shapes.setdefault(oid, back.shape) != back.shape:
                    notices.append(f"transform {name} skipped: output '{oid}' cannot be turned back to its shape")
                    yield None, tuple(notices)
                    break
                outputs[oid] = np.ascontiguousarray(back)
            else:
                yield dataclasses.replace(prediction, outputs=Outputs(outputs)), tuple(notices)

    return len(names), members()


def _ensemble_runs(models: Sequence[Model], image: Any, axes: Any, options: dict[str, Any]) -> _Run:
    first = models[0]
    for other in models[1:]:
        if other.output_ids != first.output_ids:
            raise MicrozooError(
                f"the ensemble's models must have the same outputs: {first.package.name} has "
                f"{', '.join(first.output_ids)}, {other.package.name} has {', '.join(other.output_ids)}"
            )

    def members() -> Iterator[tuple[Prediction | None, tuple[str, ...]]]:
        reference: Prediction | None = None
        for member in models:
            prediction = member.predict_image(image, axes=axes, **options)
            if reference is None:
                reference = prediction
            for oid, out in prediction.outputs.items():
                if out.shape != reference.outputs[oid].shape or prediction.axes[oid] != reference.axes[oid]:
                    raise MicrozooError(
                        f"the ensemble's models disagree on the shape of output '{oid}': "
                        f"{reference.axes[oid]} {reference.outputs[oid].shape} from {models[0].package.name}, "
                        f"{prediction.axes[oid]} {out.shape} from {member.package.name}"
                    )
            yield prediction, ()

    return len(models), members()


def _dropout_runs(model: Model, image: Any, axes: Any, samples: int, options: dict[str, Any]) -> _Run:
    notices: tuple[str, ...] = ()
    if model.weight_format != "pytorch_state_dict":
        from microzoo.runtime.engines import available_formats

        if "pytorch_state_dict" not in available_formats(model.package):
            raise MicrozooError(
                f"Monte-Carlo dropout needs the network itself (pytorch_state_dict weights); "
                f"{model.package.name} has only {', '.join(available_formats(model.package))}, where "
                "dropout is folded away: use --uncertainty tta or ensemble instead"
            )
        model = Model(model.package, weights="pytorch_state_dict", device=model.device, threads=model.threads)
        notices = ("dropout ran the pytorch_state_dict weights (the network with its Dropout layers)",)
    network = model.engine.module  # type: ignore[attr-defined]
    dropouts = _dropout_layers(network)
    if not dropouts:
        raise MicrozooError(
            f"{model.package.name}'s network has no Dropout layers, so Monte-Carlo dropout cannot "
            "sample it: use --uncertainty tta (flips and rotations) or ensemble instead"
        )

    def members() -> Iterator[tuple[Prediction | None, tuple[str, ...]]]:
        import torch

        with torch.random.fork_rng(devices=[]), _active(dropouts):
            torch.manual_seed(0)  # the same samples every time
            for _ in range(samples):
                yield model.predict_image(image, axes=axes, **options), notices

    return samples, members()


def _dropout_layers(network: Any) -> list[Any]:
    import torch

    kinds = (torch.nn.Dropout, torch.nn.Dropout1d, torch.nn.Dropout2d, torch.nn.Dropout3d, torch.nn.AlphaDropout)
    return [m for m in network.modules() if isinstance(m, kinds) and m.p > 0]


@contextlib.contextmanager
def _active(layers: Sequence[Any]) -> Iterator[None]:
    """Dropout layers in training mode (sampling) for the duration; eval mode again after."""
    for layer in layers:
        layer.train()
    try:
        yield
    finally:
        for layer in layers:
            layer.eval()


# --- combining -------------------------------------------------------------------------------


class _Running:
    """Running mean and variance of one output (Welford), and where members cross 0.5."""

    def __init__(self, first: np.ndarray) -> None:
        self.dtype = first.dtype
        self.n = 1
        self.mean = first.astype(np.float64)
        self.m2 = np.zeros_like(self.mean)
        self.in_unit = bool(first.size) and float(first.min()) >= 0 and float(first.max()) <= 1
        self.above = (first > 0.5).astype(np.uint16)

    def add(self, value: np.ndarray) -> None:
        self.n += 1
        delta = value - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (value - self.mean)
        self.in_unit = self.in_unit and float(value.min()) >= 0 and float(value.max()) <= 1
        self.above += value > 0.5

    def mean_array(self) -> np.ndarray:
        floating = np.issubdtype(self.dtype, np.floating)
        return self.mean.astype(self.dtype if floating else np.float32)

    def spread(self) -> np.ndarray:
        return np.sqrt(self.m2 / self.n).astype(np.float32)

    def votes(self) -> np.ndarray | None:
        return self.above if self.in_unit else None

    def flip_rate(self) -> float | None:
        return flip_rate(self.above, self.n) if self.in_unit else None


def flip_rate(votes: np.ndarray, members: int) -> float:
    """The fraction of the foreground (pixels where any member is > 0.5) on which the members
    disagree (some > 0.5, some not), from the vote counts of :attr:`UncertainPrediction.votes`."""
    foreground = int(np.count_nonzero(votes))
    disagree = foreground - int(np.count_nonzero(votes == members))
    return disagree / foreground if foreground else 0.0


def _combine(runs: _Run, method: str, progress: ProgressCallback) -> UncertainPrediction:
    total, members = runs
    running: dict[str, _Running] = {}
    first: Prediction | None = None
    notices: list[str] = []
    n_tiles = 0
    for done, (prediction, member_notices) in enumerate(members, start=1):
        notices.extend(member_notices)
        if prediction is not None:
            n_tiles += prediction.n_tiles
            notices.extend(prediction.notices)
            if first is None:
                first = prediction
                running = {oid: _Running(out) for oid, out in prediction.outputs.items()}
            else:
                for oid, out in prediction.outputs.items():
                    running[oid].add(out)
        progress(done, total, f"{method} member {done} of {total}")
    assert first is not None  # the first member always has the reference shapes
    n = next(iter(running.values())).n if running else 0
    mean = dataclasses.replace(
        first,
        outputs=Outputs({oid: r.mean_array() for oid, r in running.items()}),
        notices=tuple(dict.fromkeys(notices)),
        n_tiles=n_tiles,
    )
    return UncertainPrediction(
        prediction=mean,
        spread={oid: r.spread() for oid, r in running.items()},
        flip_rate={oid: r.flip_rate() for oid, r in running.items()},
        members=n,
        method=method,
        votes={oid: r.votes() for oid, r in running.items()},
    )
