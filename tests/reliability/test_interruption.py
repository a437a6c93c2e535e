"""``kill -9`` in the middle of an epoch, or after an epoch is logged but before its
checkpoint is saved, then the same command: the run resumes from the last checkpoint, logs
each epoch once and, on the CPU with fixed seeds, ends with the same metrics as a run that was
never interrupted.
"""

import json
import os
import shutil
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


def checkpoints(save_folder):
    """``(name, epoch counter, intra-epoch?)`` of each complete checkpoint in ``save_folder``."""
    found = []
    if not os.path.isdir(save_folder):
        return found
    for name in os.listdir(save_folder):
        meta = os.path.join(save_folder, name, "CKPT.yaml")
        counter = os.path.join(save_folder, name, "counter.ckpt")
        if name.startswith("CKPT") and os.path.isfile(meta) and os.path.isfile(counter):
            with open(meta) as meta_file, open(counter) as counter_file:
                intra = "brain_intra_epoch_ckpt" in (yaml.safe_load(meta_file) or {})
                found.append((name, int(counter_file.read()), intra))
    return found


def epoch_lines(folder):
    return [line.split(",")[0] for line in open(folder / "train_log.txt") if line.startswith("epoch:")]


def assert_same_results(folder, reference_folder):
    expected = json.load(open(reference_folder / "test_results.json"))
    got = json.load(open(folder / "test_results.json"))
    # both ran all 3 epochs, each logged once, and tested the same checkpoint (of best validation UA)
    assert epoch_lines(folder) == epoch_lines(reference_folder) == ["epoch: 1", "epoch: 2", "epoch: 3"]
    assert got["confusion"] == expected["confusion"] and got["epoch"] == expected["epoch"]
    for key in ("WA", "UA", "CER", "WER", "recall", "loss"):  # the test loss: same weights
        assert got[key] == pytest.approx(expected[key], abs=1e-6), key
    # and the same class probabilities for every test utterance
    assert open(folder / "predictions.csv").read() == open(reference_folder / "predictions.csv").read()


def test_kill_9_mid_epoch_then_the_same_command_ends_like_an_uninterrupted_run(
    tmp_path, demo_release, tiny_encoder, ledger
):
    reference = run(command(demo_release, tiny_encoder, tmp_path / "reference"))
    interrupted_folder = tmp_path / "interrupted"
    interrupted = run(command(demo_release, tiny_encoder, interrupted_folder))
    # Wait until an intra-epoch checkpoint of epoch 2 exists, then kill -9
    deadline = time.time() + 600
    while time.time() < deadline:
        if any(intra and epoch == 2 for _, epoch, intra in checkpoints(interrupted_folder / "save")):
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

    assert_same_results(interrupted_folder, tmp_path / "reference")
    ledger("interruptions", "kill -9 mid-epoch, same command resumes to the same metrics")


def test_killed_between_logging_an_epoch_and_saving_its_checkpoint_logs_it_once(
    tmp_path, demo_release, tiny_encoder, ledger
):
    reference_folder = tmp_path / "reference"
    reference = run(command(demo_release, tiny_encoder, reference_folder))
    reference_output, _ = reference.communicate(timeout=900)
    assert reference.returncode == 0, reference_output[-4000:]
    # What a kill after epoch 3 is logged and before its checkpoint is saved leaves
    folder = tmp_path / "killed"
    shutil.copytree(reference_folder, folder)
    last = max(checkpoints(folder / "save"), key=lambda checkpoint: checkpoint[1])
    assert last[1] == 3 and not last[2]
    shutil.rmtree(folder / "save" / last[0])
    for name in ("test_results.json", "predictions.csv"):
        (folder / name).unlink()
    resumed = run(command(demo_release, tiny_encoder, folder))
    resumed_output, _ = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, resumed_output[-4000:]
    assert "line(s) logged after the recovered checkpoint" in resumed_output
    assert_same_results(folder, reference_folder)
    ledger("interruptions", "kill -9 between logging an epoch and saving its checkpoint")
