"""Exact moments and order statistics of an array read block by block (for :mod:`.stats`).

One :class:`Reduction` per set of reduced axes. Its groups are the index combinations of the
kept axes (per sample and channel: one group per (batch, channel) pair). Each block is laid
out as ``(groups in the block, values)`` rows.

Order statistics by radix select: a value's bits become an unsigned key that sorts like the
value (integers: the sign bit flipped; floats: all bits flipped for negatives, the sign bit
set for positives; NaN and infinities are left out before). Pass 1 counts the top ``d`` bits
of every key per group (``d`` = 16 unless there are many groups); the bin holding a needed
rank fixes those bits of its key, and the rank within the bin is carried on. Every further
pass counts the next ``d`` bits of the keys that share the fixed prefix, until all bits are
fixed: the key, hence the value, of that rank is known exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from microzoo.errors import ProcessingError

_HIST_BUDGET = 1 << 21  # counts held by one histogram pass of one reduction (16 MiB)
_KEEP_PER_SET = 1 << 20  # a bin of at most this many values is kept whole and sorted (8 MiB)...
_KEEP_BUDGET = 1 << 22  # ...as long as all kept bins of a pass hold at most this many (32 MiB)


def digit_bits(n_sets: int, remaining: int) -> int:
    """Bits counted per pass: 16, fewer when ``n_sets`` histograms would pass the budget."""
    d = 16
    while d > 1 and max(n_sets, 1) << d > _HIST_BUDGET:
        d -= 1
    return min(d, remaining)


class _Keys:
    """Order-preserving unsigned integer keys of a dtype's values, and back."""

    def __init__(self, dtype: np.dtype):
        if dtype.kind == "b":
            dtype_u = np.dtype(np.uint8)
        elif dtype.kind in "uif" and dtype.itemsize in (1, 2, 4, 8):
            dtype_u = np.dtype(f"u{dtype.itemsize}")
        else:
            raise ProcessingError(
                f"percentiles of {dtype} data are not supported; convert the image to an integer "
                "or float type of at most 64 bits"
            )
        self.dtype, self.udtype = dtype, dtype_u
        self.width = 8 * dtype_u.itemsize
        self.sign = dtype_u.type(1 << (self.width - 1))

    def keys(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x)
        kind = self.dtype.kind
        if kind in "bu":
            return x.astype(self.udtype, copy=False)
        bits = x.view(self.udtype)
        if kind == "i":
            return bits ^ self.sign
        # floats: flip every bit of a negative value, only the sign bit of a positive one
        flip = (x.view(f"i{self.dtype.itemsize}") >> (self.width - 1)).view(self.udtype)  # all ones or 0
        flip |= self.sign
        flip ^= bits
        return flip

    def values(self, keys: np.ndarray) -> np.ndarray:
        keys = np.ascontiguousarray(keys, dtype=self.udtype)
        kind = self.dtype.kind
        if kind in "bu":
            return keys.astype(self.dtype)
        if kind == "i":
            return (keys ^ self.sign).view(self.dtype)
        return np.where(keys & self.sign, keys ^ self.sign, ~keys).view(self.dtype)


class Reduction:
    """The statistics over one set of reduced axes, fed one block at a time."""

    def __init__(self, shape: Sequence[int], red: tuple[int, ...], dtype: np.dtype):
        self.shape, self.red, self.dtype = tuple(shape), red, np.dtype(dtype)
        self.kept = tuple(i for i in range(len(shape)) if i not in red)
        self.grid = tuple(self.shape[i] for i in self.kept)
        self.keep_shape = tuple(1 if i in red else n for i, n in enumerate(self.shape))
        self.n_groups = math.prod(self.grid)
        self.requests: list = []
        self.floats = self.dtype.kind in "fc"
        self.moments = self.order = self.non_finite = False
        self.first = True
        self.pending = False
        g = self.n_groups
        self.n = np.zeros(g, np.int64)
        self.mean, self.m2 = np.zeros(g), np.zeros(g)
        self.n_nan, self.n_inf = np.zeros(g, np.int64), np.zeros(g, np.int64)
        # order statistics (set up by ``add``): the key codec, the histogram of this pass, the
        # targets (group, rank, rank within the fixed prefix, prefix) and their sets
        self.codec: _Keys
        self.d = 0
        self.hist = np.zeros((0, 1), np.int64)
        self.bits = 0
        self.t_gid = self.t_rank = self.t_rank0 = self.t_set = np.zeros(0, np.int64)
        self.t_prefix = np.zeros(0, np.uint64)
        self.t_count = np.zeros(0, np.int64)
        self.t_done = np.zeros(0, bool)
        self.set_prefix = np.zeros(0, np.uint64)
        self.set_collect = np.zeros(0, bool)
        self.collected: dict[int, list[np.ndarray]] = {}
        self.slots: list[np.ndarray] = []

    def add(self, request) -> None:
        self.requests.append(request)
        self.moments |= request.kind in ("mean", "std")
        self.non_finite |= request.kind in ("nan_count", "inf_count")
        if request.kind in ("quantile", "median") and not self.order:
            self.order, self.codec = True, _Keys(self.dtype)
            self.d = digit_bits(self.n_groups, self.codec.width)
            self.hist = np.zeros((self.n_groups, 1 << self.d), np.int64)

    # --- reading ---------------------------------------------------------------------------

    def _rows(self, x: np.ndarray, where: tuple[slice, ...]) -> tuple[np.ndarray, np.ndarray]:
        rows = np.ascontiguousarray(x.transpose(self.kept + self.red))
        rows = rows.reshape(math.prod(x.shape[i] for i in self.kept), -1)
        if not self.kept:
            return rows, np.zeros(1, np.int64)
        ranges = np.meshgrid(*(np.arange(where[i].start, where[i].stop) for i in self.kept), indexing="ij")
        return rows, np.ravel_multi_index(ranges, self.grid).ravel()

    def read(self, x: np.ndarray, where: tuple[slice, ...]) -> None:
        if x.size == 0:
            return
        rows, gids = self._rows(x, where)
        finite = np.isfinite(rows) if self.floats else None
        if finite is not None and finite.all():
            finite = None
        if not self.first:
            self._refine(rows, finite, gids)
            return
        nb = np.full(len(gids), rows.shape[1], np.int64) if finite is None else finite.sum(axis=1)
        if self.non_finite and finite is not None:
            nan = np.isnan(rows).sum(axis=1)
            self.n_nan[gids] += nan
            self.n_inf[gids] += rows.shape[1] - nb - nan
        if self.moments:
            self._add_moments(rows, finite, nb, gids)
        self.n[gids] += nb
        if self.order:
            self._count_first_digit(rows, finite, gids)

    def _add_moments(self, rows: np.ndarray, finite: np.ndarray | None, nb: np.ndarray, gids: np.ndarray) -> None:
        """Chan et al.'s pairwise update: the block's mean and squared deviations joined to
        the running ones, group by group, in the fixed block order."""
        values = rows.astype(np.float64) if finite is None else np.where(finite, rows, 0).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            mb = values.sum(axis=1) / nb
            dev = values - mb[:, None]
            if finite is not None:
                dev[~finite] = 0.0
            m2b = np.square(dev, out=dev).sum(axis=1)  # NumPy's pairwise sums, as for the mean
            na = self.n[gids]
            n = na + nb
            delta = mb - self.mean[gids]
            mean = self.mean[gids] + delta * (nb / n)
            m2 = self.m2[gids] + m2b + delta * delta * (na * (nb / n))
        self.mean[gids] = np.where(na == 0, mb, np.where(nb == 0, self.mean[gids], mean))
        self.m2[gids] = np.where(na == 0, m2b, np.where(nb == 0, self.m2[gids], m2))

    def _count_first_digit(self, rows: np.ndarray, finite: np.ndarray | None, gids: np.ndarray) -> None:
        keys = self.codec.keys(rows)
        digit = (keys >> (self.codec.width - self.d)).astype(np.int64)
        digit += (np.arange(len(gids), dtype=np.int64) << self.d)[:, None]
        flat = digit.ravel() if finite is None else digit[finite]
        self.hist[gids] += np.bincount(flat, minlength=len(gids) << self.d).reshape(len(gids), -1)

    def _refine(self, rows: np.ndarray, finite: np.ndarray | None, gids: np.ndarray) -> None:
        """Count the next digit of the keys in each pending set, or keep them (small sets)."""
        keys = self.codec.keys(rows)
        width, d = self.codec.width, self.d
        for slot in self.slots:
            sets = slot[gids]
            use = sets >= 0
            if not use.any():
                continue
            k, s = keys[use], sets[use]
            member = (k >> (width - self.bits)) == self.set_prefix[s][:, None]
            if finite is not None:
                member &= finite[use]
            for i in np.flatnonzero(self.set_collect[s]):
                self.collected[int(s[i])].append(k[i][member[i]])
            counted = ~self.set_collect[s]
            if not counted.any():
                continue
            k, s, member = k[counted], s[counted], member[counted]
            low = int(s.min())
            digit = ((k >> (width - self.bits - d)) & ((1 << d) - 1)).astype(np.int64)
            digit += ((s - low).astype(np.int64) << d)[:, None]
            counts = np.bincount(digit[member], minlength=(int(s.max()) - low + 1) << d)
            self.hist[low : int(s.max()) + 1] += counts.reshape(-1, 1 << d)

    # --- between passes -------------------------------------------------------------------

    def settle(self) -> None:
        """After a pass: fix the next digit of each pending rank, or its whole key where its set
        was kept; plan the next pass if some are still pending."""
        if not self.order:
            self.first = False
            return
        if self.first:
            self.first = False
            self._plan_targets()
            self._advance(np.arange(len(self.t_gid)), self.t_gid)
        else:
            pending = np.flatnonzero(~self.t_done)
            kept = self.set_collect[self.t_set[pending]]
            for set_id in np.unique(self.t_set[pending[kept]]):
                ordered = np.sort(np.concatenate(self.collected[int(set_id)]))
                targets = pending[kept][self.t_set[pending[kept]] == set_id]
                self.t_prefix[targets] = ordered[self.t_rank[targets]]
                self.t_done[targets] = True
            self._advance(pending[~kept], self.t_set[pending[~kept]])
        self.pending = not self.t_done.all()
        if self.pending:
            self._plan_sets()

    def _advance(self, targets: np.ndarray, owner: np.ndarray) -> None:
        """Fix the digit counted in ``hist`` (row ``owner``) of each of ``targets``."""
        bin_, below = _find_bins(self.hist, owner, self.t_rank[targets])
        self.t_rank[targets] -= below
        self.t_count[targets] = self.hist[owner, bin_] if len(targets) else 0
        self.t_prefix[targets] = (self.t_prefix[targets] << np.uint64(self.d)) | bin_.astype(np.uint64)
        self.bits += self.d
        if self.bits >= self.codec.width:
            self.t_done[targets] = True

    def _plan_targets(self) -> None:
        """The ranks every order request needs, per group with at least one finite value."""
        ranks = []
        for r in self.requests:
            if r.kind in ("quantile", "median"):
                lo, hi, _ = _ranks(r, self.n)
                ranks += [np.stack([np.arange(self.n_groups)[self.n > 0], v[self.n > 0]], axis=1) for v in (lo, hi)]
        pairs = np.unique(np.concatenate(ranks), axis=0) if ranks else np.zeros((0, 2), np.int64)
        self.t_gid, self.t_rank, self.t_rank0 = pairs[:, 0].copy(), pairs[:, 1].copy(), pairs[:, 1].copy()
        self.t_prefix = np.zeros(len(pairs), np.uint64)
        self.t_count = np.zeros(len(pairs), np.int64)
        self.t_done = np.zeros(len(pairs), bool)
        self.t_set = np.full(len(pairs), -1, np.int64)
        self.bits = 0

    def _plan_sets(self) -> None:
        """Group the pending ranks by (group, fixed prefix), lay the sets out in slots (a group's
        first set in slot 0, ...), and choose which to keep whole rather than count."""
        pending = np.flatnonzero(~self.t_done)
        pairs = np.stack([self.t_gid[pending], self.t_prefix[pending].astype(np.int64)], axis=1)
        sets, inverse = np.unique(pairs, axis=0, return_inverse=True)
        self.t_set[:] = -1
        self.t_set[pending] = inverse.ravel()
        self.set_prefix = sets[:, 1].astype(self.codec.udtype)
        count = np.zeros(len(sets), np.int64)
        count[inverse.ravel()] = self.t_count[pending]
        self.set_collect = (count <= _KEEP_PER_SET) & (np.cumsum(count) <= _KEEP_BUDGET)
        self.collected = {int(i): [] for i in np.flatnonzero(self.set_collect)}
        self.d = digit_bits(int((~self.set_collect).sum()), self.codec.width - self.bits)
        self.hist = np.zeros((len(sets), 1 << self.d), np.int64)
        self.slots = []
        gid = sets[:, 0]
        occurrence = np.arange(len(gid)) - np.searchsorted(gid, gid, side="left")
        for j in range(int(occurrence.max()) + 1):
            slot = np.full(self.n_groups, -1, np.int64)
            slot[gid[occurrence == j]] = np.flatnonzero(occurrence == j)
            self.slots.append(slot)

    # --- results ----------------------------------------------------------------------------

    def results(self) -> dict[str, np.ndarray]:
        out = {}
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(self.n > 0, self.mean, np.nan)
            std = np.where(self.n > 0, np.sqrt(self.m2 / np.maximum(self.n, 1)), np.nan)
        values = self.codec.values(self.t_prefix.astype(self.codec.udtype)) if self.order else np.zeros(0)
        for r in self.requests:
            if r.kind == "mean":
                v = mean
            elif r.kind == "std":
                v = std
            elif r.kind in ("nan_count", "inf_count"):
                v = (self.n_nan if r.kind == "nan_count" else self.n_inf).astype(np.float64)
            else:
                v = self._order_result(r, values)
            out[r.key] = np.asarray(v, dtype=np.float64).reshape(self.keep_shape)
        return out

    def _order_result(self, request, values: np.ndarray) -> np.ndarray:
        lo, hi, gamma = _ranks(request, self.n)
        a, b = self._value_at(lo, values), self._value_at(hi, values)
        if request.kind == "median":
            work = np.float64 if self.dtype.kind not in "f" else np.result_type(self.dtype, np.float32)
            both = np.stack([a, b]).astype(work)
            mean = np.mean(both, axis=0, dtype=work)  # numpy.median's mean of the middle two
            out = mean.astype(self.dtype) if self.dtype.kind == "f" else mean
            out = np.where(lo == hi, a, out)  # numpy.median takes the middle value itself
            return np.where(self.n > 0, out.astype(np.float64), np.nan)
        a, b = a.astype(np.float64), b.astype(np.float64)
        if gamma is None:  # inverted_cdf: one order statistic
            return np.where(self.n > 0, a, np.nan)
        diff = b - a  # numpy's _lerp, term for term
        out = a + diff * gamma
        out = np.where(gamma >= 0.5, b - diff * (1 - gamma), out)
        return np.where(self.n > 0, out, np.nan)

    def _value_at(self, ranks: np.ndarray, values: np.ndarray) -> np.ndarray:
        """The value of rank ``ranks[g]`` in each group ``g`` (anything where a group is empty)."""
        out = np.zeros(self.n_groups, self.dtype)
        if len(self.t_gid) == 0:
            return out
        order = self.t_gid * (int(self.n.max()) + 1) + self.t_rank0
        wanted = np.arange(self.n_groups) * (int(self.n.max()) + 1) + ranks
        at = np.clip(np.searchsorted(order, wanted), 0, len(order) - 1)
        found = order[at] == wanted
        out[found] = values[at[found]]
        return out


def _ranks(request, n: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """0-based ranks of the lower and upper order statistic per group, and the weight of the
    upper (``linear``), computed as :func:`numpy.quantile` computes them."""
    last = np.maximum(n - 1, 0)
    if request.kind == "median":
        return np.minimum(np.maximum(n // 2 - (1 - n % 2), 0), last), np.minimum(n // 2, last), None
    q = np.float64(request.q)
    if request.method == "inverted_cdf":
        index = n.astype(np.float64) * q - 1
        previous = np.floor(index)
        rank = np.where(index - previous == 0, previous, previous + 1).astype(np.int64)
        rank = np.minimum(np.maximum(rank, 0), last)
        return rank, rank, None
    virtual = (n - 1).astype(np.float64) * q
    previous = np.floor(virtual)
    above = virtual >= (n - 1)
    lo = np.where(above, last, previous).astype(np.int64)
    hi = np.where(above, last, np.minimum(previous + 1, last)).astype(np.int64)
    gamma = virtual - np.where(above, -1.0, previous)  # numpy indexes the last value as -1
    return lo, hi, gamma


def _find_bins(hist: np.ndarray, owner: np.ndarray, rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each target (row ``owner`` of ``hist``, 0-based ``rank`` among that row's counts):
    the bin that holds the rank, and how many values lie in the bins before it."""
    if len(owner) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    cum = np.cumsum(hist, axis=1)
    span = int(cum[:, -1].max()) + 1
    flat = (cum + (np.arange(len(hist), dtype=np.int64) * span)[:, None]).ravel()
    at = np.searchsorted(flat, owner * span + rank, side="right") - owner * hist.shape[1]
    before = np.where(at > 0, cum[owner, np.maximum(at - 1, 0)], 0)
    return at, before
