"""A publish killed (SIGKILL) at any point leaves no trace or the whole version, on SQLite and PostgreSQL.

A child process publishes the example package with ``MICROZOO_ZOO_CRASH_AT`` naming the point at
which it kills itself (``zoo.storage.CRASH_POINTS``: after staging, after the folder's rename, after
the zip, inside the open transaction, after the commit). The next ``Zoo(root)`` start cleans up.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _zoo_db import staged_example
from sqlalchemy import text

from microzoo.errors import ZooNotFound
from microzoo.zoo import storage
from microzoo.zoo.service import Zoo

CHILD = """
import sys
import time
from pathlib import Path
sys.path.insert(0, {tests!r})
from _zoo_db import staged_example
from microzoo.zoo.service import Zoo

zoo = Zoo(Path({root!r}), {db!r})
token = zoo.authorise({token!r}, "uploader")
upload = staged_example(zoo, Path({example!r}))
print(upload.folder, flush=True)
zoo.publish_upload(upload, token=token, name="crashy")
print("published", flush=True)
"""


def _publish_in_child(root: Path, db: str, token: str, example: Path, point: str) -> subprocess.CompletedProcess[str]:
    code = CHILD.format(tests=str(Path(__file__).parent), root=str(root), db=db, token=token, example=str(example))
    env = {**os.environ, storage.CRASH_ENV: point}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("point", storage.CRASH_POINTS)
def test_a_publish_killed_at_any_point(point: str, zoo_root: Path, db: str, example_model: Path) -> None:
    zoo = Zoo(zoo_root, db)
    token = zoo.create_token("uploader", label="crash")
    zoo.close()
    child = _publish_in_child(zoo_root, db, token, example_model, point)
    assert child.returncode == -signal.SIGKILL, child.stderr
    staging = Path(child.stdout.split()[0])
    assert "published" not in child.stdout

    restarted = Zoo(zoo_root, db)  # removes what the killed process left
    assert not staging.exists()
    assert restarted.check_consistency() == []
    if point == "committed":  # the whole version
        (version,) = restarted.versions("crashy")
        folder = restarted.version_folder("crashy", version.version)
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            ["rdf.yaml"] + [p.name for p in example_model.iterdir() if p.name != "bioimageio.yaml"]
        )
        assert storage.sha256_and_size(restarted.zip_path("crashy", "1")) == (version.zip_sha256, version.zip_size)
        assert restarted.claim_job("w") is not None  # its test job is queued
    else:  # no trace
        with pytest.raises(ZooNotFound):
            restarted.versions("crashy")
        assert not (zoo_root / "files" / "crashy").exists()
        assert restarted.claim_job("w") is None
        assert restarted.id_map("http://zoo.test", drafts=True) == {}
        with restarted.engine.connect() as connection:  # nor a search entry of the rolled-back version
            assert connection.execute(text("SELECT count(*) FROM search_entries")).scalar_one() == 0
    if point in ("in_transaction", "committed"):  # the zoo works on (no lock left behind): the upload goes through
        again = _publish_in_child(zoo_root, db, token, example_model, point="none")
        assert again.returncode == 0, again.stderr
        assert [v.version for v in restarted.versions("crashy")] == (["1", "2"] if point == "committed" else ["1"])
        assert restarted.check_consistency() == []
    restarted.close()


def test_consistency_check_reports_what_differs(zoo_root: Path, db: str, example_model: Path) -> None:
    zoo = Zoo(zoo_root, db)
    token = zoo.authorise(zoo.create_token("uploader"), "uploader")
    zoo.publish_upload(staged_example(zoo, example_model, small=True), token=token, name="kept")
    (zoo_root / "files" / "ghost" / "3").mkdir(parents=True)
    storage.zip_file(zoo_root, "kept", "1").unlink()
    problems = zoo.check_consistency()
    assert problems == [
        "files of ghost/3 without a version in the index",
        "kept/1 is in the index but its zip is missing",
    ]
    assert zoo.remove_orphans() == 2  # the orphan folder and its emptied model folder; a missing zip stays reported
    assert zoo.check_consistency() == ["kept/1 is in the index but its zip is missing"]
    zoo.close()


def test_staging_leftovers_go_with_their_process(zoo_root: Path, tmp_path: Path) -> None:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    staging = zoo_root / "staging"
    dead = staging / f"{finished.stdout.strip()}-{'a' * 32}"
    live = staging / f"{os.getpid()}-{'b' * 32}"
    unnamed = staging / ("c" * 32)  # not made by new_staging_dir: kept until a day old
    for folder in (dead / "inner", live, unnamed):
        folder.mkdir(parents=True)
    zoo = Zoo(zoo_root, f"sqlite:///{tmp_path / 'zoo.sqlite'}")
    assert sorted(p.name for p in staging.iterdir()) == sorted([live.name, unnamed.name])
    os.utime(unnamed, (0, 0))
    assert zoo.remove_orphans() == 1 and [p.name for p in staging.iterdir()] == [live.name]
    zoo.close()


def test_a_start_during_a_publish_leaves_it_whole(zoo_root: Path, db: str, example_model: Path) -> None:
    """A worker starting while the server is half-way through a publish waits for it instead of removing it."""
    zoo = Zoo(zoo_root, db)
    token = zoo.create_token("uploader")
    zoo.close()
    code = CHILD.format(
        tests=str(Path(__file__).parent), root=str(zoo_root), db=db, token=token, example=str(example_model)
    )
    env = {**os.environ, storage.CRASH_ENV: "renamed:pause=3"}
    publisher = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    folder = storage.version_dir(zoo_root, "crashy", "1")
    deadline = time.monotonic() + 60
    while not folder.is_dir() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert folder.is_dir()  # renamed into place, not in the index yet
    started = Zoo(zoo_root, db)  # waits for the publish lock instead of taking the folder for an orphan
    out, err = publisher.communicate(timeout=120)
    assert publisher.returncode == 0 and "published" in out, err
    assert [v.version for v in started.versions("crashy")] == ["1"]
    assert started.check_consistency() == []
    started.close()
