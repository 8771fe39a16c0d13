"""Instance stitching: labels decoded tile by tile equal whole-image decoding, whatever the order.

Tiles here are cut from whole output maps exactly as a tiled prediction would see them (the
tile plan's windows, padded by reflection beyond the image), so the tests measure the
stitching itself: a model whose output in the halo equals its whole-image output is what the
streaming tests add (test_stream.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from _labels import same_partition
from scipy import ndimage as ndi
from skimage.draw import ellipse

from microzoo.errors import OutputError, TilingError
from microzoo.runtime.geometry import (
    AxisGeometry,
    FixedSize,
    ModelGeometry,
    ParameterizedSize,
    SizeReference,
    TensorGeometry,
)
from microzoo.runtime.instances import InstanceSettings, instances_from_output
from microzoo.runtime.stitch import (
    TILE_ID_BASE,
    LabelPainter,
    TileWindow,
    instance_maps,
    load_objects,
    save_objects,
    stitch_instances,
    tile_objects,
    tile_window,
)
from microzoo.runtime.tiling import TilePlan, extract_tile, plan_tiles
from microzoo.train.tasks.instance_targets import targets_from_labels

SETTINGS = InstanceSettings()
DSB_LABELS = Path("/work/shared/data/dsb2018/train/labels")


def _geometry(halo: int, axes: tuple[str, ...] = ("y", "x")) -> ModelGeometry:
    spatial_in = tuple(AxisGeometry(a, "space", ParameterizedSize(16, 8)) for a in axes)
    spatial_out = tuple(AxisGeometry(a, "space", SizeReference("raw", a), halo=halo) for a in axes)
    batch = AxisGeometry("batch", "batch", None)
    raw = TensorGeometry("raw", (batch, AxisGeometry("channel", "channel", FixedSize(1)), *spatial_in))
    maps = TensorGeometry("maps", (batch, AxisGeometry("channel", "channel", FixedSize(3)), *spatial_out))
    return ModelGeometry(inputs=(raw,), outputs=(maps,))


def _plan(maps: np.ndarray, *, tile: int, halo: int) -> TilePlan:
    """The tile plan of a model with ``halo`` over whole maps ``(batch, 3, *spatial)``."""
    axes = ("z", "y", "x")[-(maps.ndim - 2) :]
    shape = {"batch": maps.shape[0], "channel": 1, **dict(zip(axes, maps.shape[2:], strict=True))}
    return plan_tiles(_geometry(halo, axes), {"raw": shape}, tile=dict.fromkeys(axes, tile))


def _tiles(maps: np.ndarray, plan: TilePlan) -> list[tuple[TileWindow, np.ndarray]]:
    """Each tile's window and its whole output, cut from the whole maps as a tiled run sees it."""
    tensor = plan.geometry.outputs[0]
    pieces = []
    for tile in plan.tiles:
        window = tile_window(plan, tile, tensor)
        output = extract_tile(maps, (window.raw[0], slice(0, 3), *window.raw[1:]), pad_mode="reflect")
        pieces.append((window, instance_maps(output, tensor)))
    return pieces


def _blobs(shape: tuple[int, int], n: int, *, radius: tuple[int, int], seed: int) -> np.ndarray:
    """Random ellipses, some touching or overlapping (a later one covers an earlier one)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, dtype=np.uint16)
    for number in range(1, n + 1):
        centre = rng.uniform(0, shape)
        radii = rng.uniform(*radius, size=2)
        rr, cc = ellipse(*centre, *radii, shape=shape, rotation=rng.uniform(0, np.pi))
        labels[rr, cc] = number
    return labels


def _network_like(labels: np.ndarray) -> np.ndarray:
    """Smooth output maps ``(3, *spatial)`` like a trained network's, from labels."""
    return ndi.gaussian_filter(targets_from_labels(labels), sigma=(0, *[1.0] * labels.ndim))


def _objects_cut_by_kept_regions(whole: np.ndarray, plan: TilePlan) -> int:
    """How many objects of ``whole`` (one sample) lie in more than one tile's kept region."""
    owner = np.zeros(whole.shape, dtype=np.int64)
    for tile in plan.tiles:
        owner[tile.outputs["maps"][1][2:]] = tile.index
    return sum(len(np.unique(owner[whole == k])) > 1 for k in range(1, int(whole.max()) + 1))


def test_blobs_cut_by_tile_edges_keep_one_label() -> None:
    labels = _blobs((200, 232), 70, radius=(3, 8), seed=2)
    maps = _network_like(labels)
    whole = instances_from_output(maps, settings=SETTINGS)
    plan = _plan(maps[None], tile=64, halo=20)
    assert plan.n_tiles > 20 and _objects_cut_by_kept_regions(whole, plan) > 20

    stitched = stitch_instances(_tiles(maps[None], plan), settings=SETTINGS)

    assert stitched.notices == ()
    assert same_partition(stitched.labels[0], whole)
    assert stitched.n_objects == whole.max() > 60
    assert np.array_equal(np.unique(stitched.labels), np.arange(stitched.n_objects + 1))


def test_ids_do_not_depend_on_the_order_tiles_complete(tmp_path: Path) -> None:
    maps = _network_like(_blobs((160, 176), 60, radius=(3, 8), seed=2))[None]
    plan = _plan(maps, tile=48, halo=16)
    pieces = _tiles(maps, plan)
    stitched = stitch_instances(pieces, settings=SETTINGS)
    in_order = stitched.labels
    rng = np.random.default_rng(0)
    shuffled = [pieces[i] for i in rng.permutation(len(pieces))]
    assert np.array_equal(stitch_instances(shuffled, settings=SETTINGS).labels, in_order)

    # the streaming way: objects saved as tiles finish (shuffled), then painted chunk by chunk
    for window, tile_maps in shuffled:
        save_objects(tmp_path, tile_objects(tile_maps, window, settings=SETTINGS))
    windows = [window for window, _ in pieces]
    painter = LabelPainter(tmp_path, windows, cache=4)
    painted = np.zeros_like(in_order)
    for window in windows[::-1]:
        painted[window.kept] = painter.paint(window.kept)
    assert np.array_equal(painted, in_order)
    assert painter.n_objects == in_order.max() and painter.notices == stitched.notices
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"tile-{i:08d}.npz" for i in range(plan.n_tiles)]


def test_objects_round_trip_through_their_file(tmp_path: Path) -> None:
    maps = _network_like(_blobs((96, 96), 25, radius=(3, 8), seed=3))[None]
    plan = _plan(maps, tile=64, halo=16)
    window, tile_maps = _tiles(maps, plan)[3]
    objects = tile_objects(tile_maps, window, settings=SETTINGS)
    assert len(objects.masks) > 0
    path = save_objects(tmp_path, objects)
    assert sorted(tmp_path.iterdir()) == [path]  # written atomically: no temporary is left
    loaded = load_objects(tmp_path, window.index)
    assert loaded.index == objects.index
    assert np.array_equal(loaded.boxes, objects.boxes) and np.array_equal(loaded.may_be_cut, objects.may_be_cut)
    assert all(np.array_equal(a, b) for a, b in zip(loaded.masks, objects.masks, strict=True))
    assert loaded.ids.tolist() == [window.index * TILE_ID_BASE + k for k in range(1, len(objects.masks) + 1)]
    with pytest.raises(OutputError, match="tile 4.*--overwrite"):
        load_objects(tmp_path, 4)


def test_dsb2018_label_images_stitch_like_the_whole_image() -> None:
    """Real nuclei (touching clumps, sizes up to whole-image blobs), their targets as the maps:
    wherever no kept object's clump reaches a tile's outer edge (no notice), stitching is exact;
    where it differs, the notice says so."""
    exact = noticed = 0
    for path in sorted(DSB_LABELS.glob("*.tif"))[:12]:
        maps = targets_from_labels(tifffile.imread(path))
        whole = instances_from_output(maps, settings=SETTINGS)
        stitched = stitch_instances(_tiles(maps[None], _plan(maps[None], tile=96, halo=32)), settings=SETTINGS)
        same = same_partition(stitched.labels[0], whole)
        assert same or stitched.notices, path.name
        exact += same and not stitched.notices
        noticed += bool(stitched.notices)
    assert exact >= 6 and noticed >= 1


def test_a_notice_when_objects_are_larger_than_the_halo() -> None:
    maps = _network_like(_blobs((160, 160), 12, radius=(14, 22), seed=4))[None]
    stitched = stitch_instances(_tiles(maps, _plan(maps, tile=32, halo=8)), settings=SETTINGS)
    (notice,) = stitched.notices
    assert "larger tiles (--tile)" in notice


def test_each_item_of_a_batch_is_stitched_on_its_own() -> None:
    first, second = (_network_like(_blobs((96, 120), 30, radius=(3, 7), seed=s)) for s in (7, 8))
    maps = np.stack([first, second])
    stitched = stitch_instances(_tiles(maps, _plan(maps, tile=64, halo=20)), settings=SETTINGS)
    assert stitched.notices == ()
    for item, one in enumerate((first, second)):
        assert same_partition(stitched.labels[item], instances_from_output(one, settings=SETTINGS))
    assert not set(np.unique(stitched.labels[0])[1:]) & set(np.unique(stitched.labels[1])[1:])


def test_volumes_stitch_like_the_whole_volume() -> None:
    rng = np.random.default_rng(7)
    labels = np.zeros((40, 64, 64), dtype=np.uint16)
    for number in range(1, 31):
        z, y, x = rng.uniform((0, 0, 0), labels.shape)
        r = rng.uniform(3, 6)
        zz, yy, xx = np.ogrid[: labels.shape[0], : labels.shape[1], : labels.shape[2]]
        labels[(zz - z) ** 2 + (yy - y) ** 2 + (xx - x) ** 2 < r**2] = number
    maps = _network_like(labels)
    plan = _plan(maps[None], tile=32, halo=12)
    stitched = stitch_instances(_tiles(maps[None], plan), settings=SETTINGS)
    whole = instances_from_output(maps, settings=SETTINGS)
    assert stitched.notices == () and plan.n_tiles >= 8
    assert same_partition(stitched.labels[0], whole) and whole.max() > 15


def test_a_tile_with_too_many_objects_is_refused() -> None:
    maps = np.zeros((3, 512, 512), dtype=np.float32)
    maps[:, ::2, ::2] = 1  # 65536 single-pixel objects
    window = TileWindow(0, (slice(0, 512), slice(0, 512)), (slice(0, 512), slice(0, 512)), (512, 512))
    with pytest.raises(TilingError, match="65536 objects.*smaller tiles"):
        tile_objects(maps, window, settings=InstanceSettings(min_seed_size=1, min_size=1))
