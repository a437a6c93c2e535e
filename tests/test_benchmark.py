"""The benchmark entry point runs at its smallest size and writes a complete JSON (no timing asserted)."""

import json
import math
import os
import subprocess
import sys

from conftest import ROOT


def test_benchmark_smallest_size_writes_finite_positive_figures(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "bench.py"), "--encoder", "tiny",
         "--steps", "1", "--batch_size", "2", "--seconds", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=600, env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| tiny |" in result.stdout and "DynamicBatchSampler" in result.stdout
    results = json.load(open(out))
    assert {"python", "torch", "speechbrain", "device", "threads"} <= set(results["environment"])
    [row] = results["train_step"]
    assert row["encoder"] == "tiny" and row["batch_size"] == 2
    for key in ("emotion_only_s", "three_heads_s", "overhead_ratio", "parameters"):
        assert math.isfinite(row[key]) and row[key] > 0, key
    batching = results["batching"]
    assert batching["turns"] == 5531
    for key in ("fixed_padded_fraction", "dynamic_padded_fraction", "audio_hours"):
        assert math.isfinite(batching[key]) and 0 < batching[key], key
    assert batching["fixed_padded_fraction"] < 1 and batching["dynamic_padded_fraction"] < 1
