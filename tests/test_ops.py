"""runtime.ops against bioimageio.core's own op implementations, tiles, errors."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from bioimageio.core import proc_ops as core_ops
from bioimageio.core.axis import AxisId
from bioimageio.core.common import MemberId
from bioimageio.core.sample import Sample
from bioimageio.core.stat_calculators import compute_measures
from bioimageio.core.tensor import Tensor
from bioimageio.spec.model import v0_5 as m
from hypothesis import given, settings
from hypothesis import strategies as st

from microzoo.errors import ProcessingError
from microzoo.runtime.ops import Pipeline, bind_ops, describe_op

BCYX = ("batch", "channel", "y", "x")
CORE = {
    m.BinarizeDescr: core_ops.Binarize,
    m.ClipDescr: core_ops.Clip,
    m.EnsureDtypeDescr: core_ops.EnsureDtype,
    m.FixedZeroMeanUnitVarianceDescr: core_ops.FixedZeroMeanUnitVariance,
    m.ScaleLinearDescr: core_ops.ScaleLinear,
    m.ScaleMeanVarianceDescr: core_ops.ScaleMeanVariance,
    m.ScaleRangeDescr: core_ops.ScaleRange,
    m.SigmoidDescr: core_ops.Sigmoid,
    m.SoftmaxDescr: core_ops.Softmax,
    m.ZeroMeanUnitVarianceDescr: core_ops.ZeroMeanUnitVariance,
}


def core_apply(op, data, axes, sample=None):
    """Apply ``op`` with bioimageio.core, its statistics computed on ``data`` as one sample."""
    members = {MemberId(k): Tensor(a, dims=[AxisId(d) for d in ax]) for k, (a, ax) in (sample or {}).items()}
    members[MemberId("t")] = Tensor(data, dims=[AxisId(d) for d in axes])
    s = Sample(members=members, stat={}, id=None)
    proc = CORE[type(op)].from_proc_descr(op, MemberId("t"))
    s.stat.update(compute_measures(proc.required_measures, [s]))
    proc(s)
    return np.asarray(s.members[MemberId("t")].data)


def rand(shape=(2, 3, 17, 19), dtype="float32", seed=0):
    rng = np.random.default_rng(seed)
    return (rng.gamma(2.0, 30.0, size=shape) - 10).astype(dtype)


def zmuv(axes=None, eps=1e-6):
    return m.ZeroMeanUnitVarianceDescr(kwargs=m.ZeroMeanUnitVarianceKwargs(axes=axes, eps=eps))


def scale_range(axes=None, lo=0.0, hi=100.0, ref=None, eps=1e-6):
    return m.ScaleRangeDescr(
        kwargs=m.ScaleRangeKwargs(axes=axes, min_percentile=lo, max_percentile=hi, reference_tensor=ref, eps=eps)
    )


def clip(**kw):
    return m.ClipDescr(kwargs=m.ClipKwargs(**kw))


def smv(axes=None, ref="raw", eps=1e-6):
    return m.ScaleMeanVarianceDescr(kwargs=m.ScaleMeanVarianceKwargs(axes=axes, reference_tensor=ref, eps=eps))


YX, BYX = ["y", "x"], ["batch", "y", "x"]
CASES = {
    "binarize": m.BinarizeDescr(kwargs=m.BinarizeKwargs(threshold=40.0)),
    "clip": clip(min=0.0, max=50.0),
    "clip_min": clip(min=5.0),
    "clip_pct_sample": clip(min_percentile=2.0, max_percentile=98.0, axes=YX),
    "clip_pct_batch": clip(min_percentile=2.0, max_percentile=98.0, axes=BYX),
    "clip_pct_all": clip(min_percentile=1.0, max_percentile=99.0),
    "clip_pct_mixed": clip(min=0.0, max_percentile=95.0, axes=YX),
    "ensure_float64": m.EnsureDtypeDescr(kwargs=m.EnsureDtypeKwargs(dtype="float64")),
    "fixed_zmuv": m.FixedZeroMeanUnitVarianceDescr(kwargs=m.FixedZeroMeanUnitVarianceKwargs(mean=50.0, std=13.0)),
    "fixed_zmuv_channel": m.FixedZeroMeanUnitVarianceDescr(
        kwargs=m.FixedZeroMeanUnitVarianceAlongAxisKwargs(
            axis="channel", mean=[10.0, 50.0, 90.0], std=[1.0, 13.0, 40.0]
        )
    ),
    "scale_linear": m.ScaleLinearDescr(kwargs=m.ScaleLinearKwargs(gain=2.5, offset=-3.0)),
    "scale_linear_channel": m.ScaleLinearDescr(
        kwargs=m.ScaleLinearAlongAxisKwargs(axis="channel", gain=[1.0, 2.0, 0.5], offset=[0.0, 1.0, -4.0])
    ),
    "scale_range_all": scale_range(),
    "scale_range_sample": scale_range(YX, 1.0, 99.8),
    "scale_range_batch": scale_range(BYX, 3.0, 97.0),
    "scale_range_channel_sample": scale_range(["channel", "y", "x"], 1.0, 99.8),
    "sigmoid": m.SigmoidDescr(),
    "softmax": m.SoftmaxDescr(kwargs=m.SoftmaxKwargs(axis="channel")),
    "softmax_y": m.SoftmaxDescr(kwargs=m.SoftmaxKwargs(axis="y")),
    "zmuv_all": zmuv(),
    "zmuv_sample": zmuv(YX),
    "zmuv_batch": zmuv(BYX),
    "zmuv_per_row": zmuv(["x"]),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_core(name, dtype):
    op, x = CASES[name], rand(dtype=dtype)
    if name.startswith(("sigmoid", "softmax")):
        x = x / 30
    before = x.copy()
    ours = bind_ops([op], x, BCYX)(x)
    ref = core_apply(op, x, BCYX)
    assert np.array_equal(x, before)
    assert ours.shape == ref.shape
    if ref.dtype == bool:
        assert ours.dtype == bool and np.array_equal(ours, ref)
    else:
        tol = 1e-6 if dtype == "float32" else 1e-10
        np.testing.assert_allclose(ours, ref.astype(np.float64), rtol=tol, atol=tol * np.abs(ref).max())
        assert ours.dtype == (np.float64 if dtype == "float64" or name == "ensure_float64" else np.float32)


@pytest.mark.parametrize(
    "op",
    [
        scale_range(YX, 5.0, 99.0, ref="raw"),
        scale_range(None, 1.0, 90.0, ref="raw"),
        smv(YX),
        smv(BYX),
        smv(),
        smv(["batch", "channel", "y", "x"]),
    ],
    ids=describe_op,
)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_reference_tensor_matches_core(op, dtype):
    raw, x = rand(seed=1, dtype=dtype), rand(seed=2, dtype=dtype) * 0.01 + 3
    sample = {"raw": (raw, BCYX)}
    ours = bind_ops([op], x, BCYX, sample=sample)(x)
    ref = core_apply(op, x, BCYX, sample)
    tol = 1e-6 if dtype == "float32" else 1e-10
    np.testing.assert_allclose(ours, ref, rtol=tol, atol=tol * np.abs(ref).max())


def test_reference_with_other_axes():
    """A 2-channel output matched to a 1-channel input stored in another axis order."""
    raw = rand((2, 17, 19, 1), seed=3)
    y = rand((2, 2, 17, 19), seed=4) / 100
    op = smv(["channel", "y", "x"], ref="raw")
    sample = {"raw": (raw, ("batch", "y", "x", "channel"))}
    ours = bind_ops([op], y, BCYX, sample=sample)(y)
    ref = core_apply(op, y, BCYX, sample)
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6 * np.abs(ref).max())


def test_binarize_along_axis():
    """Thresholds lie along their axis; core compares with the last axis, so put it last."""
    x = rand()
    byxc = np.moveaxis(x, 1, -1)
    op = m.BinarizeDescr(kwargs=m.BinarizeAlongAxisKwargs(axis="channel", threshold=[10.0, 40.0, 80.0]))
    ours = bind_ops([op], x, BCYX)(x)
    ref = core_apply(op, byxc, ("batch", "y", "x", "channel"))
    assert np.array_equal(np.moveaxis(ours, 1, -1), ref)


@pytest.mark.parametrize("dtype", ["uint8", "int16", "int32", "bool"])
def test_ensure_dtype_matches_core_in_range(dtype):
    x = rand() % 100 - (0 if dtype == "uint8" else 50)
    op = m.EnsureDtypeDescr(kwargs=m.EnsureDtypeKwargs(dtype=dtype))
    ours = bind_ops([op], x, BCYX)(x)
    ref = core_apply(op, x, BCYX)
    assert ours.dtype == ref.dtype and np.array_equal(ours, ref)


def test_ensure_dtype_clips_out_of_range():
    x = np.array([[-3.7, 2.9, 300.0, np.nan, np.inf, -np.inf]], dtype="float32")
    op = m.EnsureDtypeDescr(kwargs=m.EnsureDtypeKwargs(dtype="uint8"))
    assert bind_ops([op], x, ("batch", "x"))(x).tolist() == [[0, 2, 255, 0, 255, 0]]
    ints = np.array([-5, 70000], dtype="int32")
    op16 = m.EnsureDtypeDescr(kwargs=m.EnsureDtypeKwargs(dtype="int16"))
    assert bind_ops([op16], ints, ("x",))(ints).tolist() == [-5, 32767]
    big = np.array([1e30, -1e30, 2.0**40], dtype="float64")
    op64 = m.EnsureDtypeDescr(kwargs=m.EnsureDtypeKwargs(dtype="int64"))
    out = bind_ops([op64], big, ("x",))(big)
    assert out[0] > 2**62 and out[1] == np.iinfo(np.int64).min and out[2] == 2**40


def test_eps_is_honoured():
    x = rand()
    ours = bind_ops([zmuv(YX, eps=0.1)], x, BCYX)(x)
    x64 = x.astype(np.float64)
    expect = (x64 - x64.mean(axis=(2, 3), keepdims=True)) / (x64.std(axis=(2, 3), keepdims=True) + 0.1)
    # float32 data is processed in float32: a few ulps from the float64 formula
    np.testing.assert_allclose(ours, expect, rtol=1e-6, atol=1e-6 * np.abs(expect).max())
    ours = bind_ops([scale_range(YX, 0.0, 100.0, eps=0.05)], x, BCYX)(x)
    lo, hi = x64.min(axis=(2, 3), keepdims=True), x64.max(axis=(2, 3), keepdims=True)
    expect = (x64 - lo) / (hi - lo + 0.05)
    np.testing.assert_allclose(ours, expect, rtol=1e-6, atol=1e-6 * np.abs(expect).max())


@pytest.fixture(scope="module")
def nuclei(shared_data: Path) -> np.ndarray:
    path = sorted((shared_data / "dsb2018" / "test" / "images").glob("*.png"))[0]
    img = iio.imread(path)
    gray = img[..., :3].mean(axis=-1) if img.ndim == 3 else img
    return gray[:128, :128].astype(np.uint8)[None, None]


@pytest.mark.parametrize(
    "op",
    [
        scale_range(YX, 1.0, 99.8),
        zmuv(YX),
        clip(min_percentile=1.0, max_percentile=99.5, axes=YX),
        m.FixedZeroMeanUnitVarianceDescr(kwargs=m.FixedZeroMeanUnitVarianceKwargs(mean=40.0, std=20.0)),
    ],
    ids=describe_op,
)
def test_real_image_matches_core(nuclei, op):
    ours = bind_ops([op], nuclei, BCYX)(nuclei)
    assert ours.dtype == np.float32
    ref = core_apply(op, nuclei.astype(np.float64), BCYX)  # core's float32 statistics drift ~1e-6
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-7)


def core_chain(ops, data, axes):
    """Apply ``ops`` in order with bioimageio.core, as its pipeline does: every statistic
    computed once on the raw ``data`` (one ``UpdateStats`` before the first op)."""
    s = Sample(members={MemberId("t"): Tensor(data, dims=[AxisId(d) for d in axes])}, stat={}, id=None)
    procs = [CORE[type(op)].from_proc_descr(op, MemberId("t")) for op in ops]
    s.stat.update(compute_measures({r for p in procs for r in p.required_measures}, [s]))
    for proc in procs:
        proc(s)
    return np.asarray(s.members[MemberId("t")].data)


@pytest.mark.parametrize(
    "ops",
    [
        [m.ScaleLinearDescr(kwargs=m.ScaleLinearKwargs(gain=2.0, offset=5.0)), zmuv(BYX)],
        [clip(min=0.0, max=40.0), scale_range(YX, 1.0, 99.0)],
        [
            m.ScaleLinearDescr(kwargs=m.ScaleLinearKwargs(gain=2.0, offset=5.0)),
            zmuv(YX),
            clip(min_percentile=5.0, max_percentile=95.0, axes=BYX),
            scale_range(YX, 1.0, 99.0),
        ],
    ],
    ids=["scale_linear-zmuv_dataset", "clip-scale_range", "four_ops"],
)
def test_statistics_are_taken_on_the_raw_tensor(ops):
    """Op k's statistics come from the tensor as given, not from ops 0..k-1's result (as core)."""
    x = rand()
    ours = bind_ops(ops, x, BCYX)(x)
    np.testing.assert_allclose(ours, core_chain(ops, x, BCYX), rtol=1e-5, atol=1e-5)
    sequential = x
    for op in ops:
        sequential = core_apply(op, sequential, BCYX)
    assert not np.allclose(ours, sequential, rtol=1e-3, atol=1e-3)  # the chain's order matters here


TILED_OPS = [
    zmuv(YX),
    zmuv(["x"]),
    clip(min_percentile=1.0, max_percentile=99.0, axes=["batch", "x"]),
    scale_range(["channel", "y", "x"], 2.0, 98.0),
    m.ScaleLinearDescr(kwargs=m.ScaleLinearAlongAxisKwargs(axis="channel", gain=[1.0, 2.0, 3.0])),
    m.SoftmaxDescr(),
    m.EnsureDtypeDescr(kwargs=m.EnsureDtypeKwargs(dtype="float64")),
]
WHOLE = rand((3, 3, 23, 29), seed=5)
TILED = bind_ops(TILED_OPS, WHOLE, BCYX)
FULL = TILED(WHOLE)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_tiles_equal_whole(data):
    where = _where(data)
    tile = WHOLE[where]
    before = tile.copy()
    np.testing.assert_array_equal(TILED(tile, where=where), FULL[where])
    assert np.array_equal(tile, before)


def _where(data) -> tuple[slice, ...]:
    out = []
    for axis, n in zip(BCYX, WHOLE.shape, strict=True):
        if axis == "channel":
            out.append(slice(0, n))
            continue
        start = data.draw(st.integers(0, n - 1))
        out.append(slice(start, data.draw(st.integers(start + 1, n))))
    return tuple(out)


def test_tile_needs_where_when_statistics_vary():
    p = bind_ops([zmuv(YX)], WHOLE, BCYX)
    with pytest.raises(ProcessingError, match="where="):
        p(WHOLE[:1])
    # spanning the varying axes whole needs no position
    np.testing.assert_array_equal(p(WHOLE[..., :8]), p(WHOLE)[..., :8])
    with pytest.raises(ProcessingError, match="step 1"):
        p(WHOLE[:1], where=(slice(1, 3), slice(None), slice(None), slice(None)))


def test_softmax_needs_its_whole_axis():
    p = bind_ops([m.SoftmaxDescr()], WHOLE, BCYX)
    assert p.whole_axes == {"channel"}
    with pytest.raises(ProcessingError, match="do not tile along 'channel'"):
        p(WHOLE[:, :2], where=(slice(None), slice(0, 2), slice(None), slice(None)))


def test_inputs_not_mutated_and_pipeline_immutable():
    x, raw = rand(), rand(seed=9)
    x_before, raw_before = x.copy(), raw.copy()
    ops = [zmuv(YX), smv(YX), scale_range(YX, 1.0, 99.0, ref="raw"), m.SigmoidDescr()]
    p = bind_ops(ops, x, BCYX, sample={"raw": (raw, BCYX)})
    out = p(x)
    assert out is not x and np.array_equal(x, x_before) and np.array_equal(raw, raw_before)
    with pytest.raises(AttributeError):
        p.steps = ()  # type: ignore[misc]
    with pytest.raises(ValueError):
        p.steps[0].sub[...] = 0
    identity = bind_ops([], x, BCYX)
    assert identity.is_identity and not p.is_identity
    same = identity(x)
    assert same is not x and np.array_equal(same, x)


def test_pipeline_is_a_value():
    assert isinstance(TILED, Pipeline)
    assert TILED.axes == BCYX and TILED.shape == WHOLE.shape
    assert TILED.names[0] == "zero_mean_unit_variance" and len(TILED.names) == len(TILED_OPS)


@pytest.mark.parametrize(
    ("op", "sample", "match"),
    [
        (zmuv(["z", "y"]), None, r"zero_mean_unit_variance .*missing: \['z'\]"),
        (clip(min_percentile=1.0, axes=["time"]), None, r"clip .*missing: \['time'\]"),
        (m.SoftmaxDescr(kwargs=m.SoftmaxKwargs(axis="z")), None, "softmax names the axis 'z'"),
        (scale_range(YX, ref="raw"), None, "scale_range takes its statistics from the tensor 'raw'"),
        (smv(YX, ref="other"), {"raw": (rand(), BCYX)}, r"'other', which was not given.*given: \['raw'\]"),
        (
            m.ScaleLinearDescr(kwargs=m.ScaleLinearAlongAxisKwargs(axis="channel", gain=[1.0, 2.0])),
            None,
            "scale_linear gives 2 gain value.*'channel' but the tensor has 3",
        ),
        (
            m.FixedZeroMeanUnitVarianceDescr(
                kwargs=m.FixedZeroMeanUnitVarianceAlongAxisKwargs(axis="channel", mean=[1.0] * 4, std=[1.0] * 4)
            ),
            None,
            "fixed_zero_mean_unit_variance gives 4 mean",
        ),
        (
            m.BinarizeDescr(kwargs=m.BinarizeAlongAxisKwargs(axis="index", threshold=[1.0])),
            None,
            "binarize names the axis 'index'",
        ),
        (smv(YX), {"raw": (rand((2, 4, 5, 5)), BCYX)}, "reference statistics have 4 values along 'channel'"),
        (
            m.StardistPostprocessingDescr(
                kwargs=m.StardistPostprocessingKwargs2D(
                    prob_threshold=0.5, nms_threshold=0.4, n_rays=32, grid=(1, 1), b=2
                )
            ),
            None,
            "'stardist_postprocessing' .* not supported",
        ),
    ],
)
def test_processing_errors(op, sample, match):
    with pytest.raises(ProcessingError, match=match):
        bind_ops([op], rand(), BCYX, sample=sample)


def test_bad_shapes():
    with pytest.raises(ProcessingError, match="does not match the axes"):
        bind_ops([], rand(), ("batch", "y", "x"))
    with pytest.raises(ProcessingError, match="expects 4 axes"):
        bind_ops([], rand(), BCYX)(rand()[0])


@pytest.mark.parametrize(
    ("op", "text"),
    [
        (zmuv(["x", "y"]), "zero_mean_unit_variance over (x, y) per sample, eps 1e-06"),
        (zmuv(BYX, eps=1e-4), "zero_mean_unit_variance over (batch, y, x) across the batch, eps 0.0001"),
        (zmuv(), "zero_mean_unit_variance over all axes jointly, eps 1e-06"),
        (
            scale_range(YX, 1.0, 99.8, ref="raw"),
            "scale_range percentiles 1 to 99.8 of tensor 'raw' over (y, x) per sample, eps 1e-06",
        ),
        (clip(min=0.0, max=1.0), "clip to [0, 1]"),
        (clip(max_percentile=99.0, axes=YX), "clip to [-inf, percentile 99] over (y, x) per sample"),
        (CASES["binarize"], "binarize: value > 40"),
        (CASES["scale_linear_channel"], "scale_linear along channel: gain [1, 2, 0.5], offset [0, 1, -4]"),
        (CASES["fixed_zmuv"], "fixed_zero_mean_unit_variance: mean 50, std 13"),
        (CASES["softmax"], "softmax along channel"),
        (CASES["sigmoid"], "sigmoid"),
        (smv(YX), "scale_mean_variance to match tensor 'raw' over (y, x) per sample, eps 1e-06"),
        (m.EnsureDtypeDescr(kwargs=m.EnsureDtypeKwargs(dtype="uint8")), "ensure_dtype uint8"),
    ],
)
def test_describe_op(op, text):
    assert describe_op(op) == text


@pytest.mark.parametrize(
    "op",
    [zmuv(YX), scale_range(YX, 1.0, 99.0), clip(min_percentile=2.0, max_percentile=98.0, axes=YX)],
    ids=describe_op,
)
def test_statistics_leave_out_non_finite_values(op):
    """A NaN and an infinite value change no statistic: each slice is processed as core
    processes its finite values alone (core's own statistics would be NaN)."""
    broken = rand(seed=7).astype(np.float64)
    broken[0, 1, 3, 4], broken[1, 2, 5, 6] = np.nan, np.inf
    ours = bind_ops([op], broken, BCYX)(broken)
    for b, c in [(0, 1), (1, 2), (0, 0)]:
        finite = np.isfinite(broken[b, c])
        values = broken[b, c][finite][None, None, None, :]
        np.testing.assert_allclose(ours[b, c][finite], core_apply(op, values, BCYX).ravel(), rtol=1e-10, atol=1e-10)
    if not isinstance(op, m.ClipDescr):  # clip by percentile replaces NaN by the bound, as core does
        assert np.isnan(ours[0, 1, 3, 4])
