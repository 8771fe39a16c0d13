"""How much of the machine microzoo takes: one memory budget and one thread count for everything.

Prediction (tile sizes, one forward or tiles), the engines and training all ask here, so one
setting means the same everywhere:

- :func:`memory_budget`: bytes one forward pass may use. Given explicitly (``--memory-budget``,
  ``memory_budget=``), else ``$MICROZOO_MEMORY_BUDGET``, else a quarter of the available
  memory, at most 8 GiB.
- :func:`thread_count`: CPU threads for torch and onnxruntime. Given explicitly, else the cores
  this process may run on (its CPU affinity, which containers and ``taskset`` restrict; not
  the machine's count).

>>> parse_bytes("512MiB")
536870912
>>> memory_budget(2_000_000_000)
2000000000
>>> thread_count(3)
3
"""

from __future__ import annotations

import math
import numbers
import os

from microzoo.errors import ConfigError

MEMORY_BUDGET_ENV = "MICROZOO_MEMORY_BUDGET"
MAX_DEFAULT_MEMORY_BUDGET = 8 << 30

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
    "k": 2**10,
    "m": 2**20,
    "g": 2**30,
}


def parse_bytes(text: str) -> int:
    """A positive size such as ``"2GB"``, ``"512MiB"``, ``"1e9"`` in bytes."""
    stripped = text.strip().lower().replace(" ", "")
    number = stripped.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = stripped[len(number) :]
    try:
        value = float(number) * _UNITS[unit]
    except (ValueError, KeyError) as error:
        raise ConfigError(f"cannot read '{text}' as a size: write e.g. 2GB, 512MiB or 1e9") from error
    if not math.isfinite(value) or value < 1:
        raise ConfigError(f"the size '{text}' is not a positive number of bytes: write e.g. 2GB, 512MiB or 1e9")
    return int(value)


def available_memory() -> int:
    """Bytes of memory available to new allocations now (8 GiB when psutil cannot tell)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover
        return 8 << 30


def memory_budget(requested: int | None = None) -> int:
    """The bytes one forward pass may use: ``requested``, else ``$MICROZOO_MEMORY_BUDGET``, else a
    quarter of the available memory, at most 8 GiB. A budget below one byte is refused."""
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, numbers.Integral) or requested < 1:
            raise ConfigError(
                f"the memory budget must be a positive number of bytes, not {requested!r}; "
                "give e.g. 2GB (--memory-budget 2GB) or leave it out for the default"
            )
        return int(requested)
    env = os.environ.get(MEMORY_BUDGET_ENV)
    if env:
        return parse_bytes(env)
    return int(min(available_memory() // 4, MAX_DEFAULT_MEMORY_BUDGET))


def thread_count(requested: int | None = None) -> int:
    """CPU threads to use: ``requested``, else the cores this process may run on."""
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, numbers.Integral) or requested < 1:
            raise ConfigError(f"the thread count must be a positive whole number, not {requested!r}")
        return int(requested)
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1  # pragma: no cover (macOS, Windows)


#: the most forwards one streaming job runs at once (each may use the memory budget)
MAX_FORWARDS = 2


def forward_split(threads: int | None = None, *, device: str | None = None) -> tuple[int, int]:
    """``(threads per forward, forwards at once)`` for a streaming job on this machine.

    Two forwards of one thread each outrun one forward of two threads on the CPU (torch's
    intra-op scaling is below linear: benchmarks/RESULTS.md, issue 10), so by default the cores
    are split between ``MAX_FORWARDS`` concurrent forwards; ``threads`` given keeps that many per
    forward and runs as many forwards as the cores hold (at most ``MAX_FORWARDS``). On a GPU
    (``device`` "cuda...") one forward runs at a time.
    """
    cores = thread_count()
    if device is not None and str(device).startswith("cuda"):
        return thread_count(threads), 1
    if threads is None:
        forwards = min(MAX_FORWARDS, cores)
        return max(1, cores // forwards), forwards
    threads = thread_count(threads)
    return threads, max(1, min(MAX_FORWARDS, cores // threads))
