"""``kill -9`` in the middle of an epoch, then the same command: the run resumes from the last
intra-epoch checkpoint and, on the CPU with fixed seeds, ends with the same metrics as a run
that was never interrupted.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from conftest import RECIPE_DIR
from recipe_helpers import TINY_ENCODER_OVERRIDES

pytestmark = pytest.mark.slow


def command(demo_release, tiny_encoder, output):
    return [
        sys.executable, "train.py", "hparams/mtl.yaml", "--data_folder", demo_release,
        "--wav2vec2_hub", tiny_encoder, "--output_folder", str(output), "--number_of_epochs", "3",
        "--alpha", "0.1", "--beta", "0.1", "--ckpt_interval_minutes", "0",
        "--ckpt_interval_steps", "4", "--export_inference_model", "False", *TINY_ENCODER_OVERRIDES,
    ]


def run(args, **kwargs):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.Popen(args, cwd=RECIPE_DIR, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True, **kwargs)


def intra_epoch_checkpoints(save_folder):
    found = []
    if not os.path.isdir(save_folder):
        return found
    for name in os.listdir(save_folder):
        meta = os.path.join(save_folder, name, "CKPT.yaml")
        if name.startswith("CKPT") and os.path.isfile(meta):
            with open(meta) as meta_file:
                if "brain_intra_epoch_ckpt" in (yaml.safe_load(meta_file) or {}):
                    found.append(name)
    return found


def test_kill_9_mid_epoch_then_the_same_command_ends_like_an_uninterrupted_run(
    tmp_path, demo_release, tiny_encoder, ledger
):
    reference = run(command(demo_release, tiny_encoder, tmp_path / "reference"))
    interrupted_folder = tmp_path / "interrupted"
    interrupted = run(command(demo_release, tiny_encoder, interrupted_folder))
    # Wait until epoch 1 is logged and an intra-epoch checkpoint of epoch 2 exists, then kill -9
    deadline = time.time() + 600
    while time.time() < deadline:
        log = interrupted_folder / "train_log.txt"
        epochs_done = len(open(log).read().splitlines()) if log.exists() else 0
        if epochs_done == 1 and intra_epoch_checkpoints(interrupted_folder / "save"):
            break
        assert interrupted.poll() is None, interrupted.stdout.read()[-3000:]
        time.sleep(0.2)
    else:
        pytest.fail("no intra-epoch checkpoint in epoch 2")
    os.killpg(interrupted.pid, signal.SIGKILL)
    interrupted.wait()
    assert interrupted.returncode == -signal.SIGKILL
    assert not (interrupted_folder / "test_results.json").exists()

    resumed = run(command(demo_release, tiny_encoder, interrupted_folder))
    resumed_output, _ = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, resumed_output[-4000:]
    assert "Loading a checkpoint from" in resumed_output
    reference_output, _ = reference.communicate(timeout=900)
    assert reference.returncode == 0, reference_output[-4000:]

    expected = json.load(open(tmp_path / "reference" / "test_results.json"))
    got = json.load(open(interrupted_folder / "test_results.json"))
    # both ran all 3 epochs and tested the same checkpoint (of best validation UA, so any epoch)
    for folder in (tmp_path / "reference", interrupted_folder):
        assert sum(line.startswith("epoch:") for line in open(folder / "train_log.txt")) == 3
    assert got["confusion"] == expected["confusion"] and got["epoch"] == expected["epoch"]
    for key in ("WA", "UA", "CER", "WER", "recall", "loss"):  # the test loss: same weights
        assert got[key] == pytest.approx(expected[key], abs=1e-6), key
    # and the same class probabilities for every test utterance
    assert open(interrupted_folder / "predictions.csv").read() == open(
        tmp_path / "reference" / "predictions.csv").read()
    ledger("interruptions", "kill -9 mid-epoch, same command resumes to the same metrics")
