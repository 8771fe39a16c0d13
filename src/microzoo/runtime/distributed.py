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

CONNECT_TIMEOUT = "30s"
TASK_RETRIES = 1  # reruns of a task that raised something other than a MicrozooError (a file system hiccup)

_MODELS: dict[tuple[str, str, int | None, str | None], Model] = {}
_LOADS: collections.Counter[str] = collections.Counter()
_LOCK = threading.Lock()


@contextlib.contextmanager
def dask_client(*, workers: int | None = None, scheduler: str | None = None) -> Iterator[Client]:
    """A Dask client: on a new local cluster of ``workers`` processes, or connected to ``scheduler``.

    Both are closed on leaving (a cluster started here shuts its workers down; a running
    cluster keeps running). Raises ConfigError for neither or both, ClusterError when the
    scheduler cannot be reached.
    """
    if (workers is None) == (scheduler is None):
        raise ConfigError(
            "give either a number of workers (--workers N: a Dask cluster on this machine) or the "
            "address of a running Dask scheduler (--scheduler tcp://HOST:8786), not both"
        )
    from distributed import Client, LocalCluster

    if workers is not None:
        if isinstance(workers, bool) or not isinstance(workers, numbers.Integral) or workers < 1:
            raise ConfigError(f"the number of Dask workers must be a positive whole number, not {workers!r}")
        with (
            LocalCluster(
                n_workers=int(workers),
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
        return
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as error:
        raise ClusterError(
            f"cannot reach the Dask scheduler at {scheduler} ({error}): check the address "
            "(tcp://HOST:8786) and that the scheduler is running (dask scheduler)"
        ) from error
    with client:
        yield client


def worker_model(description: str, weight_format: str, threads: int | None, device: str | None) -> Model:
    """The model this process opened for these arguments, opened on first use (once per worker)."""
    from microzoo.runtime.predict import Model

    key = (description, weight_format, threads, device)
    with _LOCK:
        if key not in _MODELS:
            _MODELS[key] = Model.open(description, weights=weight_format, threads=threads, device=device)
            _LOADS[description] += 1
        return _MODELS[key]


def model_loads() -> dict[str, int]:
    """How many times this process opened each model (description path -> count); on a cluster,
    ``client.run(model_loads)`` asks every worker."""
    return dict(_LOADS)


def _model_key(model: Model) -> tuple[str, str, int | None, str | None]:
    return (str(model.package.description_path.resolve()), model.weight_format, model.threads, model.device)


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
    suffix: str = ".tif",
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    on_image: Callable[[Path, np.ndarray, str], Any] | None = None,
) -> list[FileResult]:
    """:func:`microzoo.runtime.batch.predict_files` with one Dask task per file, resumable.

    The output folder keeps a job record (:mod:`microzoo.runtime.file_job`): started again with
    the same model and settings, only the files whose outputs are missing are predicted; another
    model or setting is refused unless ``overwrite``. ``model.threads`` is the threads of each
    forward on every worker (``None`` becomes 1, so N workers use N cores). The memory budget is
    resolved here, so every worker tiles alike; the record keeps it as given (a default budget
    follows the free memory: give one, or a tile size, for bit-identical resumed runs of images
    too large for one forward). ``on_image`` runs on the workers (it must be
    picklable; its return value comes back in :attr:`FileResult.inspected`). Returns the results
    of the files predicted by this call, in input order, without their arrays.
    """
    from microzoo.io.read import image_format
    from microzoo.runtime import file_job, resources
    from microzoo.runtime.batch import check_outputs, output_paths
    from microzoo.runtime.predict import Model

    if model.threads is None:
        model = Model(model.package, weights=model.weight_format, device=model.device, threads=1)
    options = {"axes": axes, "tile": tile, "memory_budget": memory_budget, "channel": channel}
    plans = output_paths(model, inputs, out, suffix=suffix)
    folder = out.parent if image_format(out) is not None else out
    record = file_job.job_record(model, {**options, "suffix": suffix})
    options["memory_budget"] = resources.memory_budget(memory_budget)  # every worker tiles alike
    pending = file_job.start_or_resume(folder, record, plans, overwrite=overwrite)
    if pending is None:
        check_outputs(model, inputs, plans, overwrite=overwrite)
        file_job.begin(folder, record, plans)
        pending = list(range(len(inputs)))
    else:
        check_outputs(model, [inputs[i] for i in pending], [plans[i] for i in pending], overwrite=True)
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
                inputs[i],
                plans[i],
                options,
                on_image,
                key=f"microzoo-file-{job}-{i}",
                retries=TASK_RETRIES,
            ): i
            for i in pending
        }
        for i, value in _as_completed(client, futures, lambda i: str(inputs[i])):
            results[i] = value
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
