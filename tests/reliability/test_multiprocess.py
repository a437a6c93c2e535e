"""``torchrun --nproc_per_node=2`` with gloo on the CPU: the three-head model trains and tests,
the data is prepared once, logs and checkpoints are written once, every process exits cleanly,
and the test metrics equal a single-process evaluation of the same checkpoint.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import RECIPE_DIR
from recipe_helpers import TINY_ENCODER_OVERRIDES

pytestmark = pytest.mark.slow


def test_torchrun_two_processes_train_test_and_match_a_single_process(
    tmp_path, demo_release, tiny_encoder, ledger
):
    output = tmp_path / "ddp"
    args = [
        "train.py", "hparams/mtl.yaml", "--data_folder", demo_release, "--wav2vec2_hub", tiny_encoder,
        "--output_folder", str(output), "--number_of_epochs", "2", "--alpha", "0.1", "--beta", "0.1",
        "--export_inference_model", "False", *TINY_ENCODER_OVERRIDES,
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    # --standalone: a free port of its own, so that concurrent runs never meet
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    ddp = subprocess.run(
        [*torchrun, *args, "--distributed_backend", "gloo", "--device", "cpu"],
        cwd=RECIPE_DIR, env=env, capture_output=True, text=True, timeout=900,
    )
    output_text = ddp.stdout + ddp.stderr
    # Strict: a rank that aborts in teardown fails the test (train.py closes the group itself)
    assert ddp.returncode == 0, output_text[-5000:]
    assert "terminate called" not in output_text
    # Prepared once (run_on_main), each epoch saved once, the log written once
    assert sum("iemocap_prepare - train: " in line for line in output_text.splitlines()) == 1
    assert output_text.count("Saved an end-of-epoch checkpoint") == 2
    log = open(output / "train_log.txt").read().splitlines()
    assert len(log) == 3 and log[0].startswith("epoch: 1,") and log[1].startswith("epoch: 2,")
    # the checkpoint of best validation UA is tested, whichever epoch it is
    assert log[2].startswith(("Epoch loaded: 1 - test loss", "Epoch loaded: 2 - test loss"))
    # kept: the best and the most recent (the same one, or two), none half-written
    checkpoints = [d for d in os.listdir(output / "save") if d.startswith("CKPT")]
    assert len(checkpoints) in (1, 2)
    assert not [f for d in checkpoints for f in os.listdir(output / "save" / d) if f.endswith(".pending")]
    ddp_results = json.load(open(output / "test_results.json"))
    ddp_predictions = open(output / "predictions.csv").read()
    shutil.copy(output / "test_results.json", tmp_path / "ddp_results.json")

    # The same command in one process: training is finished, so it only tests the checkpoint
    single = subprocess.run([sys.executable, *args], cwd=RECIPE_DIR, env=env, capture_output=True,
                            text=True, timeout=900)
    assert single.returncode == 0, (single.stdout + single.stderr)[-4000:]
    single_results = json.load(open(output / "test_results.json"))
    assert single_results["n_utterances"] == ddp_results["n_utterances"] > 0
    assert single_results["confusion"] == ddp_results["confusion"]
    for key in ("WA", "UA", "CER", "WER", "loss"):
        assert single_results[key] == pytest.approx(ddp_results[key], abs=1e-5), key
    assert open(output / "predictions.csv").read() == ddp_predictions
    ledger("multi-process", "torchrun 2 ranks (gloo): train, test, clean exit, metrics = 1 process")
