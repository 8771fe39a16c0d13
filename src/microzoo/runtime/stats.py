"""Statistics of a whole tensor for the processing ops: computed in memory, or streamed.

The ops of :mod:`microzoo.runtime.ops` need statistics of a whole tensor (every sample, the
whole image): mean, std, percentiles, and the per-channel median that
:func:`microzoo.runtime.non_finite.fill_non_finite` puts where a value is not finite. Each is
named by a :class:`StatRequest` (``ops.statistics_needed`` lists those a tensor's ops need)
and comes back as a float64 array with size 1 on the reduced axes (``keepdims``).

:func:`compute_statistics` computes them on a tensor in memory (the numbers ``bind_ops`` has
always used). :func:`stream_statistics` computes the same statistics from any array-like
(a lazy Zarr or TIFF view) block by block, so memory never grows with the image:

- **mean and std**: one pass; per block the count, the mean and the sum of squared deviations
  in float64, combined block after block in C order of the block indices (Chan et al.'s
  parallel formula). Exact to float64 rounding (NumPy's own values agree to ~1e-15 relative)
  and the same bits on every run with the same block shape.
- **percentiles and medians**: exact, for every integer and float dtype: the values' bits
  are mapped to unsigned integer keys in the same order as the values (radix select). The
  first pass counts the top 16 bits of the keys in a histogram per group; the bin that holds
  each needed rank is then split by the next 16 bits in a further pass (or, when it holds at
  most 2**20 values, they are kept and sorted), until the key is known whole. 8- and 16-bit
  data are done in the first pass, 32-bit data (``float32``, ``int32``) in two, 64-bit data in
  two unless a bin is large, four at most. The order statistics are then combined exactly as
  :func:`numpy.quantile` combines them (``linear`` and ``inverted_cdf``), so the result is
  NumPy's to the bit. Memory: a block, one histogram of 2**16 counts per group and pending
  rank, and the kept bins (at most 2**22 values).
- Values that are not finite (NaN, +-inf) are left out of every statistic, as in
  :mod:`~microzoo.runtime.ops`, and counted (kinds ``nan_count``, ``inf_count``).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeAlias, cast

import numpy as np

from microzoo.errors import ProcessingError
from microzoo.progress import ProgressCallback
from microzoo.runtime._radix_select import Reduction

__all__ = [
    "StatRequest",
    "compute_statistics",
    "finite_median",
    "load_statistics",
    "save_statistics",
    "stream_sample_statistics",
    "stream_statistics",
]

Kind: TypeAlias = Literal["mean", "std", "quantile", "median", "nan_count", "inf_count"]
QuantileMethod: TypeAlias = Literal["linear", "inverted_cdf"]
_KINDS = ("mean", "std", "quantile", "median", "nan_count", "inf_count")


@dataclass(frozen=True)
class StatRequest:
    """One statistic of one tensor, reduced over ``axes`` (``None``: all of its axes).

    ``key`` names it in a statistics mapping (and in a saved ``.npz``), e.g.
    ``"raw|quantile|y,x|linear|0.995"`` or ``"raw|mean|*"``.
    """

    tensor_id: str
    kind: Kind
    axes: tuple[str, ...] | None = None
    q: float | None = None
    method: QuantileMethod | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown statistic {self.kind!r}; one of {_KINDS}")
        if (self.kind == "quantile") != (self.q is not None and self.method is not None):
            raise ValueError("a quantile request needs q and method, and only a quantile request has them")

    @property
    def key(self) -> str:
        over = "*" if self.axes is None else ",".join(self.axes)
        tail = f"|{self.method}|{self.q!r}" if self.kind == "quantile" else ""
        return f"{self.tensor_id}|{self.kind}|{over}{tail}"


def reduced_indices(reduce: Sequence[str] | None, axes: Sequence[str], name: str) -> tuple[int, ...]:
    """Indices of the axes ``reduce`` names in ``axes`` (all for ``None``); ``name`` is the op."""
    axes = tuple(axes)
    if reduce is None:
        return tuple(range(len(axes)))
    missing = [str(a) for a in reduce if str(a) not in axes]
    if missing:
        raise ProcessingError(
            f"{name} computes statistics over the axes {[str(a) for a in reduce]} but the tensor "
            f"has axes {axes} (missing: {missing}); fix the op's axes or give data with these axes"
        )
    return tuple(axes.index(str(a)) for a in reduce)


# --- in memory --------------------------------------------------------------------------------


def compute_statistics(data: np.ndarray, axes: Sequence[str], requests: Iterable[StatRequest]) -> dict[str, np.ndarray]:
    """The statistics ``requests`` name (all of one tensor), computed on ``data`` in memory.

    Requests that share their axes are computed together: mean and std in one call of
    :func:`mean_std`, the quantiles of one method in one :func:`numpy.quantile`.
    """
    data, axes = np.asarray(data), tuple(axes)
    out: dict[str, np.ndarray] = {}
    groups: dict[tuple[Any, ...], list[StatRequest]] = {}
    for r in requests:
        family = "moments" if r.kind in ("mean", "std") else r.kind
        groups.setdefault((family, r.axes, r.method), []).append(r)
    for (family, reduce, method), group in groups.items():
        red = reduced_indices(reduce, axes, f"the statistics of {group[0].tensor_id!r}")
        if family == "moments":
            mean, std = mean_std(data, red)
            out.update({r.key: mean if r.kind == "mean" else std for r in group})
        elif family == "quantile":
            qs = list(dict.fromkeys(float(r.q) for r in group))  # type: ignore[arg-type]
            values = dict(zip(qs, quantiles(data, qs, red, cast(QuantileMethod, method)), strict=True))
            out.update({r.key: values[float(r.q)] for r in group})  # type: ignore[arg-type]
        elif family == "median":
            median = _frozen(finite_median(data, red))
            out.update({r.key: median for r in group})
        else:  # nan_count, inf_count
            is_kind = np.isnan if family == "nan_count" else np.isinf
            kept = _kept_shape(data.shape, red)
            count = is_kind(data).sum(axis=red, keepdims=True) if data.dtype.kind in "fc" else np.zeros(kept)
            out.update(dict.fromkeys((r.key for r in group), _frozen(count)))
    return out


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float64)
    a.setflags(write=False)
    return a


def _kept_shape(shape: Sequence[int], red: Sequence[int]) -> tuple[int, ...]:
    return tuple(1 if i in red else n for i, n in enumerate(shape))


def _non_finite_as_nan(x: np.ndarray) -> np.ndarray | None:
    """``x`` in float64 with every NaN or infinite value as NaN, or ``None`` when all are finite."""
    if x.dtype.kind not in "fc" or np.isfinite(x).all():
        return None
    return np.where(np.isfinite(x), x, np.nan).astype(np.float64, copy=False)


def mean_std(x: np.ndarray, red: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population std over ``red`` of the finite values, keeping dims, in float64."""
    nan_x = _non_finite_as_nan(x)
    if nan_x is not None:
        with warnings.catch_warnings():  # a slice with no finite value gives NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            return (
                _frozen(np.nanmean(nan_x, axis=red, keepdims=True)),
                _frozen(np.nanstd(nan_x, axis=red, keepdims=True)),
            )
    mean = x.mean(axis=red, keepdims=True, dtype=np.float64)  # float64 sums, no float64 copy of x
    # two passes; deviations in float32 where the data is exact in it (float32, integers of up to
    # 16 bits), else float64; squares summed in float64: as accurate as a float64 copy to ~1e-7
    # relative, and on a 4096x4096 uint8 image one float32 array instead of two float64 copies
    exact_in_float32 = x.dtype == np.float32 or (x.dtype.kind in "iub" and x.dtype.itemsize <= 2)
    dtype = np.float32 if exact_in_float32 else np.float64
    deviation = np.subtract(x, mean.astype(dtype), dtype=dtype)
    np.square(deviation, out=deviation)
    std = np.sqrt(deviation.mean(axis=red, keepdims=True, dtype=np.float64))
    return _frozen(mean), _frozen(std)


def quantiles(x: np.ndarray, qs: Sequence[float], red: tuple[int, ...], method: QuantileMethod) -> list[np.ndarray]:
    """Quantiles over ``red`` of the finite values, keeping dims, in float64."""
    nan_x = _non_finite_as_nan(x)
    if nan_x is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            values = np.nanquantile(nan_x, list(qs), axis=red, keepdims=True, method=method)
    else:
        values = np.quantile(x.astype(np.float64, copy=False), list(qs), axis=red, keepdims=True, method=method)
    return [_frozen(v) for v in values]


def finite_median(x: np.ndarray, red: tuple[int, ...]) -> np.ndarray:
    """Median over ``red`` of the finite values, keeping dims, in ``x``'s dtype (as
    :func:`numpy.nanmedian` gives it; NaN where there is none)."""
    with warnings.catch_warnings():  # a slice with no finite value: its median is NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        if x.dtype.kind not in "fc":
            return np.median(x, axis=red, keepdims=True)
        return np.nanmedian(np.where(np.isfinite(x), x, np.nan), axis=red, keepdims=True)


# --- saved with a job -----------------------------------------------------------------------


def save_statistics(path: str | Path, statistics: Mapping[str, np.ndarray]) -> Path:
    """Write ``statistics`` (key -> array) to an ``.npz`` file, atomically."""
    from microzoo.io.atomic import atomic_output

    path = Path(path)
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **{k: np.asarray(v, dtype=np.float64) for k, v in statistics.items()})  # type: ignore[arg-type]
    return path


def load_statistics(path: str | Path) -> dict[str, np.ndarray]:
    """The statistics :func:`save_statistics` wrote (read-only arrays)."""
    with np.load(path, allow_pickle=False) as saved:
        return {k: _frozen(saved[k]) for k in saved.files}


# --- streamed ---------------------------------------------------------------------------------


def stream_statistics(
    data: Any,
    axes: Sequence[str],
    requests: Iterable[StatRequest],
    *,
    block: tuple[int, ...],
    progress: ProgressCallback | None = None,
) -> dict[str, np.ndarray]:
    """The statistics ``requests`` name, computed from ``data`` block by block.

    Parameters
    ----------
    data
        Any array-like with ``shape``, ``dtype`` and ``__getitem__`` by slices (a NumPy array,
        a Zarr array, a lazy view); only one block of it is held at a time.
    axes
        Axis ids of ``data``; the requests' axes name some of them.
    requests
        Statistics of this one tensor (``request.tensor_id`` the same for all).
    block
        The block shape read at a time, one size per axis (e.g. a multiple of the storage
        chunks). The results of the same block shape are the same bits on every run; the
        percentiles do not depend on it at all.
    progress
        Called as ``progress(done, total, description)`` after each block of each pass.

    Returns
    -------
    dict
        ``request.key`` -> float64 array, size 1 on the reduced axes.
    """
    axes, shape = tuple(str(a) for a in axes), tuple(int(n) for n in data.shape)
    requests = list(dict.fromkeys(requests))
    if len(axes) != len(shape) or len(block) != len(shape) or any(int(b) < 1 for b in block):
        raise ValueError(f"data of shape {shape}, axes {axes} and block {block} must have one entry per axis")
    if len({r.tensor_id for r in requests}) > 1:
        raise ValueError("stream_statistics computes the statistics of one tensor: group the requests by tensor_id")
    tensor = requests[0].tensor_id if requests else ""
    dtype = np.dtype(data.dtype)
    reductions: dict[tuple[int, ...], Reduction] = {}
    for r in requests:
        red = tuple(sorted(reduced_indices(r.axes, axes, f"the statistic {r.key!r}")))
        reductions.setdefault(red, Reduction(shape, red, dtype)).add(r)
    if not reductions:
        return {}
    blocks = list(itertools.product(*(range(0, n, int(b)) for n, b in zip(shape, block, strict=True))))
    level = 0
    while level == 0 or any(r.pending for r in reductions.values()):
        level += 1
        active = [r for r in reductions.values() if level == 1 or r.pending]
        for done, start in enumerate(blocks, 1):
            where = tuple(slice(s, min(s + int(b), n)) for s, b, n in zip(start, block, shape, strict=True))
            x = np.asarray(data[where])
            for reduction in active:
                reduction.read(x, where)
            if progress is not None:
                progress(done, len(blocks), f"statistics of {tensor}, pass {level}")
        for reduction in active:
            reduction.settle()
    out: dict[str, np.ndarray] = {}
    for reduction in reductions.values():
        out.update({k: _frozen(v) for k, v in reduction.results().items()})
    return out


def stream_sample_statistics(
    sample: Mapping[str, tuple[Any, Sequence[str]]],
    requests: Iterable[StatRequest],
    *,
    blocks: Mapping[str, tuple[int, ...]],
    progress: ProgressCallback | None = None,
) -> dict[str, np.ndarray]:
    """:func:`stream_statistics` for requests of several tensors (those of
    ``ops.statistics_needed`` for every tensor of a model, reference tensors included).

    ``sample`` maps each tensor id the requests name to ``(array-like, axes)``, ``blocks`` to
    its block shape. Each tensor is streamed once, in the order the requests first name them.
    """
    by_tensor: dict[str, list[StatRequest]] = {}
    for r in requests:
        by_tensor.setdefault(r.tensor_id, []).append(r)
    missing = sorted(set(by_tensor) - set(sample))
    if missing:
        raise ProcessingError(
            f"statistics of the tensor(s) {missing} are needed but only {sorted(sample)} were given; "
            "pass every tensor the ops name (reference tensors included)"
        )
    out: dict[str, np.ndarray] = {}
    for tid, mine in by_tensor.items():
        data, axes = sample[tid]
        out.update(stream_statistics(data, axes, mine, block=blocks[tid], progress=progress))
    return out
