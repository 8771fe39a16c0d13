"""A streamed prediction as a job on disk: planned once, run batch by batch, resumable.

The job folder sits beside the first target (``.OUT.job/``)::

    job.json            what the job is: model, input, settings, plan (checked on every restart)
    statistics.npz      the statistics preprocessing needs, from one streaming pass
    outputs/ID.ome.zarr the output being written (one OME-Zarr per output tensor)
    done/batch-N.json   one marker per finished batch, written (atomically) after its chunks
    objects/            instance stitching (runtime/stitch.py)

Batches are fixed by the plan (``TilePlan.batches()`` with ``last_keeps_inner=False``), so a
batch always holds the same tiles and writes the same output chunks, whichever batches ran
before: a batch that runs twice writes the same bytes, and a resumed job equals an
uninterrupted one bit for bit (for the same ``threads``, which the job records). Any process
holding the job folder can run any pending batch (``StreamJob.load(folder).run_batch(model, i)``).
:func:`microzoo.runtime.stream.prepare_stream` creates or resumes a job.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from microzoo.errors import OutputError
from microzoo.io.atomic import atomic_output
from microzoo.progress import ProgressCallback
from microzoo.runtime.non_finite import NonFinite, fill_non_finite, mark_non_finite
from microzoo.runtime.ops import Pipeline
from microzoo.runtime.stitch import cut_objects_notice
from microzoo.runtime.stitch_job import instance_output, labels_wanted, save_tile_objects, write_labels
from microzoo.runtime.stream_view import ModelView, OutputLayout
from microzoo.runtime.tiling import Tile, TilePlan, extract_tile

__all__ = ["JOB_FORMAT", "STATISTICS", "BatchInput", "StreamJob", "job_folder", "load_record"]

JOB_FORMAT = 1
STATISTICS = "statistics.npz"


def job_folder(target: Path) -> Path:
    """The job folder of a streamed prediction into ``target``: ``.NAME.job`` beside it."""
    target = Path(target)
    return target.parent / f".{target.name}.job"


@dataclass
class BatchInput:
    """The inputs of one batch, read and preprocessed: what the forward takes."""

    index: int
    tiles: tuple[Tile, ...]
    arrays: list[np.ndarray]
    non_finite: list[tuple[tuple[slice, ...], np.ndarray] | None]  # per tile: read region, mask


class _Prepared:
    """The input tensor as the network sees it, read lazily: non-finite values filled with
    the channel median, then the bound preprocessing (``where=`` the region read)."""

    def __init__(self, view: ModelView, pipeline: Pipeline, fill: np.ndarray | None, tensor_id: str) -> None:
        self.view, self.pipeline, self.fill, self.tensor_id = view, pipeline, fill, tensor_id
        self.shape, self.ndim = view.shape, view.ndim
        self.last: tuple[tuple[slice, ...], np.ndarray] | None = None

    def __getitem__(self, region: tuple[slice, ...]) -> np.ndarray:
        raw = self.view[region]
        filled, where = fill_non_finite(raw, self.view.model_axes, self.tensor_id, fill=self.fill)
        self.last = None if where is None else (region, where.mask)
        return np.ascontiguousarray(self.pipeline(filled, where=region))


class StreamJob:
    """A job folder and what it needs to run batches (rebuilt from ``job.json`` alone)."""

    def __init__(self, folder: Path, record: dict[str, Any], package: Any = None) -> None:
        from microzoo.package.load import open_package
        from microzoo.runtime.tiling import geometry_from_descr

        self.folder = Path(folder)
        self.record = record
        self.package = package if package is not None else open_package(record["model"]["description"])
        self.descr = self.package.descr
        self.geometry = geometry_from_descr(self.descr)
        self.threads: int = int(record["settings"]["threads"])
        self.input_id = str(self.descr.inputs[0].id)
        self.input_axes = tuple(str(a.id) for a in self.descr.inputs[0].axes)
        self.output_ids = [str(t.id) for t in self.descr.outputs]
        self.output_axes = {str(t.id): tuple(str(a.id) for a in t.axes) for t in self.descr.outputs}
        self.targets = {oid: Path(p) for oid, p in record["targets"].items()}
        self.instances = instance_output(self.descr, self.geometry)  # labels for it (runtime/stitch_job.py)
        self._view: ModelView | None = None
        self._plan: TilePlan | None = None
        self._bound: tuple[_Prepared, dict[str, Pipeline]] | None = None
        self._writers: dict[str, Any] = {}

    # --- loading ---------------------------------------------------------------------------

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> StreamJob:
        """The job in ``folder`` (its ``job.json``); OutputError if there is none."""
        return cls(Path(folder), load_record(Path(folder)))

    @property
    def view(self) -> ModelView:
        """The input in the model's axes, read lazily."""
        if self._view is None:
            from microzoo.runtime.stream_setup import open_view

            s = self.record["settings"]
            if "path" not in self.record["input"]:
                raise OutputError(
                    f"the job in {self.folder} streams an array, not a file: run it again with "
                    "predict_stream given the same array"
                )
            self._view = open_view(
                self.descr, Path(self.record["input"]["path"]), axes=s["axes"], level=s["level"], channel=s["channel"]
            )
        return self._view

    @property
    def plan(self) -> TilePlan:
        """The tile plan, rebuilt from the recorded settings (deterministic)."""
        if self._plan is None:
            from microzoo.runtime.stream_setup import plan_stream

            s = self.record["settings"]
            self._plan = plan_stream(
                self.geometry,
                self.input_id,
                self.view.shape,
                self.input_axes,
                tile=s["tile"],
                memory_budget=s["memory_budget"],
                batch_size=s["batch_size"],
            )
        return self._plan

    @functools.cached_property
    def layouts(self) -> dict[str, OutputLayout]:
        """Where each output goes in its OME-Zarr (axes, shape, chunks)."""
        plan = self.plan
        return {
            oid: OutputLayout.of(
                oid, self.output_axes[oid], dict(plan.output_shapes[oid]), dict(plan.output_chunks[oid]), self.view
            )
            for oid in self.output_ids
        }

    def output_path(self, output_id: str) -> Path:
        """Where output ``output_id`` is written while the job runs."""
        return self.folder / "outputs" / f"{output_id}.ome.zarr"

    def writer(self, output_id: str) -> Any:
        """The OME-Zarr writer of output ``output_id`` (opened once per process)."""
        if output_id not in self._writers:
            from microzoo.runtime.stream_setup import open_writer

            self._writers[output_id] = open_writer(self.output_path(output_id))
        return self._writers[output_id]

    def _pipelines(self) -> tuple[_Prepared, dict[str, Pipeline]]:
        if self._bound is None:
            from microzoo.runtime.stream_setup import bind_pipelines

            pre, fill, post = bind_pipelines(self.descr, self.view, self.plan, self.folder)
            self._bound = (_Prepared(self.view, pre, fill, self.input_id), post)
        return self._bound

    # --- batches ---------------------------------------------------------------------------

    @property
    def n_batches(self) -> int:
        return -(-self.plan.n_tiles // self.plan.batch_size)

    def batch_tiles(self, index: int) -> tuple[Tile, ...]:
        """The tiles of batch ``index`` (fixed by the plan)."""
        size = self.plan.batch_size
        return self.plan.tiles[index * size : (index + 1) * size]

    def marker(self, index: int) -> Path:
        return self.folder / "done" / f"batch-{index:07d}.json"

    def pending_batches(self) -> list[int]:
        """The batches without a marker, in plan order."""
        done = {p.name for p in (self.folder / "done").glob("batch-*.json")}
        return [i for i in range(self.n_batches) if self.marker(i).name not in done]

    def read_batch(self, index: int) -> BatchInput:
        """Read and preprocess the tiles of batch ``index`` (halo included, padded at edges)."""
        prepared, _ = self._pipelines()
        pad_mode = next(t for t in self.geometry.inputs if t.id == self.input_id).pad_mode or "symmetric"
        tiles = self.batch_tiles(index)
        pieces, masks = [], []
        for tile in tiles:
            pieces.append(extract_tile(prepared, tile.inputs[self.input_id], pad_mode=pad_mode))
            masks.append(prepared.last)
        axis = self.input_axes.index("batch") if "batch" in self.input_axes else None
        array = np.concatenate(pieces, axis=axis) if axis is not None and len(pieces) > 1 else pieces[0]
        return BatchInput(index, tiles, [array], masks)

    def forward(self, model: Any, batch: BatchInput) -> dict[str, np.ndarray]:
        """The raw model outputs of a batch."""
        results = model.engine.forward(*batch.arrays)
        return dict(zip(self.output_ids, results, strict=False))

    def write_batch(self, batch: BatchInput, results: Mapping[str, np.ndarray]) -> None:
        """Postprocess, crop and write each tile's kept region, then the batch's marker."""
        _, post = self._pipelines()
        layouts = self.layouts
        counts = {"nan_pixels": 0, "objects_may_be_cut": 0}
        for k, tile in enumerate(batch.tiles):
            for oid in self.output_ids:
                axes = self.output_axes[oid]
                raw = results[oid]
                piece = raw if "batch" not in axes else np.take(raw, [k], axis=axes.index("batch"))
                if self.instances is not None and self.instances.tensor.id == oid:
                    objects = self.folder / "objects"
                    mark = functools.partial(self._mark_non_finite, oid=oid, found=batch.non_finite[k])
                    counts["objects_may_be_cut"] += save_tile_objects(
                        objects, self.plan, tile, self.instances, piece, post[oid], mark
                    )
                inner, where = tile.outputs[oid]
                kept = post[oid](piece[inner], where=_whole(where, self.plan.output_shapes[oid], axes))
                marked = self._mark_non_finite(kept, oid, where, batch.non_finite[k])
                counts["nan_pixels"] += marked
                region, block = layouts[oid].place(kept, self.view.sample_index(tile.sample), where)
                self.writer(oid).write(region, block)
        tmp = self.marker(batch.index).with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps(counts))
        os.replace(tmp, self.marker(batch.index))

    def run_batch(self, model: Any, index: int) -> None:
        """Read, run and write batch ``index``; idempotent (a rerun writes the same bytes)."""
        batch = self.read_batch(index)
        self.write_batch(batch, self.forward(model, batch))

    def _mark_non_finite(
        self,
        kept: np.ndarray,
        oid: str,
        where: tuple[slice, ...],
        found: tuple[tuple[slice, ...], np.ndarray] | None,
    ) -> int:
        """NaN in ``kept`` where the input was not finite (:func:`mark_non_finite`: outputs laid
        out like the input); the number of pixels marked."""
        if found is None:
            return 0
        region, mask = found
        axes = self.output_axes[oid]
        whole = self.plan.output_shapes[oid]
        spatial = [
            (a, n) for a, n in zip(self.input_axes, self.view.shape, strict=True) if a not in ("batch", "channel")
        ]
        in_axes = tuple(a for a in self.input_axes if a != "channel")
        if any(whole.get(a) != n for a, n in spatial) or any(a not in axes for a in in_axes):
            return 0
        bounds = dict(zip(axes, where, strict=True))
        offset = {a: r.start for a, r in zip(self.input_axes, region, strict=True)}
        crop = tuple(
            slice(bounds[a].start - offset[a], bounds[a].start - offset[a] + kept.shape[axes.index(a)]) for a in in_axes
        )
        tile_mask = mask[crop]
        if not tile_mask.any():
            return 0
        marked = mark_non_finite(kept, axes, NonFinite(self.input_id, in_axes, tile_mask, 0, 0, 0))
        return int(tile_mask.sum()) if marked else 0

    # --- the end ---------------------------------------------------------------------------

    def finish(self, progress: ProgressCallback | None = None) -> dict[str, Path]:
        """Pyramids, then each output renamed to its target, then the job folder removed."""
        pending = self.pending_batches()
        if pending:
            raise OutputError(
                f"the job in {self.folder} has {len(pending)} of {self.n_batches} batches still to run: "
                "run the same command again to finish it"
            )
        if self.instances is not None:  # instance labels (runtime/stitch_job.py)
            oid = self.instances.tensor.id
            if labels_wanted(self.output_path(oid), self.targets[oid]):
                write_labels(
                    self.folder / "objects", self.plan, self.instances, self.writer(oid), self.layouts[oid],
                    self.view.sample_index, progress=progress,
                )  # fmt: skip
        for oid in self.output_ids:
            path = self.output_path(oid)
            if path.exists():
                self.writer(oid).build_pyramid(
                    method="mean" if self.writer(oid).dtype.kind in "fc" else "nearest", progress=progress
                )
        from microzoo.runtime.stream_setup import deliver

        for oid in self.output_ids:
            if self.output_path(oid).exists():
                deliver(self, oid)
        shutil.rmtree(self.folder, ignore_errors=True)
        return dict(self.targets)

    def nan_pixels(self) -> int:
        """Pixels set to NaN in the outputs so far (non-finite input pixels)."""
        return sum(json.loads(p.read_text()).get("nan_pixels", 0) for p in (self.folder / "done").glob("batch-*.json"))

    def notices(self) -> tuple[str, ...]:
        """What the user should know, as the in-memory path says it: channels chosen, RGB
        turned grey, non-finite input pixels; and instance objects that a tile edge may cut
        (runtime/stitch_job.py)."""
        return self.view.notices + self._non_finite_notices() + self._cut_objects_notices()

    def _cut_objects_notices(self) -> tuple[str, ...]:
        markers = (json.loads(p.read_text()) for p in (self.folder / "done").glob("batch-*.json"))
        cut = cut_objects_notice(sum(m.get("objects_may_be_cut", 0) for m in markers))
        return (cut,) if cut else ()

    def _non_finite_notices(self) -> tuple[str, ...]:
        from microzoo.runtime.stats import StatRequest, load_statistics

        statistics = load_statistics(self.folder / STATISTICS)
        n_nan, n_inf = (
            int(statistics.get(StatRequest(self.input_id, kind).key, np.zeros(1)).sum())
            for kind in ("nan_count", "inf_count")
        )
        if not n_nan + n_inf:
            return ()
        kinds = " and ".join(f"{n} {what}" for n, what in ((n_nan, "NaN"), (n_inf, "infinite")) if n)
        text = (
            f"input '{self.input_id}': {kinds} value(s) were not finite; the model saw the median of their "
            "channel there, and the statistics of the preprocessing leave them out"
        )
        marked = self.nan_pixels()
        if marked:
            return (text + f"; the {marked} output pixel(s) there are NaN",)
        return (text + "; the outputs cannot show them (not float images laid out like the input)",)


def load_record(folder: Path) -> dict[str, Any]:
    """The ``job.json`` of the job in ``folder``; OutputError when it is unreadable or of
    another format."""
    try:
        record = json.loads((folder / "job.json").read_text())
    except (OSError, ValueError) as error:
        raise OutputError(
            f"{folder} holds no readable job (job.json: {error}); remove the folder or pass --overwrite"
        ) from error
    if not isinstance(record, dict) or record.get("format") != JOB_FORMAT:
        raise OutputError(
            f"{folder} holds a job of another microzoo version (format "
            f"{record.get('format') if isinstance(record, dict) else '?'}); pass --overwrite to start again"
        )
    return record


def _whole(where: Sequence[slice], shape: Mapping[str, int], axes: Sequence[str]) -> tuple[slice, ...]:
    """``where`` with open ends closed (a ``None`` stop means the whole axis)."""
    return tuple(slice(s.start or 0, shape[a] if s.stop is None else s.stop) for s, a in zip(where, axes, strict=True))


def write_json(path: Path, record: Mapping[str, Any]) -> None:
    """Write ``record`` as JSON to ``path`` atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
