"""The Run widget with an instance model: the maps as an image layer and the objects as a labels
layer, the same objects whether the layer is predicted in memory (NumPy) or streamed (Dask)."""

from __future__ import annotations

import numpy as np
import pytest
from _napari import NAPARI_WARNINGS

from microzoo.runtime.predict import Model

pytestmark = NAPARI_WARNINGS


@pytest.fixture(scope="module")
def instance_model(tmp_path_factory: pytest.TempPathFactory) -> Model:
    from _packages import build_instances

    return Model.open(build_instances(tmp_path_factory.mktemp("instances") / "package"), threads=1)


def _run(make_napari_viewer, qtbot, model: Model, data, name: str):
    """A viewer with ``data`` as a layer, predicted through the Run widget in tiles of 96 (as the
    streaming runner does at the image's edge, so both runs pad it alike)."""
    from microzoo.napari._state import ChosenModel, state_of
    from microzoo.napari.run_widget import RunWidget

    viewer = make_napari_viewer()
    widget = RunWidget(viewer)
    state_of(viewer).choose(ChosenModel("instances", model))
    viewer.add_image(data, name=name, scale=(0.5, 0.5))
    widget.tile_box.setValue(96)
    job = widget.run()
    qtbot.waitUntil(lambda: not job.running, timeout=60_000)
    qtbot.wait(50)
    assert job.error is None, job.error
    return viewer


def test_instance_outputs_arrive_as_maps_and_labels_in_memory_and_streamed(
    make_napari_viewer, qtbot, instance_model: Model
) -> None:
    import dask.array as da
    from _labels import same_partition
    from _packages import instance_test_image
    from napari.layers import Labels

    image = instance_test_image((192, 224), n=14, seed=3)
    in_memory = _run(make_napari_viewer, qtbot, instance_model, image, "blobs")
    maps, labels = in_memory.layers["blobs instances"], in_memory.layers["blobs instances labels"]
    assert maps.data.shape == (3, 192, 224) and tuple(maps.scale) == (1.0, 0.5, 0.5)
    assert isinstance(labels, Labels) and tuple(labels.scale) == (0.5, 0.5)
    found = np.asarray(labels.data)
    assert found.shape == (192, 224) and len(np.unique(found)) - 1 >= 8  # discs, some touching

    streamed = _run(make_napari_viewer, qtbot, instance_model, da.from_array(image, chunks=64), "lazy blobs")
    lazy = streamed.layers["lazy blobs instances labels"]
    assert isinstance(lazy, Labels) and not isinstance(lazy.data, np.ndarray)
    stitched = np.asarray(lazy.data if not lazy.multiscale else lazy.data[0])
    assert stitched.shape == (192, 224)
    assert same_partition(stitched, found)  # the same objects, whatever their numbers
