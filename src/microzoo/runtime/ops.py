"""Pre- and postprocessing ops of the BioImage Model Zoo format 0.5, bound to a whole tensor.

:func:`bind_ops` takes a tensor's op descriptions and the **whole** tensor (every sample,
the whole image) and computes every data-dependent statistic once, all of them on that tensor
as given (the raw input, or the raw model output for postprocessing), never on the result of
the ops before: ``scale_linear`` then ``zero_mean_unit_variance`` normalises with the mean and
std of the unscaled input. This is what bioimageio.core 0.11 does (one ``UpdateStats`` step
before every op), so a package gives the same numbers in every tool. The returned
:class:`Pipeline` is then pointwise (softmax aside, which needs its whole axis) and can be
applied to the whole tensor or to any tile of it with the same result.

Semantics follow the spec's field documentation and bioimageio.core 0.11.0 (``proc_ops.py``):

- ``axes`` of an op are the axes reduced over; leaving out ``batch`` means per sample,
  ``None`` means all axes jointly (batch included). Statistics are computed in float64:
  mean, population std, percentiles with linear interpolation; ``clip`` by percentiles per
  sample uses numpy's ``inverted_cdf`` method as core does (``linear`` over the batch).
- Percentiles over the batch are exact over the whole tensor; core averages per-sample
  percentiles when it sees samples one at a time.
- ``reference_tensor`` (``scale_range``, ``scale_mean_variance``) is looked up in ``sample``,
  even when it names the tensor itself. Core computes every statistic before any
  preprocessing, so references are in their **raw, unprocessed** state (the spec: "ID of the
  unprocessed input tensor"); callers pass raw inputs (and raw model outputs) in ``sample``.
- ``eps`` of ``zero_mean_unit_variance`` and ``scale_range`` is honoured (core 0.11.0 always
  uses 1e-6); ``binarize`` thresholds along an axis apply along that axis (core compares them
  with the last axis).
- Statistics are taken over the **finite** values only (core's are NaN as soon as one pixel
  is NaN or infinite); the pipeline itself maps NaN to NaN.
- Output dtype: ``binarize`` gives ``bool``, ``ensure_dtype`` its dtype, every other op
  ``numpy.result_type(input, float32)`` (float32 for float32 and small integer inputs).
- ``ensure_dtype`` to an integer dtype truncates toward zero like core's ``astype``; values
  outside the dtype's range are clipped to it and NaN becomes 0 (core leaves these undefined).

Images larger than memory: :func:`statistics_needed` lists the statistics the ops need
(:class:`~microzoo.runtime.stats.StatRequest`, those of a ``reference_tensor`` under its id);
:func:`~microzoo.runtime.stats.stream_statistics` computes them block by block (mean and std
to float64 rounding, percentiles exactly); ``bind_ops(..., statistics=..., tensor_id=...)``
then binds the same :class:`Pipeline` from them without reading the data. In memory the
statistics are computed by :func:`~microzoo.runtime.stats.compute_statistics`.

Tiles: statistics are stored with size 1 on reduced axes. Where a statistic keeps a
non-singleton axis (per sample: ``batch``; per channel: ``channel``; a spatial axis left out
of ``axes``) a tile must either span that axis whole or say where it lies in the whole tensor::

    pipeline(tile, where=(slice(0, 1), slice(None), slice(256, 512), slice(0, 256)))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

import numpy as np
from bioimageio.spec.model import v0_5

from microzoo.errors import ProcessingError
from microzoo.runtime.stats import StatRequest, compute_statistics, reduced_indices

__all__ = ["Pipeline", "ProcessingDescr", "bind_ops", "describe_op", "statistics_needed"]

ProcessingDescr: TypeAlias = v0_5.PreprocessingDescr | v0_5.PostprocessingDescr
_Fit = Callable[[np.ndarray], np.ndarray]
_QuantileMethod = Literal["linear", "inverted_cdf"]
_FIXED_EPS = 1e-6  # fixed_zero_mean_unit_variance has no eps field; core uses 1e-6


# --- bound steps: pointwise given their (broadcastable, full-tensor) parameters -------------


def _work(x: np.ndarray) -> np.ndarray:
    """``x`` as the arithmetic type: float32 stays float32 (the engines' type, and no copy of a
    whole image), everything else goes to float64. Results are cast back to :func:`_out_dtype`.

    Statistics are still computed in float64 (:mod:`microzoo.runtime.stats`); applying
    them in float32 costs at most a few float32 ulps, far inside the spec's tolerance, and on a
    4096x4096 image saves about 2 s of float64 copies.
    """
    return x if x.dtype == np.float32 else x.astype(np.float64, copy=False)


def _out_dtype(x: np.ndarray) -> np.dtype:
    return np.result_type(x.dtype, np.float32)


@dataclass(frozen=True)
class _Affine:
    """``out = (x - sub) / div * mul + add``; parameters that are ``None`` are skipped."""

    sub: np.ndarray | None = None
    div: np.ndarray | None = None
    mul: np.ndarray | None = None
    add: np.ndarray | None = None

    def __call__(self, x: np.ndarray, fit: _Fit) -> np.ndarray:
        out = _work(x)
        fresh = False  # once ``out`` is a new array of its final shape, the next steps work in place
        for parameter, ufunc in ((self.sub, np.subtract), (self.div, np.true_divide), (self.mul, np.multiply),
                                 (self.add, np.add)):  # fmt: skip
            if parameter is not None:
                value = fit(parameter).astype(out.dtype, copy=False)
                in_place = fresh and np.broadcast_shapes(out.shape, value.shape) == out.shape
                out, fresh = ufunc(out, value, out=out if in_place else None), True
        return out.astype(_out_dtype(x), copy=False)


@dataclass(frozen=True)
class _Binarize:
    threshold: np.ndarray

    def __call__(self, x: np.ndarray, fit: _Fit) -> np.ndarray:
        return _work(x) > fit(self.threshold)


@dataclass(frozen=True)
class _Clip:
    """Clip to ``[low, high]``; bounds from percentiles replace by ``np.where`` (as core does,
    so NaN becomes the bound), fixed bounds by ``np.clip``."""

    low: np.ndarray | None
    high: np.ndarray | None
    low_by_percentile: bool = False
    high_by_percentile: bool = False

    def __call__(self, x: np.ndarray, fit: _Fit) -> np.ndarray:
        out = _work(x)
        low = None if self.low is None else fit(self.low).astype(out.dtype, copy=False)
        high = None if self.high is None else fit(self.high).astype(out.dtype, copy=False)
        if self.low_by_percentile and low is not None:
            out, low = np.where(out >= low, out, low), None
        if self.high_by_percentile and high is not None:
            out, high = np.where(out <= high, out, high), None
        if low is not None or high is not None:
            out = np.clip(out, low, high)
        return out.astype(_out_dtype(x), copy=False)


@dataclass(frozen=True)
class _Cast:
    dtype: np.dtype

    def __call__(self, x: np.ndarray, fit: _Fit) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):
            if self.dtype.kind in "iu" and x.dtype.kind in "fc":  # truncate, NaN -> 0, clip
                info, high = np.iinfo(self.dtype), float(np.iinfo(self.dtype).max)
                if int(high) > info.max:  # (u)int64: the largest float below the bound
                    high = np.nextafter(high, -np.inf)
                y = np.nan_to_num(np.trunc(x.real.astype(np.float64)), nan=0.0)
                return np.clip(y, info.min, high).astype(self.dtype)
            if self.dtype.kind in "iu" and x.dtype.kind in "iu" and x.dtype != self.dtype:
                to, src = np.iinfo(self.dtype), np.iinfo(x.dtype)
                return np.clip(x, max(to.min, src.min), min(to.max, src.max)).astype(self.dtype)
            return x.astype(self.dtype, copy=False)  # Pipeline.__call__ never returns its input


@dataclass(frozen=True)
class _Sigmoid:
    def __call__(self, x: np.ndarray, fit: _Fit) -> np.ndarray:
        work = _work(x)
        if work.dtype == np.float32:
            # sigmoid(x) = (1 + tanh(x / 2)) / 2: exact to an ulp, never overflows, and in place it
            # runs twice as fast as scipy's expit (0.1 s against 0.2 s on a 4096x4096 output)
            out = np.multiply(work, np.float32(0.5))
            np.tanh(out, out=out)
            out *= np.float32(0.5)
            out += np.float32(0.5)
            return out
        import scipy.special  # here, not at the top: 0.15-0.7 s of every start-up, for float64 only

        return scipy.special.expit(work).astype(_out_dtype(x), copy=False)


@dataclass(frozen=True)
class _Softmax:
    axis: int

    def __call__(self, x: np.ndarray, fit: _Fit) -> np.ndarray:
        import scipy.special

        return scipy.special.softmax(_work(x), axis=self.axis).astype(_out_dtype(x), copy=False)


_Step: TypeAlias = _Affine | _Binarize | _Clip | _Cast | _Sigmoid | _Softmax


# --- the pipeline ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Pipeline:
    """Ops bound to one whole tensor; call it on that tensor or on any tile of it.

    ``axes`` and ``shape`` are those of the whole tensor the statistics were computed on;
    ``steps`` are the bound ops in order and ``names`` their op ids.
    """

    axes: tuple[str, ...]
    shape: tuple[int, ...]
    steps: tuple[_Step, ...] = ()
    names: tuple[str, ...] = ()

    @property
    def is_identity(self) -> bool:
        """Whether the pipeline has no ops (a call then returns a copy)."""
        return not self.steps

    @property
    def whole_axes(self) -> frozenset[str]:
        """Axes a tile must span whole (the axis of a ``softmax``)."""
        return frozenset(self.axes[s.axis] for s in self.steps if isinstance(s, _Softmax))

    def __call__(self, array: np.ndarray, *, where: Sequence[slice] | None = None) -> np.ndarray:
        """Apply the ops to ``array`` (the whole tensor or a tile), returning a new array.

        Parameters
        ----------
        array
            Data with the pipeline's axes; never modified.
        where
            One slice per axis giving the tile's position in the whole tensor. Needed only
            when a statistic varies along an axis the tile does not span whole.
        """
        x = np.asarray(array)
        if x.ndim != len(self.axes):
            raise ProcessingError(
                f"processing expects {len(self.axes)} axes {self.axes}, got an array of shape "
                f"{x.shape}; give the data with exactly these axes"
            )
        position = _resolve_where(where, x.shape, self.shape, self.axes)
        fit = _fitter(x.shape, position, self.axes, self.names)
        for name, step in zip(self.names, self.steps, strict=True):
            if isinstance(step, _Softmax) and x.shape[step.axis] != self.shape[step.axis]:
                axis = self.axes[step.axis]
                raise ProcessingError(
                    f"{name} runs along {axis!r} and needs all {self.shape[step.axis]} positions "
                    f"of it, but the tile has {x.shape[step.axis]}; do not tile along {axis!r}"
                )
            x = step(x, fit)
        return x.copy() if x is array else x


def _resolve_where(
    where: Sequence[slice] | None, shape: tuple[int, ...], full: tuple[int, ...], axes: tuple[str, ...]
) -> tuple[slice, ...] | None:
    if where is None:
        return None
    where = tuple(where)
    if len(where) != len(full) or not all(isinstance(s, slice) for s in where):
        raise ProcessingError(
            f"where must be one slice per axis {axes}, got {where!r}; give the tile's position "
            "in the whole tensor as a tuple of slices"
        )
    resolved = []
    for axis, s, n, size in zip(axes, where, full, shape, strict=True):
        start, stop, step = s.indices(n)
        if step != 1 or stop - start != size:
            raise ProcessingError(
                f"where[{axis!r}] = {s} covers {max(stop - start, 0)} of the tensor's {n} "
                f"positions but the tile has {size}; give slices with step 1 that lie inside "
                "the whole tensor and match the tile's shape"
            )
        resolved.append(slice(start, stop))
    return tuple(resolved)


def _fitter(
    shape: tuple[int, ...], position: tuple[slice, ...] | None, axes: tuple[str, ...], names: tuple[str, ...]
) -> _Fit:
    """Cut a full-tensor parameter down to the tile at ``position``."""

    def fit(param: np.ndarray) -> np.ndarray:
        if position is not None:
            index = tuple(p if n > 1 else slice(None) for p, n in zip(position, param.shape, strict=True))
            return param[index]
        for axis, n, size in zip(axes, param.shape, shape, strict=True):
            if n > 1 and n != size:
                raise ProcessingError(
                    f"the statistics of {', '.join(names)} vary along {axis!r} ({n} values) but "
                    f"the tile has {size} there; pass where=(slices...) with the tile's "
                    "position in the whole tensor"
                )
        return param

    return fit


# --- binding: statistics on the whole tensor ------------------------------------------------

_THIS = "\0this"  # the id of the bound tensor's own statistics when the caller names none


def statistics_needed(ops: Sequence[ProcessingDescr], axes: Sequence[str], *, tensor_id: str) -> list[StatRequest]:
    """The statistics :func:`bind_ops` uses to bind ``ops`` to the tensor ``tensor_id`` (axes
    ``axes``), in order and without repeats.

    Those of a ``reference_tensor`` carry its id: compute each request on the tensor it names
    (:func:`microzoo.runtime.stats.stream_statistics`), then pass them all to
    ``bind_ops(..., statistics=..., tensor_id=tensor_id)``.
    """
    axes, tensor_id = tuple(str(a) for a in axes), str(tensor_id)
    for op in ops:
        for request in _op_requests(op, tensor_id):
            if request.tensor_id == tensor_id:
                _reduced(request.axes, axes, str(op.id))
    return _requests(ops, tensor_id)


def _requests(ops: Sequence[ProcessingDescr], tensor_id: str) -> list[StatRequest]:
    return list(dict.fromkeys(r for op in ops for r in _op_requests(op, tensor_id)))


def _op_requests(op: ProcessingDescr, tensor_id: str) -> list[StatRequest]:
    """What :func:`_bind` asks for: the same constructors, so the two cannot drift apart."""
    if isinstance(op, v0_5.ClipDescr):
        kw = op.kwargs
        return _quantile_requests(tensor_id, kw.axes, _clip_quantiles(kw), _clip_method(kw))
    if isinstance(op, v0_5.ScaleRangeDescr):
        rk = op.kwargs
        ref = tensor_id if rk.reference_tensor is None else str(rk.reference_tensor)
        return _quantile_requests(ref, rk.axes, (rk.min_percentile / 100, rk.max_percentile / 100), "linear")
    if isinstance(op, v0_5.ScaleMeanVarianceDescr):
        mk = op.kwargs
        ref = tensor_id if mk.reference_tensor is None else str(mk.reference_tensor)
        return _moment_requests(tensor_id, mk.axes) + _moment_requests(ref, mk.axes)
    if isinstance(op, v0_5.ZeroMeanUnitVarianceDescr):
        return _moment_requests(tensor_id, op.kwargs.axes)
    return []


def _names(reduce: Sequence[object] | None) -> tuple[str, ...] | None:
    return None if reduce is None else tuple(str(a) for a in reduce)


def _moment_requests(tensor_id: str, reduce: Sequence[object] | None) -> list[StatRequest]:
    return [StatRequest(tensor_id, "mean", _names(reduce)), StatRequest(tensor_id, "std", _names(reduce))]


def _quantile_requests(
    tensor_id: str, reduce: Sequence[object] | None, qs: Sequence[float], method: _QuantileMethod
) -> list[StatRequest]:
    return [StatRequest(tensor_id, "quantile", _names(reduce), float(q), method) for q in qs]


def _clip_quantiles(kw: v0_5.ClipKwargs) -> list[float]:
    return [p / 100 for p in (kw.min_percentile, kw.max_percentile) if p is not None]


def _clip_method(kw: v0_5.ClipKwargs) -> _QuantileMethod:
    return "linear" if kw.axes is None or "batch" in map(str, kw.axes) else "inverted_cdf"


class _Statistics:
    """Statistics by request: looked up in those given, or computed in memory on first use
    (every request of the same tensor, kind and axes at once, as :func:`compute_statistics`
    groups them)."""

    def __init__(
        self,
        requests: list[StatRequest],
        own: str,
        data: np.ndarray,
        axes: tuple[str, ...],
        sample: Mapping[str, tuple[np.ndarray, Sequence[str]]],
        given: Mapping[str, np.ndarray] | None,
    ):
        self.requests, self.own, self.data, self.axes, self.sample, self.given = (
            requests, own, data, axes, sample, given
        )  # fmt: skip
        self.cache: dict[str, np.ndarray] = {}

    def __call__(self, request: StatRequest) -> np.ndarray:
        if self.given is not None:
            if request.key not in self.given:
                raise ProcessingError(
                    f"the statistics given to bind_ops lack {request.key!r}; compute every request "
                    "of statistics_needed(ops, axes, tensor_id=...) and pass the same tensor_id"
                )
            return _frozen(self.given[request.key])
        if request.key not in self.cache:
            if request.tensor_id == self.own:
                data, axes = self.data, self.axes
            else:
                array, ref_axes = self.sample[request.tensor_id]
                data, axes = np.asarray(array), tuple(str(a) for a in ref_axes)
            same = [r for r in self.requests if _together(r, request)]
            self.cache.update(compute_statistics(data, axes, same))
        return self.cache[request.key]


def _together(a: StatRequest, b: StatRequest) -> bool:
    family = {"mean": "moments", "std": "moments"}
    return (a.tensor_id, family.get(a.kind, a.kind), a.axes, a.method) == (
        b.tensor_id, family.get(b.kind, b.kind), b.axes, b.method
    )  # fmt: skip


def bind_ops(
    ops: Sequence[ProcessingDescr],
    data: np.ndarray,
    axes: Sequence[str],
    *,
    sample: Mapping[str, tuple[np.ndarray, Sequence[str]]] | None = None,
    statistics: Mapping[str, np.ndarray] | None = None,
    tensor_id: str | None = None,
) -> Pipeline:
    """Bind ``ops`` to the whole tensor ``data``, computing every statistic they need.

    Parameters
    ----------
    ops
        Pre- or postprocessing descriptions (``bioimageio.spec.model.v0_5``), in order.
    data
        The whole tensor (every sample, the whole image), never a tile; not modified. The
        statistics of every op are computed on it as given, not after the ops before. With
        ``statistics``, only its shape is used: a lazy array, or the shape itself.
    axes
        Axis ids of ``data``, e.g. ``("batch", "channel", "y", "x")``.
    sample
        Other tensors of the same sample by tensor id, as ``(array, axes)``, in their raw
        (unprocessed) state; needed for ``reference_tensor``. With ``statistics`` only their
        axes and shapes are used (lazy arrays are fine).
    statistics
        Precomputed statistics, ``StatRequest.key`` -> array, for every request of
        ``statistics_needed(ops, axes, tensor_id=tensor_id)`` (e.g. from
        :func:`microzoo.runtime.stats.stream_statistics`); then nothing is computed here.
    tensor_id
        The id of ``data``'s tensor; needed with ``statistics`` (their keys carry it).

    Returns
    -------
    Pipeline
        Applies the bound ops to ``data`` or to any tile of it.
    """
    axes = tuple(str(a) for a in axes)
    if statistics is None:
        data = np.asarray(data)
        shape = tuple(data.shape)
    else:
        if tensor_id is None:
            raise ValueError("bind_ops(statistics=...) needs the tensor_id the statistics were requested for")
        shape = tuple(int(n) for n in (data.shape if hasattr(data, "shape") else data))
    if len(shape) != len(axes) or len(set(axes)) != len(axes):
        raise ProcessingError(
            f"tensor of shape {shape} does not match the axes {axes}; give one distinct axis id per dimension"
        )
    own = _THIS if tensor_id is None else str(tensor_id)
    sample = sample or {}
    stat = _Statistics(_requests(ops, own), own, data, axes, sample, statistics)
    steps = tuple(_bind(op, shape, axes, sample, own, stat) for op in ops)  # statistics of the raw tensor
    names = tuple(str(op.id) for op in ops)
    return Pipeline(axes=axes, shape=shape, steps=steps, names=names)


def _bind(
    op: ProcessingDescr,
    shape: tuple[int, ...],
    axes: tuple[str, ...],
    sample: Mapping[str, tuple[np.ndarray, Sequence[str]]],
    own: str,
    stat: _Statistics,
) -> _Step:
    name, ndim = str(op.id), len(shape)
    if isinstance(op, v0_5.BinarizeDescr):
        bk = op.kwargs
        if isinstance(bk, v0_5.BinarizeAlongAxisKwargs):
            return _Binarize(_along(bk.threshold, bk.axis, axes, shape, name, "threshold"))
        return _Binarize(_scalar(bk.threshold, ndim))
    if isinstance(op, v0_5.ClipDescr):
        return _bind_clip(op.kwargs, ndim, axes, name, own, stat)
    if isinstance(op, v0_5.EnsureDtypeDescr):
        return _Cast(np.dtype(op.kwargs.dtype))
    if isinstance(op, v0_5.FixedZeroMeanUnitVarianceDescr):
        fk = op.kwargs
        if isinstance(fk, v0_5.FixedZeroMeanUnitVarianceAlongAxisKwargs):
            mean = _along(fk.mean, fk.axis, axes, shape, name, "mean")
            std = _along(fk.std, fk.axis, axes, shape, name, "std")
        else:
            mean, std = _scalar(fk.mean, ndim), _scalar(fk.std, ndim)
        return _Affine(sub=mean, div=_frozen(std + _FIXED_EPS))
    if isinstance(op, v0_5.ScaleLinearDescr):
        lk = op.kwargs
        if isinstance(lk, v0_5.ScaleLinearAlongAxisKwargs):
            gain = _along(_listed(lk.gain), lk.axis, axes, shape, name, "gain")
            offset = _along(_listed(lk.offset), lk.axis, axes, shape, name, "offset")
        else:
            gain, offset = _scalar(lk.gain, ndim), _scalar(lk.offset, ndim)
        return _Affine(mul=gain, add=offset)
    if isinstance(op, v0_5.ScaleRangeDescr):
        rk = op.kwargs
        ref, ref_axes = _reference(rk.reference_tensor, own, axes, sample, name)
        _reduced(rk.axes, ref_axes, name)
        qs = (rk.min_percentile / 100, rk.max_percentile / 100)
        low, high = (stat(r) for r in _quantile_requests(ref, rk.axes, qs, "linear"))
        low, high = (_align(v, ref_axes, axes, shape, name) for v in (low, high))
        return _Affine(sub=low, div=_frozen(high - low + rk.eps))
    if isinstance(op, v0_5.ScaleMeanVarianceDescr):
        mk = op.kwargs
        _reduced(mk.axes, axes, name)
        mean, std = (stat(r) for r in _moment_requests(own, mk.axes))
        ref, ref_axes = _reference(mk.reference_tensor, own, axes, sample, name)
        _reduced(mk.axes, ref_axes, name)
        ref_mean, ref_std = (stat(r) for r in _moment_requests(ref, mk.axes))
        ref_mean, ref_std = (_align(v, ref_axes, axes, shape, name) for v in (ref_mean, ref_std))
        return _Affine(sub=mean, div=_frozen(std + mk.eps), mul=_frozen(ref_std + mk.eps), add=ref_mean)
    if isinstance(op, v0_5.SigmoidDescr):
        return _Sigmoid()
    if isinstance(op, v0_5.SoftmaxDescr):
        return _Softmax(_axis_index(op.kwargs.axis, axes, name))
    if isinstance(op, v0_5.ZeroMeanUnitVarianceDescr):
        _reduced(op.kwargs.axes, axes, name)
        mean, std = (stat(r) for r in _moment_requests(own, op.kwargs.axes))
        return _Affine(sub=mean, div=_frozen(std + op.kwargs.eps))
    raise ProcessingError(
        f"processing op {name!r} ({describe_op(op)}) is not supported by microzoo: only the "
        "pointwise ops of format 0.5 are; run this model with bioimageio.core, or remove the "
        "op and apply it to the output yourself"
    )


def _bind_clip(kw: v0_5.ClipKwargs, ndim: int, axes: tuple[str, ...], name: str, own: str, stat: _Statistics) -> _Clip:
    low = None if kw.min is None else _scalar(kw.min, ndim)
    high = None if kw.max is None else _scalar(kw.max, ndim)
    if kw.min_percentile is None and kw.max_percentile is None:
        return _Clip(low, high)
    _reduced(kw.axes, axes, name)
    values = [stat(r) for r in _quantile_requests(own, kw.axes, _clip_quantiles(kw), _clip_method(kw))]
    if kw.min_percentile is not None:
        low = values.pop(0)
    if kw.max_percentile is not None:
        high = values.pop(0)
    return _Clip(
        low, high, low_by_percentile=kw.min_percentile is not None, high_by_percentile=kw.max_percentile is not None
    )


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float64)
    a.setflags(write=False)
    return a


def _scalar(value: float, ndim: int) -> np.ndarray:
    return _frozen(np.full((1,) * ndim, float(value)))


def _listed(value: float | Sequence[float]) -> list[float]:
    return [float(value)] if isinstance(value, (int, float)) else [float(v) for v in value]


def _axis_index(axis: object, axes: tuple[str, ...], name: str) -> int:
    if str(axis) not in axes:
        raise ProcessingError(
            f"{name} names the axis {str(axis)!r} but the tensor has axes {axes}; fix the op's "
            "axis in the model description or give data with that axis"
        )
    return axes.index(str(axis))


def _along(
    values: Sequence[float], axis: object, axes: tuple[str, ...], shape: tuple[int, ...], name: str, what: str
) -> np.ndarray:
    """Per-entry parameters laid along ``axis``, size 1 elsewhere."""
    i = _axis_index(axis, axes, name)
    values = _listed(values)
    if len(values) != shape[i]:
        raise ProcessingError(
            f"{name} gives {len(values)} {what} value(s) along {str(axis)!r} but the tensor has "
            f"{shape[i]} there; give one value per entry of {str(axis)!r} in the description, or "
            "data with that many entries"
        )
    return _frozen(np.reshape(values, [-1 if j == i else 1 for j in range(len(shape))]))


def _reduced(reduce: Sequence[object] | None, axes: tuple[str, ...], name: str) -> tuple[int, ...]:
    return reduced_indices(None if reduce is None else [str(a) for a in reduce], axes, name)


def _reference(
    ref_id: object,
    own: str,
    axes: tuple[str, ...],
    sample: Mapping[str, tuple[np.ndarray, Sequence[str]]],
    name: str,
) -> tuple[str, tuple[str, ...]]:
    """The id and axes of the tensor ``ref_id`` names (the bound tensor itself for ``None``)."""
    if ref_id is None:
        return own, axes
    if str(ref_id) not in sample:
        raise ProcessingError(
            f"{name} takes its statistics from the tensor {str(ref_id)!r}, which was not given; "
            f"pass it as sample={{{str(ref_id)!r}: (array, axes)}} (given: {sorted(sample)})"
        )
    ref, ref_axes = sample[str(ref_id)]
    shape, ref_axes = np.shape(ref), tuple(str(a) for a in ref_axes)
    if len(shape) != len(ref_axes):
        raise ProcessingError(
            f"reference tensor {str(ref_id)!r} of shape {shape} does not match its axes "
            f"{ref_axes}; give one axis id per dimension"
        )
    return str(ref_id), ref_axes


def _align(
    stat: np.ndarray, src: tuple[str, ...], axes: tuple[str, ...], shape: tuple[int, ...], name: str
) -> np.ndarray:
    """Move a keepdims statistic of a tensor with axes ``src`` onto ``axes``."""
    for a, n in zip(src, stat.shape, strict=True):
        if a not in axes and n > 1:
            raise ProcessingError(
                f"{name}: the reference statistics vary along {a!r}, which this tensor lacks; "
                f"add {a!r} to the op's axes so it is reduced over"
            )
    kept = [a for a in src if a in axes]
    order = [a for a in axes if a in kept]
    out = stat.reshape([n for a, n in zip(src, stat.shape, strict=True) if a in axes])
    out = out.transpose([kept.index(a) for a in order])
    out = out.reshape([out.shape[order.index(a)] if a in order else 1 for a in axes])
    for a, n, size in zip(axes, out.shape, shape, strict=True):
        if n not in (1, size):
            raise ProcessingError(
                f"{name}: the reference statistics have {n} values along {a!r} but the tensor "
                f"has {size}; add {a!r} to the op's axes or give matching tensors"
            )
    return _frozen(out)


# --- descriptions ---------------------------------------------------------------------------


def _fmt(v: float | Sequence[float]) -> str:
    return f"{float(v):g}" if isinstance(v, (int, float)) else f"[{', '.join(f'{float(x):g}' for x in v)}]"


def _over(reduce: Sequence[object] | None) -> str:
    if reduce is None:
        return "over all axes jointly"
    names = [str(a) for a in reduce]
    scope = "across the batch" if "batch" in names else "per sample"
    return f"over ({', '.join(names)}) {scope}"


def _along_words(kw: object) -> str:
    axis = getattr(kw, "axis", None)  # only the *AlongAxisKwargs and softmax have one
    return "" if axis is None else f" along {axis}"


def describe_op(op: ProcessingDescr) -> str:
    """One line saying what ``op`` does, e.g. ``"zero_mean_unit_variance over (x, y) per sample,
    eps 1e-06"``."""
    if isinstance(op, v0_5.BinarizeDescr):
        return f"binarize{_along_words(op.kwargs)}: value > {_fmt(op.kwargs.threshold)}"
    if isinstance(op, v0_5.ClipDescr):
        return _describe_clip(op.kwargs)
    if isinstance(op, v0_5.EnsureDtypeDescr):
        return f"ensure_dtype {op.kwargs.dtype}"
    if isinstance(op, v0_5.FixedZeroMeanUnitVarianceDescr):
        kw = op.kwargs
        return f"fixed_zero_mean_unit_variance{_along_words(kw)}: mean {_fmt(kw.mean)}, std {_fmt(kw.std)}"
    if isinstance(op, v0_5.ScaleLinearDescr):
        return f"scale_linear{_along_words(op.kwargs)}: gain {_fmt(op.kwargs.gain)}, offset {_fmt(op.kwargs.offset)}"
    if isinstance(op, v0_5.ScaleRangeDescr):
        r = op.kwargs
        ref = "" if r.reference_tensor is None else f" of tensor '{r.reference_tensor}'"
        return (
            f"scale_range percentiles {r.min_percentile:g} to {r.max_percentile:g}{ref} {_over(r.axes)}, eps {r.eps:g}"
        )
    if isinstance(op, v0_5.ScaleMeanVarianceDescr):
        m = op.kwargs
        return f"scale_mean_variance to match tensor '{m.reference_tensor}' {_over(m.axes)}, eps {m.eps:g}"
    if isinstance(op, v0_5.SoftmaxDescr):
        return f"softmax along {op.kwargs.axis}"
    if isinstance(op, v0_5.ZeroMeanUnitVarianceDescr):
        return f"zero_mean_unit_variance {_over(op.kwargs.axes)}, eps {op.kwargs.eps:g}"
    if isinstance(op, v0_5.CustomProcessingDescr):
        return f"custom: {op.callable} from {op.source}"
    if isinstance(op, v0_5.StardistPostprocessingDescr):
        s = op.kwargs
        return f"stardist_postprocessing: {s.n_rays} rays, probability > {s.prob_threshold:g}, nms {s.nms_threshold:g}"
    if isinstance(op, v0_5.CellposeFlowDynamicsDescr):
        c = op.kwargs
        return f"cellpose_flow_dynamics: cell probability > {c.cellprob_threshold:g}, flow {c.flow_threshold:g}"
    return str(op.id)


def _describe_clip(kw: v0_5.ClipKwargs) -> str:
    low = (
        f"percentile {kw.min_percentile:g}"
        if kw.min_percentile is not None
        else ("-inf" if kw.min is None else _fmt(kw.min))
    )
    high = (
        f"percentile {kw.max_percentile:g}"
        if kw.max_percentile is not None
        else ("inf" if kw.max is None else _fmt(kw.max))
    )
    pct = kw.min_percentile is not None or kw.max_percentile is not None
    return f"clip to [{low}, {high}]" + (f" {_over(kw.axes)}" if pct else "")
