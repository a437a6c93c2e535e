"""The local launcher: concurrent cells, one GPU each, never two cells on one GPU at a time.

Each cell is a real process that records which device it was given and when it ran.
"""

import json
import os
import sys

from mtlser_lobes.experiments import RESULTS_FILE, launch

CELL = """
import json, os, sys, time
start = time.time()
time.sleep(0.5)
json.dump({"gpu": os.environ.get("CUDA_VISIBLE_DEVICES"), "threads": os.environ.get("OMP_NUM_THREADS"),
           "start": start, "end": time.time()}, open(os.path.join(sys.argv[1], "%s"), "w"))
""" % RESULTS_FILE


def specs(tmp_path, n):
    folders = [str(tmp_path / f"cell{i}") for i in range(n)]
    return [{"folder": f, "cwd": str(tmp_path), "attempts": 1, "env": {},
             "command": [sys.executable, "-c", CELL, f]} for f in folders]


def records(outcomes):
    return [json.load(open(os.path.join(o["folder"], RESULTS_FILE))) for o in outcomes]


def test_each_cell_gets_one_gpu_and_no_gpu_runs_two_cells(tmp_path):
    outcomes = launch(specs(tmp_path, 6), "local", jobs=4, gpus=2, progress=False)
    assert [o["status"] for o in outcomes] == ["finished"] * 6
    runs = records(outcomes)
    assert {r["gpu"] for r in runs} == {"0", "1"}
    for gpu in ("0", "1"):
        spans = sorted((r["start"], r["end"]) for r in runs if r["gpu"] == gpu)
        assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:]))
    # two GPUs: two cells at a time, even with --jobs 4
    overlapping = [a for a in runs if any(a is not b and a["start"] < b["end"] and b["start"] < a["end"] for b in runs)]
    assert overlapping


def test_cpu_cells_run_concurrently_and_share_the_cores(tmp_path):
    outcomes = launch(specs(tmp_path, 2), "local", jobs=2, gpus=0, progress=False)
    first, second = records(outcomes)
    assert first["gpu"] is None and second["gpu"] is None
    assert first["start"] < second["end"] and second["start"] < first["end"]
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
