"""A NaN batch is skipped and counted; a run that keeps producing them stops with a clear message.

The fault is a training wav corrupted *after* preparation (so the preparation's
checks cannot catch it): its samples are NaN, so the loss of its batch is NaN.
"""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import RECIPE_DIR
from iemocap_prepare import prepare_iemocap
from iemocap_tree import build_tree
from recipe_helpers import TINY_ENCODER_OVERRIDES, parse_train_log

pytestmark = pytest.mark.slow


def prepared_with_nan_wavs(tmp_path, n_bad):
    """Prepares a tree, then points ``n_bad`` train.csv rows (all when None) at a NaN wav."""
    release = build_tree(str(tmp_path / "corpus"))
    output = tmp_path / "exp"
    prepare_iemocap(release, str(output))
    nan_wav = str(tmp_path / "nan.wav")
    samples = np.full(16000, 0.1, dtype=np.float32)
    samples[::7] = np.nan
    sf.write(nan_wav, samples, 16000, subtype="FLOAT")
    with open(output / "train.csv", newline="") as csv_file:
        rows = list(csv.DictReader(csv_file))
    for row in rows[: len(rows) if n_bad is None else n_bad]:
        row["wav"] = nan_wav
    with open(output / "train.csv", "w", newline="") as csv_file:
        writer = csv.DictWriter(csv_file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return release, output


def train(release, output, tiny_encoder, epochs):
    return subprocess.run(
        [sys.executable, "train.py", "hparams/mtl.yaml", "--data_folder", release,
         "--output_folder", str(output), "--skip_prep", "True", "--wav2vec2_hub", tiny_encoder,
         "--number_of_epochs", str(epochs), "--batch_size", "4", "--export_inference_model", "False",
         *TINY_ENCODER_OVERRIDES],
        cwd=RECIPE_DIR, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )


def test_a_nan_batch_is_skipped_counted_and_leaves_the_weights_finite(tmp_path, tiny_encoder, ledger):
    release, output = prepared_with_nan_wavs(tmp_path, n_bad=1)
    result = train(release, output, tiny_encoder, epochs=2)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    epochs = [entry for entry in parse_train_log(output / "train_log.txt") if "train" in entry]
    assert [entry["train"]["nonfinite_batches_skipped"] for entry in epochs] == [1.0, 1.0]
    assert all(np.isfinite(entry["train"]["loss"]) for entry in epochs)
    results = json.load(open(output / "test_results.json"))
    assert np.isfinite(results["UA"]) and results["n_utterances"] > 0
    [checkpoint] = [d for d in os.listdir(output / "save") if d.startswith("CKPT")]
    for name in ("wav2vec2", "emotion_head"):
        state = torch.load(output / "save" / checkpoint / f"{name}.ckpt", weights_only=True)
        assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point()), name
    ledger("non-finite losses", "a NaN batch per epoch, skipped")


def test_persistent_nan_losses_stop_the_run_with_a_clear_message(tmp_path, tiny_encoder, ledger):
    release, output = prepared_with_nan_wavs(tmp_path, n_bad=None)
    result = train(release, output, tiny_encoder, epochs=1)
    assert result.returncode != 0
    assert "Loss is not finite and patience is exhausted" in result.stdout + result.stderr
    ledger("non-finite losses", "every batch NaN, stopped after nonfinite_patience")
