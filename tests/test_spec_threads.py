"""Descriptions read in threads at once (the zoo's server checks uploads in threads).

bioimageio.spec reads YAML with one module-level parser that is not thread-safe; unguarded, most
of these reads failed with errors like ``AttributeError: 'SequenceEndEvent' object has no
attribute 'anchor'`` (found by benchmarks/zoo_load.py: concurrent uploads refused as unreadable).
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from microzoo.package.load import convert_description
from microzoo.package.validate import ValidationReport, validate_package


def test_descriptions_read_in_threads_do_not_corrupt_each_other(shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / "bmz" / "unet2d_nuclei_broad" / "bioimageio.yaml"
    errors: list[str] = []
    names: list[str] = []

    def read(i: int) -> None:
        folder = tmp_path / str(i)
        folder.mkdir()
        shutil.copy(source, folder / "rdf.yaml")
        for _ in range(5):
            try:
                descr, _ = convert_description(folder / "rdf.yaml")
                names.append(str(descr.name))
            except Exception as error:  # noqa: BLE001  (every failure is what the test counts)
                errors.append(repr(error)[:200])

    threads = [threading.Thread(target=read, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert names == ["UNet 2D Nuclei Broad"] * 20


def test_validation_in_threads_agrees(shared_data: Path) -> None:
    folder = shared_data / "bmz" / "unet2d_nuclei_broad"
    reports: list[ValidationReport] = []
    threads = [threading.Thread(target=lambda: reports.append(validate_package(folder))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(reports) == 3 and all(not r.errors for r in reports), [r.errors for r in reports]
