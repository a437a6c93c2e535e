"""The local launcher: concurrent cells, one GPU each, never two cells on one GPU at a time.

Each cell is a real process that records which device it was given, whether it found its GPU
taken by another cell, and whether it met another cell running at the same time (files in a
shared folder, no timing assumed).
"""

import json
import os
import sys

from mtlser_lobes.studies.experiments import RESULTS_FILE, launch

CELL = """
import json, os, sys, time
folder, meeting = sys.argv[1], sys.argv[2]
gpu = os.environ.get("CUDA_VISIBLE_DEVICES")
# A GPU is held through a lock file: a second cell on the same GPU at the same time finds it taken.
lock = os.path.join(meeting, f"gpu{gpu}.lock")
try:
    os.close(os.open(lock, os.O_CREAT | os.O_EXCL))
    clash = False
except FileExistsError:
    clash = True
# Meet another cell: wait until at least two cells have arrived. Cells run one after the other would
# wait here until the deadline, so "met" proves concurrency without assuming how long anything takes.
open(os.path.join(meeting, "arrived_" + os.path.basename(folder)), "w").close()
deadline, met = time.time() + 60, False
while time.time() < deadline and not met:
    met = sum(name.startswith("arrived_") for name in os.listdir(meeting)) >= 2
    time.sleep(0.01)
if not clash:
    os.remove(lock)
json.dump({"gpu": gpu, "threads": os.environ.get("OMP_NUM_THREADS"), "clash": clash, "met": met},
          open(os.path.join(folder, "%s"), "w"))
""" % RESULTS_FILE


def specs(tmp_path, n):
    meeting = tmp_path / "meeting"
    meeting.mkdir()
    folders = [str(tmp_path / f"cell{i}") for i in range(n)]
    return [{"folder": f, "cwd": str(tmp_path), "attempts": 1, "env": {},
             "command": [sys.executable, "-c", CELL, f, str(meeting)]} for f in folders]


def records(outcomes):
    return [json.load(open(os.path.join(o["folder"], RESULTS_FILE))) for o in outcomes]


def test_each_cell_gets_one_gpu_and_no_gpu_runs_two_cells(tmp_path):
    outcomes = launch(specs(tmp_path, 6), "local", jobs=4, gpus=2, progress=False)
    assert [o["status"] for o in outcomes] == ["finished"] * 6
    runs = records(outcomes)
    assert {r["gpu"] for r in runs} == {"0", "1"}
    assert not any(r["clash"] for r in runs)  # never two cells on one GPU at a time
    assert all(r["met"] for r in runs)  # two GPUs: two cells at a time, even with --jobs 4


def test_cpu_cells_run_concurrently_and_share_the_cores(tmp_path):
    outcomes = launch(specs(tmp_path, 2), "local", jobs=2, gpus=0, progress=False)
    first, second = records(outcomes)
    assert first["gpu"] is None and second["gpu"] is None
    assert first["met"] and second["met"]  # both were running at once
    if "OMP_NUM_THREADS" not in os.environ:
        assert first["threads"] == str(max(1, (os.cpu_count() or 1) // 2))


def test_a_cell_that_fails_then_succeeds_is_retried(tmp_path):
    marker = tmp_path / "failed_once"
    flaky = (f"import os, sys, pathlib; m = pathlib.Path({str(marker)!r})\n"
             f"if not m.exists(): m.touch(); sys.exit(3)\n"
             f"open(os.path.join(sys.argv[1], {RESULTS_FILE!r}), 'w').write('{{}}')")
    spec = {"folder": str(tmp_path / "cell"), "cwd": str(tmp_path), "attempts": 2, "env": {},
            "command": [sys.executable, "-c", flaky, str(tmp_path / "cell")]}
    [outcome] = launch([spec], "local", progress=False)
    assert outcome["status"] == "finished" and outcome["attempts"] == 2
    log = open(outcome["log"]).read()
    assert "=== attempt 1 exited with 3" in log and "=== attempt 2 exited with 0" in log
