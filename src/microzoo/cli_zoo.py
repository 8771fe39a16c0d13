"""The zoo's commands: `microzoo serve`, `push`, `pull`, `search` and `microzoo zoo ...` (tokens,
workers, re-tests, imports). The work is in :mod:`microzoo.zoo`; this module parses and prints."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

zoo_app = typer.Typer(help="Run a zoo: tokens, workers, re-tests, imports.", no_args_is_help=True)
token_app = typer.Typer(help="Create and revoke the zoo's tokens.", no_args_is_help=True)
zoo_app.add_typer(token_app, name="token")

ROOT = typer.Option(..., "--root", help="The zoo's folder (files, and the SQLite index by default).")
DB = typer.Option(None, "--db", help="Index database URL, e.g. postgresql://user@host/zoo. Default: ROOT/zoo.sqlite.")
ZOO_URL = typer.Option(None, "--zoo", envvar="MICROZOO_ZOO", help="The zoo's address, e.g. http://127.0.0.1:8000.")


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _open_zoo(root: Path, db: str | None, *, publish_on_pass: bool = False) -> Any:
    from microzoo.zoo.service import Zoo

    return Zoo(root, db, publish_on_pass=publish_on_pass)


def serve(
    root: Path = ROOT,
    db: str | None = DB,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, "--port", help="Port to listen on."),
    publish_on_pass: bool = typer.Option(False, "--publish-on-pass", help="Publish a version once its tests pass."),
    workers: int = typer.Option(1, "--workers", min=0, help="Test workers to start beside the server (0: none)."),
    public_url: str | None = typer.Option(None, "--public-url", help="The address users reach the zoo at."),
    read_token: bool = typer.Option(False, "--read-token-required", help="Require a token to read, too."),
    write_rate: int = typer.Option(30, "--write-rate", min=1, help="Writes a token may make a minute."),
    processes: int = typer.Option(
        1,
        "--processes",
        min=1,
        help="Server processes (one per core serves most; each keeps its own rate limits).",
    ),
) -> None:
    """Serve a model zoo: the web pages, the JSON API and the routes bioimageio tools use."""
    import uvicorn

    from microzoo.zoo.server import app as server

    zoo = _open_zoo(root, db, publish_on_pass=publish_on_pass)  # migrates and clears leftovers once, here
    settings: dict[str, Any] = {
        "public_url": public_url,
        "read_token_required": read_token,
        "write_rate_per_minute": write_rate,
    }
    if processes == 1:
        target: Any = server.create_app(zoo, **settings)
    else:
        zoo.close()
        os.environ[server.SERVE_SETTINGS_ENV] = json.dumps(
            {"root": str(root), "db": db, "publish_on_pass": publish_on_pass, **settings}
        )
        target = "microzoo.zoo.server.app:app_from_environment"
    command = [sys.executable, "-m", "microzoo.cli", "zoo", "worker", "--root", str(root), "--stop-with-parent"]
    command += (["--db", db] if db else []) + (["--publish-on-pass"] if publish_on_pass else [])
    children = [subprocess.Popen(command) for _ in range(workers)]
    _console(stderr=True).print(
        escape(
            f"zoo at http://{host}:{port} (root {root}, {processes} server process(es), "
            f"{workers} worker(s)); Ctrl+C stops it"
        ),
        highlight=False,
    )
    # uvicorn re-raises the SIGTERM it stopped on; ending by SystemExit lets the workers be stopped first
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        if processes == 1:
            uvicorn.run(target, host=host, port=port, log_level="warning")
        else:
            _run_processes(target, host=host, port=port, processes=processes)
    finally:
        _stop(children)
        zoo.close()


def _run_processes(target: str, *, host: str, port: int, processes: int) -> None:
    """uvicorn's several-process server, its listening socket with TCP_NODELAY.

    uvicorn binds that socket without naming TCP as its protocol, so asyncio does not switch
    Nagle's algorithm off on the connections (it does for the one-process server): each answer on
    a kept-alive connection then waited for the client's delayed ACK, 44 ms instead of 0.9 ms for
    a static file (measured). Accepted sockets inherit the option on Linux.
    """
    import socket

    import uvicorn
    from uvicorn.supervisors import Multiprocess

    config = uvicorn.Config(target, host=host, port=port, log_level="warning", workers=processes, factory=True)
    sock = config.bind_socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    Multiprocess(config, sockets=[sock]).run()


def _stop(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            child.terminate()
    for child in children:
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def push(
    package: Path = typer.Argument(..., help="Package folder or .zip."),
    zoo: str | None = ZOO_URL,
    token: str = typer.Option(..., "--token", envvar="MICROZOO_TOKEN", help="An uploader's token."),
    name: str | None = typer.Option(None, "--name", help="The model's name (a new version of it, if it exists)."),
) -> None:
    """Upload a package to a zoo; prints NAME/VERSION (its test run is queued)."""
    from microzoo.zoo.client import ZooClient

    with ZooClient(zoo, token=token) as client:
        answer = client.push(package, name=name)
    typer.echo(f"{answer['name']}/{answer['version']}")
    _console(stderr=True).print(escape(f"{answer['status']}; test run queued: {answer.get('url', '')}"))


def pull(
    ref: str = typer.Argument(..., help="NAME or NAME/VERSION (the latest published version for NAME)."),
    zoo: str | None = ZOO_URL,
    out: Path = typer.Option(..., "-o", "--out", help="A new folder for the package's files."),
) -> None:
    """Download a model package from a zoo into a folder."""
    from microzoo.zoo.client import ZooClient

    with ZooClient(zoo) as client:
        which, folder = client.pull(ref, out)
    typer.echo(f"{which} -> {folder}")


def search(
    text: str = typer.Argument("", help="Words to find in names, descriptions, tags and authors."),
    zoo: str | None = ZOO_URL,
    task: str | None = typer.Option(None, "--task", help="segmentation, instance-segmentation, denoising, ..."),
    modality: str | None = typer.Option(None, "--modality", help="fluorescence, brightfield, ..."),
    dims: str | None = typer.Option(None, "--dims", help="2d or 3d."),
    weight_format: str | None = typer.Option(None, "--weight-format", help="torchscript, onnx, ..."),
    consumer: str | None = typer.Option(None, "--consumer", help="A tool that must run it: deepImageJ, ilastik, ..."),
    sort: str = typer.Option("relevance", "--sort", help="relevance, downloads or date."),
    limit: int = typer.Option(20, "--limit", min=1, max=100, help="How many to show."),
) -> None:
    """Search a zoo's published models."""
    from rich.table import Table

    from microzoo.zoo.client import ZooClient

    filters = {"task": task, "modality": modality, "dims": dims, "weight_format": weight_format, "consumer": consumer}
    with ZooClient(zoo) as client:
        found = client.search(text, sort=sort, per_page=limit, **filters)
    table = Table(box=None)
    table.add_column("model", no_wrap=True)  # an id to copy: never cut
    for column in ("title", "task", "weights", "downloads"):
        table.add_column(column)
    for item in found["items"]:
        summary = item.get("summary") or {}
        table.add_row(
            escape(f"{item['name']}/{item['version']}"), escape(str(summary.get("title", ""))),
            escape(str(summary.get("task", ""))), escape(", ".join(summary.get("weight_formats", []))),
            str(item.get("downloads", 0)),
        )  # fmt: skip
    console = _console()
    console.print(table)
    console.print(f"{found['total']} model(s)")


@token_app.command("create")
def token_create(
    root: Path = ROOT,
    db: str | None = DB,
    role: str = typer.Option(..., "--role", help="uploader, reviewer or admin."),
    label: str = typer.Option("", "--label", help="Whose token it is (shown on comments)."),
) -> None:
    """Create a token and print it (only its hash is stored: keep it now)."""
    zoo = _open_zoo(root, db)
    typer.echo(zoo.create_token(role, label))


@token_app.command("revoke")
def token_revoke(
    token: str = typer.Argument(..., help="The token, or its label (revokes every token with that label)."),
    root: Path = ROOT,
    db: str | None = DB,
) -> None:
    """Revoke a token."""
    _open_zoo(root, db).revoke_token(token)
    typer.echo("revoked")


@token_app.command("list")
def token_list(root: Path = ROOT, db: str | None = DB) -> None:
    """List the tokens: label, role, dates (never the tokens themselves: only their hashes are kept)."""
    from rich.table import Table

    table = Table("label", "role", "created", "revoked", box=None)
    for token in _open_zoo(root, db).tokens():
        revoked = f"{token.revoked_at:%Y-%m-%d %H:%M}" if token.revoked_at else ""
        table.add_row(escape(token.label or "(no label)"), token.role, f"{token.created_at:%Y-%m-%d %H:%M}", revoked)
    _console().print(table)


@zoo_app.command("worker")
def worker(
    root: Path = ROOT,
    db: str | None = DB,
    publish_on_pass: bool = typer.Option(False, "--publish-on-pass", help="Publish a version once its tests pass."),
    once: bool = typer.Option(False, "--once", help="Run the jobs waiting now, then stop."),
    stop_with_parent: bool = typer.Option(False, "--stop-with-parent", hidden=True),
) -> None:
    """Run test, re-test and try-it jobs (add workers on other machines with --db)."""
    import socket

    from microzoo.zoo.worker import run_worker

    zoo = _open_zoo(root, db, publish_on_pass=publish_on_pass)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if stop_with_parent:
        parent = os.getppid()

        def watch() -> None:
            while not stop.wait(1.0):
                if os.getppid() != parent:
                    stop.set()

        threading.Thread(target=watch, daemon=True).start()
    run_worker(zoo, worker_id=f"{socket.gethostname()}-{os.getpid()}", once=once, stop=stop)


@zoo_app.command("retest")
def retest(root: Path = ROOT, db: str | None = DB) -> None:
    """Queue a re-test of every published version (for a cron job; a worker runs them)."""
    jobs = _open_zoo(root, db).retest_all()
    typer.echo(f"{len(jobs)} re-test(s) queued")


@zoo_app.command("import")
def import_packages(
    folder: Path = typer.Argument(..., help="A folder of package zips."),
    root: Path = ROOT,
    db: str | None = DB,
) -> None:
    """Import a folder of package zips: each validated, stored as a draft and queued for its test."""
    from microzoo.errors import MicrozooError
    from microzoo.zoo.ingest import ingest_upload

    zoo = _open_zoo(root, db)
    zips = sorted(folder.glob("*.zip"))
    if not zips:
        raise typer.BadParameter(f"no .zip in {folder}")
    token = zoo.create_token("admin", label="import")
    who = zoo.authorise(token, "admin")
    console, failed = _console(), 0
    try:
        for path in zips:
            staging = zoo.new_staging_dir()
            try:
                info = zoo.publish_upload(ingest_upload(path, staging=staging), token=who)
            except MicrozooError as error:
                failed += 1
                console.print(f"[red]refused[/] {escape(path.name)}: {escape(str(error))}")
            else:
                console.print(escape(f"{path.name} -> {info.name}/{info.version} (test queued)"))
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    finally:
        zoo.revoke_token(token)
    console.print(f"{len(zips) - failed} imported, {failed} refused")
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the zoo's commands to the `microzoo` command line."""
    app.command("serve")(serve)
    app.command("push")(push)
    app.command("pull")(pull)
    app.command("search")(search)
    app.add_typer(zoo_app, name="zoo")
