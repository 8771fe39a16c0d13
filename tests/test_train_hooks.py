"""The training hooks a front end uses: ``on_epoch`` (a live loss curve) and ``should_stop``
(stop early: keep what was learnt, check and export it), from :func:`microzoo.train.loop.fit`
up through :func:`microzoo.train.run.train`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml

from microzoo.train.config import TrainingConfig, n2v_config
from microzoo.train.loop import USER_STOP, fit, load_checkpoint
from microzoo.train.run import train


def _fit(out_dir: Path, *, stop_after: int | None, resume: bool = False, epochs: int = 3) -> tuple[object, list, list]:
    """A one-layer network trained 4 steps an epoch; ``should_stop`` is True from step ``stop_after`` on."""
    network = torch.nn.Conv2d(1, 1, 3, padding=1)
    data = np.random.default_rng(0).normal(size=(2, 1, 8, 8)).astype(np.float32)
    steps: list[int] = []
    rows: list[dict[str, float]] = []
    result = fit(network, sample_batch=lambda rng: (data, data), loss_fn=torch.nn.functional.mse_loss,
                 validate=lambda net: {"val_loss": float(np.random.default_rng(len(steps)).random())},
                 monitor="val_loss", mode="min", out_dir=out_dir, resume=resume,
                 settings=TrainingConfig(epochs=epochs, steps_per_epoch=4, early_stopping_patience=None),
                 progress=lambda done, total, text: steps.append(done), on_epoch=rows.append,
                 should_stop=lambda: stop_after is not None and len(steps) >= stop_after)  # fmt: skip
    return result, steps, rows


def test_should_stop_ends_the_epoch_at_that_step_and_keeps_it(tmp_path: Path) -> None:
    result, steps, rows = _fit(tmp_path, stop_after=6)
    assert steps == [1, 2, 3, 4, 5, 6]  # the second epoch ended after its second step
    assert result.stopped == USER_STOP and len(result.history) == 2
    assert rows == result.history and [r["epoch"] for r in rows] == [1, 2]
    assert load_checkpoint(result.last_checkpoint)["epoch"] == 1  # the cut epoch was validated and saved
    assert result.best_checkpoint.exists() and len(result.curves_csv.read_text().splitlines()) == 1 + 2


def test_a_run_stopped_by_the_user_trains_on_when_resumed(tmp_path: Path) -> None:
    _fit(tmp_path, stop_after=2)
    resumed, steps, rows = _fit(tmp_path, stop_after=None, resume=True)
    assert resumed.stopped == "epochs" and len(resumed.history) == 3 and [r["epoch"] for r in rows] == [2, 3]


def test_without_hooks_fit_runs_every_epoch(tmp_path: Path) -> None:
    result, steps, rows = _fit(tmp_path, stop_after=None, epochs=2)
    assert result.stopped == "epochs" and steps == list(range(1, 9)) and len(rows) == 2


@pytest.fixture(scope="module")
def w2s(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four 64x64 crops of W2S noisy fields and their clean partners."""
    root = tmp_path_factory.mktemp("w2s")
    for folder in ("noisy", "clean"):
        (root / folder).mkdir()
        for i in range(1, 5):
            image = tifffile.imread(shared_data / "w2s" / "train" / folder / f"{i:03d}.tif")
            tifffile.imwrite(root / folder / f"{i:03d}.tif", image[200:264, 200:264])
    return root


def test_train_stopped_early_checks_and_exports_what_it_learnt(w2s: Path, tmp_path: Path) -> None:
    config = n2v_config(images=w2s / "noisy", targets=w2s / "clean", patch_size=32, epochs=5, steps_per_epoch=3,
                        batch_size=2)  # fmt: skip
    config.network.depth, config.network.base_features, config.data.validation_patches = 2, 8, 2
    config.data.validation_fraction = 0.25
    steps: list[str] = []
    rows: list[dict[str, float]] = []

    def progress(done: int, total: int, text: str) -> None:
        if text.startswith("epoch "):
            steps.append(text)

    result = train(config, out_dir=tmp_path / "out", progress=progress, on_epoch=rows.append,
                   should_stop=lambda: len(steps) >= 4)  # fmt: skip
    assert len(steps) == 4 and result.stopped == USER_STOP  # stopped at the first step of epoch 2
    assert rows == result.history and len(rows) == 2 and {"train_loss", "val_loss"} <= set(rows[0])
    assert result.package is not None and result.package.exists()
    record = yaml.safe_load(result.package.read_text())["config"]["microzoo"]["training"]
    assert record["stopped"] == USER_STOP and record["epochs"] == 2
    assert result.report is not None and result.report.exists()
    assert result.verdict is not None and result.verdict.line.startswith("Verdict: ")
