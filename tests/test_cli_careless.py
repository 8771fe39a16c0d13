"""`microzoo predict` as a careless user types it: each mistake is refused before any work with
exit code 2, one message naming the file or option, no traceback, and nothing written."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

MICROZOO = [sys.executable, "-m", "microzoo.cli"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MICROZOO, *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def refused(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Error:" in result.stderr and "Traceback" not in result.stderr, result.stderr
    message = " ".join(result.stderr.split())  # rich wraps long lines
    for text in expected:
        assert text in message, (text, result.stderr)


def nothing_in(folder: Path) -> bool:
    return not folder.exists() or not any(folder.iterdir())


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("in") / "cells.tif"
    tifffile.imwrite(path, np.random.default_rng(0).integers(0, 255, (96, 96), dtype=np.uint8))
    return path


def test_square_brackets_survive_in_error_messages(example_model: Path, tmp_path: Path) -> None:
    broken = tmp_path / "cell[red].tif"
    broken.write_bytes(b"II*\x00" + b"\x00" * 20)
    out = tmp_path / "out[1]"
    refused(run("predict", str(example_model), str(broken), "-o", str(out)), "cell[red].tif")
    assert nothing_in(out)


def test_a_read_only_output_folder_is_refused_before_computing(
    example_model: Path, image: Path, tmp_path: Path
) -> None:
    out = tmp_path / "read-only"
    out.mkdir()
    if os.geteuid() == 0:  # root writes through permissions: make the folder immutable instead
        if subprocess.run(["chattr", "+i", str(out)], capture_output=True).returncode != 0:
            pytest.skip("running as root without chattr: no folder is read-only to this process")
    else:
        out.chmod(0o555)
    try:
        refused(
            run("predict", str(example_model), str(image), "-o", str(out)),
            "cannot write into the output folder",
            str(out),
        )
        assert nothing_in(out)
    finally:
        subprocess.run(["chattr", "-i", str(out)], capture_output=True)
        out.chmod(0o755)


def test_an_output_folder_under_proc_is_refused(example_model: Path, image: Path) -> None:
    refused(run("predict", str(example_model), str(image), "-o", "/proc/microzoo-out"), "/proc/microzoo-out")


def test_an_existing_file_where_the_output_folder_should_be_is_refused(
    example_model: Path, image: Path, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    refused(run("predict", str(example_model), str(image), "-o", str(notes)), f"{notes} is a file, not a folder")
    assert notes.read_text() == "my notes" and sorted(tmp_path.iterdir()) == [notes]


def test_a_full_disk_is_found_before_computing(example_model: Path, image: Path, tmp_path: Path) -> None:
    """The disk reports 1000 bytes free (shutil.disk_usage replaced at start-up by a
    sitecustomize module): refused before the prediction, naming the folder."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import shutil, collections\n"
        "_usage = collections.namedtuple('usage', 'total used free')\n"
        "shutil.disk_usage = lambda path: _usage(10**9, 10**9 - 1000, 1000)\n"
    )
    out = tmp_path / "out"
    env = {"PYTHONPATH": os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")])}
    refused(run("predict", str(example_model), str(image), "-o", str(out), env=env), "MB free", str(out))
    assert nothing_in(out)


def test_an_existing_output_is_kept_unless_overwrite(example_model: Path, image: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = run("predict", str(example_model), str(image), "-o", str(out), "--weights", "onnx")
    assert first.returncode == 0, first.stderr
    written = out / "cells.tif"
    before = tifffile.imread(written)
    written.write_bytes(b"the user's own file")
    refused(run("predict", str(example_model), str(image), "-o", str(out)), str(written), "--overwrite")
    assert written.read_bytes() == b"the user's own file"
    again = run("predict", str(example_model), str(image), "-o", str(out), "--weights", "onnx", "--overwrite")
    assert again.returncode == 0, again.stderr
    np.testing.assert_array_equal(tifffile.imread(written), before)


def test_temporaries_of_a_killed_run_are_removed(example_model: Path, image: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = out / f".cells.partial-{gone.pid}-0123abcd.tif"
    stale.write_bytes(b"half")
    older = out / ".cells.partial-89abcdef.tif"  # the name before the process id was added
    older.write_bytes(b"half")
    live = out / f".cells.partial-{os.getpid()}-4567abcd.tif"  # a run still writing
    live.write_bytes(b"half")
    result = run("predict", str(example_model), str(image), "-o", str(out), "--weights", "onnx")
    assert result.returncode == 0, result.stderr
    assert not stale.exists() and not older.exists() and live.exists()
    assert (out / "cells.tif").exists()


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--tile", "0", "--tile 0"),
        ("--tile", "y=0,x=256", "--tile y=0,x=256"),
        ("--memory-budget", "0", "'0'"),
        ("--memory-budget", "0GB", "'0GB'"),
        ("--channel", "x", "--channel 'x'"),
        ("--channel", "-1", "--channel -1"),
    ],
)
def test_options_that_cannot_work_are_refused(
    option: str, value: str, expected: str, example_model: Path, image: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    refused(run("predict", str(example_model), str(image), "-o", str(out), option, value), expected)
    assert nothing_in(out)


def test_channel_chooses_the_channel_the_model_gets(example_model: Path, shared_data: Path, tmp_path: Path) -> None:
    import imageio.v3 as iio

    rgba = sorted((shared_data / "dsb2018" / "test" / "images").glob("*.png"))[0]
    source = tmp_path / "rgba.png"
    shutil.copy(rgba, source)
    result = run(
        "predict", str(example_model), str(source), "-o", str(tmp_path / "out"), "--weights", "onnx", "--channel", "1"
    )
    assert result.returncode == 0, result.stderr
    assert "used channel(s) 1 of 4" in result.stdout and "grayscale" not in result.stdout
    import microzoo

    expected = microzoo.load_model(example_model, weights="onnx").predict(iio.imread(rgba)[..., 1]).only
    np.testing.assert_allclose(tifffile.imread(tmp_path / "out" / "rgba.tif"), expected, atol=1e-5)
    bad = run("predict", str(example_model), str(source), "-o", str(tmp_path / "out2"), "--channel", "0,7")
    refused(bad, str(source), "channel(s) 7 do not exist", "4 channel(s)")
    assert nothing_in(tmp_path / "out2")


def test_a_few_nan_pixels_are_reported_and_stay_nan(example_model: Path, tmp_path: Path) -> None:
    """Two files, one with three NaN pixels: the prediction is finite elsewhere, NaN there, and
    the notice names that file only."""
    rng = np.random.default_rng(1)
    folder = tmp_path / "in"
    folder.mkdir()
    clean = rng.normal(100, 20, (128, 128)).astype(np.float32)
    tifffile.imwrite(folder / "clean.tif", clean)
    broken = clean.copy()
    spots = ([5, 60, 127], [7, 60, 0])
    broken[spots] = np.nan
    tifffile.imwrite(folder / "broken.tif", broken)
    out = tmp_path / "out"
    result = run("predict", str(example_model), str(folder), "-o", str(out), "--weights", "onnx")
    assert result.returncode == 0, result.stderr
    stdout = " ".join(result.stdout.split())
    assert "input 'raw': 3 of 16384 pixels were not finite (3 NaN value(s))" in stdout
    assert "(broken.tif)" in stdout and "clean.tif)" not in stdout
    predicted = tifffile.imread(out / "broken.tif")
    mask = np.zeros(predicted.shape, bool)
    mask[spots] = True
    assert np.isnan(predicted[mask]).all() and np.isfinite(predicted[~mask]).all()
    assert np.isfinite(tifffile.imread(out / "clean.tif")).all()
