"""Run model packages: predict on arrays and files, reproduce test outputs, processing and tiles.

- :class:`Model` (``microzoo.load_model``): ``predict`` gives :class:`Outputs`, ``predict_image``
  a :class:`Prediction` with axes and notices; :func:`predict_files` predicts image files.
- :func:`test_package` reproduces a package's test outputs; :func:`summarize` describes it;
  :func:`convert_package` adds TorchScript and ONNX weights to it.
- :func:`bind_ops`, :func:`plan_tiles`: the processing ops and the tile plan.
- :func:`predict_stream` (:func:`prepare_stream`, :class:`StreamJob`): images larger than
  memory, tile by tile into OME-Zarr, resumable.
- :func:`memory_budget`, :func:`thread_count`: how much of the machine microzoo takes.

Every name is imported on first use (PEP 562), so importing this package stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from microzoo._lazy import lazy_exports

if TYPE_CHECKING:  # pragma: no cover
    from microzoo.runtime.batch import FileResult, check_outputs, output_paths, predict_files
    from microzoo.runtime.convert import convert_package
    from microzoo.runtime.engines import Engine, available_formats, choose_format, load_engine
    from microzoo.runtime.geometry import ModelGeometry, geometry_from_descr
    from microzoo.runtime.instances import InstanceSettings, instances_from_output
    from microzoo.runtime.ops import Pipeline, bind_ops, describe_op
    from microzoo.runtime.outputs import Outputs
    from microzoo.runtime.predict import Model, Prediction
    from microzoo.runtime.reproduce import OutputComparison, compare_outputs, test_package
    from microzoo.runtime.resources import memory_budget, parse_bytes, thread_count
    from microzoo.runtime.stream import StreamResult, predict_stream, prepare_stream
    from microzoo.runtime.stream_job import StreamJob
    from microzoo.runtime.summary import PackageSummary, summarize
    from microzoo.runtime.tiling import Tile, TilePlan, extract_tile, plan_tiles

_WHERE = {
    "Model": "predict",
    "Prediction": "predict",
    "Outputs": "outputs",
    "FileResult": "batch",
    "check_outputs": "batch",
    "output_paths": "batch",
    "predict_files": "batch",
    "OutputComparison": "reproduce",
    "compare_outputs": "reproduce",
    "convert_package": "convert",
    "test_package": "reproduce",
    "Pipeline": "ops",
    "bind_ops": "ops",
    "describe_op": "ops",
    "Tile": "tiling",
    "TilePlan": "tiling",
    "extract_tile": "tiling",
    "plan_tiles": "tiling",
    "ModelGeometry": "geometry",
    "geometry_from_descr": "geometry",
    "memory_budget": "resources",
    "parse_bytes": "resources",
    "thread_count": "resources",
    "Engine": "engines",
    "available_formats": "engines",
    "choose_format": "engines",
    "load_engine": "engines",
    "PackageSummary": "summary",
    "summarize": "summary",
    "InstanceSettings": "instances",
    "instances_from_output": "instances",
    "StreamResult": "stream",
    "predict_stream": "stream",
    "prepare_stream": "stream",
    "StreamJob": "stream_job",
}

__all__ = [
    "Engine",
    "FileResult",
    "InstanceSettings",
    "Model",
    "ModelGeometry",
    "OutputComparison",
    "Outputs",
    "PackageSummary",
    "Pipeline",
    "Prediction",
    "StreamJob",
    "StreamResult",
    "Tile",
    "TilePlan",
    "available_formats",
    "bind_ops",
    "check_outputs",
    "choose_format",
    "compare_outputs",
    "convert_package",
    "describe_op",
    "extract_tile",
    "geometry_from_descr",
    "instances_from_output",
    "load_engine",
    "memory_budget",
    "output_paths",
    "parse_bytes",
    "plan_tiles",
    "predict_files",
    "predict_stream",
    "prepare_stream",
    "summarize",
    "test_package",
    "thread_count",
]


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
