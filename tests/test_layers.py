"""The layers of docs/internals.md, enforced: each module imports only from its layer and below.

Every ``import`` in every module of ``src/microzoo`` counts, including those inside functions
and under ``TYPE_CHECKING`` (relative imports are resolved), because an import inside a
function is a dependency all the same. The order, lowest first::

    io < package < runtime < qc < trust < train < zoo < selection < tour
      < front ends (cli, cli_*, napari, notebook, zoo.server)

``errors`` and ``progress`` are the base every layer may use, and ``from microzoo import
__version__`` (or ``MicrozooError``) is allowed everywhere; anything else from the package root
(its facade, ``load_model``) belongs to the front ends.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import microzoo

SOURCE = Path(microzoo.__file__).resolve().parent
#: layer names, lowest first; a module's layer is its first name below ``microzoo``
ORDER = ("base", "io", "package", "runtime", "qc", "trust", "train", "zoo", "selection", "tour", "front")
LAYER_OF = {
    "errors": "base", "progress": "base", "_lazy": "base", "io": "io", "package": "package", "runtime": "runtime",
    "qc": "qc", "trust": "trust", "train": "train", "zoo": "zoo", "selection": "selection", "tour": "tour",
    "cli": "front", "cli_zoo": "front",
    "cli_select": "front", "cli_learn": "front", "cli_tour": "front",
    "napari": "front", "notebook": "front", "__init__": "front",
}  # fmt: skip
BASE_NAMES_OF_ROOT = {"__version__", "MicrozooError"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


#: subpackages that sit in a higher layer than their parent: the zoo's web server is a front end
FRONT_SUBPACKAGES = ("microzoo.zoo.server",)


def _layer(module: str, names: tuple[str, ...] = ()) -> str:
    parts = module.split(".")
    if len(parts) == 1:  # the package root
        return "base" if names and set(names) <= BASE_NAMES_OF_ROOT else "front"
    if any(module == sub or module.startswith(sub + ".") for sub in FRONT_SUBPACKAGES):
        return "front"
    return LAYER_OF.get(parts[1], "unknown")


def _imports(path: Path) -> Iterator[tuple[int, str, tuple[str, ...], str]]:
    """(line, imported microzoo module, names, the statement as written) of every import in ``path``."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "microzoo":
                    yield node.lineno, alias.name, (), ast.unparse(node)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "microzoo":
                continue
            names = tuple(alias.name for alias in node.names)
            # `from microzoo import x`, `from . import x`: x may be a submodule
            folder = SOURCE.parent.joinpath(*target.split("."))
            submodules = [n for n in names if (folder / n).is_dir() or (folder / f"{n}.py").is_file()]
            for name in submodules:
                yield node.lineno, f"{target}.{name}", (), ast.unparse(node)
            rest = tuple(n for n in names if n not in submodules)
            if rest:
                yield node.lineno, target, rest, ast.unparse(node)


def _sources() -> list[Path]:
    return sorted(SOURCE.rglob("*.py"))


def test_every_module_has_a_layer():
    unknown = [_module_name(p) for p in _sources() if _layer(_module_name(p)) == "unknown"]
    assert not unknown, f"modules outside the layers of docs/internals.md (add them to LAYER_OF): {unknown}"


def test_each_module_imports_only_from_its_layer_and_below():
    breaks = []
    for path in _sources():
        module = _module_name(path)
        own = ORDER.index(_layer(module))
        for line, target, names, statement in _imports(path):
            layer = _layer(target, names)
            if layer == "unknown" or ORDER.index(layer) > own:
                where = path.relative_to(SOURCE.parent.parent)
                breaks.append(f"{where}:{line}: {module} ({_layer(module)}) imports {target} ({layer}): {statement}")
    assert not breaks, "imports that break the layer order:\n" + "\n".join(breaks)


def test_the_zoo_server_is_a_front_end_and_the_zoo_below_it():
    assert _layer("microzoo.zoo.server.app") == "front"
    assert _layer("microzoo.zoo.server") == "front"
    assert _layer("microzoo.cli_zoo") == "front"
    assert _layer("microzoo.zoo.service") == "zoo"
    assert _layer("microzoo.zoo.serverless") == "zoo"  # a prefix of the name is not the subpackage


@pytest.mark.parametrize(
    ("source", "importer", "expected"),
    [
        ("from microzoo.train.tasks import x\n", "qc/fake.py", "microzoo.train.tasks"),
        ("def f():\n    from ..runtime import predict\n", "qc/fake.py", "microzoo.runtime.predict"),
        ("from .metrics import psnr\n", "qc/fake.py", "microzoo.qc.metrics"),
        ("import microzoo.trust.ood as ood\n", "io/fake.py", "microzoo.trust.ood"),
    ],
)
def test_the_walk_sees_function_and_relative_imports(tmp_path, monkeypatch, source, importer, expected):
    root = tmp_path / "microzoo"
    for folder in ("qc", "runtime", "io", "trust"):
        (root / folder).mkdir(parents=True)
        (root / folder / "__init__.py").write_text("")
    (root / "runtime" / "predict.py").write_text("")
    (root / importer).write_text(source)
    monkeypatch.setitem(globals(), "SOURCE", root)
    found = [target for _, target, _, _ in _imports(root / importer)]
    assert found == [expected]
