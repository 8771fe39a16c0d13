"""Shared fixtures: where the real data is. Area-specific fixtures live in their own test modules."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from _zoo import published_example, zoo_server  # noqa: F401  (one real zoo for each test file that uses it)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MICROZOO_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder (``../shared/data``); the suite needs it, as CI has it."""
    if not SHARED_DATA.is_dir():
        raise RuntimeError(
            f"real data not found at {SHARED_DATA}: put the shared folder beside the repository "
            "or set MICROZOO_SHARED_DATA"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def example_model(shared_data: Path) -> Path:
    """The BioImage Model Zoo example package (U-Net 2D nuclei, format 0.5.4)."""
    return shared_data / "bmz" / "unet2d_nuclei_broad"


# the zoo's database fixtures (`db`: SQLite and PostgreSQL, `postgres_admin_url`, `zoo_root`)
pytest_plugins = ["_postgres", "_zoo_db", "_napari"]
