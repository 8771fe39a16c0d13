"""The steps every training task shares, written once: :func:`run_task`.

1. read the images (and their labels or clean partners) and split off validation images;
2. the task's ``setup`` gives what the loop needs (:class:`LoopSetup`: batches, loss,
   validation, the figure that picks the best epoch and the number of output channels);
3. build the U-Net (seeded), train it with :func:`microzoo.train.loop.fit`, reload the best
   epoch's weights;
4. the task's ``check`` predicts the validation images with the model and its classical
   baseline (:class:`TaskCheck`);
5. :func:`finish` scores them (:func:`microzoo.qc.evaluate.evaluate`, written into
   ``OUT/qc/``), fingerprints the training images (:mod:`microzoo.trust.fingerprint`) and
   exports the package into ``OUT/package/`` (:func:`microzoo.train.export.export_package`).

A task module (named in :data:`microzoo.train.tasks.registry.TASKS`) supplies only
``setup(config, train, val)`` and ``check(config, network, train, val, *, out_dir, progress)``.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
import torch

from microzoo.progress import ProgressCallback, no_progress
from microzoo.train.data import Sample, load_samples, split_samples
from microzoo.train.loop import BatchSampler, LoopResult, LossFunction, Mode, Validator, fit
from microzoo.train.tasks.registry import TrainingTask, get_task

if TYPE_CHECKING:
    from microzoo.qc.verdict import Verdict
    from microzoo.train.init_from import Parent
    from microzoo.train.models import UNet
    from microzoo.trust.fingerprint import Fingerprint

__all__ = [
    "LoopSetup", "TaskCheck", "TrainingResult", "build_network", "finish", "load_best", "predict_image", "run_task",
]  # fmt: skip


@dataclass(frozen=True)
class TrainingResult:
    """Where a training run wrote its outputs, and its headline figures.

    Attributes
    ----------
    task : the task's name (:data:`microzoo.train.tasks.registry.TASKS`).
    out_dir : the output folder; ``config`` is the YAML configuration saved in it.
    package : the package's ``bioimageio.yaml`` (None when export was switched off).
    report, metrics : the QC report (HTML) and its figures (JSON); None without ground truth.
    curves_csv, curves_png : loss and validation curves.
    best_checkpoint, last_checkpoint : ``best.pt`` (weights) and ``last.pt`` (resumable state).
    figures : QC figures, e.g. ``{"f1@0.5": 0.81, "baseline f1@0.5": 0.66}``.
    history : one row per epoch (loss, validation figures, learning rate, seconds).
    best_epoch, stopped : the epoch with the best validation figure, and why training stopped
        ("epochs", "early stopping", "time limit" or "stopped by the user").
    kept_epoch, kept : the epoch whose weights QC and the package got (``training.keep``: the best
        epoch or the last), and a sentence that says which and why, for every front end to show.
    verdict : the model against the classical baseline on the validation images
        (:func:`microzoo.qc.verdict.baseline_verdict`); None without QC.
    notices : what the run decided for the user (e.g. the layers that started fresh when
        training from a parent package, ``training.init_from``).
    validation : the model's and the baseline's outputs on the validation images (what QC scored).
    """

    task: str
    out_dir: Path
    config: Path
    package: Path | None
    report: Path | None
    metrics: Path | None
    curves_csv: Path
    curves_png: Path
    best_checkpoint: Path
    last_checkpoint: Path
    figures: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    stopped: str = "epochs"
    kept_epoch: int = 0
    kept: str = ""
    verdict: Verdict | None = None
    notices: tuple[str, ...] = ()
    validation: TaskCheck | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class LoopSetup:
    """What a task's ``setup`` gives the training loop (see :func:`microzoo.train.loop.fit`)."""

    out_channels: int
    sample_batch: BatchSampler
    loss_fn: LossFunction
    validate: Validator
    monitor: str
    mode: Mode  # "min" or "max": which way the monitored figure improves
    #: per output channel, the mean and standard deviation of the targets, which the network's
    #: output starts on (:meth:`~microzoo.train.models.UNet.set_output_statistics`); None: 0 and 1
    output_statistics: tuple[list[float], list[float]] | None = None


@dataclass(frozen=True)
class TaskCheck:
    """What a task's ``check`` gives QC and export after training.

    ``predictions`` maps method names to outputs on the validation images: the trained model
    first, then the classical baseline (None: no QC, e.g. Noise2Void without clean images).
    ``notes`` are task details for the package's training record; ``output_scale`` (gain,
    offset per channel) maps the network's output back to the input's units in the package.
    ``probabilities`` (segmentation): method -> foreground probability per validation image,
    for the calibration in the QC report.
    """

    postprocessing: Literal["sigmoid", "softmax", "none"]
    notes: Mapping[str, Any]
    truths: Sequence[np.ndarray] = ()
    predictions: Mapping[str, Sequence[np.ndarray]] | None = None
    inputs: Sequence[np.ndarray] | None = None
    instance_settings: Mapping[str, Any] | None = None
    output_scale: tuple[list[float], list[float]] | None = None
    probabilities: Mapping[str, Sequence[np.ndarray]] | None = None


@dataclass(frozen=True)
class TrainedRun:
    """A finished training run, as :func:`finish` needs it."""

    config: Any
    out_dir: Path
    config_path: Path
    network: torch.nn.Module
    out_channels: int
    loop: LoopResult
    train: Sequence[Sample]
    val: Sequence[Sample]
    check: TaskCheck
    parent: Parent | None = None
    notices: tuple[str, ...] = ()


def run_task(config: Any, *, out_dir: Path, config_path: Path, resume: bool = False,
             progress: ProgressCallback | None = None, parent: Parent | None = None,
             notices: Sequence[str] = (), on_epoch: Callable[[dict[str, float]], None] | None = None,
             should_stop: Callable[[], bool] | None = None) -> TrainingResult:  # fmt: skip
    """Train, check and export the task ``config.task`` (see :func:`microzoo.train.run.train`);
    ``parent``: start from its weights (:mod:`microzoo.train.init_from`); ``on_epoch`` and
    ``should_stop`` go to :func:`~microzoo.train.loop.fit`."""
    progress = progress or no_progress
    task_module = importlib.import_module(get_task(config.task).module)
    data, settings = config.data, config.training
    truth = "labels" if data.labels is not None else "targets" if data.targets is not None else None
    samples = load_samples(data, truth=truth, progress=progress)
    train, val = split_samples(samples, fraction=data.validation_fraction, seed=settings.seed,
                               validation=data.validation_images, training=data.training_images)  # fmt: skip
    setup: LoopSetup = task_module.setup(config, train, val)
    network = build_network(config, in_channels=train[0].image.shape[0], out_channels=setup.out_channels)
    if setup.output_statistics is not None:
        cast("UNet", network).set_output_statistics(*setup.output_statistics)
    notices = list(notices)
    if parent is not None:
        from microzoo.train.init_from import load_parent_weights

        notices += load_parent_weights(network, parent)
    loop = fit(network, sample_batch=setup.sample_batch, loss_fn=setup.loss_fn, validate=setup.validate,
               monitor=setup.monitor, mode=setup.mode, settings=settings, out_dir=out_dir, resume=resume,
               progress=progress, on_epoch=on_epoch, should_stop=should_stop)  # fmt: skip
    network = load_best(network, loop.kept(settings.keep)[0])
    check = task_module.check(config, network, train, val, out_dir=out_dir, progress=progress)
    run = TrainedRun(config, Path(out_dir), config_path, network, setup.out_channels, loop, train, val, check,
                     parent, tuple(notices))  # fmt: skip
    return finish(run, progress=progress)


def network_kwargs(config: Any, *, in_channels: int, out_channels: int) -> dict[str, Any]:
    """The keyword arguments of :class:`~microzoo.train.models.UNet` for a task config."""
    net = config.network
    return {"in_channels": in_channels, "out_channels": out_channels, "spatial_dims": config.data.spatial_dims,
            "depth": net.depth, "base_features": net.base_features, "batch_norm": net.batch_norm,
            "residual": net.residual, "n2v2": net.n2v2, "upsampling": net.upsampling}  # fmt: skip


def build_network(config: Any, *, in_channels: int, out_channels: int) -> torch.nn.Module:
    """A U-Net whose initial weights depend only on ``config.training.seed``."""
    from microzoo.train.models import UNet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.training.seed)
        return UNet(**network_kwargs(config, in_channels=in_channels, out_channels=out_channels))


def receptive_radius(kwargs: dict[str, Any]) -> int:
    """How far (pixels, along one axis) an input pixel can be from an output pixel that it changes,
    for :class:`~microzoo.train.models.UNet` with these keyword arguments.

    Measured rather than derived: the support of one output pixel's gradient on a random input, in a
    2-D twin with the same depth and blocks (the 3-D network's kernels are the same along every
    axis, and the support does not depend on the number of features or the weights). Depth 2: 22
    pixels (25 with N2V2's blur pooling); depth 3: 46 (53); linear upsampling adds 4 at depth 2 and
    8 at depth 3.
    """
    full = {**unet_defaults(), **kwargs}
    return _twin_radius(int(full["depth"]), bool(full["n2v2"]), bool(full["batch_norm"]), str(full["upsampling"]))


@functools.cache
def unet_defaults() -> dict[str, Any]:
    """:class:`~microzoo.train.models.UNet`'s keyword defaults: what a package's kwargs that lack a
    setting (written before it existed, such as ``upsampling``) were built with."""
    import inspect

    from microzoo.train.models import UNet

    return {name: p.default for name, p in inspect.signature(UNet).parameters.items()}


@functools.cache
def _twin_radius(depth: int, n2v2: bool, batch_norm: bool, upsampling: str) -> int:
    from microzoo.train.models import UNet

    size = 16 * 2**depth  # a radius is about 7 * 2**depth: the centre's support stays inside
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        network = UNet(
            1, 1, spatial_dims=2, depth=depth, base_features=8, batch_norm=batch_norm, n2v2=n2v2, upsampling=upsampling
        ).eval()
        # several random images: a ReLU that happens to be off at the edge of one image's support
        # would hide a part of it; the union over the batch does not
        image = torch.randn(8, 1, size, size, requires_grad=True)
    network(image)[:, 0, size // 2, size // 2].sum().backward()
    assert image.grad is not None
    ys, xs = np.nonzero(image.grad[:, 0].abs().sum(0).numpy())
    return int(max(np.abs(ys - size // 2).max(), np.abs(xs - size // 2).max()))


def export_halo(kwargs: dict[str, Any]) -> int:
    """The halo an exported U-Net's output declares: its receptive radius rounded up to a multiple of
    ``2 ** depth`` (tiles start on that grid), so that tiled outputs equal the whole image's.

    A smaller halo leaves seams: on a trained depth-2 N2V2 U-Net (radius 25), tiles of 256 with a
    halo of 16 put 9,600-19,300 values per million of W2S fields beyond a package test's tolerance
    (rtol = atol = 1e-3), with 24 or 28 none (benchmarks/halo_seams.py, RESULTS.md "Tile seams
    against the halo").

    3-D packages keep the former halo, ``max(16, 2 * 2 ** depth)``: the format has one halo for every
    axis here, and every input is padded to at least twice the halo along each, so the radius (46 to
    53 at depth 3) would turn a stack of 20 planes into one of 120 and multiply the compute of thin
    stacks; where such a stack is tiled, its tiles can show seams (measured in 2-D only; docs/training.md,
    Limits).
    """
    full = {**unet_defaults(), **kwargs}
    step = 2 ** int(full["depth"])
    if full["spatial_dims"] == 3:
        return max(16, 2 * step)
    return max(2 * step, -(-receptive_radius(kwargs) // step) * step)


def load_best(network: torch.nn.Module, checkpoint: Path) -> torch.nn.Module:
    """Put a checkpoint's weights into ``network`` (on the CPU, in eval mode): ``best.pt``, or ``last.pt``
    where ``training.keep`` is ``last``."""
    from microzoo.train.loop import load_checkpoint

    network.load_state_dict(load_checkpoint(checkpoint)["network"])
    return network.cpu().eval()


def predict_image(network: torch.nn.Module, image: np.ndarray, *, multiple: int) -> np.ndarray:
    """The raw network output for a whole normalised image ``(c, *spatial)``.

    The image is mirror-padded up to multiples of ``multiple`` (``2 ** depth``) and the
    output cropped back to the image's size.
    """
    spatial = image.shape[1:]
    pads = [(0, 0)] + [(0, -(-s // multiple) * multiple - s) for s in spatial]
    padded = np.pad(image, pads, mode="symmetric").astype(np.float32)
    device = next(network.parameters()).device
    network.eval()
    with torch.no_grad():
        output = network(torch.from_numpy(padded[None]).to(device))[0].float().cpu().numpy()
    return output[(slice(None), *(slice(0, s) for s in spatial))]


def fingerprint_or_none(raws: Sequence[np.ndarray]) -> Fingerprint | None:
    """The training fingerprint of 2-D views of the raw images ``(c, *spatial)`` (in 3-D up to 8
    planes a stack: :func:`microzoo.trust.fingerprint.image_views`, the views the trust note
    compares new images by), or None when the images are too
    small to describe. With fewer than 5 views (the fingerprint's minimum) the quarters of each view
    are added, so a run on a few images still gives its package a fingerprint."""
    from microzoo.errors import MicrozooError
    from microzoo.trust.fingerprint import fingerprint_images, image_views

    views = [plane for raw in raws for plane in image_views(raw, "czyx"[-raw.ndim :])]
    if len(views) < 5:  # fingerprint_images needs 5 images
        views += [v[y : y + v.shape[0] // 2, x : x + v.shape[1] // 2] for v in list(views)
                  for y in (0, v.shape[0] // 2) for x in (0, v.shape[1] // 2)]  # fmt: skip
    try:
        return fingerprint_images(views)
    except MicrozooError:
        return None


def finish(run: TrainedRun, *, progress: ProgressCallback | None = None) -> TrainingResult:
    """QC against the baseline into ``OUT/qc``, fingerprint, and export into ``OUT/package``."""
    progress = progress or no_progress
    config, check, loop = run.config, run.check, run.loop
    task = get_task(config.task)
    figures: dict[str, float] = {}
    report = metrics = verdict = None
    if check.predictions:
        from microzoo.qc.evaluate import evaluate, write_evaluation
        from microzoo.qc.groups import groups_of
        from microzoo.qc.verdict import baseline_verdict

        groups = groups_of([s.raw for s in run.val]) if config.data.spatial_dims == 2 else None
        evaluation = evaluate(check.predictions, check.truths, task=task.qc_task, names=[s.name for s in run.val],
                              n_bootstrap=500, seed=config.training.seed, groups=groups, progress=progress,
                              probabilities=check.probabilities)  # fmt: skip
        paths = write_evaluation(evaluation, run.out_dir / "qc", truths=check.truths, predictions=check.predictions,
                                 inputs=check.inputs)  # fmt: skip
        report, metrics = paths["report"], paths["metrics"]
        model, *others = evaluation.methods
        for metric in evaluation.headline:
            figures[metric] = evaluation.summary[model][metric].value
            if others:
                figures[f"baseline {metric}"] = evaluation.summary[others[0]][metric].value
        if others:
            verdict = baseline_verdict(evaluation, model, others[0])
    package = None
    if config.training.export:
        package = _export(run, task, figures=figures, report=report, progress=progress)
    return TrainingResult(
        task=config.task, out_dir=run.out_dir, config=run.config_path, package=package, report=report,
        metrics=metrics, curves_csv=loop.curves_csv, curves_png=loop.curves_png,
        best_checkpoint=loop.best_checkpoint, last_checkpoint=loop.last_checkpoint, figures=figures,
        history=loop.history, best_epoch=loop.best_epoch, stopped=loop.stopped,
        kept_epoch=loop.kept(config.training.keep)[1], kept=_kept_sentence(run), verdict=verdict,
        notices=run.notices, validation=check,
    )  # fmt: skip


def _kept_sentence(run: TrainedRun) -> str:
    """Which epoch's weights were kept, and why (``training.keep``)."""
    loop, keep = run.loop, run.config.training.keep
    epoch = loop.kept(keep)[1]
    if keep == "best":
        return f"the weights of epoch {epoch} were kept (the best validation {loop.monitor})"
    return (f"the weights of the last epoch, {epoch}, were kept (training.keep: last; "
            f"the best validation {loop.monitor} was epoch {loop.best_epoch})")  # fmt: skip


def _training_record(run: TrainedRun) -> dict[str, Any]:
    """How the network was trained, for the package's README and ``config``."""
    config, loop, settings = run.config, run.loop, run.config.training
    history = loop.history
    return {
        "data": str(config.data.images), "images": len(run.train), "epochs": len(history),
        "best_epoch": loop.best_epoch, "kept_epoch": loop.kept(settings.keep)[1], "keep": settings.keep,
        "stopped": loop.stopped,
        "batch_size": settings.batch_size, "steps_per_epoch": settings.steps_per_epoch,
        "patch_size": list(config.data.patch_size), "learning_rate": settings.learning_rate,
        "optimizer": f"AdamW (weight decay {settings.weight_decay:g})", "schedule": settings.scheduler,
        "seconds": float(history[-1]["seconds"]) if history else 0.0, "seed": settings.seed,
        **({"init_from": run.parent.name} if run.parent else {}), **dict(run.check.notes),
    }  # fmt: skip


def _export(run: TrainedRun, task: TrainingTask, *, figures: dict[str, float], report: Path | None,
            progress: ProgressCallback) -> Path:  # fmt: skip
    from microzoo.io.axes import COLOUR_CHANNELS
    from microzoo.train import models
    from microzoo.train.export import ExportSpec, export_package
    from microzoo.train.init_from import parent_record

    config, check = run.config, run.check
    step = 2**config.network.depth
    test_input = run.val[0].raw
    in_channels = int(test_input.shape[0])
    out_channels = run.out_channels
    kwargs = network_kwargs(config, in_channels=in_channels, out_channels=out_channels)
    halo = export_halo(kwargs)
    spec = ExportSpec(
        name=config.name, description=config.description or f"{task.name} U-Net trained with microzoo",
        task=task.name, spatial_dims=config.data.spatial_dims, in_channels=in_channels,
        out_channels=out_channels, architecture_source=Path(models.__file__), architecture_callable="UNet",
        architecture_kwargs=kwargs,
        normalization_percentiles=tuple(config.data.normalization_percentiles),
        postprocessing=check.postprocessing, output_scale=check.output_scale, size_min=2 * halo + step,
        size_step=step, halo=halo,
        test_input=test_input[0] if in_channels == 1 else test_input,
        authors=list(config.authors), license=config.license, training=_training_record(run), qc=figures,
        fingerprint=fingerprint_or_none([s.raw for s in run.train]),
        instance_settings=dict(check.instance_settings) if check.instance_settings else None, qc_report=report,
        parent=parent_record(run.parent) if run.parent else None,
        channel_names=COLOUR_CHANNELS if run.train[0].colour else None,
    )  # fmt: skip
    return export_package(run.network, out_dir=run.out_dir / "package", spec=spec, progress=progress)
