"""mkdocs hooks (mkdocs.yml `hooks:`): the two reference pages are generated from the code at build time.

- ``<!-- cli-reference -->`` in a page becomes every command and subcommand of the ``microzoo`` app
  (``microzoo.cli.app`` through ``typer.main.get_command``): its help, usage line, arguments and
  options with their defaults, walked from the click tree, so a new command or option appears by itself.
- ``<!-- api: microzoo.NAME -->`` becomes one mkdocstrings ``:::`` block per name of that package's
  ``__all__`` (dunder names left out), pointing at the module that defines it; griffe's docstring
  warnings then fail ``mkdocs build --strict``.

The source documented is this checkout's ``src/`` (put first on ``sys.path``), never an installed copy.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLI_MARKER = "<!-- cli-reference -->"
API_MARKER = re.compile(r"^<!-- api: (microzoo(?:\.\w+)*) -->$", re.MULTILINE)


def _use_this_checkout() -> None:
    src = str(ROOT / "src")
    if sys.path[:1] != [src]:
        sys.path.insert(0, src)
    loaded = sys.modules.get("microzoo")
    if loaded is not None and not str(getattr(loaded, "__file__", "")).startswith(src):
        raise RuntimeError(f"microzoo was imported from {loaded.__file__}, not from {src}: set PYTHONPATH={src}")


def _escape(text: str) -> str:
    """Plain help text as Markdown: no HTML tags, no emphasis, no table breaks."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("*", r"\*").replace("|", r"\|")


def command_tree() -> list[tuple[list[str], Any, Any]]:
    """Every command of the ``microzoo`` app, depth first: (path, click command, its context).

    The path starts with ``microzoo``; groups come before their subcommands; hidden commands are left out.
    """
    import typer

    _use_this_checkout()
    from microzoo.cli import app

    root = typer.main.get_command(app)
    context_type = type(root.make_context("microzoo", [], resilient_parsing=True))
    found: list[tuple[list[str], Any, Any]] = []

    def walk(command: Any, path: list[str], parent: Any) -> None:
        context = context_type(command, info_name=path[-1], parent=parent)
        found.append((path, command, context))
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            if not getattr(sub, "hidden", False):
                walk(sub, [*path, name], context)

    walk(root, ["microzoo"], None)
    return found


def cli_markdown() -> str:
    """The command-line reference as Markdown: an index of commands, then one section per command."""
    tree = command_tree()
    lines = ["| command | what it does |", "|---|---|"]
    for path, command, _ in tree[1:]:
        anchor = "-".join(path)
        lines.append(f"| [`{' '.join(path)}`](#{anchor}) | {_escape(command.get_short_help_str(limit=300))} |")
    for path, command, context in tree:
        lines += ["", f"## `{' '.join(path)}` {{#{'-'.join(path)}}}", ""]
        if command.help:
            lines += [_escape(command.help.strip().replace("\b\n", "")), ""]
        lines += ["```text", command.get_usage(context).strip(), "```", ""]
        records = [p.get_help_record(context) for p in command.params]
        records = [r for r in records if r is not None]
        if records:
            lines += ["| argument or option | description |", "|---|---|"]
            for names, text in records:
                text = " ".join(text.split())
                lines.append(f"| `{names}` | {_escape(text)} |")
    return "\n".join(lines) + "\n"


def api_names(package: str) -> list[tuple[str, str]]:
    """The public names of ``package`` (its ``__all__``, dunders left out) and the identifier mkdocstrings
    documents each under, found without importing the names (importing all of them takes torch and
    bioimageio.spec: seconds): a lazily exported name under the module its package's table names
    (``_EXPORTS``: name -> module), an imported one under ``module.qualname`` where it is defined, a
    constant as ``package.name`` (griffe follows the import)."""
    _use_this_checkout()
    module = importlib.import_module(package)
    lazy: dict[str, str] = {}
    for value in vars(module).values():  # the tables given to lazy_exports: {name: module}
        if (
            isinstance(value, dict)
            and value
            and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
        ):
            if set(value) <= set(module.__all__):
                lazy.update(value)
    names: list[tuple[str, str]] = []
    for name in module.__all__:
        if name.startswith("__"):
            continue
        value = vars(module).get(name)
        where, qualname = getattr(value, "__module__", None), getattr(value, "__qualname__", None)
        if value is None and name in lazy:
            names.append((name, f"{package}.{lazy[name]}.{name}"))
        elif isinstance(where, str) and where.startswith("microzoo") and isinstance(qualname, str):
            names.append((name, f"{where}.{qualname}"))
        else:
            names.append((name, f"{package}.{name}"))
    return names


def api_markdown(package: str) -> str:
    """One mkdocstrings block per public name of ``package``."""
    return "\n".join(f"::: {identifier}\n" for _, identifier in api_names(package))


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Expand the reference markers of a page (mkdocs hook)."""
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_markdown())
    return API_MARKER.sub(lambda match: api_markdown(match.group(1)), markdown)
