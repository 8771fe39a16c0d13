"""Tile sizes and shapes for :mod:`microzoo.runtime.tiling` (internal).

Checks the given input shapes against the model, picks each tile group's size (the user's,
the largest within the memory budget, never more than the image needs) and derives the
per-tile and whole shapes of every tensor. The memory estimate is described in
:mod:`microzoo.runtime.tiling`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from math import floor
from types import MappingProxyType

import numpy as np

from microzoo.errors import TilingError
from microzoo.runtime._tile_grid import Group
from microzoo.runtime.geometry import DataDependentSize, FixedSize, ModelGeometry, SizeReference

BYTES_PER_ELEMENT = 4
ACTIVATION_FACTOR = 64

Shapes = Mapping[str, Mapping[str, int]]


def estimate_forward_bytes(input_tile_shapes: Shapes, output_tile_shapes: Shapes, *, batch_size: int = 1) -> int:
    """Estimate the memory of one forward pass (see the module docstring).

    Per-tile shapes have batch size 1; ``-1`` (data-dependent) counts as 1.
    """
    elements = 0
    for shape in (*input_tile_shapes.values(), *output_tile_shapes.values()):
        elements += int(np.prod([max(s, 1) for s in shape.values()], dtype=np.int64))
    return batch_size * elements * BYTES_PER_ELEMENT * ACTIVATION_FACTOR


def check_shapes(geometry: ModelGeometry, input_shapes: Shapes) -> tuple[dict[str, dict[str, int]], int]:
    """Check the whole input shapes against the model; return them and the sample count."""
    inputs = {t.id: t for t in geometry.inputs}
    unknown = sorted(set(input_shapes) - set(inputs))
    missing = [t for t in inputs if t not in input_shapes and not inputs[t].optional]
    if unknown or missing:
        raise TilingError(
            f"the model's inputs are {', '.join(inputs)}; got {', '.join(input_shapes) or 'none'}: "
            "give a shape for each required input and none for others"
        )
    shapes: dict[str, dict[str, int]] = {}
    samples: set[int] = set()
    for tid, given in input_shapes.items():
        t = inputs[tid]
        if set(given) != set(t.axis_ids):
            raise TilingError(
                f"input {tid!r} has axes {', '.join(t.axis_ids)}; got {', '.join(given)}: "
                "map the image's axes onto the model's first"
            )
        shapes[tid] = {a: int(given[a]) for a in t.axis_ids}
        for a in t.axes:
            size = shapes[tid][a.id]
            if size < 1:
                raise TilingError(f"input {tid!r} axis {a.id!r} has size {size}: it must be at least 1")
            if a.kind == "batch":
                samples.add(size)
            elif a.kind == "channel" and isinstance(a.size, FixedSize) and size != a.size.size:
                raise TilingError(
                    f"input {tid!r} has {size} channels but the model takes {a.size.size}: "
                    "select or convert the image's channels"
                )
    if len(samples) > 1:
        raise TilingError(f"the inputs have different batch sizes {sorted(samples)}: give them equal ones")
    n_samples = samples.pop() if samples else 1
    for out in geometry.outputs:
        if n_samples > 1 and not any(a.kind == "batch" for a in out.axes):
            raise TilingError(
                f"output {out.id!r} has no batch axis, so the model takes one sample at a time: "
                f"predict the {n_samples} samples one by one"
            )
    return shapes, n_samples


def batch_allowed(geometry: ModelGeometry, shapes: Mapping[str, object]) -> bool:
    """Whether the model takes several samples per forward pass (batch axes of any size)."""
    batch_axes = [a for t in geometry.inputs if t.id in shapes for a in t.axes if a.kind == "batch"]
    return bool(batch_axes) and all(a.size is None for a in batch_axes)


def _first_k(ok: Callable[[int], bool], lo: int, limit: int = 1 << 40) -> int | None:
    """The smallest k in [lo, limit] with ok(k), for ok monotone (False ... False True ... True)."""
    hi, span = lo, 1
    while not ok(hi):
        if hi >= limit:
            return None
        lo, hi, span = hi + 1, min(limit, hi + span), span * 2
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return hi


def _leaves_output(g: Group, k: int) -> bool:
    """Whether the k-th tile size of ``g`` leaves output after cropping the halo."""
    return g.count(g.size(k)) is not None


def _one_tile(g: Group, k: int) -> bool:
    """Whether the k-th tile size of ``g`` covers the axis in one tile."""
    return g.count(g.size(k)) == 1


def choose_tile_sizes(
    geometry: ModelGeometry,
    shapes: dict[str, dict[str, int]],
    groups: list[Group],
    tile: Mapping[str, int],
    *,
    budget: int,
    strict: bool,
    batch_size: int,
) -> list[int]:
    """Pick each group's tile size index k (see ``plan_tiles``); raise TilingError if none."""
    by_key = {g.key: g for g in groups}
    if unknown := sorted(set(tile) - set(by_key)):
        raise TilingError(
            f"tile sizes can be given for axes {', '.join(by_key) or '(none)'}; "
            f"not for {', '.join(unknown)} (batch and channel are never tiled)"
        )
    lows, caps, chosen, free = [], [], [], []
    for i, g in enumerate(groups):
        name = f"input {g.driver[0]!r} axis {g.key!r}"
        limit = 0 if g.step == 0 else 1 << 40
        low = _first_k(partial(_leaves_output, g), 0, limit)
        if low is None:
            raise TilingError(f"{name}: no tile size leaves output after cropping the halo (valid: {g.valid_sizes()})")
        cap = _first_k(partial(_one_tile, g), low, limit)
        if g.must_whole and cap is None:
            raise TilingError(
                f"{name} is {g.whole} long but the model takes {g.valid_sizes()} and cannot tile it "
                f"({g.why_whole}): crop or downscale the image to fit one tile"
            )
        cap = low if g.step == 0 else cap
        assert cap is not None
        if g.key in tile:
            want = int(tile[g.key])
            if g.step == 0:
                if want != g.first:
                    raise TilingError(
                        f"{name} has the fixed size {g.first}: set tile {g.key}={g.first} or leave it out"
                    )
                k = 0
            else:
                k = max(0, -(-(want - g.first) // g.step))
                if k < low:
                    raise TilingError(
                        f"tile {g.key}={want} is too small for {name}: after cropping the halo nothing "
                        f"is left; use at least {g.size(low)} (valid sizes: {g.valid_sizes()})"
                    )
                if g.must_whole and k < cap:
                    raise TilingError(
                        f"tile {g.key}={want} is too small: {name} cannot be split ({g.why_whole}); "
                        f"use at least {g.size(cap)} or leave it out"
                    )
                k = min(k, cap)
        elif g.must_whole:
            k = cap
        else:
            k = low
            free.append(i)
        lows.append(low)
        caps.append(cap)
        chosen.append(k)

    def fits(level: int) -> bool:
        ks = list(chosen)
        for i in free:
            ks[i] = min(caps[i], lows[i] + level)
        sizes = {g.key: g.size(k) for g, k in zip(groups, ks, strict=True)}
        ins, outs = tile_shapes(geometry, shapes, groups, sizes)
        return estimate_forward_bytes(ins, outs, batch_size=batch_size) <= budget

    if not fits(0):
        if strict:
            smallest = {g.key: g.size(k) for g, k in zip(groups, chosen, strict=True)}
            ins, outs = tile_shapes(geometry, shapes, groups, smallest)
            need = estimate_forward_bytes(ins, outs, batch_size=batch_size)
            raise TilingError(
                f"the smallest possible forward pass needs about {need / 2**20:.0f} MiB, more than "
                f"memory_budget={budget} bytes: raise the budget, or lower batch_size or tile sizes"
            )
        return chosen
    top = max([caps[i] - lows[i] for i in free], default=0)
    level = _first_k(lambda m: m >= top or not fits(m + 1), 0, top) or 0
    for i in free:
        chosen[i] = min(caps[i], lows[i] + level)
    return chosen


def _static_size(geometry: ModelGeometry, shapes: Mapping[str, Mapping[str, int]], tensor_id: str, axis_id: str) -> int:
    """Size of an output axis that does not follow a tiled axis (-1: data-dependent)."""
    axis = geometry.tensor(tensor_id).axis(axis_id)
    rule = axis.size
    if isinstance(rule, FixedSize):
        return rule.size
    if isinstance(rule, SizeReference):
        ref_axis = geometry.tensor(rule.tensor_id).axis(rule.axis_id)
        if rule.tensor_id in shapes:
            ref = shapes[rule.tensor_id][rule.axis_id]
        else:
            ref = _static_size(geometry, shapes, rule.tensor_id, rule.axis_id)
        return floor(ref * ref_axis.scale / axis.scale) + rule.offset
    if isinstance(rule, DataDependentSize):
        return -1
    return 1  # a batch axis: one sample per tile


def tile_shapes(
    geometry: ModelGeometry,
    shapes: dict[str, dict[str, int]],
    groups: list[Group],
    sizes: dict[str, int],
) -> tuple[Shapes, Shapes]:
    """Per-tile shapes of all inputs and outputs for the driver tile ``sizes`` per group."""
    members = {k: (g, sizes[g.key]) for g in groups for k in g.members}
    targets = {t.key: (g, t, sizes[g.key]) for g in groups for t in g.targets}
    ins: dict[str, dict[str, int]] = {}
    for t in geometry.inputs:
        if t.id not in shapes:
            continue
        ins[t.id] = {}
        for a in t.axes:
            if (t.id, a.id) in members:
                g, size = members[(t.id, a.id)]
                ins[t.id][a.id] = g.member_tile((t.id, a.id), size)
            else:
                ins[t.id][a.id] = 1 if a.kind == "batch" else shapes[t.id][a.id]
    outs: dict[str, dict[str, int]] = {}
    for t in geometry.outputs:
        outs[t.id] = {}
        for a in t.axes:
            if (t.id, a.id) in targets:
                g, target, size = targets[(t.id, a.id)]
                outs[t.id][a.id] = g.target_tile(target, size)
            else:
                outs[t.id][a.id] = _static_size(geometry, shapes, t.id, a.id)
    return freeze(ins), freeze(outs)


def output_shapes(
    geometry: ModelGeometry, shapes: dict[str, dict[str, int]], groups: list[Group], n_samples: int
) -> Shapes:
    """Whole output shapes (``-1``: data-dependent)."""
    targets = {t.key: t for g in groups for t in g.targets}
    return freeze(
        {
            t.id: {
                a.id: n_samples
                if a.kind == "batch"
                else targets[(t.id, a.id)].whole
                if (t.id, a.id) in targets
                else _static_size(geometry, shapes, t.id, a.id)
                for a in t.axes
            }
            for t in geometry.outputs
        }
    )


def freeze(shapes: Mapping[str, Mapping[str, int]]) -> Shapes:
    """A read-only copy of per-tensor, per-axis shapes."""
    return MappingProxyType({t: MappingProxyType(dict(s)) for t, s in shapes.items()})
