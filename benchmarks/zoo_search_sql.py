"""One search at a time, in process: how long it takes, and how much of it is SQL.

    python benchmarks/zoo_search_sql.py --db both --entries 10000 --queries 60 --rounds 2
    python benchmarks/zoo_search_sql.py --db both --old-src /work/main/src   # old against new, A B A B

The zoo is filled by ``zoo_load.fill`` (10,000 generated published versions), then the same
``--queries`` searches as the load benchmark's search API (1-2 words, a filter in half of them,
pages 1-3, three sorts; the same generator and seed) run one after the other through
``Zoo.search``. Each SQL statement is timed from the driver's cursor events. Printed: the median
and p95 of the statements' time (summed over the search), of the rest (Python: the ORM, the
in-memory counts) and of the whole ``Zoo.search`` call, and whether every run found the same
results (total, page, facets of each query: with ``--old-src``, old and new must agree).

With ``--old-src``: each round measures the code under ``--old-src`` (on a zoo it filled, at its
own schema) and then this checkout's (on its own zoo), A B A B, each in a fresh process.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"


def measure(root: Path, url: str | None, entries: int, queries: int) -> dict[str, list[float]]:
    """Time ``queries`` searches of the load benchmark's mix (ms): count, facets, page, whole."""
    from sqlalchemy import event

    sys.path.insert(0, str(HERE))
    from zoo_load import search_path  # the load benchmark's queries

    from microzoo.zoo.records import SearchQuery
    from microzoo.zoo.service import Zoo

    zoo = Zoo(root, url)
    times: list[float] = []
    started: list[float] = []

    @event.listens_for(zoo.engine, "before_cursor_execute")
    def _before(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001, ANN202
        started.append(time.perf_counter())

    @event.listens_for(zoo.engine, "after_cursor_execute")
    def _after(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001, ANN202
        begun = started.pop()
        if statement.strip().upper() != "BEGIN":
            times.append((time.perf_counter() - begun) * 1000)

    import httpx

    rng = random.Random(1)
    figures: dict[str, list] = {"sql": [], "rest": [], "search": [], "results": []}
    for n in range(queries + 5):  # the first 5 warm the caches
        params = dict(httpx.URL(search_path(rng)).params)
        query = SearchQuery(text=params.pop("q", ""), sort=params.pop("sort"), page=int(params.pop("page")), **params)
        times.clear()
        start = time.perf_counter()
        result = zoo.search(query)
        whole = (time.perf_counter() - start) * 1000
        found = [result.total, [(v.name, v.version) for v in result.items], result.facets]
        figures["results"].append(hashlib.sha256(json.dumps(found, sort_keys=True).encode()).hexdigest()[:16])
        if n >= 5:
            figures["sql"].append(sum(times))
            figures["rest"].append(whole - sum(times))
            figures["search"].append(whole)
    zoo.close()
    return figures


def _child(args: argparse.Namespace) -> None:
    root, url = Path(args.root), args.url or None
    if args.fill:
        sys.path.insert(0, str(HERE))
        from zoo_load import fill

        print(json.dumps({"fill_s": fill(root, url, args.entries)}))
    else:
        print(json.dumps(measure(root, url, args.entries, args.queries)))


def _run(src: Path, *extra: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run([sys.executable, __file__, "--child", *extra], env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def _summary(figures: list[dict[str, list[float]]]) -> str:
    cells = []
    for part in ("sql", "rest", "search"):
        medians = [statistics.median(f[part]) for f in figures]
        p95 = [statistics.quantiles(f[part], n=20)[18] for f in figures]
        cells.append(f"{statistics.median(medians):.2f} / {statistics.median(p95):.2f}")
    return " | ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="both", help="sqlite, postgresql (a throw-away cluster) or both")
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--old-src", type=Path, help="a checkout's src/ to measure against this one, A B A B")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--fill", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    sys.path.insert(0, str(HERE.parent / "tests"))
    from _postgres import new_database, postgres_server

    codes = {"old": args.old_src, "new": SRC} if args.old_src else {"new": SRC}
    print(f"in-process search, {args.entries} entries, {args.queries} queries, {time.strftime('%Y-%m-%d %H:%M')}, "
          f"load {os.getloadavg()[0]:.2f}")  # fmt: skip
    print("\n| database | code | SQL ms (median / p95) | the rest | whole search |")
    print("|---|---|---|---|---|")
    for db in ("sqlite", "postgresql") if args.db == "both" else (args.db,):
        with postgres_server() if db == "postgresql" else _nothing() as admin:
            roots = {code: Path(tempfile.mkdtemp(prefix=f"zoo-sql-{code}-")) for code in codes}
            urls = {code: new_database(admin) if admin else "" for code in codes}
            try:
                for code, src in codes.items():
                    _run(src, "--fill", "--root", str(roots[code]), "--url", urls[code],
                         "--entries", str(args.entries))  # fmt: skip
                figures: dict[str, list] = {code: [] for code in codes}
                for _ in range(args.rounds):
                    for code, src in codes.items():  # A B A B
                        where = ["--root", str(roots[code]), "--url", urls[code], "--entries", str(args.entries)]
                        figures[code].append(_run(src, *where, "--queries", str(args.queries)))
                for code in codes:
                    print(f"| {db} | {code} | {_summary(figures[code])} |")
                same = len({json.dumps(f["results"]) for code in codes for f in figures[code]}) == 1
                print(
                    f"|  | results (total, page, facets of every query) {'the same' if same else 'DIFFER'} "
                    f"in every run{' of both codes' if len(codes) > 1 else ''} | | | |"
                )
            finally:
                for root in roots.values():
                    shutil.rmtree(root, ignore_errors=True)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


if __name__ == "__main__":
    main()
