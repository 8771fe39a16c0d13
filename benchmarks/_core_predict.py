"""The reference: predict one TIFF with bioimageio.core as a user would (read, predict tiled, write).

Run by predict_throughput.py as its own process:
    python benchmarks/_core_predict.py MODEL INPUT.tif OUTPUT.tif WEIGHT_FORMAT [TILE]
Prints the seconds spent in prediction alone as `predict_seconds=...`.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import tifffile
from bioimageio.core import create_prediction_pipeline, predict
from bioimageio.spec import load_model_description


def main() -> None:
    model_source, input_path, output_path, weight_format = sys.argv[1:5]
    tile = int(sys.argv[5]) if len(sys.argv) > 5 else 512
    descr = load_model_description(model_source)
    pipeline = create_prediction_pipeline(descr, weight_format=weight_format)
    image = tifffile.imread(input_path).astype(np.float32)[None, None]
    input_id = str(descr.inputs[0].id)
    start = time.perf_counter()
    sample = predict(
        model=pipeline,
        inputs={input_id: image},
        input_block_shape={input_id: {"batch": 1, "channel": 1, "y": tile, "x": tile}},
    )
    seconds = time.perf_counter() - start
    output = next(iter(sample.members.values())).data.values
    tifffile.imwrite(output_path, np.squeeze(output).astype(np.float32))
    print(f"predict_seconds={seconds:.4f}")


if __name__ == "__main__":
    main()
