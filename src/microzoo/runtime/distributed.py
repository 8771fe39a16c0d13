"""Run predictions on a Dask cluster: many files spread over the workers, or the batches of a streamed job.

Dask schedules; microzoo only says what one task is. A task carries names, never arrays: a file
path and where its outputs go, or a job folder and a batch index. Each worker process opens the
model once (:func:`worker_model`, a per-process cache keyed by the description, the weight
format, the threads and the device) and reuses it for every task it runs.

A worker that dies is replaced by its nanny and the scheduler gives its unfinished tasks to
other workers (after ``distributed.scheduler.allowed-failures`` deaths of the same task, 3 by
default, the task fails: :class:`~microzoo.errors.ClusterError` names its file or batch). Every
task writes whole outputs (atomic files, or whole chunks), so a task that runs twice writes the
same bytes. Results equal a local run's bit for bit when both use the same ``threads`` per forward.

``workers=N`` starts a :class:`distributed.LocalCluster` on this machine (N worker processes of
one Dask thread each, on 127.0.0.1, no dashboard); ``scheduler="tcp://HOST:8786"`` uses a
running cluster (see docs/cluster.md). A script that starts a local cluster must guard its
entry point with ``if __name__ == "__main__":``, as every program starting processes must.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import numbers
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from microzoo.errors import ClusterError, ConfigError, MicrozooError
from microzoo.progress import ProgressCallback

if TYPE_CHECKING:
    from distributed import Client, Future

    from microzoo.runtime.batch import FileResult
    from microzoo.runtime.predict import Model
    from microzoo.runtime.stream_job import StreamJob

CONNECT_TIMEOUT = "30s"
#: Dask's nannies start workers with MALLOC_TRIM_THRESHOLD_=65536, which turns off glibc's
#: adaptive mmap threshold: every large tensor of a forward is then a fresh mmap, and a forward
#: of the example model on a 256x256 image took 0.38 s instead of 0.25 s. Workers started here
#: keep glibc's default (docs/cluster.md says how to do the same on a cluster).
NANNY_MALLOC_TRIM = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"
TASK_RETRIES = 1  # reruns of a task that raised something other than a MicrozooError (a file system hiccup)

_MODELS: dict[tuple[str, str, int | None, str | None], Model] = {}
_LOADS: collections.Counter[str] = collections.Counter()
_LOCK = threading.RLock()


@contextlib.contextmanager
def dask_client(*, workers: int | None = None, scheduler: str | None = None) -> Iterator[Client]:
    """A Dask client: on a new local cluster of ``workers`` processes, or connected to ``scheduler``
    (an address such as ``tcp://HOST:8786``, or the JSON file ``dask scheduler --scheduler-file`` wrote).

    Both are closed on leaving (a cluster started here shuts its workers down; a running
    cluster keeps running). Raises ConfigError for neither or both, ClusterError when the
    scheduler cannot be reached.
    """
    if (workers is None) == (scheduler is None):
        raise ConfigError(
            "give either a number of workers (--workers N: a Dask cluster on this machine) or the "
            "address of a running Dask scheduler (--scheduler tcp://HOST:8786), not both"
        )
    import dask
    from distributed import Client, LocalCluster

    if workers is not None:
        if isinstance(workers, bool) or not isinstance(workers, numbers.Integral) or workers < 1:
            raise ConfigError(f"the number of Dask workers must be a positive whole number, not {workers!r}")
        with (
            dask.config.set({NANNY_MALLOC_TRIM: None}),
            LocalCluster(
                n_workers=int(workers),
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
                # no dashboard, but the scheduler's HTTP server still starts, on 8787 by default
                # (dask/distributed#8136): a free port on loopback instead
                scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
        return
    where = {"scheduler_file": scheduler} if Path(str(scheduler)).is_file() else {"address": scheduler}
    try:
        client = Client(**where, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as error:
        raise ClusterError(
            f"cannot reach the Dask scheduler at {scheduler} ({error}): check the address "
            "(tcp://HOST:8786, or a scheduler file) and that the scheduler is running (dask scheduler)"
        ) from error
    with client:
        yield client


def worker_model(
    description: str, weight_format: str, threads: int | None, device: str | None, *, package: Any = None
) -> Model:
    """The model this process opened for these arguments, opened on first use (once per worker);
    ``package``: the package of ``description`` when the caller has it open already."""
    from microzoo.runtime.predict import Model

    key = (description, weight_format, threads, device)
    with _LOCK:
        if key not in _MODELS:
            source = package if package is not None else description
            _MODELS[key] = Model.open(source, weights=weight_format, threads=threads, device=device)
            _LOADS[description] += 1
        return _MODELS[key]


def model_loads() -> dict[str, int]:
    """How many times this process opened each model (description path -> count); on a cluster,
    ``client.run(model_loads)`` asks every worker."""
    return dict(_LOADS)


def _model_key(model: Model) -> tuple[str, str, int | None, str | None]:
    return (str(model.package.description_path.resolve()), model.weight_format, model.threads, model.device)


def _check_visible(*paths: str | Path) -> None:
    """On a worker: a ClusterError naming the first of ``paths`` this machine cannot see."""
    import socket

    for path in paths:
        if not Path(path).exists():
            raise ClusterError(
                f"the Dask worker on {socket.gethostname()} cannot see {path}: every worker must see the "
                "model, the inputs and the outputs at the same paths as the machine that started the "
                "prediction (a shared filesystem, see docs/cluster.md)"
            )


@dataclasses.dataclass(frozen=True)
class _Refused:
    """A MicrozooError a task met, returned rather than raised so that Dask does not retry it."""

    error: MicrozooError


def _predict_file_task(
    key: tuple[str, str, int | None, str | None],
    path: Path,
    plan: Mapping[str, Path],
    options: Mapping[str, Any],
    on_image: Callable[[Path, np.ndarray, str], Any] | None,
) -> FileResult | _Refused:
    """On a worker: predict one file with :func:`microzoo.runtime.batch.predict_file` and write
    its outputs; the result comes back without the arrays (they are on disk)."""
    from microzoo.runtime.batch import predict_file
    from microzoo.runtime.outputs import Outputs

    try:
        _check_visible(key[0], path, *(target.parent for target in plan.values()))
        result = predict_file(worker_model(*key), path, plan, on_image=on_image, **options)
    except MicrozooError as error:
        return _Refused(error)
    return dataclasses.replace(result, prediction=dataclasses.replace(result.prediction, outputs=Outputs({})))


def predict_files_on_dask(
    model: Model,
    inputs: Sequence[Path],
    out: Path,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    axes: str | None = None,
    tile: int | Mapping[str, int] | None = None,
    memory_budget: int | None = None,
    channel: int | Sequence[int] | None = None,
    level: int = 0,
    suffix: str = ".tif",
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    on_image: Callable[[Path, np.ndarray, str], Any] | None = None,
) -> list[FileResult]:
    """:func:`microzoo.runtime.batch.predict_files` with one Dask task per file, resumable.

    The output folder keeps a job record (:mod:`microzoo.runtime.file_job`): started again with
    the same model and settings, only the files whose outputs are missing are predicted; another
    model or setting is refused unless ``overwrite``. ``model.threads`` is the threads of each
    forward on every worker (``None``: the job's recorded count when it continues, else 1, so N
    workers use N cores). The memory budget is
    resolved here, so every worker tiles alike; the record keeps it as given (a default budget
    follows the free memory: give one, or a tile size, for bit-identical resumed runs of images
    too large for one forward). ``on_image`` runs on the workers (it must be
    picklable; its return value comes back in :attr:`FileResult.inspected`). Returns the results
    of the files predicted by this call, in input order, without their arrays.
    """
    from microzoo.io.read import image_format, read_image
    from microzoo.runtime import file_job, resources
    from microzoo.runtime.batch import check_outputs, output_paths

    folder = out.parent if image_format(out) is not None else out
    if model.threads is None:  # a job's own count when it continues, else 1
        model = model.with_threads(file_job.recorded_threads(folder) or 1)
    options = {"axes": axes, "tile": tile, "memory_budget": memory_budget, "channel": channel, "level": level}
    plans = output_paths(model, inputs, out, suffix=suffix)
    record = file_job.job_record(model, {**options, "suffix": suffix})
    options["memory_budget"] = resources.memory_budget(memory_budget)  # every worker tiles alike
    pending = file_job.start_or_resume(folder, record, plans, overwrite=overwrite)
    if pending is None:
        check_outputs(model, inputs, plans, overwrite=overwrite)
        file_job.begin(folder, record, plans)
        pending = list(range(len(inputs)))
    else:
        check_outputs(model, [inputs[i] for i in pending], [plans[i] for i in pending], overwrite=True)
    for missing in (inputs[i] for i in pending if not inputs[i].exists()):
        read_image(missing)  # the error a local run gives (ImageError naming the file)
    skipped = len(inputs) - len(pending)
    if progress:
        progress(skipped, len(inputs), f"{skipped} file(s) done before" if skipped else "starting")
    if not pending:
        return []
    key = _model_key(model)
    results: dict[int, FileResult] = {}
    with dask_client(workers=workers, scheduler=scheduler) as client:
        job = uuid.uuid4().hex[:8]
        futures = {
            client.submit(
                _predict_file_task,
                key,
                inputs[i].resolve(),  # workers elsewhere start in other folders
                {oid: target.resolve() for oid, target in plans[i].items()},
                options,
                on_image,
                key=f"microzoo-file-{job}-{i}",
                retries=TASK_RETRIES,
            ): i
            for i in pending
        }
        for i, value in _as_completed(client, futures, lambda i: str(inputs[i])):
            results[i] = dataclasses.replace(value, input=inputs[i], outputs=dict(plans[i]))
            if progress:
                progress(skipped + len(results), len(inputs), inputs[i].name)
    return [results[i] for i in sorted(results)]


def _as_completed(
    client: Client, futures: Mapping[Future, int], name: Callable[[int], str]
) -> Iterator[tuple[int, Any]]:
    """``(index, result)`` of each task as it completes. A task's MicrozooError is raised here, a
    task whose workers kept dying becomes a ClusterError naming ``name(index)``; on any error the
    other tasks are cancelled."""
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    try:
        for future in as_completed(list(futures)):
            index = futures[future]
            try:
                value = future.result()
            except KilledWorker as error:
                raise ClusterError(
                    f"{name(index)}: the Dask workers running it died each time ({error}); it may need more "
                    "memory than a worker has: give the workers more memory (or fewer threads per worker)"
                ) from error
            if isinstance(value, _Refused):
                raise value.error
            yield index, value
    finally:
        client.cancel([future for future in futures if not future.done()])


# --- a streamed job's batches ---------------------------------------------------------------

_JOBS: dict[tuple[str, tuple[int, int, int], int], StreamJob] = {}


def worker_job(folder: str) -> StreamJob:
    """The job in ``folder`` as this process (and thread) loaded it, loaded on first use.

    Keyed by the folder, its ``job.json`` file (inode, size, time: a job started again in the
    same folder writes a new one, and is loaded afresh) and the thread (worker threads never
    share a job's per-read state)."""
    from microzoo.runtime.stream_job import StreamJob

    stat = (Path(folder) / "job.json").stat()
    version = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    key = (folder, version, threading.get_ident())
    with _LOCK:
        if key not in _JOBS:
            for stale in [k for k in _JOBS if k[0] == folder and k[1] != version]:
                del _JOBS[stale]
            _JOBS[key] = StreamJob.load(folder)
        return _JOBS[key]


def _job_model_key(job: StreamJob) -> tuple[str, str, int | None, str | None]:
    model = job.record["model"]
    return (model["description"], job.record["settings"]["weight_format"], job.threads, model.get("device"))


def _run_batch_task(folder: str, index: int) -> int | _Refused:
    """On a worker: run batch ``index`` of the job in ``folder`` (its model opened once per worker)."""
    try:
        _check_visible(folder)
        job = worker_job(folder)
        _check_visible(job.record["model"]["description"], job.record["input"]["path"])
        job.run_batch(worker_model(*_job_model_key(job), package=job.package), index)
    except MicrozooError as error:
        return _Refused(error)
    return index


def run_on_dask(
    job: StreamJob,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: ProgressCallback | None = None,
) -> int:
    """Run the pending batches of a streamed ``job`` on Dask; returns how many ran.

    One task per batch carrying only the job folder and the batch index (every worker rebuilds
    the job, its plan and its statistics from the folder, once, and opens the model once, with
    the job's weight format and threads). Progress is reported as tasks complete ("tile 120/1225,
    3.1 MP/s, ETA 5 min"). The caller finishes the job (``job.finish()``, on this machine).
    """
    from types import SimpleNamespace

    from microzoo.runtime.stream import _Meter

    pending = job.pending_batches()
    meter = _Meter(job, progress)
    meter.start()
    if not pending:
        return 0
    folder = str(job.folder.resolve())
    with dask_client(workers=workers, scheduler=scheduler) as client:
        token = uuid.uuid4().hex[:8]
        futures = {
            client.submit(_run_batch_task, folder, i, key=f"microzoo-batch-{token}-{i}", retries=TASK_RETRIES): i
            for i in pending
        }
        for i, _ in _as_completed(client, futures, lambda i: f"batch {i} of the job in {folder}"):
            meter.done(SimpleNamespace(tiles=job.batch_tiles(i)))
    return len(pending)
