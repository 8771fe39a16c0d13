"""The zoo under load: search and model pages at 64 concurrent clients, a publish killed mid-way,
and a schemathesis run against the OpenAPI document.

    python benchmarks/zoo_load.py                       # SQLite, then PostgreSQL (a throw-away cluster)
    python benchmarks/zoo_load.py --db sqlite --entries 10000 --clients 64
    python benchmarks/zoo_load.py --db postgresql+psycopg://user@host/zoo   # a server of yours (emptied? no: a new DB)

Filling: 10,000 published versions are written through the service's own tables and index code:
``zoo.db`` rows (``Model``, ``Version`` published and latest, with a generated
:class:`~microzoo.zoo.summary.PackageSummary` and ``zoo.compat.compat_matrix``) and
``zoo.search.index_version`` (the search entry, with its FTS5 row or its tsvector) in one
transaction per 500 entries, so search reads exactly what an upload and a review leave. Each entry
has its files (``rdf.yaml`` and the zip, written by ``zoo.storage.write_zip``) so model pages and
``Zoo.check_consistency`` see a complete zoo. Summaries vary: titles and descriptions drawn from
a vocabulary of structures, tasks, modalities and architectures; tags, authors, licences, weight
formats, 2-D/3-D.

Load: ``microzoo serve`` (uvicorn, no worker) on loopback; 64 clients (httpx async, one
connection each) send requests back to back (no think time: the figures are at saturation). The
kinds are the search API (1-2 words, a filter in half of them, pages 1-3, three sorts), the search
page (HTML), the model page (HTML) and, as the reference, the server's static stylesheet
(``/static/zoo.css``, the same server and stack without the database), measured A B A B: rounds of
reference, search, reference, search page, reference, model page; each kind's figure is the median
over rounds, and its ratio to the reference is the median of the per-round ratios.

Kill: while 16 clients search, uploads of the example package run and the server is SIGKILLed at
a random moment; the folder and index are then checked (``storage.check_consistency`` before the
restart, to see what the kill left; ``Zoo(...)`` clears leftovers at start, then
``Zoo.check_consistency()`` must be []), and every upload the server had answered 201 must be
there with a zip of the sha256 it recorded.

Schemathesis: ``schemathesis run URL/openapi.json --checks not_a_server_error`` with an admin
token, a bounded number of examples per operation; any 5xx is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import io
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # tests/_postgres.py: the throw-away cluster
EXAMPLE = Path(os.environ.get("MICROZOO_DATA", HERE.parent.parent / "shared" / "data")) / "bmz" / "unet2d_nuclei_broad"

STRUCTURES = ["nuclei", "membranes", "mitochondria", "cells", "organoids", "synapses", "axons", "vesicles",
              "chromatin", "actin filaments", "microtubules", "glomeruli", "tumour cells", "bacteria", "yeast",
              "neurons", "platelets", "stomata", "zebrafish embryos", "plant roots"]  # fmt: skip
TASKS = {"segmentation": "segments", "instance-segmentation": "separates each of the", "denoising": "denoises",
         "restoration": "restores", "classification": "classifies"}  # fmt: skip
MODALITIES = {"fluorescence": "confocal fluorescence", "brightfield": "brightfield", "histology": "H&E histology",
              "electron-microscopy": "serial-section electron microscopy", "other": "light-sheet"}  # fmt: skip
ARCHS = ["U-Net", "StarDist", "Cellpose-style", "Noise2Void", "CARE", "ResNet", "HRNet", "EfficientNet"]
NAMES = ["Pape", "Beuttenmueller", "Weigert", "Schmidt", "Ouyang", "Krull", "Jug", "Hirsch", "Meijering",
         "Carpenter", "Cimini", "Stringer", "Pachitariu", "Kreshuk", "Wolny", "Gomez-de-Mariscal"]  # fmt: skip
LICENSES = ["MIT", "CC-BY-4.0", "Apache-2.0", "BSD-3-Clause", "GPL-3.0-only"]
FORMAT_SETS = [["torchscript"], ["onnx"], ["pytorch_state_dict"], ["torchscript", "onnx"], ["keras_hdf5"],
               ["pytorch_state_dict", "torchscript", "onnx"], ["tensorflow_saved_model_bundle"]]  # fmt: skip
WORDS = ["nuclei", "membrane", "mito", "cells", "organoid", "synapse", "denois", "restor", "stardist", "u-net",
         "zebrafish", "electron", "histology", "confocal", "3d", "yeast", "neurons", "axon", "plant", "tumour",
         "pape", "weigert", "care", "fluorescence", "bacteria"]  # fmt: skip
FILTERS = [("task", list(TASKS)), ("modality", list(MODALITIES)), ("dims", ["2d", "3d"]),
           ("weight_format", ["torchscript", "onnx", "pytorch_state_dict"]), ("license", LICENSES),
           ("consumer", ["deepImageJ", "ilastik", "bioimageio.core", "microzoo"])]  # fmt: skip


# ------------------------------------------------------------------------------------------ fill
def generated_summary(rng: random.Random, i: int) -> dict:
    structure, task, modality = rng.choice(STRUCTURES), rng.choice(list(TASKS)), rng.choice(list(MODALITIES))
    arch, dims = rng.choice(ARCHS), rng.choice(["2d", "2d", "3d"])
    axes = "bczyx" if dims == "3d" else "bcyx"
    tensor = {"id": "raw", "axes": axes, "sizes": "batch: 1, channel: 1, y: 256, x: 256", "data_type": "float32",
              "processing": ["zero_mean_unit_variance over (x, y) per sample"], "description": ""}  # fmt: skip
    return {
        "name_in_package": None, "version_in_package": None,
        "title": f"{arch} {structure.title()} {task.replace('-', ' ')} #{i}",
        "description": f"A {dims.upper()} {arch} that {TASKS[task]} {structure} in {MODALITIES[modality]} images, "
                       f"trained on {rng.randint(20, 900)} annotated crops from {rng.choice(NAMES)}'s lab.",
        "tags": sorted({structure, task, modality, dims, arch.lower(), rng.choice(WORDS)}),
        "authors": rng.sample(NAMES, rng.randint(1, 3)), "license": rng.choice(LICENSES),
        "format_version": rng.choice(["0.5.4", "0.5.3", "0.4.10"]), "task": task, "modality": modality,
        "dims": dims, "weight_formats": rng.choice(FORMAT_SETS), "inputs": [tensor],
        "outputs": [{**tensor, "id": "prob", "processing": ["sigmoid"]}], "covers": [], "documentation": None,
        "cite": [{"text": f"{rng.choice(NAMES)} et al. {rng.randint(2015, 2026)}", "doi": None, "url": None}],
        "has_qc": False,
    }  # fmt: skip


def fill(root: Path, db_url: str | None, entries: int, *, seed: int = 0) -> float:
    """Write ``entries`` published versions (rows, index, files); return the seconds it took."""
    from sqlalchemy import text

    from microzoo.zoo import storage
    from microzoo.zoo.compat import compat_matrix
    from microzoo.zoo.db import Comment, Model, Version, session_scope, utcnow
    from microzoo.zoo.search import index_version
    from microzoo.zoo.service import Zoo
    from microzoo.zoo.summary import PackageSummary

    start = time.perf_counter()
    zoo = Zoo(root, db_url)
    rng = random.Random(seed)
    for first in range(0, entries, 500):
        with session_scope(zoo.engine, write=True) as session:
            for i in range(first, min(first + 500, entries)):
                name, summary = f"load-{i:05d}", generated_summary(rng, i)
                folder = storage.version_dir(root, name, "1")
                folder.mkdir(parents=True)
                (folder / "rdf.yaml").write_text(f"name: {summary['title']}\nid: {name}\nversion: '1'\n")
                storage.write_zip(folder, storage.zip_file(root, name, "1"))
                results = {fmt: rng.choice(["passed"] * 3 + ["failed"]) for fmt in summary["weight_formats"]}
                compat = compat_matrix(PackageSummary(**summary), results)
                when = utcnow()
                session.add(Model(name=name, created_at=when, created_by=None, downloads=rng.randint(0, 5000)))
                session.flush()
                rdf_sha256, _ = storage.sha256_and_size(folder / "rdf.yaml")
                zip_sha256, zip_size = storage.sha256_and_size(storage.zip_file(root, name, "1"))
                row = Version(
                    name=name, version="1", status="published", test_status="passed", created_at=when,
                    published_at=when, uploaded_by=None, rdf_sha256=rdf_sha256, zip_sha256=zip_sha256,
                    zip_size=zip_size,
                    summary=summary, compat=compat, test_report={"formats": {}, "log": ""}, is_latest=True,
                    downloads=0,
                )  # fmt: skip
                session.add(row)
                session.flush()
                index_version(session, row)
                session.add(Comment(version_id=row.id, author="load", role="reviewer", kind="status",
                                    text="published", created_at=when))  # fmt: skip
    # PostgreSQL: the planner's statistics, as after any bulk load (autovacuum would gather them a while
    # later); without them it planned the searches for a tenth of the facet rows (search p95 700 -> 293 ms).
    # Not on SQLite: a zoo there has no sqlite_stat1 unless someone runs ANALYZE, and with it the
    # searches were no faster (RESULTS.md runs 5-7: p95 56.9 ms with it, 49.9 and 58.4 without)
    if zoo.engine.dialect.name == "postgresql":
        with zoo.engine.connect() as connection:
            connection.execute(text("ANALYZE"))
            connection.commit()
    problems = zoo.check_consistency()
    zoo.close()
    assert not problems, problems[:5]
    return time.perf_counter() - start


# ---------------------------------------------------------------------------------------- server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "microzoo.cli", *args], capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def served(root: Path, db_url: str | None, *extra: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    command = [sys.executable, "-m", "microzoo.cli", "serve", "--root", str(root), "--port", str(port),
               "--workers", "0", *(["--db", db_url] if db_url else []), *extra]  # fmt: skip
    log = open(root / f"serve-{port}.log", "wb")  # noqa: SIM115  (closed below)
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/static/zoo.css", timeout=2).status_code == 200:
                    break
            if process.poll() is not None:
                raise RuntimeError((root / f"serve-{port}.log").read_text()[-3000:])
            time.sleep(0.2)
        yield url, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        log.close()


# ------------------------------------------------------------------------------------------ load
def search_path(rng: random.Random, html: bool = False) -> str:
    params = {"q": " ".join(rng.sample(WORDS, rng.choice([1, 1, 2]))), "page": rng.choice([1, 1, 1, 2, 3]),
              "sort": rng.choice(["relevance", "relevance", "downloads", "date"])}  # fmt: skip
    if rng.random() < 0.5:
        field, values = rng.choice(FILTERS)
        params[field] = rng.choice(values)
    return ("/search?" if html else "/api/models?") + str(httpx.QueryParams(params))


KINDS: dict[str, Callable[[random.Random, int], str]] = {
    "reference: static file": lambda rng, n: "/static/zoo.css",
    "search API": lambda rng, n: search_path(rng),
    "search page": lambda rng, n: search_path(rng, html=True),
    "model page": lambda rng, n: f"/models/load-{rng.randrange(n):05d}/1",
}


async def drive(
    url: str, path: Callable[[], str], *, clients: int, requests: int, think: float = 0.0, until_down: bool = False
) -> dict:
    """``requests`` GETs by ``clients`` concurrent clients; latencies (ms), errors, requests per second.

    ``think``: the mean of the exponential pause (s) each client makes between its requests (0: none).
    ``until_down``: a client stops at its first connection error (the server was killed).
    """
    pauses = random.Random(3)
    latencies: list[float] = []
    errors: list[str] = []
    left = iter(range(requests))

    async def client(http: httpx.AsyncClient) -> None:
        if think:  # paced clients start spread out, as users do
            await asyncio.sleep(pauses.uniform(0, think))
        for _ in left:
            target = path()
            start = time.perf_counter()
            try:
                response = await http.get(target)
                if response.status_code != 200:
                    errors.append(f"{response.status_code} {target}")
            except httpx.HTTPError as error:
                if until_down:
                    return
                errors.append(f"{type(error).__name__} {target}")
            latencies.append((time.perf_counter() - start) * 1000)
            if think:
                await asyncio.sleep(pauses.expovariate(1 / think))

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:  # one pool: a connection each
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.perf_counter() - start
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [float("nan")] * 99
    return {"p50": quantiles[49], "p95": quantiles[94], "rps": len(latencies) / wall, "errors": errors}


def load_figures(
    url: str, entries: int, *, clients: int, requests: int, rounds: int, think: float = 0.0, seed: int = 1
) -> dict:
    rng = random.Random(seed)
    rows: dict[str, list[dict]] = {kind: [] for kind in KINDS}
    reference = "reference: static file"
    asyncio.run(drive(url, lambda: KINDS["search API"](rng, entries), clients=clients, requests=clients * 4))  # warm
    for _ in range(rounds):
        for kind in [k for k in KINDS if k != reference]:  # A B A B: the reference before each kind
            for measured in (reference, kind):
                figure = asyncio.run(drive(url, lambda m=measured: KINDS[m](rng, entries), clients=clients,
                                           requests=requests, think=think))  # fmt: skip
                rows[measured].append(figure)
            rows[kind][-1]["ratio"] = rows[kind][-1]["p95"] / rows[reference][-1]["p95"]
    summary = {}
    for kind, figures in rows.items():
        summary[kind] = {
            "p50": statistics.median(f["p50"] for f in figures),
            "p95": statistics.median(f["p95"] for f in figures),
            "rps": statistics.median(f["rps"] for f in figures),
            "errors": sum(len(f["errors"]) for f in figures),
            "requests": len(figures) * requests,
            "ratio": statistics.median(f["ratio"] for f in figures) if kind != reference else 1.0,
            "error_examples": [e for f in figures for e in f["errors"]][:3],
            "p95_rounds": [f["p95"] for f in figures],
        }
    return summary


def print_load(label: str, summary: dict, clients: int, think: float) -> None:
    how = f"each pausing {think:g} s on average between requests" if think else "back to back (saturation)"
    print(f"\n### {label}: {clients} concurrent clients, {how}; medians over rounds "
          f"(os load now {os.getloadavg()[0]:.1f})\n")  # fmt: skip
    print("| requests | p50 ms | p95 ms | p95 / reference p95 | requests/s | errors | p95 of each round |")
    print("|---|---|---|---|---|---|---|")
    for kind, s in summary.items():
        rounds = ", ".join(f"{p95:.0f}" for p95 in s["p95_rounds"])
        print(f"| {kind} | {s['p50']:.1f} | {s['p95']:.1f} | {s['ratio']:.2f} | {s['rps']:.0f} | "
              f"{s['errors']} of {s['requests']} | {rounds} |")  # fmt: skip
        for example in s["error_examples"]:
            print(f"  error: {example}")


# ------------------------------------------------------------------------------------------ kill
def kill_trials(root: Path, db_url: str | None, trials: int, *, seed: int = 2) -> list[str]:
    """Kill the server (SIGKILL) while it takes uploads under search load; check the zoo each time."""
    from sqlalchemy import select

    from microzoo.zoo import storage
    from microzoo.zoo.db import Version, default_url, engine_for, session_scope
    from microzoo.zoo.service import Zoo

    rng = random.Random(seed)
    token = cli("zoo", "token", "create", "--root", str(root), "--role", "uploader", "--label", "kill",
                *(["--db", db_url] if db_url else []))  # fmt: skip
    package = _zip(EXAMPLE)
    lines = []
    for trial in range(trials):
        delay = rng.uniform(2.0, 25.0)
        with served(root, db_url, "--write-rate", "1000") as (url, process):
            refused: list[str] = []
            accepted = asyncio.run(upload_and_kill(url, process, token, package, delay, rng, refused))
            process.wait()
        engine = engine_for(db_url or default_url(root))
        with session_scope(engine) as session:
            indexed = {(n, v) for n, v in session.execute(select(Version.name, Version.version))}
        engine.dispose()
        left = storage.check_consistency(root, indexed)
        staging = list((root / "staging").glob("*")) if (root / "staging").is_dir() else []
        zoo = Zoo(root, db_url)  # clears what the kill left
        after = zoo.check_consistency()
        missing = [f"{n}/{v}" for n, v in accepted.items() if _zip_sha(zoo, n, v) is None]
        zoo.close()
        lines.append(f"trial {trial + 1}: killed after {delay:.2f} s, {len(accepted)} upload(s) answered 201; "
                     f"left by the kill: {len(left)} problem(s), {len(staging)} staging folder(s); "
                     f"after restart: {after or 'consistent'}; answered but missing: {missing or 'none'}"
                     + (f"; refused: {refused}" if refused else ""))  # fmt: skip
        assert not after and not missing, lines[-1]
    return lines


async def upload_and_kill(
    url: str,
    process: subprocess.Popen[bytes],
    token: str,
    package: bytes,
    delay: float,
    rng: random.Random,
    refused: list[str],
) -> dict[str, str]:
    """Search with 16 clients, start 8 uploads 1.5 s apart, SIGKILL the server after ``delay`` s.

    Returns the uploads answered 201 (name -> version); other answers are added to ``refused``."""
    accepted: dict[str, str] = {}

    async def upload(http: httpx.AsyncClient, i: int) -> None:
        await asyncio.sleep(i * 1.5)  # staggered: the kill finds them at different steps
        with contextlib.suppress(httpx.HTTPError):
            response = await http.post("/api/models", files={"package": ("p.zip", package)})
            if response.status_code == 201:
                accepted[response.json()["name"]] = response.json()["version"]
            else:
                refused.append(f"{response.status_code} {response.text[:120]}")

    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, timeout=120, headers=headers) as http:
        searching = asyncio.create_task(
            drive(url, lambda: search_path(rng), clients=16, requests=10**6, until_down=True)
        )
        uploading = asyncio.gather(*(upload(http, i) for i in range(8)))
        await asyncio.sleep(delay)
        process.send_signal(signal.SIGKILL)
        await asyncio.gather(searching, uploading, return_exceptions=True)
    return accepted


def _zip(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.iterdir()):
            archive.writestr(path.name, path.read_bytes())
    return buffer.getvalue()


def _zip_sha(zoo, name: str, version: str) -> str | None:
    """The sha256 of the stored zip where it matches the version's row, else None."""
    try:
        info = zoo.version(name, version, published_only=False)
        digest = hashlib.sha256(zoo.zip_path(name, version).read_bytes()).hexdigest()
    except Exception:  # noqa: BLE001  (not there, in any way, is what is counted)
        return None
    return digest if digest == info.zip_sha256 else None


# ---------------------------------------------------------------------------------- schemathesis
def schemathesis_run(root: Path, db_url: str | None, examples: int) -> tuple[int, str]:
    token = cli("zoo", "token", "create", "--root", str(root), "--role", "admin", "--label", "schemathesis",
                *(["--db", db_url] if db_url else []))  # fmt: skip
    with served(root, db_url, "--write-rate", "100000") as (url, _):
        command = [str(Path(sys.executable).parent / "schemathesis"), "run", f"{url}/openapi.json",
                   "--checks", "not_a_server_error", "--max-examples", str(examples), "--seed", "1",
                   "-H", f"Authorization: Bearer {token}", "--generation-database", "none",
                   "--request-timeout", "60", "--workers", "1"]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, cwd=root)  # its cache stays in root
    return done.returncode, done.stdout + done.stderr


# ------------------------------------------------------------------------------------------ main
def database_urls(choice: str) -> Iterator[tuple[str, str | None]]:
    if choice in ("sqlite", "both"):
        yield "SQLite", None
    if choice in ("postgresql", "both"):
        from _postgres import new_database, postgres_server, why_no_postgres

        reason = why_no_postgres()
        if reason:
            print(f"\nPostgreSQL skipped: {reason}")
            return
        with postgres_server() as admin:
            yield "PostgreSQL", new_database(admin)
    elif choice not in ("sqlite", "both"):
        yield choice.split("@")[-1], choice


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="both", help="sqlite, postgresql (a throw-away cluster), both, or a URL")
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--requests", type=int, default=1000, help="requests per kind and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--think", type=float, default=1.0, help="mean pause (s) of a paced client between requests")
    parser.add_argument("--kills", type=int, default=4, help="publish-kill trials (0: none)")
    parser.add_argument("--examples", type=int, default=20, help="schemathesis examples per operation (0: none)")
    parser.add_argument("--processes", type=int, default=1, help="server processes (microzoo serve --processes)")
    args = parser.parse_args()
    print(f"microzoo zoo load benchmark, {time.strftime('%Y-%m-%d %H:%M %Z')}, {os.cpu_count()} CPU(s), "
          f"python {sys.version.split()[0]}, os load {os.getloadavg()[0]:.2f}")  # fmt: skip
    for label, db_url in database_urls(args.db):
        root = Path(tempfile.mkdtemp(prefix="zoo-load-"))
        try:
            seconds = fill(root, db_url, args.entries)
            print(f"\n## {label}: {args.entries} entries filled in {seconds:.1f} s")
            with served(root, db_url, "--processes", str(args.processes)) as (url, _):
                for think in (args.think, 0.0):
                    figures = load_figures(url, args.entries, clients=args.clients, requests=args.requests,
                                           rounds=args.rounds, think=think)  # fmt: skip
                    print_load(label, figures, args.clients, think)
            if args.kills:
                print(f"\n### {label}: the server SIGKILLed during uploads, {args.kills} trials\n")
                for line in kill_trials(root, db_url, args.kills):
                    print(f"- {line}")
            if args.examples:
                code, output = schemathesis_run(root, db_url, args.examples)
                print(f"\n### {label}: schemathesis, {args.examples} examples per operation: exit {code}\n")
                print("\n".join(output.strip().splitlines()[-25:]))
        finally:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
