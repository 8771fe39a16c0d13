"""The `microzoo` command line: parse, show progress, render results. The work lives in the library."""

from __future__ import annotations

import sys

import typer

app = typer.Typer(
    name="microzoo",
    help="Find, run, train, check and publish deep-learning models for microscopy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def version() -> None:
    """Print the microzoo version."""
    from microzoo import __version__

    typer.echo(__version__)


@app.callback()
def _root() -> None:
    """Find, run, train, check and publish deep-learning models for microscopy."""


def main() -> None:
    """Entry point: a MicrozooError prints its message without a traceback and exits with 2."""
    from microzoo.errors import MicrozooError

    try:
        app()
    except MicrozooError as error:
        from rich.console import Console

        Console(stderr=True).print(f"[bold red]Error:[/] {error}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
