"""The zoo's worker: claim jobs from the index, run each in the sandbox, record the result.

A worker is a loop over :meth:`Zoo.claim_job`; any number run at once, on this machine or on
others that reach the database and the zoo's folder. Nothing of an uploaded package runs in
the worker's own process: every job runs ``python -m microzoo.zoo.testrun`` under
:func:`microzoo.zoo.sandbox.run_limited` (time, memory and file-size limits; see there for what
they do and do not protect against), and the worker only reads the JSON report it leaves.

Jobs (``kind``: what the worker does, what :meth:`Zoo.finish_job` records):

- ``test`` and ``retest``: reproduce the test outputs with every weight format of the stored
  version (``payload``: optional ``weights``, a list of formats); the result is the
  ``TestRunReport`` (``status`` passed, failed or error) with ``sandbox`` (exit code, seconds,
  the limit hit). ``ok`` when it passed; ``error`` says why it could not be tested.
- ``try``: one prediction (``payload``: ``image``, a path under ``ROOT/try``, and optional
  ``axes``); input, output and overlay PNGs and ``note.json`` are written to ``ROOT/try/job-ID``
  and the result is the note with ``files`` relative to ``ROOT``.
- ``convert``: ``microzoo convert`` in the sandbox (``payload``: ``formats``, e.g. ``["onnx"]``,
  and optional ``token_id``, the token asking; default the version's uploader); the converted
  package is handed back to the zoo as a new upload of the same model (checked by
  ``zoo.ingest``, its ``version`` left to the zoo: the next integer), which queues its own test.
  The result names the new version.

A worker killed mid-job (or its machine lost) leaves its job ``running``; every idle worker
queues such jobs again once they are older than twice the time limit (:meth:`Zoo.requeue_stale_jobs`).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from microzoo.errors import MicrozooError
from microzoo.zoo.records import JobInfo
from microzoo.zoo.sandbox import Limits, SandboxResult, out_of_memory, run_limited
from microzoo.zoo.service import Zoo

__all__ = ["run_worker", "run_job", "default_worker_id", "try_folder"]

_log = logging.getLogger(__name__)

#: a report larger than this is not read (the sandboxed run wrote something else)
MAX_REPORT_BYTES = 16 << 20
#: the job kinds this worker runs
KINDS = ("test", "retest", "try", "convert")


def default_worker_id() -> str:
    """``HOST-PID``: names the worker in the index (``claimed_by``)."""
    return f"{socket.gethostname()}-{os.getpid()}"


def try_folder(root: Path, job_id: int) -> Path:
    """Where a ``try`` job writes its pictures and ``note.json``."""
    return Path(root) / "try" / f"job-{job_id}"


def run_worker(
    zoo: Zoo,
    *,
    worker_id: str | None = None,
    once: bool = False,
    poll_s: float = 1.0,
    stop: threading.Event | None = None,
    limits: Limits | None = None,
    kinds: tuple[str, ...] = KINDS,
) -> int:
    """Run jobs until ``stop`` is set (or, with ``once``, until none is queued); return how many ran.

    ``limits``: the sandbox's limits for each job (default :class:`Limits`). A job that fails in
    any way is recorded as failed and the worker goes on with the next.
    """
    worker_id = worker_id or default_worker_id()
    limits = limits or Limits()
    stop = stop or threading.Event()
    done = 0
    while not stop.is_set():
        job = zoo.claim_job(worker_id, kinds)
        if job is None:
            if once:
                break
            zoo.requeue_stale_jobs(2 * limits.seconds + 60)
            stop.wait(poll_s)
            continue
        try:
            run_job(zoo, job, limits=limits)
        except MicrozooError as error:  # e.g. the job was requeued and finished by another worker meanwhile
            _log.warning("job %s (%s) could not be recorded: %s", job.id, job.kind, error)
        done += 1
    return done


def run_job(zoo: Zoo, job: JobInfo, *, limits: Limits | None = None) -> None:
    """Run one claimed job in the sandbox and record its end (never raises for the job's own failures)."""
    limits = limits or Limits()
    try:
        if job.kind in ("test", "retest"):
            ok, result, error = _test(zoo, job, limits)
        elif job.kind == "try":
            ok, result, error = _try(zoo, job, limits)
        elif job.kind == "convert":
            ok, result, error = _convert(zoo, job, limits)
        else:
            ok, result, error = False, {}, f"this worker does not run '{job.kind}' jobs"
    except MicrozooError as failure:  # the version or its image is gone, a path is refused, ...
        ok, result, error = False, {"status": "error", "error": str(failure)}, str(failure)
    except Exception as failure:  # noqa: BLE001 - a fault of the worker itself: recorded, the next job runs
        error = f"the worker failed on this job ({type(failure).__name__}: {failure}); tell the zoo's admins"
        ok, result = False, {"status": "error", "error": error}
    zoo.finish_job(job.id, ok=ok, result=result, error=error)


def _testrun(args: list[str], limits: Limits) -> tuple[dict[str, Any] | None, SandboxResult]:
    """Run ``python -m microzoo.zoo.testrun ARGS`` in the sandbox; its report (None if it left none)."""
    with tempfile.TemporaryDirectory(prefix="microzoo-job-") as work:
        report_path = Path(work) / "report.json"
        argv = [sys.executable, "-m", "microzoo.zoo.testrun", *args[:1], str(report_path), *args[1:]]
        ran = run_limited(argv, cwd=Path(work), limits=limits)
        try:
            if report_path.stat().st_size > MAX_REPORT_BYTES:
                raise ValueError("the report is too large to be one")
            report = json.loads(report_path.read_text())
        except (OSError, ValueError):
            report = None
    return report if isinstance(report, dict) else None, ran


def _sandbox_facts(ran: SandboxResult) -> dict[str, Any]:
    return {"returncode": ran.returncode, "seconds": round(ran.seconds, 3), "limit": ran.limit}


def _allowed(limit: str, limits: Limits) -> str:
    return {
        "time": f"{limits.seconds:g} s",
        "cpu time": f"{limits.cpu_seconds or 2 * limits.seconds:g} s of CPU",
        "memory": f"{limits.memory_bytes / 2**30:.2g} GiB",
        "file size": f"{limits.file_bytes / 2**20:.0f} MiB per file",
    }[limit]


def _limit_message(what: str, limit: str, limits: Limits) -> str:
    return (
        f"{what} (this zoo allows {_allowed(limit, limits)}); a package that needs more cannot be "
        "tested here: ask the zoo's admins"
    )


def _no_report(ran: SandboxResult, limits: Limits) -> tuple[dict[str, Any], str]:
    """The result and error of a run that left no report: a limit, or a crash (its log's tail)."""
    if ran.limit is not None:
        error = _limit_message(f"the test run was {ran.describe()}", ran.limit, limits)
    else:
        error = f"the test run {ran.describe()} without a report; the end of its log says why"
    log_tail = ran.log[-4000:]
    return {"status": "error", "formats": {}, "log": log_tail, "seconds": round(ran.seconds, 3), "error": error}, error


def _test(zoo: Zoo, job: JobInfo, limits: Limits) -> tuple[bool, dict[str, Any], str]:
    if job.name is None or job.version is None:
        return False, {}, "a test job needs a version"
    folder = zoo.version_folder(job.name, job.version)
    args = [str(folder)]
    weights = job.payload.get("weights") if isinstance(job.payload, dict) else None
    if weights:
        args += ["--weights", ",".join(str(w) for w in weights)]
    report, ran = _testrun(args, limits)
    if report is None:
        result, error = _no_report(ran, limits)
    else:
        result, error = report, str(report.get("error", ""))
        if report.get("status") == "error" and not error:
            error = "no weight format could be tested: " + "; ".join(
                f"{fmt}: {entry.get('message', '')}" for fmt, entry in (report.get("formats") or {}).items()
            )
    result["sandbox"] = _sandbox_facts(ran)
    if result.get("status") != "passed" and ran.limit is None and out_of_memory(json.dumps(report)):
        # a format's allocation failed under the address-space limit, the report says so
        result["sandbox"]["limit"] = "memory"
        error = _limit_message("a weight format ran out of the sandbox's memory", "memory", limits)
    return result.get("status") == "passed", result, error


def _try(zoo: Zoo, job: JobInfo, limits: Limits) -> tuple[bool, dict[str, Any], str]:
    from microzoo.package.load import path_inside

    if job.name is None or job.version is None or not isinstance(job.payload.get("image"), str):
        return False, {}, "a try job needs a version and an image (payload 'image', a path under ROOT/try)"
    image = path_inside(zoo.root / "try", job.payload["image"], where="the try job's image")
    out = try_folder(zoo.root, job.id)
    args = [str(zoo.version_folder(job.name, job.version)), "--try", str(image), "--out", str(out)]
    if job.payload.get("axes"):
        args += ["--axes", str(job.payload["axes"])]
    report, ran = _testrun(args, limits)
    if report is None:
        result, error = _no_report(ran, limits)
    else:
        result, error = report, str(report.get("error", ""))
        files = result.get("files") or {}
        result["files"] = {k: str((out / v).relative_to(zoo.root)) for k, v in files.items()}
    result["sandbox"] = _sandbox_facts(ran)
    return result.get("status") == "done", result, error


def _convert(zoo: Zoo, job: JobInfo, limits: Limits) -> tuple[bool, dict[str, Any], str]:
    from microzoo.zoo.ingest import ingest_upload

    formats = job.payload.get("formats")
    if job.name is None or job.version is None or not formats or not isinstance(formats, list):
        return False, {}, "a convert job needs a version and the formats to add (payload 'formats', e.g. ['onnx'])"
    token = _requester(zoo, job)
    with tempfile.TemporaryDirectory(prefix="microzoo-convert-") as work:
        out = Path(work) / "converted"
        folder = zoo.version_folder(job.name, job.version)
        report, ran = _testrun([str(folder), "--convert", ",".join(map(str, formats)), "--out", str(out)], limits)
        if report is None:
            result, error = _no_report(ran, limits)
        elif report.get("status") != "done":
            result, error = report, str(report.get("error", "the conversion failed"))
        else:
            _leave_version_to_the_zoo(out)
            ingest = ingest_upload(out, staging=zoo.new_staging_dir(), name=job.name)
            new = zoo.publish_upload(ingest, token=token, name=job.name)
            result = {**report, "name": new.name, "version": new.version, "problems": list(ingest.problems)}
            error = ""
    result["sandbox"] = _sandbox_facts(ran)
    return result.get("status") == "done", result, error


def _requester(zoo: Zoo, job: JobInfo) -> Any:
    """The token the new version is uploaded with: the payload's ``token_id``, else the version's uploader's."""
    from microzoo.errors import ZooAuthError

    assert job.name is not None and job.version is not None
    wanted = job.payload.get("token_id") or zoo.version(job.name, job.version, published_only=False).uploaded_by
    for token in zoo.tokens():
        if token.id == wanted and token.revoked_at is None:
            return token
    raise ZooAuthError(
        "the token that asked for this conversion is unknown or revoked: run `microzoo convert` and push the result"
    )


def _leave_version_to_the_zoo(folder: Path) -> None:
    """Drop the description's ``version`` (the stored version's own): the converted package is a new version."""
    import yaml

    from microzoo.package.load import read_description

    path = folder / "bioimageio.yaml"
    content = read_description(path)
    if content.pop("version", None) is not None:
        path.write_text(yaml.safe_dump(content, sort_keys=False, allow_unicode=True), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - `microzoo zoo worker` is the front end
    """``python -m microzoo.zoo.worker ROOT [DB_URL] [--once]``: one worker until interrupted."""
    args = list(sys.argv[1:] if argv is None else argv)
    once = "--once" in args
    args = [a for a in args if a != "--once"]
    zoo = Zoo(Path(args[0]), args[1] if len(args) > 1 else None)
    try:
        run_worker(zoo, once=once)
    except KeyboardInterrupt:
        pass
    finally:
        zoo.close()
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
