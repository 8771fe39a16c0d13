"""Finding models on SQLite and PostgreSQL: words, filters, facets, order and pages over 30 models."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from _zoo_db import staged_example

from microzoo.errors import ZooError
from microzoo.zoo import review
from microzoo.zoo.records import SearchQuery, VersionInfo
from microzoo.zoo.service import Zoo

TASKS = ("segmentation", "denoising", "restoration")
MODALITIES = ("fluorescence", "brightfield", "electron-microscopy")
FORMATS = (["onnx"], ["pytorch_state_dict"], ["torchscript", "onnx"], ["pytorch_state_dict", "torchscript"])
SUBJECTS = ("nuclei", "membranes", "mitochondria", "cells", "vesicles")


def _consumers(summary: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    """A stand-in compatibility matrix: deepImageJ runs torchscript or onnx, bioimageio.core everything."""
    formats = set(summary["weight_formats"])
    return {
        "consumers": {
            "deepImageJ": {"runs": bool(formats & {"onnx", "torchscript"})},
            "bioimageio.core": {"runs": True},
        }
    }


@pytest.fixture
def filled(zoo_root: Path, db: str, example_model: Path, monkeypatch: pytest.MonkeyPatch):
    """30 published models (one of them twice, one draft besides), with downloads; yields the zoo and the models."""
    monkeypatch.setattr(review, "compatibility", _consumers)
    zoo = Zoo(zoo_root, db, publish_on_pass=True)
    token = zoo.authorise(zoo.create_token("uploader"), "uploader")
    models: dict[str, dict[str, Any]] = {}
    for n in range(30):
        subject = SUBJECTS[n % 5]
        summary = {
            "title": f"{subject.capitalize()} model {n}",
            "description": f"Finds {subject} in images" + (" of tissue" if n % 3 == 0 else ""),
            "task": TASKS[n % 3], "modality": MODALITIES[n % 4 % 3], "dims": "3d" if n % 4 == 0 else "2d",
            "weight_formats": FORMATS[n % 4], "license": "MIT" if n % 2 else "CC-BY-4.0",
            "tags": [subject, f"tag{n % 6}"], "authors": ["Ada Lovelace" if n < 10 else "Grace Hopper"],
        }  # fmt: skip
        zoo.publish_upload(
            staged_example(zoo, example_model, small=True, **summary), token=token, name=f"model-{n:02d}"
        )
        models[f"model-{n:02d}"] = summary
    # a newer version of model-00 replaces it in results; a draft is never found
    zoo.publish_upload(
        staged_example(zoo, example_model, small=True, **models["model-00"]), token=token, name="model-00"
    )
    while (job := zoo.claim_job("w")) is not None:
        zoo.finish_job(job.id, ok=True, result={"formats": {}})
    draft = staged_example(zoo, example_model, small=True, title="Nuclei draft", task="segmentation")
    zoo.publish_upload(draft, token=token, name="draft-model")
    for n, count in ((3, 5), (7, 2), (12, 9)):
        for _ in range(count):
            zoo.count_download(f"model-{n:02d}", "1")
    yield zoo, models
    zoo.close()


def _names(items: list[VersionInfo]) -> set[str]:
    return {item.name for item in items}


def _all(zoo: Zoo, **query: Any) -> list[VersionInfo]:
    """Every result of a query, page by page (checking that pages neither repeat nor skip)."""
    found: list[VersionInfo] = []
    for page in itertools.count(1):
        result = zoo.search(SearchQuery(page=page, per_page=7, **query))
        found += result.items
        if len(result.items) < 7:
            assert len(found) == result.total
            return found
    raise AssertionError


def test_words_filters_and_pages(filled) -> None:
    zoo, models = filled
    everything = _all(zoo)
    assert len(everything) == 30 and len(_names(everything)) == 30
    assert next(v for v in everything if v.name == "model-00").version == "2"  # only the latest published
    nuclei = {name for name, s in models.items() if "nuclei" in s["title"].lower()}
    assert _names(_all(zoo, text="nuclei")) == nuclei and len(nuclei) == 6
    assert _names(_all(zoo, text="NUCL")) == nuclei  # case-insensitive prefixes
    assert _names(_all(zoo, text="nuclei tissue")) == {n for n in nuclei if "tissue" in models[n]["description"]}
    assert _names(_all(zoo, text="hopper")) == {f"model-{n:02d}" for n in range(10, 30)}  # authors
    assert _names(_all(zoo, text="tag5")) == {name for name, s in models.items() if "tag5" in s["tags"]}  # tags
    assert _names(_all(zoo, text="model-07")) == {"model-07"}  # the id
    assert _all(zoo, text="nothing-like-this") == []
    for hostile in ('nuclei" OR (', "NEAR(a b) *", '"', "-", "title:x AND", "'; DROP TABLE versions; --", "😀 ü"):
        zoo.search(SearchQuery(text=hostile))  # never a syntax error
    assert len(_all(zoo, text='"*')) == 30  # no words: everything
    denoising_3d = {n for n, s in models.items() if s["task"] == "denoising" and s["dims"] == "3d"}
    assert _names(_all(zoo, task="denoising", dims="3d")) == denoising_3d and denoising_3d
    onnx = {n for n, s in models.items() if "onnx" in s["weight_formats"]}
    assert _names(_all(zoo, weight_format="onnx")) == onnx
    assert _names(_all(zoo, consumer="deepImageJ")) == {
        n for n, s in models.items() if {"onnx", "torchscript"} & set(s["weight_formats"])
    }
    assert _names(_all(zoo, license="MIT", modality="brightfield", text="cells")) == {
        n
        for n, s in models.items()
        if s["license"] == "MIT" and s["modality"] == "brightfield" and "Cells" in s["title"]
    }


def test_facets_count_the_filtered_set(filled) -> None:
    zoo, models = filled
    result = zoo.search(SearchQuery(task="segmentation", per_page=3))
    chosen = [s for s in models.values() if s["task"] == "segmentation"]
    assert result.total == len(chosen) and len(result.items) == 3
    assert result.facets["task"] == {"segmentation": len(chosen)}
    assert result.facets["dims"] == dict(Counter(s["dims"] for s in chosen))
    assert result.facets["weight_format"] == dict(Counter(f for s in chosen for f in s["weight_formats"]))
    assert result.facets["consumer"]["bioimageio.core"] == len(chosen)
    assert list(result.facets["weight_format"].values()) == sorted(
        result.facets["weight_format"].values(), reverse=True
    )


def test_sorting(filled) -> None:
    zoo, _ = filled
    by_downloads = zoo.search(SearchQuery(sort="downloads", per_page=3)).items
    assert [v.name for v in by_downloads] == ["model-12", "model-03", "model-07"]
    by_date = _all(zoo, sort="date")
    dates = [v.published_at for v in by_date]
    assert dates == sorted(dates, reverse=True) and by_date[0].name == "model-00"  # its version 2 came last
    ranked = zoo.search(SearchQuery(text="tissue nuclei")).items
    assert ranked and all("nuclei" in v.summary["title"].lower() for v in ranked)
    relevance = zoo.search(SearchQuery(text="mitochondria")).items
    assert {v.summary["title"].split()[0] for v in relevance} == {"Mitochondria"}


def test_title_words_rank_above_description_words(zoo_root: Path, db: str, example_model: Path) -> None:
    zoo = Zoo(zoo_root, db, publish_on_pass=True)
    token = zoo.authorise(zoo.create_token("uploader"), "uploader")
    texts = {
        "in-description": ("Cell model", "A model for cells; it also works on organoid images among many other kinds"),
        "in-title": ("Organoid segmenter", "Segments things"),
        "elsewhere": ("Other", "Nothing to see"),
    }
    for name, (title, description) in texts.items():
        upload = staged_example(zoo, example_model, small=True, title=title, description=description)
        zoo.publish_upload(upload, token=token, name=name)
    while (job := zoo.claim_job("w")) is not None:
        zoo.finish_job(job.id, ok=True, result={"formats": {}})
    assert [v.name for v in zoo.search(SearchQuery(text="organoid")).items] == ["in-title", "in-description"]
    zoo.close()


def test_queries_a_search_refuses(filled) -> None:
    zoo, _ = filled
    for bad in (SearchQuery(sort="popularity"), SearchQuery(page=0), SearchQuery(per_page=1000)):
        with pytest.raises(ZooError) as refused:
            zoo.search(bad)
        assert refused.value.status == 400
    assert zoo.search(SearchQuery(page=99)).items == []


def test_the_search_table_follows_publication_tests_and_downloads(
    zoo_root: Path, db: str, example_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version is found once published, replaced by its model's next, refiled after a test run, counted."""
    runs = {"deepImageJ": True}
    monkeypatch.setattr(review, "compatibility", lambda s, r: {"consumers": {"deepImageJ": {"runs": runs["now"]}}})
    zoo = Zoo(zoo_root, db, publish_on_pass=True)
    token = zoo.authorise(zoo.create_token("uploader"), "uploader")

    def upload(name: str, title: str, passes: bool = True) -> None:
        runs["now"] = passes
        zoo.publish_upload(staged_example(zoo, example_model, small=True, title=title), token=token, name=name)
        while (job := zoo.claim_job("w")) is not None:
            zoo.finish_job(job.id, ok=True, result={"formats": {}})

    upload("owl", "Quokka finder")
    upload("fox", "Membrane finder")
    found = zoo.search(SearchQuery(text="finder", sort="date"))
    assert [(v.name, v.version) for v in found.items] == [("fox", "1"), ("owl", "1")] and found.total == 2
    assert found.facets["consumer"] == {"deepImageJ": 2}
    assert zoo.search(SearchQuery()).facets["consumer"] == {"deepImageJ": 2}  # counted, and cached
    # a draft is not found; its model's published version still is
    zoo.publish_upload(staged_example(zoo, example_model, small=True, title="Wombat draft"), token=token, name="owl")
    assert [(v.name, v.version) for v in zoo.search(SearchQuery(text="owl")).items] == [("owl", "1")]
    # its test run passes (publish on pass): version 2 replaces version 1, with its own text and facets
    runs["now"] = False
    while (job := zoo.claim_job("w")) is not None:
        zoo.finish_job(job.id, ok=True, result={"formats": {}})
    assert zoo.search(SearchQuery(text="quokka")).items == []  # version 1's title is not found any more
    found = zoo.search(SearchQuery(text="wombat draft"))
    assert [(v.name, v.version) for v in found.items] == [("owl", "2")] and found.total == 1
    assert zoo.search(SearchQuery()).facets["consumer"] == {"deepImageJ": 1}  # the cache saw the publication
    assert zoo.search(SearchQuery(consumer="deepImageJ")).total == 1
    # downloads reorder: the model's count, whichever version is latest
    assert [v.name for v in zoo.search(SearchQuery(sort="downloads")).items] == ["owl", "fox"]  # ties: newest first
    for _ in range(2):
        zoo.count_download("fox", "1")
    zoo.count_download("owl", "1")
    assert [v.name for v in zoo.search(SearchQuery(sort="downloads")).items] == ["fox", "owl"]
    zoo.close()


def test_a_repeated_search_is_one_statement_the_page_with_the_generation(filled) -> None:
    """A search made again is answered from the process's cache: one statement, the page's rows with the
    generation that says the cache is still right (no count, facet or text-match statement)."""
    from sqlalchemy import event

    zoo, _ = filled
    statements: list[str] = []

    def record(connection, cursor, statement, *rest) -> None:
        if statement != "BEGIN":  # SQLite's transaction (PostgreSQL searches in autocommit)
            statements.append(statement)

    event.listen(zoo.engine, "before_cursor_execute", record)
    try:
        for query in (SearchQuery(text="nuclei tissue"), SearchQuery(text="model", sort="date", task="denoising")):
            first = zoo.search(query)
            statements.clear()
            again = zoo.search(query)
            assert (again.total, [(v.name, v.version) for v in again.items], again.facets) == (
                first.total, [(v.name, v.version) for v in first.items], first.facets)  # fmt: skip
            assert first.total > 0 and len(statements) == 1
            assert "search_state" in statements[0] and "versions" in statements[0]
        statements.clear()
        swapped = zoo.search(SearchQuery(text="Tissue nuclei NUCLEI"))  # the same words in another order: cached
        nuclei_tissue = zoo.search(SearchQuery(text="nuclei tissue"))
        assert [(v.name, v.version) for v in swapped.items] == [(v.name, v.version) for v in nuclei_tissue.items]
        assert swapped.total == nuclei_tissue.total > 0 and len(statements) == 2
        statements.clear()
        zoo.search(SearchQuery(text="model", sort="downloads"))
        zoo.search(SearchQuery(text="model", sort="downloads"))  # a download reorders without a new generation
        assert len([s for s in statements if "ORDER BY e.downloads" in s]) == 2
    finally:
        event.remove(zoo.engine, "before_cursor_execute", record)


def test_a_change_made_by_another_process_is_seen_by_the_next_search(filled, db: str, example_model: Path) -> None:
    """A process searches from the generation it last saw; another process's publication (a new generation) is
    found by its next search, which then answers as a process that never searched before would."""
    zoo, _ = filled
    query = SearchQuery(text="quokka")
    assert zoo.search(query).total == 0  # this process now holds the entries of the current generation
    other = Zoo(zoo.root, db, publish_on_pass=True)  # another process, as far as the database can tell
    token = other.authorise(other.create_token("uploader"), "uploader")
    other.publish_upload(staged_example(other, example_model, small=True, title="Quokka finder"), token=token)
    while (job := other.claim_job("w")) is not None:
        other.finish_job(job.id, ok=True, result={"formats": {}})
    found = zoo.search(query)
    assert found.total == 1 and found.items[0].summary["title"] == "Quokka finder"
    with zoo.engine.connect() as connection:  # the other process published the fixture's draft too (on pass)
        entries = connection.exec_driver_sql("SELECT count(*) FROM search_entries").scalar_one()
    assert zoo.search(SearchQuery()).total == entries == 32
    other.close()


def test_the_migration_rebuilds_the_same_search_table(filled, db: str) -> None:
    """The search table that revision 0003 fills from a zoo's rows gives the results that the indexing code's gives."""
    from alembic import command
    from alembic.config import Config

    from microzoo.zoo.db import MIGRATIONS, migrate_to

    zoo, _ = filled
    queries = [
        SearchQuery(per_page=100), SearchQuery(text="nuclei"), SearchQuery(text="model", sort="downloads", page=2,
        per_page=5), SearchQuery(sort="date", task="segmentation"), SearchQuery(text="hopper", consumer="deepImageJ"),
        SearchQuery(text="mod", weight_format="onnx", license="CC-BY-4.0", sort="relevance"),
    ]  # fmt: skip

    def results() -> list[tuple[int, list[tuple[str, str]], dict[str, dict[str, int]]]]:
        found = [zoo.search(query) for query in queries]
        return [(r.total, [(v.name, v.version) for v in r.items], r.facets) for r in found]

    before = results()
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with zoo.engine.connect() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0002")  # back to the facets table (and PostgreSQL's versions.search_vector)
        connection.commit()
    migrate_to(db, "head")
    assert results() == before
    assert before[0][0] == 30 and before[1][0] == 6 and all(r[1] for r in before)


def _end_other_connections(url: str) -> int:
    """End every other connection to the database of ``url`` (as a restarted server would); how many."""
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as connection:
        ended = connection.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    return int(ended[0]) if ended else 0


@pytest.mark.parametrize("idle", [False, True], ids=["in-use", "idle"])
def test_a_search_survives_its_pooled_connections_being_ended(
    zoo_root: Path, postgres_admin_url: str, example_model: Path, monkeypatch: pytest.MonkeyPatch, idle: bool
) -> None:
    """PostgreSQL: connections ended while pooled (a server restart) cost no failed search. One idle longer than
    ``PING_AFTER_IDLE_S`` is pinged at checkout and replaced; one used a moment ago fails its statement once,
    which renews the pool, and the search is made again."""
    from _postgres import drop_database, new_database
    from sqlalchemy import event

    from microzoo.zoo import db as zoo_db

    url = new_database(postgres_admin_url)
    zoo = Zoo(zoo_root, url, publish_on_pass=True)
    try:
        token = zoo.authorise(zoo.create_token("uploader"), "uploader")
        zoo.publish_upload(staged_example(zoo, example_model, small=True, title="Quokka finder"), token=token)
        while (job := zoo.claim_job("w")) is not None:
            zoo.finish_job(job.id, ok=True, result={"formats": {}})
        assert zoo.search(SearchQuery(text="quokka")).total == 1
        errors: list[BaseException] = []
        event.listen(zoo.engine, "handle_error", lambda context: errors.append(context.original_exception))
        monkeypatch.setattr(zoo_db, "PING_AFTER_IDLE_S", 0.0 if idle else 3600.0)
        assert _end_other_connections(url) >= 1
        found = zoo.search(SearchQuery(text="quokka"))
        assert found.total == 1 and found.items[0].summary["title"] == "Quokka finder"
        assert len(errors) == (0 if idle else 1)  # pinged and replaced, or failed once and made again
    finally:
        zoo.close()
        drop_database(postgres_admin_url, url)
