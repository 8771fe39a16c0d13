"""Run an uploaded model's code in a child process with time, memory and file-size limits.

A zoo test-runs packages other people uploaded: a ``pytorch_state_dict`` package's architecture
is Python code that runs when the weights are loaded, and any weights can ask for too much
memory or time. :func:`run_limited` runs such work (``python -m microzoo.zoo.testrun ...``)
in a child process, never in the server's or the worker's own process.

What it protects against:

- a run that takes too long: a wall-clock limit kills the child's whole process group
  (grandchildren included), and ``RLIMIT_CPU`` stops one that spins on the CPU;
- a run that takes too much memory: ``RLIMIT_AS`` (address space) makes allocations past the
  limit fail in the child, so the worker machine does not swap or meet the OOM killer;
- a run that fills the disk: ``RLIMIT_FSIZE`` limits every file the child writes (its log too);
- a run that leaks file handles or dumps core: ``RLIMIT_NOFILE``, ``RLIMIT_CORE = 0``;
- a run that reads the zoo's secrets from its environment: the child gets a minimal
  environment (``PATH``, locale, ``PYTHONPATH``, thread counts and what the caller passes
  explicitly), never tokens or the database URL, and a temporary working folder as its home.

What it does NOT protect against (run workers for a public zoo in a container, a VM or on a
separate machine, as a user that can read nothing else):

- the network: the child can open connections (no network namespace here);
- the file system: the child runs as the worker's user and can read (and write, up to the
  size limit) whatever that user can, the zoo's files and database file included;
- other processes of the same user: it can signal them, and it sees the process list;
- CPU and memory shared with the rest of the machine below the limits, and kernel exploits.

The limits are set in the child before the work starts by a tiny launcher (Python's
``resource.setrlimit``, then ``os.execvp``): the same calls a ``preexec_fn`` would make, but
without running Python code in a forked copy of a possibly multi-threaded worker, which the
``subprocess`` documentation warns may deadlock. On Linux the launcher also asks the kernel to
kill the child when the worker dies (``PR_SET_PDEATHSIG``), so a killed worker leaves no test
run behind; its job is queued again by ``Zoo.requeue_stale_jobs``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

__all__ = ["Limits", "SandboxResult", "minimal_environment", "out_of_memory", "run_limited"]

#: the environment variables a child inherits (when set); everything else is dropped
INHERITED = ("PATH", "LANG", "LC_ALL", "PYTHONPATH", "VIRTUAL_ENV", "OMP_NUM_THREADS", "MICROZOO_MEMORY_BUDGET")
#: how much of the child's output the result keeps: the head and the tail
LOG_HEAD, LOG_TAIL = 8_000, 32_000

_LAUNCHER = """
import ctypes, json, os, resource, signal, sys
parent, limits = int(sys.argv[1]), json.loads(sys.argv[2])
try:  # Linux: die with the worker (PR_SET_PDEATHSIG = 1), kept across exec
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
except (OSError, AttributeError):
    pass
if os.getppid() != parent:  # the worker died before prctl took effect
    sys.exit(137)
for name, value in limits.items():
    resource.setrlimit(getattr(resource, name), (value[0], value[1]))
os.execvp(sys.argv[3], sys.argv[3:])
"""

#: what the log says when an allocation failed (Python, C++ and torch's allocator)
_MEMORY_WORDS = (
    "MemoryError",
    "std::bad_alloc",
    "can't allocate memory",
    "Cannot allocate memory",
    "Failed to allocate memory",  # onnxruntime's arena
    "Unable to allocate",  # NumPy
    "failed to map segment from shared object",  # a library (torch) loaded past the address-space limit
)
_FILE_WORDS = ("File too large", "[Errno 27]")


@dataclasses.dataclass(frozen=True)
class Limits:
    """The limits of one sandboxed run.

    ``seconds``: wall clock (the process group is killed after it); ``cpu_seconds``: CPU time
    (default: twice the wall clock, so only a multi-threaded spin reaches it first);
    ``memory_bytes``: address space (torch and onnxruntime reserve far more address space than
    they use: keep it at 4 GB or more for real models); ``file_bytes``: the largest file written.
    """

    seconds: float = 600.0
    memory_bytes: int = 8 << 30
    file_bytes: int = 1 << 30
    cpu_seconds: int | None = None
    open_files: int = 1024


@dataclasses.dataclass(frozen=True)
class SandboxResult:
    """What a sandboxed run did: its exit code (negative: killed by that signal), the head and
    tail of its output, the limit it hit (``"time"``, ``"cpu time"``, ``"memory"``, ``"file size"``
    or ``None``) and how long it ran."""

    returncode: int
    log: str
    limit: str | None
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.limit is None

    def describe(self) -> str:
        """One sentence: how the run ended."""
        if self.limit is not None:
            return f"stopped at the sandbox's {self.limit} limit after {self.seconds:.1f} s"
        if self.returncode < 0:
            return f"killed by signal {-self.returncode} after {self.seconds:.1f} s"
        return f"exited with code {self.returncode} after {self.seconds:.1f} s"


def minimal_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a sandboxed child gets: :data:`INHERITED` variables that are set, a
    UTF-8 locale, and ``extra`` (what the caller chooses to pass, e.g. ``MICROZOO_CACHE``)."""
    env = {name: os.environ[name] for name in INHERITED if name in os.environ}
    env.setdefault("PATH", "/usr/bin:/bin")
    env.setdefault("LANG", "C.UTF-8")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra or {})
    return env


def run_limited(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    seconds: float | None = None,
    memory_bytes: int | None = None,
    file_bytes: int | None = None,
    env: Mapping[str, str] | None = None,
    limits: Limits | None = None,
) -> SandboxResult:
    """Run ``argv`` in a child process with limits; return how it ended and its output.

    ``cwd``: the child's working folder and home (default: a new temporary folder, removed
    afterwards). ``seconds``, ``memory_bytes``, ``file_bytes`` override those of ``limits``.
    ``env``: variables added to :func:`minimal_environment` (never the caller's whole
    environment). The output (stdout and stderr together) is kept as its first and last
    characters (:data:`LOG_HEAD`, :data:`LOG_TAIL`).
    """
    limits = limits or Limits()
    limits = dataclasses.replace(
        limits,
        seconds=limits.seconds if seconds is None else seconds,
        memory_bytes=limits.memory_bytes if memory_bytes is None else memory_bytes,
        file_bytes=limits.file_bytes if file_bytes is None else file_bytes,
    )
    own_cwd = cwd is None
    workdir = Path(tempfile.mkdtemp(prefix="microzoo-sandbox-")) if cwd is None else Path(cwd)
    child_env = minimal_environment(env)
    child_env.setdefault("HOME", str(workdir))
    child_env.setdefault("TMPDIR", str(workdir))
    try:
        with tempfile.TemporaryFile(prefix="microzoo-sandbox-log-") as log_file:
            start = time.monotonic()
            process = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(os.getpid()), json.dumps(_rlimits(limits)), *argv],
                cwd=workdir,
                env=child_env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, killed as a whole
                close_fds=True,
            )
            timed_out = False
            try:
                returncode = process.wait(timeout=limits.seconds)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(process.pid)
                returncode = process.wait()
            _kill_group(process.pid)  # grandchildren left behind
            elapsed = time.monotonic() - start
            log = _bounded_log(log_file)
    finally:
        if own_cwd:
            shutil.rmtree(workdir, ignore_errors=True)
    return SandboxResult(returncode, log, _limit_hit(returncode, log, timed_out=timed_out), elapsed)


def _rlimits(limits: Limits) -> dict[str, tuple[int, int]]:
    cpu = int(limits.cpu_seconds if limits.cpu_seconds is not None else max(1, 2 * limits.seconds))
    return {
        "RLIMIT_AS": (limits.memory_bytes, limits.memory_bytes),
        "RLIMIT_CPU": (cpu, cpu + 5),  # SIGXCPU at the soft limit, SIGKILL at the hard one
        "RLIMIT_FSIZE": (limits.file_bytes, limits.file_bytes),
        "RLIMIT_NOFILE": (limits.open_files, limits.open_files),
        "RLIMIT_CORE": (0, 0),
    }


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _bounded_log(f: BinaryIO) -> str:
    """The head and tail of what the child wrote into ``f``."""
    size = f.seek(0, os.SEEK_END)
    f.seek(0)
    if size <= LOG_HEAD + LOG_TAIL:
        return f.read().decode("utf-8", "replace")
    head = f.read(LOG_HEAD).decode("utf-8", "replace")
    f.seek(size - LOG_TAIL)
    tail = f.read().decode("utf-8", "replace")
    return f"{head}\n[... {size - LOG_HEAD - LOG_TAIL} bytes of output left out ...]\n{tail}"


def out_of_memory(text: str) -> bool:
    """Whether ``text`` (a log, an error message) says that an allocation failed: under the
    sandbox's address-space limit, the memory limit was reached."""
    return any(word in text for word in _MEMORY_WORDS)


def _limit_hit(returncode: int, log: str, *, timed_out: bool) -> str | None:
    """Which limit stopped the child, from how it ended and what it said."""
    if timed_out:
        return "time"
    if returncode == -signal.SIGXCPU:
        return "cpu time"
    if returncode == -signal.SIGXFSZ:
        return "file size"
    if returncode != 0:
        tail = log[-LOG_TAIL:]
        if out_of_memory(tail):
            return "memory"
        if any(word in tail for word in _FILE_WORDS):
            return "file size"
    return None
