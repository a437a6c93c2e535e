"""Padded batches through MTLSER, for every encoder family and front end; no training needed."""

import json
import os

import numpy as np
import pytest
import torch

from mtlser_lobes.inference.interface import MTLSER
from mtlser_lobes.demo.tiny_encoder import save_tiny_encoder
from mtlser_lobes.precision import REFERENCE_RUN_OPTS

LAYER_NORM = {"feat_extract_norm": "layer", "do_stable_layer_norm": True}

#: (family, config overrides, the feature extractor's do_normalize, whether padded batches are exact)
ENCODERS = {
    "wav2vec2-group": ("wav2vec2", {}, False, False),
    "wav2vec2-layer": ("wav2vec2", LAYER_NORM, False, True),
    "wav2vec2-layer-normalized-wav": ("wav2vec2", LAYER_NORM, True, False),
    "hubert-group": ("hubert", {}, False, False),
    "hubert-layer": ("hubert", LAYER_NORM, False, True),
    "wavlm-group": ("wavlm", {}, False, False),
    "wavlm-layer": ("wavlm", LAYER_NORM, False, True),
    "data2vec": ("data2vec", {}, False, False),
    "data2vec-one-positional-conv": ("data2vec", {"num_conv_pos_embeddings": 1}, False, True),
}


def _interface(tmp_path, family, overrides, do_normalize):
    source = save_tiny_encoder(str(tmp_path / "encoder"), family, **overrides)
    if do_normalize:  # as in the preprocessor_config.json of data2vec-audio-base or wav2vec2-large-lv60
        path = os.path.join(source, "preprocessor_config.json")
        with open(path) as f:
            settings = json.load(f)
        with open(path, "w") as f:
            json.dump({**settings, "do_normalize": True}, f)
    return MTLSER.untrained(source, str(tmp_path / "cache"), n_speakers=2,
                            run_opts=REFERENCE_RUN_OPTS)


def _padded_batch():
    rng = np.random.default_rng(1)
    # 1896 and 1970 samples make 5 frames, but scaling their share of 16000 by 49 gives 6
    lengths = [16000, 1896, 13331, 1970]
    wavs = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        wavs[i, :n] = torch.from_numpy(0.1 * rng.standard_normal(n).astype("float32"))
    return wavs, lengths


@pytest.mark.parametrize("name", list(ENCODERS))
def test_padded_batch_gives_each_item_its_single_answer(tmp_path, name):
    family, overrides, do_normalize, exact = ENCODERS[name]
    model = _interface(tmp_path, family, overrides, do_normalize)
    assert model.pads_batches == exact  # otherwise encoded one utterance at a time
    wavs, lengths = _padded_batch()
    relative = torch.tensor(lengths, dtype=torch.float32) / max(lengths)
    batched = model.predict_batch(wavs, relative)
    for i, n in enumerate(lengths):
        single = model.predict_batch(wavs[i : i + 1, :n])[0]
        assert batched[i].emotion == single.emotion and batched[i].text == single.text
        for label, p in single.probabilities.items():
            assert batched[i].probabilities[label] == pytest.approx(p, abs=1e-5)
        assert batched[i].speaker_score == pytest.approx(single.speaker_score, abs=1e-5)


@pytest.mark.parametrize("name", [name for name, (*_, exact) in ENCODERS.items() if not exact])
def test_encoders_said_to_depend_on_padding_do(tmp_path, name):
    """One utterance at a time is needed: run padded, these encoders change the answers."""
    family, overrides, do_normalize, _ = ENCODERS[name]
    model = _interface(tmp_path, family, overrides, do_normalize)
    model.pads_batches = True  # what the interface must not do with them
    wavs, lengths = _padded_batch()
    batched = model.forward(wavs, torch.tensor(lengths, dtype=torch.float32) / max(lengths))
    change = max(
        (batched[i]["embedding"] - model.forward(wavs[i : i + 1, :n])[0]["embedding"]).abs().max().item()
        for i, n in enumerate(lengths)
    )
    assert change > 1e-3
