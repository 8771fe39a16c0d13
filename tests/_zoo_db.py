"""The zoo's database fixtures, for every zoo test: ``db`` runs a test on SQLite and on PostgreSQL.

``db`` is a database URL (a new empty database each test); ``zoo_root`` a new zoo folder. Use
``Zoo(zoo_root, db)``; :func:`staged_example` stands in for ``zoo.ingest`` where a test needs an
upload. The PostgreSQL case skips with the reason where no server can be had.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from _postgres import drop_database, new_database


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of a new empty database: SQLite in the test's folder, or one on the test PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'zoo.sqlite'}"
        return
    admin_url = request.getfixturevalue("postgres_admin_url")
    url = new_database(admin_url)
    yield url
    drop_database(admin_url, url)


@pytest.fixture
def zoo_root(tmp_path: Path) -> Path:
    """An empty folder for a zoo's files."""
    root = tmp_path / "zoo"
    root.mkdir()
    return root


@dataclass
class StagedUpload:
    """What ``zoo.ingest.ingest_upload`` gives (folder, summary, problems), built here without it."""

    folder: Path
    summary: dict[str, Any]
    problems: list[str] = field(default_factory=list)


def example_summary(**changes: Any) -> dict[str, Any]:
    """A ``PackageSummary`` dict like ingest's for the example U-Net package, with ``changes``."""
    summary: dict[str, Any] = {
        "name_in_package": None, "version_in_package": None, "title": "UNet 2D Nuclei Broad",
        "description": "A 2d U-Net trained on the nuclei broad dataset.",
        "tags": ["unet2d", "pytorch", "nucleus", "segmentation", "dsb2018"],
        "authors": ["Constantin Pape", "Fynn Beuttenmueller"], "license": "MIT", "format_version": "0.5.4",
        "task": "segmentation", "modality": "fluorescence", "dims": "2d",
        "weight_formats": ["onnx", "pytorch_state_dict"], "inputs": [], "outputs": [], "covers": ["cover0.png"],
        "documentation": "README.md", "cite": [], "has_qc": False,
    }  # fmt: skip
    summary.update(changes)
    return summary


def staged_example(
    zoo: Any, example: Path, *, package_id: str | None = None, package_version: str | None = None,
    small: bool = False, **summary_changes: Any,
) -> StagedUpload:  # fmt: skip
    """The example package copied into a new staging folder of ``zoo``, its description as ``rdf.yaml``.

    ``package_id``/``package_version`` are written into rdf.yaml and the summary, as ingest does for
    a package that has them; ``small`` copies only the description and the README (fast, for many uploads).
    """
    folder = zoo.new_staging_dir()
    names = ["bioimageio.yaml", "README.md"] if small else [p.name for p in example.iterdir()]
    for name in names:
        shutil.copy2(example / name, folder / name)
    description = yaml.safe_load((folder / "bioimageio.yaml").read_text())
    (folder / "bioimageio.yaml").unlink()
    if package_id is not None:
        description["id"] = package_id
    if package_version is not None:
        description["version"] = package_version
    (folder / "rdf.yaml").write_text(yaml.safe_dump(description, sort_keys=False))
    summary = example_summary(name_in_package=package_id, version_in_package=package_version, **summary_changes)
    return StagedUpload(folder, summary)
