import numpy as np
from _napari import NAPARI_WARNINGS

pytestmark = NAPARI_WARNINGS


def test_viewer(make_napari_viewer):
    v = make_napari_viewer()
    v.add_image(np.random.rand(64, 64))
    from microzoo.napari._state import state_of

    assert state_of(v).model is None
    s = v.screenshot(canvas_only=True)
    assert s.shape[-1] == 4
