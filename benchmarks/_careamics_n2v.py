"""The CAREamics side of benchmarks/train_vs_careamics.py: train N2V2 for a fixed wall time, predict.

Runs in CAREamics' own environment (/work/careamics-venv: careamics 0.3.5 installed with
``--no-deps`` beside torch 2.13.0 CPU), never in microzoo's; it imports neither microzoo nor numpy
code of this repository. Called as its own process:

    /work/careamics-venv/bin/python benchmarks/_careamics_n2v.py SETTINGS.json

SETTINGS.json: ``train`` (the noisy training TIFFs), ``test`` (the noisy test TIFFs), ``out``
(a folder), ``patch``, ``batch``, ``depth``, ``features``, ``lr``, ``steps_per_epoch``,
``val_patches``, ``masked_fraction`` (a fraction), ``seconds``, ``seed``, ``threads``.
Writes ``OUT/predictions.npy`` (the test fields, in their input units) and prints one JSON line
``result={"steps": ..., "train_seconds": ..., ...}``.

torchvision and microssim are not installed there: careamics 0.3.5 imports them at start-up
but uses them only for its LVAE models, its package export (a version string) and its LVAE
metrics, none of which N2V training or prediction calls. The registry's torchvision wheel fails
against the CPU torch ("operator torchvision::nms does not exist") and microssim pins
torch <= 2.11, so both are replaced by stubs in ``sys.modules`` (raising if ever called),
installed after lightning and torchmetrics have been imported so that those two see no
torchvision and switch off their torchvision features, as they do when it is absent.
"""

from __future__ import annotations

import json
import sys
import time
import types
from pathlib import Path


def _stub_unused_imports() -> None:
    import lightning  # noqa: F401  (imported first: it must find no torchvision)
    import torchmetrics  # noqa: F401

    def unavailable(*args, **kwargs):
        raise NotImplementedError("stubbed in the benchmark environment: not used by N2V")

    torchvision = types.ModuleType("torchvision")
    torchvision.__version__ = "0.0.0+stub"
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    functional.center_crop = unavailable
    torchvision.transforms, transforms.functional = transforms, functional
    microssim = types.ModuleType("microssim")
    microssim.MicroSSIM = microssim.MicroMS3IM = unavailable
    sys.modules.update(
        {
            "torchvision": torchvision,
            "torchvision.transforms": transforms,
            "torchvision.transforms.functional": functional,
            "microssim": microssim,
        }
    )


def main() -> None:
    settings = json.loads(Path(sys.argv[1]).read_text())
    import numpy as np
    import tifffile
    import torch

    torch.set_num_threads(settings["threads"])
    _stub_unused_imports()
    from careamics import CAREamist
    from careamics.config import create_advanced_n2v_config
    from lightning.pytorch.callbacks import Callback

    out = Path(settings["out"])
    train = np.stack([tifffile.imread(p) for p in settings["train"]]).astype(np.float32)
    config = create_advanced_n2v_config(
        experiment_name="w2s_n2v2", data_type="array", axes="SYX",
        patch_size=[settings["patch"]] * 2, batch_size=settings["batch"], num_epochs=100_000,
        num_steps=settings["steps_per_epoch"], n_val_patches=settings["val_patches"], use_n2v2=True,
        masked_pixel_percentage=100 * settings["masked_fraction"],
        model_params={"depth": settings["depth"], "num_channels_init": settings["features"]},
        optimizer="Adam", optimizer_params={"lr": settings["lr"]},
        trainer_params={"max_time": {"seconds": settings["seconds"]}, "accelerator": "cpu",
                        "enable_progress_bar": False},
        seed=settings["seed"] + 1,  # CAREamics wants a positive seed
    )  # fmt: skip

    class Clock(Callback):
        """Times the training from its first batch to its end (start-up and data loading excluded)."""

        first = last = threads = None

        def on_train_batch_start(self, trainer, module, batch, index):
            if self.first is None:
                self.first, self.threads = time.perf_counter(), torch.get_num_threads()

        def on_train_end(self, trainer, module):
            self.last = time.perf_counter()

    clock = Clock()
    careamist = CAREamist(config, work_dir=out, callbacks=[clock], enable_progress_bar=False)
    start = time.perf_counter()
    careamist.train(train_data=train)
    fit_seconds = time.perf_counter() - start
    steps = int(careamist.trainer.global_step)
    test = np.stack([tifffile.imread(p) for p in settings["test"]]).astype(np.float32)
    # CAREamics' default checkpoint for N2V: the last one
    predictions, _ = careamist.predict(pred_data=test, axes="SYX", data_type="array")
    predictions = np.concatenate([np.asarray(p).reshape(-1, *np.shape(p)[-2:]) for p in predictions])
    np.save(out / "predictions.npy", predictions.astype(np.float32))
    print(
        "result="
        + json.dumps(
            {
                "steps": steps,
                "train_seconds": clock.last - clock.first,
                "fit_seconds": fit_seconds,
                "epochs": int(careamist.trainer.current_epoch),
                "torch_threads": clock.threads,
                "parameters": sum(p.numel() for p in careamist.model.parameters()),
            }
        )
    )


if __name__ == "__main__":
    main()
