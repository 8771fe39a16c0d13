"""Tile planning: the example model's plans, exact coverage, stitching equals whole-image results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.ndimage import correlate

from microzoo.errors import TilingError
from microzoo.runtime.geometry import (
    AxisGeometry,
    DataDependentSize,
    FixedSize,
    ModelGeometry,
    ParameterizedSize,
    SizeReference,
    TensorGeometry,
)
from microzoo.runtime.tiling import TilePlan, extract_tile, geometry_from_descr, plan_tiles

SPACE = ("y", "x")


# ---- synthetic models -------------------------------------------------------------------


def _input(
    tid: str, rules: dict[str, object], *, batch: int | None = None, channels: int = 1, scale: float = 1.0
) -> TensorGeometry:
    axes = [
        AxisGeometry("batch", "batch", None if batch is None else FixedSize(batch)),
        AxisGeometry("channel", "channel", FixedSize(channels)),
    ]
    axes += [AxisGeometry(a, "space", r, scale=scale) for a, r in rules.items()]  # type: ignore[arg-type]
    return TensorGeometry(tid, tuple(axes))


def _output(
    tid: str, ref: str, axes: tuple[str, ...], *, halo: int = 0, scale: float = 1.0, offset: int = 0, channels: int = 1
) -> TensorGeometry:
    out = [AxisGeometry("batch", "batch", None), AxisGeometry("channel", "channel", FixedSize(channels))]
    out += [AxisGeometry(a, "space", SizeReference(ref, a, offset), scale=scale, halo=halo) for a in axes]
    return TensorGeometry(tid, tuple(out))


def _model(
    rule: object = ParameterizedSize(16, 8),
    *,
    axes: tuple[str, ...] = SPACE,
    halo: int = 4,
    scale: float = 1.0,
    offset: int = 0,
    batch: int | None = None,
) -> ModelGeometry:
    return ModelGeometry(
        inputs=(_input("raw", {a: rule for a in axes}, batch=batch),),
        outputs=(_output("out", "raw", axes, halo=halo, scale=scale, offset=offset),),
    )


def _shape(*spatial: int, axes: tuple[str, ...] = SPACE, batch: int = 1) -> dict[str, dict[str, int]]:
    return {"raw": {"batch": batch, "channel": 1, **dict(zip(axes, spatial, strict=True))}}


def _check_plan(plan: TilePlan, *, beyond: int = 0) -> None:
    """Kept regions cover every output exactly once; tiles are valid and near the image.

    ``beyond``: input pixels an output reaches past the image (a positive size offset).
    """
    geometry = plan.geometry
    for out in geometry.outputs:
        shape = tuple(plan.output_shapes[out.id][a] for a in out.axis_ids)
        counts = np.zeros(shape, dtype=np.int32)
        tile_shape = tuple(plan.output_tile_shapes[out.id][a] for a in out.axis_ids)
        for tile in plan.tiles:
            inner, where = tile.outputs[out.id]
            assert np.zeros(tile_shape)[inner].shape == counts[where].shape
            for sl, n in zip(inner, tile_shape, strict=True):
                assert 0 <= sl.start <= sl.stop <= n
            counts[where] += 1
        assert (counts == 1).all(), f"output {out.id} covered {counts.min()}..{counts.max()} times"
    for t in geometry.inputs:
        tile_shape = tuple(plan.input_tile_shapes[t.id][a] for a in t.axis_ids)
        for a, n in zip(t.axes, tile_shape, strict=True):
            if isinstance(a.size, ParameterizedSize):
                assert a.size.is_valid(n)
            elif isinstance(a.size, FixedSize):
                assert n == a.size.size
        for tile in plan.tiles:
            region = tile.inputs[t.id]
            assert tuple(s.stop - s.start for s in region) == tile_shape
            for a, sl, n in zip(t.axis_ids, region, tile_shape, strict=True):
                whole, halo = plan.input_shapes[t.id][a], plan.input_halos[t.id].get(a, 0)
                assert sl.start >= -halo
                assert sl.stop <= max(whole + halo, n - halo) + 2 + beyond  # 2: alignment
                assert sl.start < whole + beyond and (sl.stop > 0 or beyond > 0)


# ---- the zoo example model ---------------------------------------------------------------


@pytest.fixture(scope="module")
def example_geometry(example_model: Path) -> ModelGeometry:
    from bioimageio.spec import load_model_description

    descr = load_model_description(example_model / "bioimageio.yaml", perform_io_checks=False)
    return geometry_from_descr(descr)


def test_example_geometry(example_geometry: ModelGeometry) -> None:
    raw, out = example_geometry.inputs[0], example_geometry.outputs[0]
    assert raw.axis_ids == ("batch", "channel", "y", "x")
    assert raw.axis("y").size == FixedSize(512)
    assert raw.axis("batch").size == FixedSize(1)
    assert out.axis("y").size == SizeReference("raw", "y", 0)
    assert out.axis("x").halo == 32
    assert raw.pad_mode is None  # the description leaves padding to the runner


@pytest.mark.parametrize(("size", "n_tiles"), [((4096, 4096), 100), ((2048, 2048), 25), ((1000, 700), 6)])
def test_example_plans(example_geometry: ModelGeometry, size: tuple[int, int], n_tiles: int) -> None:
    plan = plan_tiles(example_geometry, _shape(*size))
    assert plan.n_tiles == n_tiles
    assert plan.batch_size == 1  # the description fixes its batch axis to 1
    assert dict(plan.input_tile_shapes["raw"]) == {"batch": 1, "channel": 1, "y": 512, "x": 512}
    assert dict(plan.output_shapes["probability"]) == {"batch": 1, "channel": 1, "y": size[0], "x": size[1]}
    first = plan.tiles[0]
    assert first.inputs["raw"][2:] == (slice(-32, 480), slice(-32, 480))
    # along x of a 700-wide image the last tile starts its inner region at 700 - 448 = 252 and,
    # as in bioimageio.core, keeps all of it: the first tile keeps only x < 252
    last_x = 252 if size[1] == 700 else 448
    assert first.outputs["probability"][0][2:] == (slice(32, 480), slice(32, 32 + last_x))
    if size[0] == 4096:  # inner step 448; the last tile is moved back inside the image
        assert plan.tiles[1].inputs["raw"][3] == slice(416, 928)
        assert plan.tiles[-1].inputs["raw"][2] == slice(4096 + 32 - 512, 4096 + 32)
    _check_plan(plan)


def test_example_image_smaller_than_tile(example_geometry: ModelGeometry) -> None:
    plan = plan_tiles(example_geometry, _shape(256, 320))
    assert plan.n_tiles == 1
    (tile,) = plan.tiles
    assert tile.inputs["raw"][2:] == (slice(-32, 480), slice(-32, 480))
    inner, where = tile.outputs["probability"]
    assert inner[2:] == (slice(32, 288), slice(32, 352))
    assert where[2:] == (slice(0, 256), slice(0, 320))
    image = np.arange(256 * 320, dtype=np.float32).reshape(1, 1, 256, 320)
    padded = extract_tile(image, tile.inputs["raw"])
    assert padded.shape == (1, 1, 512, 512)
    np.testing.assert_array_equal(padded[inner], image)


def test_example_refuses_what_it_cannot_do(example_geometry: ModelGeometry) -> None:
    with pytest.raises(TilingError, match="fixed size 512"):
        plan_tiles(example_geometry, _shape(1024, 1024), tile={"y": 256})
    with pytest.raises(TilingError, match="batch_size=4"):
        plan_tiles(example_geometry, _shape(1024, 1024), batch_size=4)
    with pytest.raises(TilingError, match="3 channels but the model takes 1"):
        plan_tiles(example_geometry, {"raw": {"batch": 1, "channel": 3, "y": 64, "x": 64}})
    with pytest.raises(TilingError, match="axes batch, channel, y, x"):
        plan_tiles(example_geometry, {"raw": {"channel": 1, "y": 64, "x": 64}})
    with pytest.raises(TilingError, match="inputs are raw"):
        plan_tiles(example_geometry, {"image": {"y": 64, "x": 64}})
    with pytest.raises(TilingError, match="not for channel"):
        plan_tiles(example_geometry, _shape(64, 64), tile={"channel": 1})


# ---- properties over size rules ----------------------------------------------------------

# (output scale, halo multiple): ratio = 1 / scale output pixels per input pixel
SCALES = st.sampled_from([(1.0, 1), (2.0, 1), (0.5, 2)])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.tuples(st.integers(1, 300), st.integers(1, 300)),
    min_=st.integers(1, 64),
    step=st.integers(1, 32),
    halo=st.integers(0, 12),
    scale=SCALES,
    offset=st.sampled_from([0, 0, -2, 2]),
    batch=st.integers(1, 2),
    budget=st.sampled_from([None, 10**6, 10**8]),
    last_keeps_inner=st.booleans(),
)
def test_plans_cover_outputs_exactly_once(
    sizes, min_, step, halo, scale, offset, batch, budget, last_keeps_inner
) -> None:
    out_scale, multiple = scale
    geometry = _model(ParameterizedSize(min_, step), halo=halo * multiple, scale=out_scale, offset=offset)
    try:
        plan = plan_tiles(
            geometry, _shape(*sizes, batch=batch), memory_budget=budget, last_keeps_inner=last_keeps_inner
        )
    except TilingError as e:  # only for an output that would be empty or an impossible budget
        assert "too small" in str(e) or "memory_budget" in str(e), e
        return
    assert plan.n_tiles % batch == 0
    _check_plan(plan, beyond=max(0, offset) * 2)
    if not last_keeps_inner:
        _check_chunks(plan)


def _check_chunks(plan: TilePlan) -> None:
    """Every tile writes whole chunks of ``output_chunks`` (the array's end may cut the last)."""
    for out in plan.geometry.outputs:
        chunks = [plan.output_chunks[out.id][a] for a in out.axis_ids]
        whole = [plan.output_shapes[out.id][a] for a in out.axis_ids]
        for tile in plan.tiles:
            _, where = tile.outputs[out.id]
            for sl, c, n in zip(where, chunks, whole, strict=True):
                assert c >= 1 and sl.start % c == 0 and (sl.stop % c == 0 or sl.stop == n), (sl, c, n)


@settings(max_examples=40, deadline=None)
@given(size=st.integers(1, 200), tile=st.integers(1, 300), min_=st.integers(1, 40), step=st.integers(1, 16))
def test_user_tile_rounds_up_to_a_valid_size(size, tile, min_, step) -> None:
    rule = ParameterizedSize(min_, step)
    geometry = _model(rule, axes=("x",), halo=2)
    try:
        plan = plan_tiles(geometry, _shape(size, axes=("x",)), tile={"x": tile})
    except TilingError as e:
        assert "too small" in str(e) and f"{min_} + n*{step}" in str(e)
        return
    got = plan.input_tile_shapes["raw"]["x"]
    assert rule.is_valid(got)
    assert got == min(rule.at_least(tile), rule.at_least(size + 4))  # capped at image + 2 * halo
    _check_plan(plan)


# ---- stitching equals the whole-image result ---------------------------------------------


def _filter_model(radius: int, *, out_scale: float = 1.0, crop: int = 0):
    """A translation-equivariant 'network': box filter, then resampling or a valid crop.

    A box sum (uniform_filter without the division) over integer values is exact in float64,
    so tiled and whole results can be compared for equality.
    """

    def run(x: np.ndarray) -> np.ndarray:
        y = _box(x, radius, mode="mirror")
        if out_scale == 2.0:
            y = y[:, :, ::2, ::2][:, :, : x.shape[2] // 2, : x.shape[3] // 2]
        elif out_scale == 0.5:
            y = y.repeat(2, axis=2).repeat(2, axis=3)
        if crop:
            y = y[:, :, crop:-crop, crop:-crop]
        return y

    return run


def _box(x: np.ndarray, radius: int, *, mode: str) -> np.ndarray:
    return correlate(x, np.ones((1, 1, 2 * radius + 1, 2 * radius + 1)), mode=mode)


def _stitch(plan: TilePlan, image: np.ndarray, model, *, pad_mode: str = "reflect") -> np.ndarray:
    shape = tuple(plan.output_shapes["out"].values())
    out = np.full(shape, np.nan)
    expected_tile = tuple(plan.output_tile_shapes["out"].values())
    for batch in plan.batches():
        xs = np.concatenate([extract_tile(image, t.inputs["raw"], pad_mode=pad_mode) for t in batch])
        ys = model(xs)
        for i, t in enumerate(batch):
            assert ys[i : i + 1].shape == expected_tile
            inner, where = t.outputs["out"]
            out[where] = ys[i : i + 1][inner]
    return out


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(20, 150),
    w=st.integers(20, 150),
    radius=st.integers(0, 5),
    extra=st.integers(0, 4),
    step=st.sampled_from([4, 8, 16]),
    scale=st.sampled_from([1.0, 2.0, 0.5]),
    seed=st.integers(0, 99),
    last_keeps_inner=st.booleans(),
)
def test_stitched_filter_equals_whole_image_filter(h, w, radius, extra, step, scale, seed, last_keeps_inner) -> None:
    halo_in = radius + extra + (radius + extra) % 2  # even, so it is whole at scale 2 and 0.5
    halo_out = int(halo_in / scale)
    geometry = _model(ParameterizedSize(2 * halo_in + 8, step), halo=halo_out, scale=scale)
    image = np.random.default_rng(seed).integers(0, 255, (2, 1, h, w)).astype(np.float64)
    plan = plan_tiles(
        geometry,
        {"raw": {"batch": 2, "channel": 1, "y": h, "x": w}},
        tile={"y": 40, "x": 40},
        last_keeps_inner=last_keeps_inner,
    )
    if not last_keeps_inner:
        _check_chunks(plan)
    model = _filter_model(radius, out_scale=scale)
    whole = model(image)[:, :, : plan.output_shapes["out"]["y"], : plan.output_shapes["out"]["x"]]
    np.testing.assert_array_equal(_stitch(plan, image, model), whole)


def test_stitching_a_model_that_crops_its_border() -> None:
    # size offset -2*crop: the model returns only its valid part, like an unpadded U-Net
    crop, radius = 6, 5
    geometry = _model(ParameterizedSize(32, 8), halo=0, offset=-2 * crop)
    image = np.random.default_rng(0).integers(0, 255, (1, 1, 123, 77)).astype(np.float64)
    plan = plan_tiles(geometry, _shape(123, 77), tile={"y": 40, "x": 48})
    assert dict(plan.output_shapes["out"]) == {"batch": 1, "channel": 1, "y": 111, "x": 65}
    assert plan.n_tiles > 4
    model = _filter_model(radius, crop=crop)
    np.testing.assert_array_equal(_stitch(plan, image, model), model(image))


def test_symmetric_padding_matches_scipy_reflect() -> None:
    geometry = _model(ParameterizedSize(16, 16), halo=4)
    image = np.random.default_rng(1).integers(0, 9, (1, 1, 50, 61)).astype(np.float64)
    plan = plan_tiles(geometry, _shape(50, 61), tile={"y": 32, "x": 32})

    def model(x: np.ndarray) -> np.ndarray:
        return _box(x, 3, mode="reflect")

    np.testing.assert_array_equal(_stitch(plan, image, model, pad_mode="symmetric"), model(image))


# ---- scales, offsets, several inputs -----------------------------------------------------


def test_output_at_half_resolution_with_offset() -> None:
    # output scale 2 (half as many pixels), offset -1, halo 4 output px = 8 input px
    geometry = _model(ParameterizedSize(64, 16), halo=4, scale=2.0, offset=-1)
    plan = plan_tiles(geometry, _shape(300, 200), tile={"y": 64, "x": 64})
    assert dict(plan.output_tile_shapes["out"]) == {"batch": 1, "channel": 1, "y": 31, "x": 31}
    assert dict(plan.output_shapes["out"]) == {"batch": 1, "channel": 1, "y": 149, "x": 99}
    assert plan.input_halos["raw"]["y"] == 8
    for tile in plan.tiles:  # tiles start on even pixels so outputs land on whole pixels
        assert all(sl.start % 2 == 0 for sl in tile.inputs["raw"][2:])
    _check_plan(plan)


def test_two_inputs_with_the_same_yx() -> None:
    raw = _input("raw", {"y": ParameterizedSize(32, 16), "x": ParameterizedSize(32, 16)})
    mask = _input("mask", {a: SizeReference("raw", a) for a in SPACE}, channels=2)
    other = _input("other", {a: ParameterizedSize(48, 8) for a in SPACE})
    geometry = ModelGeometry((raw, mask, other), (_output("out", "mask", SPACE, halo=8),))
    shapes = {
        "raw": {"batch": 1, "channel": 1, "y": 200, "x": 150},
        "mask": {"batch": 1, "channel": 2, "y": 200, "x": 150},
        "other": {"batch": 1, "channel": 1, "y": 200, "x": 150},
    }
    plan = plan_tiles(geometry, shapes, tile={"y": 70, "x": 70})
    assert plan.input_tile_shapes["raw"]["y"] == 80  # valid for both 32 + n*16 and 48 + n*8
    assert plan.n_tiles > 1
    for tile in plan.tiles:
        assert tile.inputs["raw"][2:] == tile.inputs["mask"][2:] == tile.inputs["other"][2:]
        assert tile.inputs["mask"][1] == slice(0, 2)
    _check_plan(plan)
    shapes["mask"]["y"] = 100
    with pytest.raises(TilingError, match="must be 200 long"):
        plan_tiles(geometry, shapes)


def test_batch_is_tiled_per_sample_and_batched_per_forward() -> None:
    plan = plan_tiles(_model(FixedSize(32), halo=4), _shape(60, 60, batch=3))
    assert plan.n_tiles == 3 * 9  # inner step 24: 3 x 3 tiles per sample
    assert [t.sample for t in plan.tiles[8:10]] == [0, 1]
    assert plan.tiles[9].inputs["raw"][0] == slice(1, 2)
    assert plan.tiles[9].outputs["out"][1][0] == slice(1, 2)
    assert plan.batch_size == 27  # tiny tiles: all fit the default budget at once
    assert [len(b) for b in plan.batches()] == [27]
    five = plan_tiles(_model(FixedSize(32), halo=4), _shape(60, 60, batch=3), batch_size=5)
    assert [len(b) for b in five.batches()] == [5] * 5 + [2]
    _check_plan(plan)


def test_outputs_that_cannot_be_tiled() -> None:
    label = TensorGeometry(
        "class", (AxisGeometry("batch", "batch", None), AxisGeometry("index", "index", DataDependentSize()))
    )
    geometry = ModelGeometry((_input("raw", {a: ParameterizedSize(16, 16) for a in SPACE}),), (label,))
    plan = plan_tiles(geometry, _shape(100, 70))
    assert plan.n_tiles == 1 and dict(plan.input_tile_shapes["raw"]) == {"batch": 1, "channel": 1, "y": 112, "x": 80}
    assert plan.output_shapes["class"]["index"] == -1
    fixed = ModelGeometry((_input("raw", {a: FixedSize(64) for a in SPACE}),), (label,))
    with pytest.raises(TilingError, match="cannot tile it"):
        plan_tiles(fixed, _shape(100, 70))


# ---- tile sizes: user requests and the memory budget -------------------------------------


def test_user_tile_rounding_and_errors() -> None:
    geometry = _model(ParameterizedSize(64, 16), halo=32)
    plan = plan_tiles(geometry, _shape(1000, 1000), tile={"y": 100, "x": 129})
    assert (plan.input_tile_shapes["raw"]["y"], plan.input_tile_shapes["raw"]["x"]) == (112, 144)
    with pytest.raises(TilingError, match=r"use at least 80 \(valid sizes: 64, 80, 96, ... \(64 \+ n\*16\)\)"):
        plan_tiles(geometry, _shape(1000, 1000), tile={"y": 64})
    capped = plan_tiles(geometry, _shape(100, 100), tile={"y": 4000, "x": 4000})
    assert capped.input_tile_shapes["raw"]["y"] == 176  # image + 2 * halo, rounded up
    assert capped.n_tiles == 1


def test_memory_budget_picks_larger_tiles_for_larger_budgets() -> None:
    geometry = _model(ParameterizedSize(64, 32), halo=16)
    sizes, counts = [], []
    for budget in (10**7, 10**8, 10**9, 10**10):
        plan = plan_tiles(geometry, _shape(3000, 3000), memory_budget=budget)
        assert plan.bytes_per_forward <= budget
        sizes.append(plan.input_tile_shapes["raw"]["y"])
        counts.append(plan.n_tiles)
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    assert counts == sorted(counts, reverse=True)
    assert sizes[-1] == ParameterizedSize(64, 32).at_least(3000 + 32)  # never more than needed
    with pytest.raises(TilingError, match="memory_budget"):
        plan_tiles(geometry, _shape(3000, 3000), memory_budget=1000)


def test_extract_tile_pads_like_padding_the_whole_image() -> None:
    image = np.arange(7 * 5, dtype=np.float32).reshape(7, 5)
    for mode in ("reflect", "symmetric", "edge", "constant"):
        whole = np.pad(image, 12, mode=mode)  # type: ignore[call-overload]
        for region in [(slice(-12, 3), slice(-2, 9)), (slice(2, 19), slice(-12, 17)), (slice(1, 4), slice(0, 5))]:
            expected = whole[tuple(slice(s.start + 12, s.stop + 12) for s in region)]
            np.testing.assert_array_equal(extract_tile(image, region, pad_mode=mode), expected)
    with pytest.raises(TilingError, match="pad_mode"):
        extract_tile(image, (slice(0, 1), slice(0, 1)), pad_mode="wrap")


def test_example_tiles_match_bioimageio_core(example_model: Path, example_geometry: ModelGeometry) -> None:
    from bioimageio.core.axis import AxisId
    from bioimageio.core.common import MemberId
    from bioimageio.core.digest_spec import get_io_sample_block_metas
    from bioimageio.spec import load_model_description

    descr = load_model_description(example_model / "bioimageio.yaml", perform_io_checks=False)
    shape = {AxisId("batch"): 1, AxisId("channel"): 1, AxisId("y"): 1000, AxisId("x"): 1000}
    n, metas = get_io_sample_block_metas(descr, {MemberId("raw"): shape}, ns={})
    theirs = []
    for meta in metas:
        block = meta.input.blocks[MemberId("raw")]
        theirs.append(
            tuple(
                (
                    block.outer_slice[AxisId(a)].start - block.padding[AxisId(a)].left,
                    block.outer_slice[AxisId(a)].stop + block.padding[AxisId(a)].right,
                )
                for a in SPACE
            )
        )
    plan = plan_tiles(example_geometry, _shape(1000, 1000))
    ours = [tuple((s.start, s.stop) for s in t.inputs["raw"][2:]) for t in plan.tiles]
    assert plan.n_tiles == n and ours == theirs
