"""Schema migrations: a zoo made at revision 0001, with rows, upgrades in place to the newest."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from microzoo.errors import ZooError
from microzoo.zoo.db import current_revision, engine_for, migrate_to
from microzoo.zoo.records import SearchQuery
from microzoo.zoo.service import Zoo

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def _fill_revision_0001(url: str) -> None:
    """Rows as a zoo at 0001 wrote them: a token, a published model with its search entry, a comment, a job."""
    summary = {"title": "Nuclei U-Net", "description": "segments nuclei", "tags": ["nucleus"], "authors": ["Ada"]}
    engine = engine_for(url)
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO tokens (id, label, role, sha256, created_at) VALUES (1, 'alice', 'admin', :h, :t)"),
            {"h": "0" * 64, "t": NOW},
        )
        connection.execute(
            text("INSERT INTO models (name, created_at, created_by, downloads) VALUES ('old-owl', :t, 1, 7)"),
            {"t": NOW},
        )
        connection.execute(
            text(
                "INSERT INTO versions (id, name, version, status, test_status, created_at, published_at, uploaded_by, "
                "rdf_sha256, zip_sha256, zip_size, summary, is_latest) VALUES (1, 'old-owl', '1', 'published', "
                "'passed', :t, :t, 1, :h, :h, 10, :s, :latest)"
            ),
            {"t": NOW, "h": "a" * 64, "s": json.dumps(summary), "latest": True},
        )
        connection.execute(text("INSERT INTO facets (version_id, field, value) VALUES (1, 'task', 'segmentation')"))
        connection.execute(
            text(
                "INSERT INTO comments (version_id, author, role, text, kind, created_at) "
                "VALUES (1, 'alice', 'admin', 'ok', 'comment', :t)"
            ),
            {"t": NOW},
        )
        connection.execute(
            text(
                "INSERT INTO jobs (kind, version_id, payload, status, created_at, error) "
                "VALUES ('test', 1, '{}', 'done', :t, '')"
            ),
            {"t": NOW},
        )
        if engine.dialect.name == "postgresql":
            connection.execute(
                text("UPDATE versions SET search_vector = to_tsvector('english', 'old owl nuclei u-net')")
            )
        else:
            connection.execute(
                text(
                    "INSERT INTO version_text (rowid, name, title, description, tags, authors) "
                    "VALUES (1, 'old-owl', 'Nuclei U-Net', 'segments nuclei', 'nucleus', 'Ada')"
                )
            )
    engine.dispose()


def test_a_zoo_at_0001_upgrades_in_place(db: str, zoo_root: Path) -> None:
    migrate_to(db, "0001")
    _fill_revision_0001(db)
    zoo = Zoo(zoo_root, db)  # migrates to the newest revision at start
    assert current_revision(zoo.engine) == "0002"
    version = zoo.version("old-owl", "1")
    assert (version.status, version.test_status, version.rdf_sha256) == ("published", "passed", "a" * 64)
    assert version.created_at == NOW and version.summary["title"] == "Nuclei U-Net"
    # the columns of 0002 exist with their defaults, and work
    assert (version.downloads, version.retest_status, version.retested_at) == (0, None, None)
    zoo.count_download("old-owl", "1")
    assert zoo.version("old-owl", "1").downloads == 1
    assert [t.label for t in zoo.tokens()] == ["alice"]
    assert [c.text for c in zoo.comments("old-owl", "1")] == ["ok"]
    assert zoo.job(1).status == "done"
    found = zoo.search(SearchQuery(text="nuclei", task="segmentation"))
    assert [item.name for item in found.items] == ["old-owl"] and found.facets["task"] == {"segmentation": 1}
    zoo.close()
    again = Zoo(zoo_root, db)  # a second start finds nothing to do
    assert current_revision(again.engine) == "0002" and again.version("old-owl", "1").downloads == 1
    again.close()


def test_processes_starting_together_migrate_once(db: str, zoo_root: Path) -> None:
    """A server and its workers start at the same moment on an empty database: one migrates, none fails."""
    code = "import sys; from pathlib import Path; from microzoo.zoo.service import Zoo; Zoo(Path(sys.argv[1]), sys.argv[2])"  # noqa: E501
    starts = [
        subprocess.Popen([sys.executable, "-c", code, str(zoo_root), db], stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    ended = [(start.communicate(timeout=120)[1], start.returncode) for start in starts]
    assert [code for _, code in ended] == [0] * 4, [err for err, _ in ended]
    engine = engine_for(db)
    assert current_revision(engine) == "0002"
    engine.dispose()


def test_a_database_that_cannot_be_opened_is_a_clear_error(zoo_root: Path, tmp_path: Path) -> None:
    with pytest.raises(
        ZooError, match=r"cannot open the zoo's database postgresql://ann:\*\*\*@127.0.0.1:1/zoo"
    ) as error:
        Zoo(zoo_root, "postgresql://ann:secret@127.0.0.1:1/zoo")  # nothing listens on port 1
    assert "secret" not in str(error.value) and error.value.status == 503
    with pytest.raises(ZooError, match="cannot open the zoo's database"):
        Zoo(zoo_root, f"sqlite:///{tmp_path / 'missing-folder' / 'zoo.sqlite'}")
    with pytest.raises(ZooError, match="cannot open the zoo's database"):
        Zoo(zoo_root, "nonsense")
