"""One-dimensional tile placement for :mod:`microzoo.runtime.tiling` (internal).

Input axes tiled together form a :class:`Group`: axes with the same id in several inputs,
and axes whose size references another input axis. The group's *driver* is the axis whose
size rule is chosen (fixed or ``min + n*step``); the others follow it through ``ratio``
(their pixels per driver pixel). Output axes referencing a group member are its
:class:`Target` s: their kept regions must cover the whole output exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from math import ceil, floor, lcm

from microzoo.errors import TilingError
from microzoo.runtime.geometry import (
    AxisGeometry,
    FixedSize,
    ModelGeometry,
    ParameterizedSize,
    SizeReference,
)

Key = tuple[str, str]
"""(tensor id, axis id)"""

TILED_KINDS = ("index", "time", "space")


def _frac(x: float) -> Fraction:
    return Fraction(str(x))


@dataclass
class Target:
    """An output axis whose size follows the group member ``ref``."""

    key: Key
    ref: Key
    factor: Fraction  # ref scale / this scale
    offset: int
    ratio: Fraction  # output pixels per driver pixel
    whole: int
    halo: int


@dataclass
class Member:
    """An input axis of the group: follows ``ref`` (None: sized like the driver)."""

    ref: Key | None
    factor: Fraction
    offset: int
    ratio: Fraction


@dataclass
class Group:
    """Input axes tiled together, and the output axes that follow them."""

    key: str
    driver: Key
    whole: int
    first: int
    step: int  # 0: the only valid size is ``first``
    members: dict[Key, Member]
    targets: list[Target] = field(default_factory=list)
    halo: int = 0  # in driver pixels
    align: int = 1  # tile starts are multiples of this, so every ratio gives whole pixels
    must_whole: bool = False
    why_whole: str = ""
    chunk_aligned: bool = False  # kept regions on a regular grid of the stride (streaming)

    def size(self, k: int) -> int:
        """The k-th valid driver tile size."""
        return self.first + k * self.step

    def valid_sizes(self) -> str:
        """The valid driver tile sizes, in words."""
        if self.step == 0:
            return f"exactly {self.first}"
        s = [self.first + i * self.step for i in range(3)]
        return f"{s[0]}, {s[1]}, {s[2]}, ... ({self.first} + n*{self.step})"

    def member_tile(self, key: Key, size: int) -> int:
        """Tile size of input axis ``key`` when the driver's tile is ``size``."""
        m = self.members[key]
        if m.ref is None:
            return size
        return floor(self.member_tile(m.ref, size) * m.factor) + m.offset

    def target_tile(self, t: Target, size: int) -> int:
        """Raw model output size of target ``t`` when the driver's tile is ``size``."""
        return floor(self.member_tile(t.ref, size) * t.factor) + t.offset

    def halo_of(self, key: Key) -> int:
        """Input halo of member ``key`` in its own pixels."""
        return int(self.halo * self.members[key].ratio)

    def stride(self, size: int) -> int:
        """Driver pixels between tile starts: what each tile keeps of its inner region.

        ``chunk_aligned``: small enough that tile ``k`` keeps exactly ``[k*d, (k+1)*d)`` (times
        each target's ratio) while its halo is rounded up to whole driver pixels.
        """
        if not self.targets:
            return size
        if self.chunk_aligned:
            d = min(floor((self.target_tile(t, size) - t.halo - self.halo * t.ratio) / t.ratio) for t in self.targets)
        else:
            d = min(floor((self.target_tile(t, size) - 2 * t.halo) / t.ratio) for t in self.targets)
        return d // self.align * self.align

    def count(self, size: int) -> int | None:
        """Tiles needed along this group, or None if ``size`` keeps nothing after the halo."""
        if any(self.member_tile(k, size) < 1 for k in self.members):
            return None
        if not self.targets:
            return ceil(self.whole / size)
        d = self.stride(size)
        if d < self.align:
            return None
        n = 1
        for t in self.targets:
            end0 = -self.halo * t.ratio + self.target_tile(t, size) - t.halo
            if t.whole > end0:
                n = max(n, ceil((t.whole - end0) / (d * t.ratio)) + 1)
        return n

    def place(self, size: int) -> tuple[list[int], dict[Key, list[tuple[int, int, int]]]]:
        """Driver tile starts, and per target for each tile ``(tile_start, lo, hi)``.

        ``tile_start`` is where the tile's raw output starts in the whole output and
        ``[lo, hi)`` is the part it keeps (whole-output coordinates).
        """
        n = self.count(size)
        assert n is not None
        d = self.stride(size)
        starts = [-self.halo + k * d for k in range(n)]
        # move the last tile back inside the image as far as it still reaches the end
        back = (self.whole + self.halo - size) // self.align * self.align
        needed = max(
            (ceil((t.whole - self.target_tile(t, size) + t.halo) / t.ratio) for t in self.targets),
            default=starts[-1],
        )
        needed = -(-needed // self.align) * self.align
        starts[-1] = min(starts[-1], max(back, needed, -self.halo))
        kept: dict[Key, list[tuple[int, int, int]]] = {}
        for t in self.targets:
            out = self.target_tile(t, size)
            lo, spans = 0, []
            for k, a in enumerate(starts):
                origin = int(a * t.ratio)
                if self.chunk_aligned:  # boundaries on the grid of the stride
                    hi = t.whole if k == len(starts) - 1 else min(int((k + 1) * d * t.ratio), t.whole)
                else:
                    hi = max(lo, min(origin + out - t.halo, t.whole))
                spans.append((origin, lo, hi))
                lo = hi
            kept[t.key] = spans if self.chunk_aligned else _last_keeps_its_inner(spans, t.halo)
        return starts, kept

    def chunk(self, target: Target, size: int) -> int:
        """The output chunk along ``target`` that one tile keeps (``chunk_aligned`` plans):
        the stride times the target's ratio, or the whole output when one tile covers it."""
        if self.count(size) == 1:
            return target.whole
        return int(self.stride(size) * target.ratio)


def _last_keeps_its_inner(spans: list[tuple[int, int, int]], halo: int) -> list[tuple[int, int, int]]:
    """Let the last tile keep its whole inner region, as bioimageio.core's blocks do.

    The last tile was moved back inside the image, so its inner region overlaps its
    neighbour's; core writes it last and it wins there. Doing the same makes tiled results
    identical to core's, not only within the tolerance, where the receptive field exceeds
    the halo. The neighbours' kept parts are trimmed so the output is still covered once.
    """
    if len(spans) < 2:
        return spans
    origin, lo, hi = spans[-1]
    own = max(0, origin + halo)
    if own >= lo:
        return spans
    trimmed = [(o, min(a, own), min(b, own)) for o, a, b in spans[:-1]]
    return trimmed + [(origin, own, hi)]


def make_groups(geometry: ModelGeometry, shapes: dict[str, dict[str, int]]) -> list[Group]:
    """Group the tiled input axes and attach the output axes that follow them."""
    keys = [(t.id, a.id) for t in geometry.inputs if t.id in shapes for a in t.axes if a.kind in TILED_KINDS]
    parent = {k: k for k in keys}

    def root(k: Key) -> Key:
        while parent[k] != k:
            k = parent[k]
        return k

    refs: dict[Key, Key] = {}
    for k in keys:
        rule = geometry.tensor(k[0]).axis(k[1]).size
        for other in keys:
            if other[1] == k[1]:
                parent[root(other)] = root(k)
        if isinstance(rule, SizeReference):
            ref = (rule.tensor_id, rule.axis_id)
            if ref not in parent:
                raise TilingError(
                    f"input {k[0]!r} axis {k[1]!r} follows {ref[0]}.{ref[1]}, which is not a "
                    f"tiled axis of a given input: provide input {ref[0]!r}"
                )
            refs[k] = ref
            parent[root(k)] = root(ref)
    components: dict[Key, list[Key]] = {}
    for k in keys:
        components.setdefault(root(k), []).append(k)
    return [_group(geometry, shapes, ks, refs) for ks in components.values()]


def _group(geometry: ModelGeometry, shapes: dict[str, dict[str, int]], keys: list[Key], refs: dict[Key, Key]) -> Group:
    axes = {k: geometry.tensor(k[0]).axis(k[1]) for k in keys}
    free = [k for k in keys if k not in refs]
    if not free:
        raise TilingError(f"the sizes of {keys} only reference each other: the model is invalid")
    driver = free[0]
    first, step = _progression(axes[driver].size)
    members: dict[Key, Member] = {driver: Member(None, Fraction(1), 0, Fraction(1))}
    for k in free[1:]:
        if axes[k].scale != axes[driver].scale or shapes[k[0]][k[1]] != shapes[driver[0]][driver[1]]:
            raise TilingError(
                f"inputs {driver[0]!r} and {k[0]!r} must have the same {k[1]!r} size and scale "
                f"to be tiled together; got {shapes[driver[0]][driver[1]]} and {shapes[k[0]][k[1]]}"
            )
        first, step = _intersect((first, step), _progression(axes[k].size), what=f"{driver} and {k}")
        members[k] = Member(None, Fraction(1), 0, Fraction(1))
    for k, ref in refs.items():
        if k not in axes:
            continue
        if ref not in members or members[ref].ref is not None:
            raise TilingError(
                f"input {k[0]!r} axis {k[1]!r} references an axis that is itself a reference: "
                "the model description is invalid"
            )
        rule = axes[k].size
        assert isinstance(rule, SizeReference)
        factor = _frac(axes[ref].scale) / _frac(axes[k].scale)
        members[k] = Member(ref, factor, rule.offset, members[ref].ratio * factor)
        expected = floor(shapes[ref[0]][ref[1]] * factor) + rule.offset
        if shapes[k[0]][k[1]] != expected:
            raise TilingError(
                f"input {k[0]!r} axis {k[1]!r} must be {expected} long (it follows {ref[0]}.{ref[1]}), "
                f"not {shapes[k[0]][k[1]]}"
            )
    group = Group(
        key=driver[1],
        driver=driver,
        whole=shapes[driver[0]][driver[1]],
        first=first,
        step=step,
        members=members,
    )
    _attach_targets(geometry, shapes, group, axes)
    return group


def _attach_targets(
    geometry: ModelGeometry,
    shapes: dict[str, dict[str, int]],
    group: Group,
    axes: dict[Key, AxisGeometry],
) -> None:
    for out in geometry.outputs:
        found = 0
        for a in out.axes:
            rule = a.size
            if not isinstance(rule, SizeReference):
                continue
            ref = (rule.tensor_id, rule.axis_id)
            if ref not in group.members:
                continue
            factor = _frac(axes[ref].scale) / _frac(a.scale)
            whole = floor(shapes[ref[0]][ref[1]] * factor) + rule.offset
            if whole < 1:
                raise TilingError(
                    f"input {ref[0]!r} axis {ref[1]!r} of size {shapes[ref[0]][ref[1]]} is too small: "
                    f"output {out.id!r} axis {a.id!r} would be empty; use a larger image"
                )
            ratio = group.members[ref].ratio * factor
            group.targets.append(Target((out.id, a.id), ref, factor, rule.offset, ratio, whole, a.halo))
            found += 1
        if found != 1 and not group.must_whole:
            group.must_whole = True
            group.why_whole = f"output {out.id!r} does not follow axis {group.key!r} one to one"
    if not group.targets:
        group.must_whole = True
        group.why_whole = f"no output follows axis {group.key!r}"
    ratios = [m.ratio for m in group.members.values()] + [t.ratio for t in group.targets]
    group.align = lcm(*(r.denominator for r in ratios))
    halo = max([ceil(t.halo / t.ratio) for t in group.targets], default=0)
    group.halo = -(-halo // group.align) * group.align


def _progression(rule: object) -> tuple[int, int]:
    if isinstance(rule, FixedSize):
        return rule.size, 0
    if isinstance(rule, ParameterizedSize):
        return rule.min, rule.step
    raise TilingError(f"an input axis cannot have the size rule {rule!r}")


def _intersect(p: tuple[int, int], q: tuple[int, int], *, what: str) -> tuple[int, int]:
    (a, s), (b, t) = p, q
    if s == 0 or t == 0:
        (a, s), (b, t) = ((a, s), (b, t)) if s == 0 else ((b, t), (a, s))
        if a == b or (t and a >= b and (a - b) % t == 0):
            return a, 0
    else:
        step = lcm(s, t)
        start = max(a, b)
        for x in range(start, start + step):
            if (x - a) % s == 0 and (x - b) % t == 0:
                return x, step
    raise TilingError(f"the size rules of {what} accept no common tile size: the model is invalid")
