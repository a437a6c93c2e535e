"""End-to-end: train.py hparams/mtl.yaml on generated corpora with the tiny encoder."""

import csv
import glob
import json
import os

import pytest

from conftest import RAVDESS_RELEASE
from recipe_helpers import TINY_ENCODER_OVERRIDES, parse_train_log, run_train

pytestmark = pytest.mark.slow


def test_train_ctc_only_then_resume(tmp_path, tiny_encoder, demo_release):
    output = str(tmp_path / "exp")
    args = [
        "--wav2vec2_hub", tiny_encoder, "--data_folder", demo_release, "--output_folder", output,
        "--alpha", "0.3", "--beta", "0", "--number_of_epochs", "2", *TINY_ENCODER_OVERRIDES,
    ]
    run_train(args)

    checkpoints = glob.glob(os.path.join(output, "save", "CKPT+*"))
    assert checkpoints, "no checkpoint saved"
    for name in ("wav2vec2.ckpt", "emotion_head.ckpt", "model_optimizer.ckpt", "wav2vec2_optimizer.ckpt"):
        assert os.path.isfile(os.path.join(checkpoints[0], name)), name

    with open(os.path.join(output, "test_results.json")) as f:
        results = json.load(f)
    for key in ("WA", "UA", "CER", "WER", "recall", "confusion"):
        assert key in results
    assert 0 <= results["UA"] <= 100 and results["alpha"] == 0.3 and results["beta"] == 0
    assert "speaker_acc" not in results and "beta = 0" in results["speaker_note"]
    with open(os.path.join(output, "test.csv")) as f:
        n_test = sum(1 for _ in csv.DictReader(f))
    with open(os.path.join(output, "predictions.csv")) as f:
        predictions = list(csv.DictReader(f))
    assert len(predictions) == n_test == results["n_utterances"]
    assert {"p_neu", "p_hap", "p_ang", "p_sad", "wrd_pred"} <= set(predictions[0])

    log = parse_train_log(os.path.join(output, "train_log.txt"))
    epochs = [entry for entry in log if "train" in entry]
    assert [entry["meta"]["epoch"] for entry in epochs] == [1, 2]
    # alpha warms up over the first 2 epochs (the default): 0 in epoch 1, half of 0.3 in epoch 2
    assert [entry["train"]["alpha_effective"] for entry in epochs] == pytest.approx([0.0, 0.15])
    for entry in epochs:
        alpha = entry["train"]["alpha_effective"]
        for stage in ("train", "valid"):
            terms = entry[stage]
            assert "loss_speaker" not in terms  # beta = 0: the speaker head does not run
            assert terms["loss"] == pytest.approx(terms["loss_emotion"] + alpha * terms["loss_ctc"], abs=0.02)
            assert terms["loss_ctc"] > 0.1 and terms["loss_emotion"] > 0.1

    # The same command with more epochs resumes: epoch 3 only, from the saved checkpoint.
    args[args.index("--number_of_epochs") + 1] = "3"
    result = run_train(args)
    assert "Loading a checkpoint" in result.stderr + result.stdout
    log = parse_train_log(os.path.join(output, "train_log.txt"))
    assert [entry["meta"]["epoch"] for entry in log if "train" in entry] == [1, 2, 3]


@pytest.mark.skipif(not os.path.isdir(RAVDESS_RELEASE), reason="../shared/ravdess_iemocap_layout is absent")
def test_recipe_reads_real_speech_in_iemocap_layout(tmp_path, tiny_encoder):
    output = str(tmp_path / "ravdess")
    run_train([
        "--wav2vec2_hub", tiny_encoder, "--data_folder", RAVDESS_RELEASE, "--output_folder", output,
        "--alpha", "0.3", "--beta", "0.1", "--number_of_epochs", "1", *TINY_ENCODER_OVERRIDES,
    ])
    with open(os.path.join(output, "test_results.json")) as f:
        results = json.load(f)
    assert results["n_utterances"] == 56  # session 5 of the 280 kept turns
    assert "unseen" in results["speaker_note"]


#: Messages that said nothing about a user's run and are silenced (mtlser_lobes.quiet).
NOISE = ("torchvision is not available", "gradient_checkpointing", "CategoricalEncoder is not empty",
         "FutureWarning", "Traceback")


def test_speechbrain_debug_mode_runs_end_to_end(tmp_path, tiny_encoder, demo_release):
    # SpeechBrain's recipe check, exactly: --debug --debug_batches 2 --debug_epochs 2 (plus the
    # offline encoder and the test corpus). Debug checkpoints live in a temporary folder; the
    # model is exported from there.
    output = str(tmp_path / "debug")
    result = run_train([
        "--debug", "--debug_batches", "2", "--debug_epochs", "2",
        "--wav2vec2_hub", tiny_encoder, "--data_folder", demo_release, "--output_folder", output,
        *TINY_ENCODER_OVERRIDES,
    ])
    assert os.path.isfile(os.path.join(output, "test_results.json"))
    assert not [name for name in os.listdir(os.path.join(output, "save")) if name.startswith("CKPT")]
    from mtlser_lobes.inference.interface import MTLSER

    model = MTLSER.from_hparams(source=os.path.join(output, "model"), run_opts={"device": "cpu"})
    with open(os.path.join(output, "test.csv")) as f:
        wav = next(csv.DictReader(f))["wav"].replace("$data_root", demo_release)
    assert model.predict_file(wav).emotion in ("neu", "hap", "ang", "sad")
    for noise in NOISE:
        assert noise not in result.stdout + result.stderr, noise
