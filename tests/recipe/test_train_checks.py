"""train.py checks what a user typed before anything is written or loaded: one message, no traceback."""

import os
import subprocess
import sys

import pytest

import recipe_options
import train
from conftest import RECIPE_DIR
from iemocap_tree import build_tree

HPARAMS = os.path.join(RECIPE_DIR, "hparams", "mtl.yaml")

#: (options that differ from a good command line, what the message must say)
BAD_OPTIONS = {
    "alpha negative": ({"alpha": "-1"}, "--alpha must be a number >= 0 (0 switches its head off), not -1"),
    "alpha not a number": ({"alpha": "abc"}, "--alpha must be a number >= 0 (0 switches its head off), not 'abc'"),
    "beta negative": ({"beta": "-0.1"}, "--beta must be a number >= 0"),
    "protocol": ({"protocol": "speaker"}, "--protocol must be one of loso | random, not 'speaker'"),
    "bad_data": ({"bad_data": "ignore"}, "--bad_data must be one of stop | skip, not 'ignore'"),
    "test_session absent": ({"test_session": "7"}, "--test_session 7 is not among the sessions of"),
    "test_session not a number": ({"test_session": "five"}, "--test_session must be a whole number >= 1"),
    "n_speakers vs the data": ({"n_speakers": "3"}, "have 8 speakers: pass --n_speakers 8"),
    "n_speakers under random": ({"protocol": "random", "n_speakers": "8"}, "have 10 speakers: pass --n_speakers 10"),
    "n_speakers not a count": ({"n_speakers": "some"}, "--n_speakers must be auto or a whole number >= 1, not 'some'"),
    "data folder missing": ({"data_folder": "/nonexistent/IEMOCAP_full_release"},
                            "data_folder /nonexistent/IEMOCAP_full_release does not exist"),
    "unknown option": ({"alhpa": "0.1"}, "--alhpa is not an option of"),
    "layer choice": ({"emotion_layers": "all"}, "--emotion_layers must be one of last | weighted, not 'all'"),
    "ctc block": ({"ctc_block": "gru"}, "--ctc_block must be one of none | lstm | transformer, not 'gru'"),
    "loss weighting": ({"loss_weighting": "auto"}, "--loss_weighting must be one of fixed | uncertainty"),
    "ctc reduction": ({"ctc_loss_reduction": "sum"}, "--ctc_loss_reduction must be one of mean | frame"),
    "checkpoint average": ({"average_checkpoints": "0"}, "--average_checkpoints must be a whole number >= 1"),
    "warm-up": ({"alpha_warmup_epochs": "-2"}, "--alpha_warmup_epochs must be a whole number >= 0"),
    "valid split": ({"valid_split": "speaker"}, "--valid_split must be one of turns | session, not 'speaker'"),
    "label smoothing": ({"label_smoothing": "1"}, "--label_smoothing must be a number >= 0 and < 1, not 1"),
    "valid split under random": ({"protocol": "random", "valid_split": "session"},
                                 "--valid_split session holds out a whole training session, which needs --protocol loso"),
    "tensorboard switch": ({"use_tensorboard": "yes"}, "--use_tensorboard must be one of True | False, not 'yes'"),
}


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return build_tree(str(tmp_path_factory.mktemp("corpus")))


def command_line(release, output, **options):
    # An encoder that does not exist: a check that passed would fail on loading it.
    values = {"data_folder": release, "output_folder": str(output), "wav2vec2_hub": "/nonexistent/encoder"}
    values.update(options)
    return [HPARAMS] + [item for key, value in values.items() for item in (f"--{key}", value)]


@pytest.mark.parametrize("name", BAD_OPTIONS)
def test_a_bad_option_stops_with_one_message_before_anything_is_written(name, release, tmp_path, capsys):
    options, message = BAD_OPTIONS[name]
    output = tmp_path / "exp"
    assert train.run(command_line(release, output, **options)) == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("train.py: error: ") and message in stderr, stderr
    assert "Traceback" not in stderr
    assert not output.exists()


def test_several_bad_options_are_listed_together(release, tmp_path, capsys):
    assert train.run(command_line(release, tmp_path / "exp", alpha="-1", protocol="x")) == 2
    stderr = capsys.readouterr().err
    assert "--alpha must be" in stderr and "--protocol must be" in stderr


def test_verbose_keeps_the_traceback_of_a_user_error(release, tmp_path):
    with pytest.raises(recipe_options.UsageError, match="--alpha must be"):
        train.run(command_line(release, tmp_path / "exp", alpha="-1") + ["--verbose"])


def test_the_process_exits_2_without_a_traceback(release, tmp_path):
    result = subprocess.run(
        [sys.executable, "train.py", *command_line(release, tmp_path / "exp", alpha="abc")],
        cwd=RECIPE_DIR, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "train.py: error: bad option(s):",
        "  --alpha must be a number >= 0 (0 switches its head off), not 'abc'",
    ]
    assert "Traceback" not in result.stdout + result.stderr


def test_help_lists_the_own_flags(capsys):
    with pytest.raises(SystemExit) as done:
        train.run([HPARAMS, "--help"])
    assert done.value.code == 0
    usage = capsys.readouterr().out
    assert "--overwrite" in usage and "--verbose" in usage and "exit status" in usage
    assert "--debug_batches" in usage  # SpeechBrain's own help follows


@pytest.mark.parametrize("protocol, valid_split, expected", [("loso", "turns", 8), ("random", "turns", 10),
                                                             ("loso", "session", 6)])
def test_the_speaker_count_comes_from_the_data(release, tmp_path, protocol, valid_split, expected):
    """n_speakers auto (the default): no --n_speakers to type for either protocol or validation split."""
    values = recipe_options.hparams_values(HPARAMS, f"data_folder: {release}\nprotocol: {protocol}\n"
                                           f"valid_split: {valid_split}\noutput_folder: {tmp_path / 'exp'}")
    assert values["n_speakers"] == "auto"
    assert recipe_options.check_options(values) == [] and recipe_options.check_data(values) == []
    assert recipe_options.count_training_speakers(values) == expected
    overrides = recipe_options.with_override("alpha: 0.1\nn_speakers: auto", "n_speakers", expected)
    assert recipe_options.hparams_values(HPARAMS, overrides)["n_speakers"] == expected
