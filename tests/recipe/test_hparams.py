"""Consistency: every hparams file loads, and every key in it is used."""

import glob
import os
import re

import pytest
from hyperpyyaml import load_hyperpyyaml

from conftest import RECIPE_DIR

HPARAMS = sorted(glob.glob(os.path.join(RECIPE_DIR, "hparams", "*.yaml")))
SOURCES = [os.path.join(RECIPE_DIR, "train.py")]


def top_level_keys(path):
    with open(path) as f:
        return [m.group(1) for m in re.finditer(r"^([A-Za-z_][\w]*):", f.read(), re.MULTILINE)]


def test_there_are_hparams_files():
    assert HPARAMS


@pytest.mark.parametrize("path", HPARAMS, ids=os.path.basename)
def test_every_key_is_used(path):
    with open(path) as f:
        yaml_text = f.read()
    code = "".join(open(source).read() for source in SOURCES)
    from speechbrain.core import RunOptions

    run_options = set(RunOptions().as_dict())  # read from the hparams by sb.Brain itself
    unused = []
    for key in top_level_keys(path):
        if key.startswith("__") or key in run_options:
            continue
        referenced = re.search(rf"<{key}[>\[.]", yaml_text)
        used_in_code = re.search(rf"hparams\[\"{key}\"\]|hparams\.{key}\b|\"{key}\"", code)
        if not referenced and not used_in_code:
            unused.append(key)
    assert not unused, f"keys of {os.path.basename(path)} used nowhere: {unused}"


@pytest.mark.parametrize("path", HPARAMS, ids=os.path.basename)
def test_every_file_loads(path, tiny_encoder, tmp_path):
    with open(path) as f:
        hparams = load_hyperpyyaml(
            f, {"wav2vec2_hub": tiny_encoder, "output_folder": str(tmp_path), "n_speakers": 8}
        )
    assert hparams["encoder_dim"] == 64
    assert hparams["ctc_head"].linear.out_features == 29
    assert set(hparams["modules"]) == {
        "wav2vec2", "emotion_head", "ctc_head", "speaker_head", "task_weighting"
    }
