"""The documentation convention's harness: every ``bash`` and ``python`` block of the pages runs.

Run one page (its case is named by its path)::

    PYTHONPATH=$PWD/src .venv/bin/python -m pytest -q -p no:cacheprovider tests/test_docs_commands.py -k runner.md
    ... tests/test_docs_commands.py -k "README"          # README.md
    ... tests/test_docs_commands.py -k not_run -rA      # which blocks are not run, and why

The convention (docs/internals.md, "Documentation"): README.md and docs/**/*.md; each fenced block
has a language. ``bash`` and ``python`` blocks run, in page order, each page in a fresh temporary
folder holding ``data/`` (slices of the shared data, same layout: see :func:`make_data`); ``text``,
``yaml``, ``console`` (and the other names of ``NOT_RUN``) never run. A ``bash`` or ``python`` block
preceded by ``<!-- not run: REASON -->`` is not run, and the reason is required.

How a bash block runs: its commands (a line, with ``\\`` continuations and heredocs) are taken in
order. A plain ``microzoo ...`` call (no pipe, redirection, variable, glob or ``;``) runs in this
process through typer's CliRunner, as the command line would, to save the 2-4 s a subprocess takes
to start; other commands run with ``bash -e`` (consecutive ones in one script), the venv's ``bin``
first on PATH. A block that keeps shell state (``cd``, ``export``, ``VAR=``, ``source``, functions)
runs wholly through bash. A command ending in `` &`` starts in the background: the harness waits
until the ``--port`` it names answers, and stops it when the page ends. Every command sees
``MICROZOO_CACHE`` in the page's folder and a proxy that refuses every connection outside loopback.
Python blocks of a page run in one namespace, in the page's folder.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MICROZOO_SHARED_DATA", ROOT.parent / "shared" / "data"))

#: languages whose blocks run
RUN = {"bash", "python"}
#: languages whose blocks never run: outputs, synopses with placeholders, files shown
NOT_RUN = {"text", "yaml", "console", "json", "toml", "ini", "html", "csv", "sql", "dockerfile"}

#: files kept of each image folder in a page's data/ (partner folders keep the same stems)
FILES_PER_FOLDER = 3
#: a background command must answer on its port within this many seconds
PORT_TIMEOUT_S = 90.0

_MARKER = re.compile(r"^<!--\s*not run\b(?P<rest>.*?)-->\s*$", re.DOTALL)
_REASON = re.compile(r"^\s*:\s*(?P<reason>\S.*?)\s*$", re.DOTALL)
# shell syntax that CliRunner cannot stand for: pipes, redirections, lists, variables, globs, quoting tricks
_SHELL_SYNTAX = re.compile(r"[|&;<>$`*?\[\]{}~()]")
_STATEFUL = re.compile(
    r"^\s*(cd|pushd|popd|export|source|\.|set|alias|unset|[A-Za-z_][A-Za-z0-9_]*=|\w+\s*\(\)|function)\b"
)
_HEREDOC = re.compile(r"<<-?\s*(['\"]?)(?P<word>[A-Za-z_][A-Za-z0-9_]*)\1")
_PORT = re.compile(r"--port[ =](\d+)")


@dataclass(frozen=True)
class Block:
    """One fenced block of a page."""

    page: str  # path relative to the repository, e.g. docs/runner.md
    line: int  # 1-based line of the opening fence
    lang: str  # the fence's first word ("" when it has none)
    code: str
    marker: str | None = None  # the text after "not run" of a marker right before the block, if any

    @property
    def runs(self) -> bool:
        return self.lang in RUN and self.marker is None

    @property
    def reason(self) -> str | None:
        """The reason a not-run marker gives, or None when it gives none."""
        match = _REASON.match(self.marker or "")
        return match.group("reason") if match else None

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def pages() -> list[str]:
    """README.md and every page under docs/, as paths relative to the repository."""
    found = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return [path.relative_to(ROOT).as_posix() for path in found]


def blocks(page: str, text: str | None = None) -> list[Block]:
    """The fenced blocks of a page (or of ``text``, named ``page``), in order, each with the not-run
    marker right before it."""
    from markdown_it import MarkdownIt

    if text is None:
        text = (ROOT / page).read_text(encoding="utf-8")
    tokens = MarkdownIt("commonmark").parse(text)
    found: list[Block] = []
    for index, token in enumerate(tokens):
        if token.type not in ("fence", "code_block"):
            continue
        marker = None
        previous = tokens[index - 1] if index else None
        if previous is not None and previous.type == "html_block":
            match = _MARKER.match(previous.content.strip())
            if match:
                marker = match.group("rest")
        lang = token.info.split()[0] if token.type == "fence" and token.info.strip() else ""
        line = token.map[0] + 1 if token.map else 0
        found.append(Block(page, line, lang, token.content, marker))
    return found


def convention_problems(page: str, text: str | None = None) -> list[str]:
    """What breaks the convention on a page: a block without a known language, a marker without a reason,
    a marker on a block that would not run anyway."""
    problems = []
    for block in blocks(page, text):
        if block.lang not in RUN | NOT_RUN:
            what = "an indented code block" if not block.lang else f"a {block.lang!r} block"
            problems.append(
                f"{block.where}: {what}: fence it with a language, bash or python (run) or one of {sorted(NOT_RUN)}"
            )
        if block.marker is not None and block.reason is None:
            problems.append(f"{block.where}: a not-run marker without a reason: <!-- not run: REASON -->")
        if block.marker is not None and block.lang not in RUN:
            problems.append(f"{block.where}: a not-run marker on a {block.lang or 'plain'} block, which never runs")
    return problems


# ---------------------------------------------------------------------------------------------- data/


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif", ".ome.zarr"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem if path.is_file() else name


def _entries(folder: Path) -> list[Path]:
    """A folder's entries, sorted, without links to folders (a stray link to its own folder would loop)."""
    return [entry for entry in sorted(folder.iterdir()) if not (entry.is_symlink() and entry.is_dir())]


def _is_package(folder: Path) -> bool:
    return (folder / "bioimageio.yaml").exists() or (folder / "rdf.yaml").exists()


def _slice_folder(source: Path, target: Path, stems: set[str] | None) -> None:
    """Link the first files (or, with ``stems``, those stems) of ``source`` into ``target``; sub-folders
    named by a kept stem are sliced in turn."""
    target.mkdir(parents=True, exist_ok=True)
    entries = _entries(source)
    if stems is None:
        stems = {_stem(entry) for entry in entries[:FILES_PER_FOLDER]}
    for entry in entries:
        if _stem(entry) not in stems:
            continue
        if entry.is_dir():
            _slice_tree(entry, target / entry.name)
        else:
            (target / entry.name).symlink_to(entry)


def _slice_tree(source: Path, target: Path) -> None:
    import shutil

    if _is_package(source):  # a model package: copied whole, so a command that edits it edits a copy
        shutil.copytree(source, target, symlinks=False, ignore_dangling_symlinks=True)
        return
    children = _entries(source)
    folders = [child for child in children if child.is_dir()]
    target.mkdir(parents=True, exist_ok=True)
    for child in children:
        if child.is_file() and not folders:
            break
        if child.is_file():  # a README beside the folders
            (target / child.name).symlink_to(child)
    if not folders:
        _slice_folder(source, target, None)
        return
    first_stems = [{_stem(entry) for entry in _entries(folder)} for folder in folders]
    # partner folders (images/labels, noisy/clean, gt/raw): the first holds files whose stems the others share
    holds_files = any(entry.is_file() for entry in _entries(folders[0]))
    partners = len(folders) > 1 and holds_files and all(stems & first_stems[0] for stems in first_stems[1:])
    if partners and not all(_is_package(folder) for folder in folders):
        kept = {_stem(entry) for entry in _entries(folders[0])[:FILES_PER_FOLDER]}
        for folder in folders:
            _slice_folder(folder, target / folder.name, kept)
    else:
        for folder in folders:
            _slice_tree(folder, target / folder.name)


def make_data(target: Path, source: Path = SHARED_DATA) -> Path:
    """``target``: the shared data's layout with the first files of each image folder (symbolic links;
    partner folders such as ``images``/``labels`` or ``noisy``/``clean`` keep the same stems) and each
    model package copied whole."""
    if not source.is_dir():
        raise FileNotFoundError(f"the shared data is not at {source}: set MICROZOO_SHARED_DATA")
    _slice_tree(source, target)
    return target


# ------------------------------------------------------------------------------------------ running


def split_commands(code: str) -> list[str]:
    """A bash block's commands: lines joined over ``\\`` continuations, heredocs kept with their line,
    blank and comment-only lines dropped."""
    commands: list[str] = []
    lines = code.splitlines()
    index = 0
    while index < len(lines):
        command = lines[index]
        index += 1
        while command.endswith("\\") and index < len(lines):
            command = command + "\n" + lines[index]
            index += 1
        for heredoc in _HEREDOC.finditer(command):
            while index < len(lines):
                command += "\n" + lines[index]
                index += 1
                if lines[index - 1].strip() == heredoc.group("word"):
                    break
        if command.strip() and not command.strip().startswith("#"):
            commands.append(command)
    return commands


def _background(command: str) -> str | None:
    """The command without its trailing `` &`` (and comment), or None when it does not end with one."""
    try:
        words = shlex.split(command, comments=True)
    except ValueError:
        return None
    if words and words[-1] == "&":
        return command[: command.rindex("&")].rstrip()
    if words and words[-1].endswith("&") and not words[-1].endswith("&&"):
        return command[: command.rindex("&")].rstrip()
    return None


def cli_words(command: str) -> list[str] | None:
    """The arguments of a plain ``microzoo ...`` call that CliRunner can run, else None."""
    if "\n" in command.replace("\\\n", " "):
        return None
    try:
        words = shlex.split(command.replace("\\\n", " "), comments=True)
    except ValueError:
        return None
    if not words or words[0] != "microzoo":
        return None
    without_comment = command.split(" #")[0]
    if _SHELL_SYNTAX.search(without_comment):
        return None
    return words[1:]


@dataclass
class PageRun:
    """The state of one page's run: its folder, environment, python namespace, background processes."""

    page: str
    folder: Path
    env: dict[str, str]
    namespace: dict[str, Any] = field(default_factory=dict)
    background: list[tuple[str, subprocess.Popen[bytes], Path]] = field(default_factory=list)
    timings: list[tuple[str, float, str]] = field(default_factory=list)  # (command, seconds, how)

    # -- steps

    def run_block(self, block: Block) -> None:
        if block.lang == "python":
            self._python(block)
        else:
            self._bash_block(block)

    def _python(self, block: Block) -> None:
        started = time.perf_counter()
        with self._inside():
            try:
                exec(compile(block.code, f"{block.where} (python block)", "exec"), self.namespace)
            except Exception as error:
                raise AssertionError(f"{block.where}: the python block failed: {error!r}\n{block.code}") from error
        self.timings.append((block.code.strip().splitlines()[0], time.perf_counter() - started, "python"))

    def _bash_block(self, block: Block) -> None:
        commands = split_commands(block.code)
        stateful = any(_STATEFUL.match(command) for command in commands)
        pending: list[str] = []
        for command in commands:
            background = _background(command)
            words = None if stateful or background is not None else cli_words(command)
            if background is None and words is None:
                pending.append(command)
                continue
            self._bash(block, pending)
            pending = []
            if background is not None:
                self._start(block, background)
            elif words is not None:
                self._cli(block, command, words)
        self._bash(block, pending)

    def _bash(self, block: Block, commands: list[str]) -> None:
        if not commands:
            return
        script = "\n".join(commands) + "\n"
        started = time.perf_counter()
        result = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", script],
            cwd=self.folder,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=600,
        )
        self.timings.append((commands[0].splitlines()[0], time.perf_counter() - started, "bash"))
        if result.returncode != 0:
            output = (result.stdout + result.stderr)[-4000:]
            raise AssertionError(
                f"{block.where}: exit status {result.returncode} from\n{script}\n--- output ---\n{output}"
            )

    def _cli(self, block: Block, command: str, words: list[str]) -> None:
        from typer.testing import CliRunner

        from microzoo.cli import app

        started = time.perf_counter()
        with self._inside():
            result = CliRunner().invoke(app, words, env=self.env, catch_exceptions=True)
        self.timings.append((command.splitlines()[0], time.perf_counter() - started, "in-process"))
        if result.exit_code != 0:
            detail = result.output[-4000:]
            if result.exception is not None and not isinstance(result.exception, SystemExit):
                import traceback

                detail += "\n" + "".join(traceback.format_exception(result.exception))[-4000:]
            raise AssertionError(
                f"{block.where}: exit status {result.exit_code} from\n{command}\n--- output ---\n{detail}"
            )

    def _start(self, block: Block, command: str) -> None:
        port = _PORT.search(command)
        if port is None:
            raise AssertionError(f"{block.where}: a background command must name its --port: {command}")
        log = self.folder / f".background-{len(self.background)}.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                ["bash", "-c", f"exec {command}"],
                cwd=self.folder,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.background.append((command, process, log))
        started = time.perf_counter()
        while time.perf_counter() - started < PORT_TIMEOUT_S:
            if process.poll() is not None:
                raise AssertionError(
                    f"{block.where}: the background command exited ({process.returncode}) before its port "
                    f"answered:\n{command}\n--- output ---\n{log.read_text(errors='replace')[-4000:]}"
                )
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", int(port.group(1))), 0.5):
                self.timings.append((command.splitlines()[0] + " &", time.perf_counter() - started, "background"))
                return
            time.sleep(0.2)
        raise AssertionError(f"{block.where}: port {port.group(1)} did not answer in {PORT_TIMEOUT_S:.0f} s: {command}")

    def stop(self) -> None:
        """Stop the page's background processes (their whole process groups)."""
        for _, process, _ in reversed(self.background):
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=15)
        self.background.clear()

    @contextlib.contextmanager
    def _inside(self) -> Iterator[None]:
        """The page's folder as working directory and its variables in os.environ, for in-process steps."""
        saved_cwd, saved_env = Path.cwd(), dict(os.environ)
        os.chdir(self.folder)
        os.environ.update(self.env)
        try:
            yield
        finally:
            os.chdir(saved_cwd)
            os.environ.clear()
            os.environ.update(saved_env)


def page_environment(folder: Path) -> dict[str, str]:
    """The variables every command of a page sees: the venv first on PATH, caches in the page's folder,
    this checkout's source on PYTHONPATH, and a proxy that refuses every connection outside loopback."""
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(ROOT / "src") + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["MICROZOO_CACHE"] = str(folder / ".cache" / "microzoo")
    env["MICROZOO_NAPARI_CACHE"] = str(folder / ".cache" / "napari")
    env["BIOIMAGEIO_CACHE_PATH"] = str(folder / ".cache" / "bioimageio")
    env["MPLBACKEND"] = "Agg"
    env["NO_COLOR"] = "1"
    env["COLUMNS"] = "120"
    # no network: every proxied request fails at once; loopback (a zoo the page serves) stays reachable
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env[name] = "http://127.0.0.1:9"
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    for name in ("MICROZOO_ZOO", "MICROZOO_MEMORY_BUDGET"):
        env.pop(name, None)
    return env


def run_page(page: str, folder: Path, text: str | None = None) -> PageRun:
    """Run every runnable block of ``page`` (or of ``text``, named ``page``) in ``folder`` (which gets
    ``data/``); raises AssertionError naming the page, line and command at the first failure.
    Background processes are stopped at the end."""
    make_data(folder / "data")
    run = PageRun(page, folder, page_environment(folder))
    try:
        for block in blocks(page, text):
            if block.runs:
                run.run_block(block)
    finally:
        run.stop()
    return run
