"""The benchmark entry point runs at its smallest size and writes a complete JSON (no timing asserted)."""

import json
import math
import os
import subprocess
import sys

import pytest
from conftest import ROOT


def _numbers(value, path="results"):
    """Every number in a JSON value, with where it is."""
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _numbers(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _numbers(item, f"{path}[{i}]")


@pytest.mark.slow
def test_benchmark_smallest_size_writes_finite_positive_figures(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "bench.py"), "--encoder", "tiny",
         "--steps", "1", "--batch_size", "2", "--seconds", "1", "--epoch_turns", "12",
         "--inference_files", "3", "--repeats", "1", "--num_workers", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=900, env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for table in ("| tiny |", "DynamicBatchSampler", "| tiny | reference |", "| tiny | bf16 |"):
        assert table in result.stdout, table
    results = json.load(open(out))
    environment = results["environment"]
    assert {"python", "torch", "speechbrain", "device", "threads"} <= set(environment)
    # The instruction sets that decide bf16 and int8 speed, in the JSON and above the tables
    import torch

    assert environment["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    for flag in ("avx512_bf16", "amx", "vnni"):
        assert isinstance(environment[flag], bool), flag
    assert environment["precision_auto"] in ("fp32", "bf16") and environment["cpu_model"]
    header = f"torch capability {environment['cpu_capability']} (AVX512-BF16 "
    assert result.stdout.count(header) >= 3, result.stdout[:2000]  # top, epoch and inference tables

    [row] = results["train_step"]
    assert row["encoder"] == "tiny" and row["batch_size"] == 2
    for key in ("emotion_only_s", "three_heads_s", "overhead_ratio", "parameters"):
        assert math.isfinite(row[key]) and row[key] > 0, key

    batching = results["batching"]
    assert batching["turns"] == 5531
    assert 0 < batching["dynamic_padded_fraction"] < batching["fixed_padded_fraction"] < 1

    epochs = {row["config"]: row for row in results["epoch"]}
    assert set(epochs) == {"reference", "ours_fp32", "ours_bf16"}
    for row in epochs.values():
        assert row["turns"] == 12 and row["precision"] in ("fp32", "bf16")
        for key in ("epoch_s", "loader_s", "loader_utterances_per_s", "train_utterances_per_s",
                    "full_epoch_projected_s", "speedup_vs_reference", "peak_rss_mib", "process_peak_rss_mib",
                    "train_loss", "audio_s"):
            assert math.isfinite(row[key]) and row[key] > 0, key
        assert 0 <= row["padded_fraction"] < 1
    # The full epoch is projected from the subset's audio
    assert epochs["reference"]["full_epoch_projected_s"] > epochs["reference"]["epoch_s"]

    variants = {row["variant"]: row for row in results["inference"]}
    assert set(variants) == {"fp32", "bf16", "int8", "onnx", "onnx-int8"}
    for row in variants.values():
        for key in ("rtf_interface", "rtf_bare_encoder", "throughput_interface_audio_s_per_s",
                    "throughput_bare_encoder_audio_s_per_s", "throughput_ratio", "peak_rss_interface_mib",
                    "peak_rss_bare_mib", "process_peak_rss_mib", "bare_encoder_gflop_per_s"):
            assert math.isfinite(row[key]) and row[key] > 0, key
        # torch's profiler for the torch rows, ONNX Runtime's for the ONNX rows
        assert row["top_ops"] and all(op["self_ms"] > 0 for op in row["top_ops"])
        assert sum(op["share"] for op in row["top_ops"]) <= 1 + 1e-9
    assert "Conv" in {op["op"] for op in variants["onnx"]["top_ops"]}  # ONNX operator types
    assert "change_vs_fp32" not in variants["fp32"]
    # Every speed is also a ratio against torch fp32 in the same run; targets are ratios
    for variant in ("bf16", "int8", "onnx", "onnx-int8"):
        row = variants[variant]
        assert row["speedup_vs_torch_fp32"] == pytest.approx(variants["fp32"]["rtf_interface"] / row["rtf_interface"])
    assert variants["onnx-int8"]["speedup_target"] == 3.5 and variants["bf16"]["speedup_target"] == 2.2
    assert variants["onnx-int8"]["speedup_target_met"] == (variants["onnx-int8"]["speedup_vs_torch_fp32"] >= 3.5)
    for variant in ("bf16", "int8", "onnx", "onnx-int8"):
        change = variants[variant]["change_vs_fp32"]
        assert 0 <= change["emotion_agreement"] <= 1 and change["transcript_char_edit_rate"] >= 0
        assert 0 <= change["max_probability_difference"] < 1
    # the fp32 ONNX graph answers as the torch model does
    assert variants["onnx"]["change_vs_fp32"]["max_probability_difference"] < 1e-4
    assert variants["onnx"]["change_vs_fp32"]["emotion_agreement"] == 1
    assert "| tiny | onnx |" in result.stdout and "| tiny | onnx-int8 |" in result.stdout

    for path, number in _numbers(results):
        assert math.isfinite(number), path
