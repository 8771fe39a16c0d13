"""`make demo`: the example model on DSB2018 test images, with each image's trust note."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.slow
def test_the_demo_warns_on_the_histology_image(shared_data: Path, tmp_path: Path) -> None:
    """The zoo example model (fluorescence nuclei) marks the background of the H&E image as
    nuclei; the demo's trust note calls that image ``differs`` and the fluorescence ones similar."""
    from microzoo.demo import run_demo

    result = run_demo(tmp_path / "demo", data=shared_data)
    assert result.test_passed and result.trust is not None
    verdicts = {image.name[:12]: image.verdict for image in result.trust.images}
    assert verdicts == {"003cee89357d": "similar", "1e488c42eb1a": "differs", "08151b19806e": "similar",
                        "1400420310c9": "similar"}  # fmt: skip
    assert result.trust.warning and "1 of 4 image(s) differ" in result.trust.headline
