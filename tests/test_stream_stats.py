"""runtime.stats: statistics streamed block by block against NumPy and the in-memory binding."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from _packages import built_package
from bioimageio.spec.model import v0_5 as m

from microzoo.errors import ProcessingError
from microzoo.runtime.non_finite import fill_non_finite, fill_request
from microzoo.runtime.ops import bind_ops, statistics_needed
from microzoo.runtime.stats import (
    StatRequest,
    load_statistics,
    save_statistics,
    stream_sample_statistics,
    stream_statistics,
)

BCYX = ("batch", "channel", "y", "x")
OVER = {"sample": ("y", "x"), "batch": ("batch", "y", "x"), "all": None, "row": ("x",)}
QS = (0.0, 0.01, 0.02, 0.3333, 0.5, 0.98, 0.995, 1.0)


class BlockReader:
    """An array read only through ``__getitem__``, remembering the largest block asked for."""

    def __init__(self, array: np.ndarray):
        self.array, self.shape, self.dtype, self.largest = array, array.shape, array.dtype, 0

    def __getitem__(self, where):
        block = self.array[where]
        self.largest = max(self.largest, block.size)
        return block


def image(dtype: str, shape=(2, 3, 45, 38), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        x = rng.gamma(2.0, 30.0, size=shape) - 10.0
        x[0, 0, :4] = 7.25  # ties
        x[-1, -1, 0, :3] = (-0.0, 0.0, -1e-30)
        return x.astype(dtype)
    info = np.iinfo(dtype)
    low, high = max(int(info.min), -(2**40)), min(int(info.max), 2**40)
    x = rng.integers(low, high, size=shape, endpoint=True, dtype=np.int64 if dtype.kind == "i" else np.uint64)
    x[0, :, 5] = info.max  # the extremes of the type
    x[-1, :, 7] = info.min
    return x.astype(dtype)


def numpy_quantile(x: np.ndarray, q: float, over, method: str) -> np.ndarray:
    """numpy's quantile of the finite values (NaN for a slice without one, no warning)."""
    red = tuple(range(x.ndim)) if over is None else tuple(BCYX.index(a) for a in over)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        values = np.where(np.isfinite(x), x, np.nan).astype(np.float64)
        return np.nanquantile(values, q, axis=red, keepdims=True, method=method)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "int32", "uint32", "int64", "float32", "float64"])
def test_percentiles_equal_numpy(dtype):
    """Exact for every dtype: the very bits of numpy.quantile, per sample, per channel, over
    the batch and over all axes, for both methods the ops use, blocks that cut every axis."""
    x = image(dtype)
    requests = [StatRequest("t", "quantile", over, q, method) for over in OVER.values() for q in QS
                for method in ("linear", "inverted_cdf")]  # fmt: skip
    reader = BlockReader(x)
    got = stream_statistics(reader, BCYX, requests, block=(1, 2, 16, 20))
    for r in requests:
        want = numpy_quantile(x, r.q, r.axes, r.method)
        assert got[r.key].shape == want.shape
        assert np.array_equal(got[r.key], want), r.key
    assert reader.largest <= 2 * 16 * 20  # never more than one block held


@pytest.mark.parametrize(("dtype", "keep", "passes"), [("uint16", True, 1), ("float32", True, 2), ("float64", True, 2),
                                                     ("float64", False, 4), ("int64", False, 4)])  # fmt: skip
def test_passes_and_the_counting_path(monkeypatch, dtype, keep, passes):
    """8/16-bit data: one histogram pass; 32-bit: two; 64-bit: two when the bin holding a rank
    is small enough to keep and sort, else 16 more bits counted per pass (forced here)."""
    import microzoo.runtime._radix_select as radix

    if not keep:
        monkeypatch.setattr(radix, "_KEEP_PER_SET", 0)
    x = image(dtype, shape=(1, 2, 64, 50), seed=6)
    requests = [StatRequest("t", "quantile", ("y", "x"), q, "linear") for q in (0.01, 0.5, 0.998)]
    seen: set[str] = set()
    got = stream_statistics(x, BCYX, requests, block=(1, 1, 16, 16), progress=lambda d, t, what: seen.add(what))
    assert len(seen) == passes
    for r in requests:
        assert np.array_equal(got[r.key], numpy_quantile(x, r.q, r.axes, r.method)), r.key


def test_mean_std_match_numpy_and_repeat_to_the_bit():
    x = image("float32", shape=(2, 2, 130, 97), seed=1) * 1000 + 5e4
    requests = [StatRequest("t", kind, over) for over in OVER.values() for kind in ("mean", "std")]
    first = stream_statistics(x, BCYX, requests, block=(1, 1, 32, 32))
    again = stream_statistics(x, BCYX, requests, block=(1, 1, 32, 32))
    other_blocks = stream_statistics(x, BCYX, requests, block=(2, 2, 50, 13))
    x64 = x.astype(np.float64)
    for r in requests:
        red = tuple(range(4)) if r.axes is None else tuple(BCYX.index(a) for a in r.axes)
        want = (np.mean if r.kind == "mean" else np.std)(x64, axis=red, keepdims=True)
        np.testing.assert_allclose(first[r.key], want, rtol=1e-12, atol=0)
        np.testing.assert_allclose(other_blocks[r.key], want, rtol=1e-12, atol=0)
        assert first[r.key].tobytes() == again[r.key].tobytes()


def test_non_finite_values_are_left_out_and_counted():
    x = image("float32", seed=2)
    x[0, 1, 3, 4], x[1, 2, 5, 6], x[1, 2, 7, 7], x[0, 0, 0, 0] = np.nan, np.inf, -np.inf, np.nan
    x[1, 0] = np.nan  # a whole channel of one sample without a finite value
    requests = [StatRequest("t", k, ("y", "x")) for k in ("mean", "std", "nan_count", "inf_count")]
    requests += [
        StatRequest("t", "quantile", ("y", "x"), q, meth) for q in (0.02, 0.5) for meth in ("linear", "inverted_cdf")
    ]
    requests += [fill_request(BCYX, "t")]
    got = stream_statistics(x, BCYX, requests, block=(1, 1, 10, 10))
    nan_x = np.where(np.isfinite(x), x, np.nan).astype(np.float64)
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        np.testing.assert_allclose(got["t|mean|y,x"], np.nanmean(nan_x, axis=(2, 3), keepdims=True), rtol=1e-12)
    with pytest.warns(RuntimeWarning):
        np.testing.assert_allclose(got["t|std|y,x"], np.nanstd(nan_x, axis=(2, 3), keepdims=True), rtol=1e-12)
    assert got["t|nan_count|y,x"][:, :, 0, 0].tolist() == [[1, 1, 0], [45 * 38, 0, 0]]
    assert got["t|inf_count|y,x"][:, :, 0, 0].tolist() == [[0, 0, 0], [0, 0, 2]]
    for r in requests:
        if r.kind == "quantile":
            assert np.array_equal(got[r.key], numpy_quantile(x, r.q, r.axes, r.method), equal_nan=True), r.key
    assert np.isnan(got["t|mean|y,x"][1, 0]) and np.isnan(got["t|quantile|y,x|linear|0.5"][1, 0])

    # the fill value of fill_non_finite: each tile filled as the whole image is
    whole, _ = fill_non_finite(x, BCYX, "t")
    fill = got[fill_request(BCYX, "t").key]
    tile, where = fill_non_finite(x[:, :, :20, 10:30], BCYX, "t", fill=fill)
    assert np.array_equal(tile, whole[:, :, :20, 10:30])
    assert where is not None and where.n_nan == 20 * 20 and where.n_inf == 0  # sample 1, channel 0


def test_median_kind_equals_numpy_median():
    for dtype in ("float32", "float64", "int16"):
        x = image(dtype, shape=(1, 2, 31, 40), seed=3)  # odd and even counts per channel
        x[0, 0, 0, 0] = 1 if dtype == "int16" else np.nan
        got = stream_statistics(x, BCYX, [fill_request(BCYX, "t")], block=(1, 1, 8, 8))["t|median|batch,y,x"]
        for c in range(2):
            values = x[:, c][np.isfinite(x[:, c])]
            assert got[0, c, 0, 0] == np.median(values), (dtype, c)


def test_statistics_save_and_load(tmp_path):
    stats = stream_statistics(image("uint16"), BCYX, [StatRequest("t", "mean", ("y", "x"))], block=(1, 1, 8, 8))
    loaded = load_statistics(save_statistics(tmp_path / "statistics.npz", stats))
    assert loaded.keys() == stats.keys() and all(np.array_equal(loaded[k], stats[k]) for k in stats)


def test_requests_name_their_tensor_and_axes():
    ops = [
        m.ScaleRangeDescr(kwargs=m.ScaleRangeKwargs(axes=["y", "x"], min_percentile=1.0, max_percentile=99.5)),
        m.ClipDescr(kwargs=m.ClipKwargs(min_percentile=2.0, axes=["y", "x"])),
        m.ScaleMeanVarianceDescr(kwargs=m.ScaleMeanVarianceKwargs(axes=None, reference_tensor="ref")),
        m.SigmoidDescr(),
    ]
    keys = [r.key for r in statistics_needed(ops, BCYX, tensor_id="raw")]
    assert keys == [
        "raw|quantile|y,x|linear|0.01",
        "raw|quantile|y,x|linear|0.995",
        "raw|quantile|y,x|inverted_cdf|0.02",
        "raw|mean|*",
        "raw|std|*",
        "ref|mean|*",
        "ref|std|*",
    ]
    with pytest.raises(ProcessingError, match="missing: \\['z'\\]"):
        statistics_needed(
            [m.ZeroMeanUnitVarianceDescr(kwargs=m.ZeroMeanUnitVarianceKwargs(axes=["z"]))], BCYX, tensor_id="raw"
        )


def test_bind_ops_with_missing_statistics_says_so():
    op = m.ZeroMeanUnitVarianceDescr(kwargs=m.ZeroMeanUnitVarianceKwargs(axes=["y", "x"]))
    with pytest.raises(ProcessingError, match="lack 'raw\\|std\\|y,x'"):
        bind_ops([op], (1, 1, 8, 8), BCYX, statistics={"raw|mean|y,x": np.zeros((1, 1, 1, 1))}, tensor_id="raw")
    with pytest.raises(ProcessingError, match="tensor\\(s\\) \\['ref'\\] are needed"):
        stream_sample_statistics({"raw": (image("uint8"), BCYX)}, [StatRequest("ref", "mean")], blocks={})


# --- a pipeline bound from streamed statistics equals the one bound in memory ----------------


def streamed_statistics(ops, tensor_id, sample, block=(1, 1, 24, 20)):
    """What a streaming job does: the requests of ``ops``, each computed on its own tensor."""
    requests = statistics_needed(ops, sample[tensor_id][1], tensor_id=tensor_id)
    readers = {tid: (BlockReader(array), axes) for tid, (array, axes) in sample.items()}
    blocks = {tid: block[: len(axes)] for tid, (_, axes) in sample.items()}
    return stream_sample_statistics(readers, requests, blocks=blocks)


def assert_same_pipeline(ops, tensor_id, sample):
    data, axes = sample[tensor_id]
    in_memory = bind_ops(ops, data, axes, sample=sample)
    statistics = streamed_statistics(ops, tensor_id, sample)
    lazy_data, lazy_sample = BlockReader(data), {tid: (BlockReader(a), ax) for tid, (a, ax) in sample.items()}
    streamed = bind_ops(ops, lazy_data, axes, sample=lazy_sample, statistics=statistics, tensor_id=tensor_id)
    assert lazy_data.largest == 0 and all(r.largest == 0 for r, _ in lazy_sample.values())  # nothing read
    want, got = in_memory(data), streamed(data)
    assert got.dtype == want.dtype and got.shape == want.shape
    # percentiles are exact; mean and std differ from the in-memory ones by their rounding only
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=2e-6, atol=2e-6)


def _every_op():
    from test_ops import CASES, smv

    cases = dict(CASES)
    cases["scale_mean_variance"] = smv(["y", "x"])
    cases["scale_range_of_ref"] = m.ScaleRangeDescr(
        kwargs=m.ScaleRangeKwargs(axes=["y", "x"], min_percentile=1.0, max_percentile=99.0, reference_tensor="raw")
    )
    return cases


@pytest.mark.parametrize("name", sorted(_every_op()))
def test_every_op_binds_the_same_from_streamed_statistics(name):
    op = _every_op()[name]
    x, raw = image("float32", shape=(2, 3, 45, 38), seed=4), image("uint16", shape=(2, 3, 45, 38), seed=5)
    assert_same_pipeline([op], "t", {"t": (x, BCYX), "raw": (raw, BCYX)})


@pytest.mark.parametrize("package", ["ops_stats", "ops_chained", "ops_scale_mean_variance", "ops_norm_act"])
def test_packages_bind_the_same_from_streamed_statistics(tmp_path_factory, package):
    """Pre- and postprocessing of the synthetic op packages, statistics streamed over their
    test inputs and raw outputs, reference tensors read lazily."""
    from microzoo import load_model

    rdf = built_package(tmp_path_factory, package)
    model = load_model(rdf)
    sample = {
        str(t.id): (np.load(rdf.parent / f"test_input_{t.id}.npy"), model.tensor_axes(t)) for t in model.descr.inputs
    }
    processed = []
    for tensor in model.descr.inputs:
        assert_same_pipeline(tensor.preprocessing, str(tensor.id), sample)
        data, axes = sample[str(tensor.id)]
        processed.append(np.ascontiguousarray(bind_ops(tensor.preprocessing, data, axes, sample=sample)(data)))
    outputs = model.engine.forward(*processed)
    post_sample = dict(sample)
    post_sample.update(
        {str(t.id): (o, model.tensor_axes(t)) for t, o in zip(model.descr.outputs, outputs, strict=True)}
    )
    for tensor in model.descr.outputs:
        assert_same_pipeline(tensor.postprocessing, str(tensor.id), post_sample)


@pytest.mark.parametrize("suffix", [".ome.zarr", ".tif"])
def test_streams_over_lazy_files(tmp_path, suffix):
    """A uint16 image written as OME-Zarr (64-chunks) and as tiled TIFF, read lazily: the streamed
    percentiles per channel are NumPy's, read block by block."""
    import tifffile

    from microzoo.io.ome_zarr import OmeZarrWriter
    from microzoo.io.read import read_image

    x = image("uint16", shape=(1, 2, 200, 150), seed=8)[0]
    path = tmp_path / f"img{suffix}"
    if suffix == ".tif":
        tifffile.imwrite(path, x, tile=(64, 64), metadata={"axes": "CYX"})
    else:
        OmeZarrWriter.create(path, shape=x.shape, dtype=x.dtype, axes="cyx", chunks=(1, 64, 64)).write(
            (slice(None),) * 3, x
        )
    lazy = read_image(path, lazy=True)
    assert lazy.axes == "cyx" and not isinstance(lazy.data, np.ndarray)
    requests = [StatRequest("t", "quantile", ("y", "x"), q, "linear") for q in (0.01, 0.998)]
    requests += [StatRequest("t", "mean", ("y", "x"))]
    got = stream_statistics(lazy.data, ("channel", "y", "x"), requests, block=(1, 64, 64))
    for r in requests[:2]:
        want = np.quantile(x.astype(np.float64), r.q, axis=(1, 2), keepdims=True)
        assert np.array_equal(got[r.key], want)
    np.testing.assert_allclose(got["t|mean|y,x"], x.mean(axis=(1, 2), keepdims=True), rtol=1e-12)
