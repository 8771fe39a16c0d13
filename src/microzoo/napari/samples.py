"""Sample images shipped inside the package, so that the plugin can be tried offline.

Each function is an npe2 sample-data command: it returns napari layer data,
``[(array, {"name": ..., "metadata": {"source": ..., "licence": ...}}, "image")]``. The files and
where they come from are listed in ``samples/README.md`` beside this module.
"""

from __future__ import annotations

from importlib.resources import as_file, files
from typing import Any

from microzoo.io.read import read_array

#: file, layer name, source and licence of each sample
SAMPLES = {
    "nuclei": (
        "nuclei_dsb2018.png",
        "nuclei (DSB2018)",
        "Kaggle Data Science Bowl 2018, stage1_train image 0287e7ee (fluorescence, 256x256)",
        "CC0 1.0",
    ),
    "w2s": (
        "w2s_noisy_081.png",
        "noisy widefield (W2S)",
        "W2S (Zhou et al. 2020), field 081, channel 0, one noisy capture, 8-bit copy, centre 256x256",
        "the W2S authors' terms (see samples/README.md); cite Zhou et al., ECCV 2020 Workshops",
    ),
    "em": (
        "isbi2012_em_20.png",
        "EM slice (ISBI 2012)",
        "ISBI 2012 EM segmentation challenge (Cardona et al. 2010), ssTEM slice 20, centre 256x256",
        "the ISBI 2012 challenge's terms (see samples/README.md); cite Cardona et al., PLoS Biol 2010",
    ),
}


def sample(key: str) -> list[tuple[Any, dict[str, Any], str]]:
    """The sample ``key`` (``nuclei``, ``w2s``, ``em``) as napari layer data."""
    file_name, name, source, licence = SAMPLES[key]
    with as_file(files("microzoo.napari") / "samples" / file_name) as path:
        data = read_array(path)
    return [(data, {"name": name, "metadata": {"source": source, "licence": licence}}, "image")]


def nuclei() -> list[tuple[Any, dict[str, Any], str]]:
    """A fluorescence image of nuclei (DSB2018), for nuclei segmentation models."""
    return sample("nuclei")


def w2s_noisy() -> list[tuple[Any, dict[str, Any], str]]:
    """A noisy widefield fluorescence field (W2S), for denoising models."""
    return sample("w2s")


def isbi_em() -> list[tuple[Any, dict[str, Any], str]]:
    """An electron microscopy slice of neural tissue (ISBI 2012), for membrane segmentation."""
    return sample("em")
