"""The job queue across processes: workers claiming at the same moment never get the same job."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from microzoo.zoo.service import Zoo

WORKER = """
import json, sys, time
from pathlib import Path
from microzoo.zoo.service import Zoo

zoo = Zoo(Path({root!r}), {db!r})
go = Path({go!r})
while not go.exists():
    time.sleep(0.005)
claimed = []
while (job := zoo.claim_job({worker!r})) is not None:
    claimed.append(job.id)
print(json.dumps(claimed))
"""


def test_worker_processes_never_share_a_job(zoo_root: Path, db: str, tmp_path: Path) -> None:
    zoo = Zoo(zoo_root, db)
    queued = {zoo.enqueue("try", version_id=None, payload={"n": n}) for n in range(120)}
    go = tmp_path / "go"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER.format(root=str(zoo_root), db=db, go=str(go), worker=f"w{n}")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for n in range(4)
    ]
    time.sleep(1.5)  # let every worker import and connect, then start them together
    go.touch()
    claimed = []
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
        claimed.append(json.loads(out))
    every = [job_id for jobs in claimed for job_id in jobs]
    assert sorted(every) == sorted(queued)  # each job exactly once, none lost
    assert sum(1 for jobs in claimed if jobs) >= 2, [len(jobs) for jobs in claimed]
    assert {zoo.job(job_id).claimed_by for job_id in claimed[0]} <= {"w0"}
    zoo.close()
