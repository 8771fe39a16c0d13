"""Every command in the documentation runs (the convention: docs/internals.md, "Documentation").

One case per page (``-k runner.md``): its ``bash`` and ``python`` blocks run in order in a fresh
folder holding ``data/``, slices of the shared data (tests/_docs.py). The other tests hold the
convention itself: every block has a language, every not-run marker a reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _docs import (
    FILES_PER_FOLDER,
    ROOT,
    SHARED_DATA,
    blocks,
    cli_words,
    convention_problems,
    make_data,
    pages,
    run_page,
    split_commands,
)

RUNNABLE = [page for page in pages() if any(block.runs for block in blocks(page))]


@pytest.mark.slow
@pytest.mark.parametrize("page", RUNNABLE)
def test_page_commands_run(page: str, tmp_path: Path) -> None:
    run = run_page(page, tmp_path)
    ran = sum(1 for block in blocks(page) if block.runs)
    assert ran and run.timings, page
    for command, seconds, how in run.timings:  # shown with -rA or -s: where a page's time goes
        print(f"{seconds:6.2f} s  {how:10}  {command}")


@pytest.mark.parametrize("page", pages())
def test_page_follows_the_convention(page: str) -> None:
    assert convention_problems(page) == []


def test_not_run_blocks_are_listed_with_their_reasons() -> None:
    """The report of what the tests do not run (shown with -rA), each with its reason."""
    not_run = [
        block for page in pages() for block in blocks(page) if block.lang in {"bash", "python"} and not block.runs
    ]
    for block in not_run:
        print(f"{block.where}: not run: {block.reason}")
        assert block.reason, block.where
    runnable = [block for page in pages() for block in blocks(page) if block.runs]
    assert len(runnable) > len(not_run)


def test_the_convention_is_enforced() -> None:
    page = """# A page

<!-- not run -->
```bash
make demo
```

<!-- not run: needs a SLURM cluster -->
```bash
sbatch job.sh
```

```
microzoo predict MODEL IMAGES -o OUT
```

<!-- not run: shown only -->
```text
output
```

```sh
ls
```
"""
    found = blocks("page.md", page)
    assert [(block.lang, block.runs, block.reason) for block in found] == [
        ("bash", False, None),
        ("bash", False, "needs a SLURM cluster"),
        ("", False, None),
        ("text", False, "shown only"),
        ("sh", False, None),
    ]
    problems = convention_problems("page.md", page)
    assert [problem.split(":")[1] for problem in problems] == ["4", "13", "18", "22"]
    assert "without a reason" in problems[0]
    assert "fence it with a language" in problems[1] and "'sh'" in problems[3]
    assert "never runs" in problems[2]


def test_commands_split_and_plain_calls_run_in_process() -> None:
    code = """# a comment
microzoo info data/bmz/unet2d_nuclei_broad   # the summary
microzoo predict data/bmz/unet2d_nuclei_broad \\
    data/dsb2018/test/images -o out/
cat > config.yaml <<'EOF'
epochs: 2
EOF
microzoo serve --root zoo --port 8765 &
microzoo search nuclei | head -3
"""
    commands = split_commands(code)
    assert len(commands) == 5
    assert commands[2] == "cat > config.yaml <<'EOF'\nepochs: 2\nEOF"
    assert cli_words(commands[0]) == ["info", "data/bmz/unet2d_nuclei_broad"]
    assert cli_words(commands[1]) == [
        "predict",
        "data/bmz/unet2d_nuclei_broad",
        "data/dsb2018/test/images",
        "-o",
        "out/",
    ]
    assert [cli_words(command) for command in commands[2:]] == [None, None, None]
    assert cli_words("microzoo predict M 'data/*.png' -o out") is None  # a glob: the shell decides


def test_data_keeps_the_layout_and_the_partners(tmp_path: Path) -> None:
    data = make_data(tmp_path / "data")
    images = sorted(path.stem for path in (data / "dsb2018" / "test" / "images").iterdir())
    labels = sorted(path.stem for path in (data / "dsb2018" / "test" / "labels").iterdir())
    assert len(images) == FILES_PER_FOLDER and images == labels
    assert (
        images
        == sorted(path.stem for path in (SHARED_DATA / "dsb2018" / "test" / "images").iterdir())[:FILES_PER_FOLDER]
    )
    assert sorted(p.name for p in (data / "w2s" / "train" / "noisy").iterdir()) == sorted(
        p.name for p in (data / "w2s" / "train" / "clean").iterdir()
    )
    # FMD: gt/NN.png pairs with the folder raw/NN/ of captures, itself sliced
    gt = sorted(p.stem for p in (data / "fmd_confocal_bpae_b" / "train" / "gt").iterdir())
    assert gt == sorted(p.name for p in (data / "fmd_confocal_bpae_b" / "train" / "raw").iterdir())
    assert len(list((data / "bsd68" / "train400").iterdir())) == FILES_PER_FOLDER
    package = data / "bmz" / "unet2d_nuclei_broad"
    shared = SHARED_DATA / "bmz" / "unet2d_nuclei_broad"
    assert not package.is_symlink() and sorted(p.name for p in package.iterdir()) == sorted(
        p.name for p in shared.iterdir()
    )
    assert all(not p.is_symlink() for p in package.rglob("*"))  # a copy: commands may edit it
    assert ROOT.is_dir()


def test_a_page_runs_in_order_with_its_server_in_the_background(tmp_path: Path) -> None:
    """What a page about the zoo relies on: ` &` starts the server, later blocks reach it, a failing
    command names its page and line, and the server is stopped at the end."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    page = f"""# Zoo

```bash
microzoo serve --root zoo --port {port} --workers 0 &
microzoo search nuclei --zoo http://127.0.0.1:{port}
echo "searched" > searched.txt
```

```python
import json, urllib.request
health = urllib.request.urlopen("http://127.0.0.1:{port}/id_map.json", timeout=10).status
```

```python
assert health == 200 and open("searched.txt").read() == "searched\\n"
```
"""
    run = run_page("zoo-page.md", tmp_path, page)
    assert [how for _, _, how in run.timings] == ["background", "in-process", "bash", "python", "python"]
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 1):
        pass  # stopped
    failing = page.replace("echo", "false && echo")
    with pytest.raises(AssertionError, match="zoo-page.md:3: exit status 1"):
        run_page("zoo-page.md", tmp_path / "again", failing)
