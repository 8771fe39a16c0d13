"""Schema migrations: a zoo made at revision 0001 or 0002, with rows, upgrades in place to the newest."""

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
from microzoo.zoo.records import SearchQuery, VersionInfo
from microzoo.zoo.service import Zoo

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
HEAD = "0003"


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
    assert current_revision(zoo.engine) == HEAD
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
    assert current_revision(again.engine) == HEAD and again.version("old-owl", "1").downloads == 1
    again.close()


#: a zoo at 0002: (name, version, status, is_latest, title, facet rows, model downloads); the facet
#: rows and search text are there for the latest only (facets) and for every upload (text), as 0002 wrote them
ROWS_0002 = [
    ("old-owl", "1", "published", False, "Nuclei U-Net", [], 7),
    ("old-owl", "2", "published", True, "Nuclei U-Net", [("task", "segmentation"), ("weight_format", "onnx"),
                                                         ("weight_format", "torchscript")], 7),
    ("red-fox", "1", "published", True, "Membrane denoiser", [("task", "denoising"), ("weight_format", "onnx")], 30),
    ("tiny-ant", "1", "published", True, "Nuclei counter", [("task", "segmentation")], 2),
    ("shy-cat", "1", "draft", False, "Nuclei draft", [], 0),
]  # fmt: skip


def _fill_revision_0002(url: str) -> None:
    """Rows as a zoo at 0002 wrote them: models with versions (one with two, one draft), facets, search text."""
    engine = engine_for(url)
    with engine.begin() as connection:
        for name in dict.fromkeys(row[0] for row in ROWS_0002):
            downloads = next(row[6] for row in ROWS_0002 if row[0] == name)
            connection.execute(
                text("INSERT INTO models (name, created_at, downloads) VALUES (:n, :t, :d)"),
                {"n": name, "t": NOW, "d": downloads},
            )
        for vid, (name, version, status, latest, title, facets, _) in enumerate(ROWS_0002, start=1):
            published = NOW + dt.timedelta(minutes=vid) if status == "published" else None
            summary = {"title": title, "description": f"{title} for tests", "tags": [], "authors": ["Ada"]}
            connection.execute(
                text(
                    "INSERT INTO versions (id, name, version, status, test_status, created_at, published_at, "
                    "rdf_sha256, zip_sha256, zip_size, summary, is_latest, downloads) VALUES (:id, :n, :v, :s, "
                    "'passed', :t, :p, :h, :h, 10, :summary, :latest, 0)"
                ),
                {"id": vid, "n": name, "v": version, "s": status, "t": NOW, "p": published, "h": "a" * 64,
                 "summary": json.dumps(summary), "latest": latest},
            )  # fmt: skip
            for field, value in facets:
                connection.execute(
                    text("INSERT INTO facets (version_id, field, value) VALUES (:id, :f, :v)"),
                    {"id": vid, "f": field, "v": value},
                )
            words = f"{name} {name.replace('-', ' ')} {title} {title} for tests Ada"
            if engine.dialect.name == "postgresql":
                connection.execute(
                    text("UPDATE versions SET search_vector = to_tsvector('english', :w) WHERE id = :id"),
                    {"w": words, "id": vid},
                )
            else:
                connection.execute(
                    text(
                        "INSERT INTO version_text (rowid, name, title, description, tags, authors) "
                        "VALUES (:id, :n, :title, :d, '', 'Ada')"
                    ),
                    {"id": vid, "n": name, "title": title, "d": f"{title} for tests"},
                )
    engine.dispose()


def _found(zoo: Zoo, **query: object) -> list[tuple[str, str]]:
    items: list[VersionInfo] = zoo.search(SearchQuery(**query)).items  # type: ignore[arg-type]
    return [(item.name, item.version) for item in items]


def test_a_zoo_at_0002_upgrades_and_finds_the_same_models(db: str, zoo_root: Path) -> None:
    """0003 fills the search table from the rows of 0002: what a search finds, in which order, with which facets."""
    migrate_to(db, "0002")
    _fill_revision_0002(db)
    zoo = Zoo(zoo_root, db)
    assert current_revision(zoo.engine) == HEAD
    everything = zoo.search(SearchQuery(sort="date"))
    # the latest published of each model, newest first (the draft and old-owl/1 are not found)
    assert [(v.name, v.version) for v in everything.items] == [("tiny-ant", "1"), ("red-fox", "1"), ("old-owl", "2")]
    assert everything.total == 3
    assert everything.facets == {
        "task": {"segmentation": 2, "denoising": 1},
        "weight_format": {"onnx": 2, "torchscript": 1},
    }
    assert _found(zoo, sort="downloads") == [("red-fox", "1"), ("old-owl", "2"), ("tiny-ant", "1")]
    assert _found(zoo, text="nucl", sort="date") == [("tiny-ant", "1"), ("old-owl", "2")]  # prefix, no draft
    assert _found(zoo, text="owl") == [("old-owl", "2")]  # the id
    assert _found(zoo, weight_format="onnx", task="segmentation") == [("old-owl", "2")]
    filtered = zoo.search(SearchQuery(text="nuclei", weight_format="torchscript"))
    assert filtered.total == 1 and filtered.facets["weight_format"] == {"onnx": 1, "torchscript": 1}
    # downloads still count in the order; a newer version of tiny-ant takes its place
    for _ in range(40):
        zoo.count_download("tiny-ant", "1")
    assert _found(zoo, sort="downloads")[0] == ("tiny-ant", "1")
    with zoo.engine.connect() as connection:  # one entry per model; no text left for the draft or old versions
        assert connection.execute(text("SELECT count(*) FROM search_entries")).scalar_one() == 3
        if zoo.engine.dialect.name == "sqlite":
            assert connection.execute(text("SELECT count(*) FROM version_text")).scalar_one() == 3
    zoo.close()


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
    assert current_revision(engine) == HEAD
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
