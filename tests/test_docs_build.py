"""The documentation site builds with ``mkdocs build --strict``: no broken link or anchor, no page left
out of the nav, no docstring griffe cannot read; its references cover every command and public name."""

from __future__ import annotations

import importlib
import pkgutil
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _build(config_file: Path, site_dir: Path) -> None:
    from mkdocs.commands.build import build
    from mkdocs.config import load_config

    config = load_config(str(config_file), site_dir=str(site_dir), strict=True)
    config.plugins.on_startup(command="build", dirty=False)
    try:
        build(config)
    finally:
        config.plugins.on_shutdown()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built as ``mkdocs build --strict`` builds it: in its own process, because griffe reads
    a package that earlier tests imported (with its lazy re-exports) differently from its source."""
    site_dir = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(site_dir)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return site_dir


def _ids(html_file: Path) -> set[str]:
    return set(re.findall(r'id="([^"]+)"', html_file.read_text(encoding="utf-8")))


@pytest.mark.slow
def test_every_command_and_option_is_in_the_cli_reference(site: Path) -> None:
    import typer

    from microzoo.cli import app

    page = site / "reference" / "cli" / "index.html"
    ids, text = _ids(page), page.read_text(encoding="utf-8")
    root = typer.main.get_command(app)
    seen = 0

    def walk(command: Any, path: list[str]) -> None:
        nonlocal seen
        seen += 1
        assert "-".join(path) in ids, f"{' '.join(path)} is not in the CLI reference"
        for param in command.params:
            if getattr(param, "hidden", False):
                continue
            for name in [*param.opts, *param.secondary_opts]:
                if name.startswith("-"):
                    assert name in text, f"{' '.join(path)} {name} is not in the CLI reference"
        for name, sub in getattr(command, "commands", {}).items():
            if not getattr(sub, "hidden", False):
                walk(sub, [*path, name])

    walk(root, ["microzoo"])
    assert seen >= 20 and "microzoo-predict" in ids and "microzoo-zoo-token-create" in ids


def _public_packages() -> list[str]:
    import microzoo

    found = ["microzoo"]
    for info in pkgutil.iter_modules(microzoo.__path__):
        module = importlib.import_module(f"microzoo.{info.name}")
        if info.ispkg and hasattr(module, "__all__"):
            found.append(f"microzoo.{info.name}")
    return found


@pytest.mark.slow
def test_every_public_name_is_in_the_api_reference(site: Path) -> None:
    source = (ROOT / "docs" / "reference" / "api.md").read_text(encoding="utf-8")
    listed = re.findall(r"<!-- api: (\S+) -->", source)
    packages = _public_packages()
    assert sorted(listed) == sorted(packages), "a subpackage with __all__ is missing from docs/reference/api.md"
    ids = _ids(site / "reference" / "api" / "index.html")
    for package in packages:
        for name in importlib.import_module(package).__all__:
            if not name.startswith("__"):
                assert any(i.endswith(f".{name}") for i in ids), f"{package}.{name} is not documented"
    assert "microzoo.load_model" in ids and "microzoo.runtime.predict.Model.predict" in ids


def test_a_docstring_griffe_cannot_read_and_a_broken_link_fail_the_build(tmp_path: Path) -> None:
    """The strict build's checks fail on what they exist for (a small site, built the same way)."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "sample.py").write_text(
        'def scale(x: float) -> float:\n    """Scale.\n\n    Parameters\n    ----------\n    factor : float\n'
        '        not a parameter.\n    """\n'
        "    return x\n"
    )
    docs = tmp_path / "docs"
    docs.mkdir()
    main_config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    validation = main_config[main_config.index("validation:") : main_config.index("hooks:")]
    config = tmp_path / "mkdocs.yml"

    def site(page: str) -> None:
        (docs / "index.md").write_text(page)
        config.write_text(
            f"site_name: t\ndocs_dir: docs\nstrict: true\n{validation}"
            "plugins:\n  - mkdocstrings:\n      handlers:\n        python:\n          paths: [pkg]\n"
            "          options:\n            docstring_style: numpy\n"
        )

    from mkdocs.exceptions import Abort

    site("# Fine\n\n::: sample.scale\n")
    with pytest.raises(Abort, match="warning"):
        _build(config, tmp_path / "site")
    (tmp_path / "pkg" / "sample.py").write_text('def scale(x: float) -> float:\n    """Scale."""\n    return x\n')
    site("# Fine\n\n::: sample.scale\n")
    _build(config, tmp_path / "site")
    site("# Broken\n\n[a page](missing.md), [an anchor](#nowhere)\n")
    with pytest.raises(Abort, match="2 warnings"):
        _build(config, tmp_path / "site")
