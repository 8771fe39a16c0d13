"""microzoo: find, run, train, check and publish deep-learning models for microscopy.

Run a model package (folder, ``.zip``, ``bioimageio.yaml`` or URL) on a NumPy image::

    import microzoo

    model = microzoo.load_model("path/to/model")
    outputs = model.predict(image, axes="yx")
    probability = outputs.only      # a one-output model; else outputs["name"]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["MicrozooError", "__version__", "load_model"]

from microzoo.errors import MicrozooError

if TYPE_CHECKING:  # pragma: no cover
    import os

    from microzoo.package.load import ModelPackage
    from microzoo.runtime.predict import Model


def load_model(source: str | os.PathLike[str] | ModelPackage, *, weights: str | None = None, **options: Any) -> Model:
    """Open a model package (folder, ``.zip``, ``rdf.yaml``/``bioimageio.yaml`` or URL) to run it.

    ``weights`` chooses a weight format (``"torchscript"``, ``"onnx"``, ``"pytorch_state_dict"``);
    by default the first available one in that order. See :class:`microzoo.runtime.predict.Model`.
    """
    # imported here so that `import microzoo` stays fast (torch is heavy)
    from microzoo.runtime.predict import Model

    return Model.open(source, weights=weights, **options)
