"""mtlser-infer's bad arguments: one line on stderr, exit status 2, no traceback, before the model loads."""

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from conftest import ROOT
from mtlser_lobes.inference import cli


@pytest.fixture()
def files(tmp_path):
    """A model folder that is never loaded (every case fails first), a wav, a folder with no audio."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "hyperparams.yaml").write_text("# checks fail before this is read\n")
    wav = str(tmp_path / "a.wav")
    soundfile.write(wav, 0.1 * np.random.default_rng(0).standard_normal(16000).astype("float32"), 16000)
    no_audio = tmp_path / "notes"
    no_audio.mkdir()
    (no_audio / "readme.txt").write_text("no audio here\n")
    return {"model": str(model), "wav": wav, "no_audio": str(no_audio), "tmp": str(tmp_path)}


#: name -> (arguments after the model folder, with {wav}/{no_audio}/{tmp} filled in, expected message)
BAD_ARGUMENTS = {
    "batch_size 0": (["{wav}", "--batch_size", "0"], "argument --batch_size: must be a whole number greater than 0, not 0"),
    "batch_size -1": (["{wav}", "--batch_size", "-1"], "must be a whole number greater than 0, not -1"),
    "batch_size text": (["{wav}", "--batch_size", "two"], "takes a whole number greater than 0, not 'two'"),
    "segment_s 0": (["{wav}", "--segment_s", "0"], "argument --segment_s: must be a number greater than 0, not 0"),
    "device cuda without a GPU": (["{wav}", "--device", "cuda"], "--device cuda: no CUDA GPU is visible here"),
    "device unknown": (["{wav}", "--device", "tpu0"], "--device tpu0 is not a torch device"),
    "fp16 on the CPU": (["{wav}", "--precision", "fp16"], "--precision fp16 needs a CUDA device"),
    "folder without audio": (["{no_audio}"], "{no_audio} is a folder with no audio file in it"),
    "folder given to --enroll": (["{wav}", "--enroll", "anna={tmp}"], "--enroll anna: {tmp} is a folder"),
    "bad --enroll": (["{wav}", "--enroll", "anna"], "--enroll takes NAME=a.wav,b.wav, not 'anna'"),
}


@pytest.mark.parametrize("name", BAD_ARGUMENTS)
def test_a_bad_argument_gives_one_line_and_exit_status_2(name, files, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    arguments, message = BAD_ARGUMENTS[name]
    status = cli.main([files["model"]] + [a.format(**files) for a in arguments])
    stderr = capsys.readouterr().err
    assert status == 2
    assert stderr.count("\n") == 1 and stderr.startswith("mtlser-infer: error: "), stderr
    assert message.format(**files) in stderr


def test_a_folder_that_is_not_a_model(files, capsys):
    assert cli.main([files["tmp"], files["wav"]]) == 2
    assert "is not a model folder (no hyperparams.yaml)" in capsys.readouterr().err


def test_help_lists_the_exit_codes(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--help"])
    assert done.value.code == 0
    usage = capsys.readouterr().out
    assert "exit status:" in usage
    for line in ("0  at least one file was answered", "1  no file could be answered", "2  bad arguments"):
        assert line in usage


def test_the_process_exits_2_without_a_traceback(files):
    result = subprocess.run([sys.executable, "-m", "mtlser_lobes.inference.cli", files["model"], files["wav"],
                             "--batch_size", "0"], capture_output=True, text=True, cwd=ROOT, timeout=120,
                            env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "mtlser-infer: error: argument --batch_size: must be a whole number greater than 0, not 0 "
        "(mtlser-infer --help for the usage)"
    ]
