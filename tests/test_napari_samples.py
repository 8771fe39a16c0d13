"""The plugin's sample data: small real images shipped in the package, opened through napari offline."""

from importlib.resources import files

import numpy as np
import pytest
from _napari import NAPARI_WARNINGS

from microzoo.io.read import read_array
from microzoo.napari import samples

pytestmark = NAPARI_WARNINGS

#: each sample and the shared file (and crop) it was cut from
ORIGINS = {
    "nuclei": ("dsb2018/test/images/0287e7ee5b007c91ae2bd7628d09735e70496bc6127ecb7f3dd043e04ce37426.png", None),
    "w2s": ("w2s/test/noisy/081.tif", np.s_[128:384, 128:384]),
    "em": ("isbi2012/test/images/20.png", np.s_[128:384, 128:384]),
}


@pytest.mark.parametrize("key", sorted(samples.SAMPLES))
def test_each_sample_is_the_real_image_it_names(key, shared_data):
    [(data, meta, kind)] = samples.sample(key)
    origin, crop = ORIGINS[key]
    expected = read_array(shared_data / origin)
    expected = expected[..., 0] if crop is None else expected[crop]
    assert kind == "image"
    assert data.shape == (256, 256) and data.dtype == np.uint8
    np.testing.assert_array_equal(data, expected)
    assert meta["metadata"]["source"] and meta["metadata"]["licence"]
    assert (files("microzoo.napari") / "samples" / samples.SAMPLES[key][0]).read_bytes().__len__() < 150_000


def test_the_readme_names_every_sample_file():
    folder = files("microzoo.napari") / "samples"
    readme = (folder / "README.md").read_text()
    shipped = sorted(p.name for p in folder.iterdir() if p.name.endswith(".png"))
    assert shipped == sorted(s[0] for s in samples.SAMPLES.values())
    assert all(name in readme for name in shipped)


def test_the_samples_open_through_napari(make_napari_viewer):
    viewer = make_napari_viewer()
    for key, function in [("nuclei", samples.nuclei), ("w2s", samples.w2s_noisy), ("em", samples.isbi_em)]:
        viewer.open_sample("microzoo", key)
        layer = viewer.layers[-1]
        assert layer.name == samples.SAMPLES[key][1]
        np.testing.assert_array_equal(layer.data, function()[0][0])
    assert len(viewer.layers) == 3
