"""Consistency: every hparams file loads, and a run reads every key in it."""

import glob
import os
import re
from types import SimpleNamespace

import pytest
import yaml
from hyperpyyaml import load_hyperpyyaml

from conftest import RECIPE_DIR
from recipe_helpers import TINY_ENCODER_OVERRIDES

HPARAMS = sorted(glob.glob(os.path.join(RECIPE_DIR, "hparams", "*.yaml")))


class _ReadKeys(dict):
    """The hparams dict, recording the keys train.py reads."""

    def __init__(self, data, read):
        super().__init__(data)
        self.read = read

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)


class _ReadAttributes(SimpleNamespace):
    """The Brain's ``self.hparams``, recording the attributes it reads."""

    def __getattribute__(self, name):
        if not name.startswith("__"):
            object.__getattribute__(self, "_read").add(name)
        return object.__getattribute__(self, name)


def _referenced_keys(path):
    """Keys other entries of the YAML point at (``!ref <key>``), from the parsed document."""
    with open(path, encoding="utf-8") as fin:
        root = yaml.compose(fin)
    found, stack = set(), [root]
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.ScalarNode) and node.tag == "!ref":
            found.update(re.findall(r"<([A-Za-z_]\w*)", node.value))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            stack.extend(value for _, value in node.value)
    return found, [key.value for key, _ in root.value]


def test_there_are_hparams_files():
    assert HPARAMS


@pytest.mark.slow
@pytest.mark.parametrize("path", HPARAMS, ids=os.path.basename)
def test_every_key_is_read_by_a_run(path, tiny_encoder, demo_release, tmp_path, monkeypatch):
    """Each top-level key is referenced by another or read by train.py during a run.

    The run is ``train.py --debug`` in this process, with the switches whose keys are read
    only when on (augmentation, uncertainty weighting, dynamic batching, TensorBoard) turned on; it exports.
    """
    import speechbrain as sb

    import recipe_options
    import train

    read = set()
    load = train.load_hyperpyyaml
    monkeypatch.setattr(train, "load_hyperpyyaml", lambda *a, **k: _ReadKeys(load(*a, **k), read))
    values = recipe_options.hparams_values  # the checks of the command line read them first
    monkeypatch.setattr(recipe_options, "hparams_values", lambda *a, **k: _ReadKeys(values(*a, **k), read))
    brain_init = sb.Brain.__init__

    def tracked_init(self, *args, **kwargs):
        brain_init(self, *args, **kwargs)
        namespace = _ReadAttributes(**vars(self.hparams))
        object.__setattr__(namespace, "_read", read)
        self.hparams = namespace

    monkeypatch.setattr(sb.Brain, "__init__", tracked_init)
    monkeypatch.chdir(RECIPE_DIR)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    train.main([
        os.path.relpath(path, RECIPE_DIR), "--wav2vec2_hub", tiny_encoder, "--data_folder", demo_release,
        "--output_folder", str(tmp_path / "exp"), "--debug", "--debug_batches", "2", "--debug_epochs", "1",
        "--augment", "True", "--loss_weighting", "uncertainty", "--dynamic_batching", "True",
        "--use_tensorboard", "True", *TINY_ENCODER_OVERRIDES,
    ])
    referenced, keys = _referenced_keys(path)
    from speechbrain.core import RunOptions

    run_options = set(RunOptions().as_dict())  # read by sb.Brain itself when given on the command line
    unused = [key for key in keys if not key.startswith("__") and key not in read | referenced | run_options]
    assert not unused, f"keys of {os.path.basename(path)} that a run never reads: {unused}"


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
