"""Padded batches through MTLSER with a padding-invariant (layer-norm) encoder, no training needed."""

import numpy as np
import pytest
import torch

from mtlser_lobes.interface import MTLSER
from mtlser_lobes.tiny_encoder import save_tiny_wav2vec2


def _interface(tmp_path, **encoder_overrides):
    source = save_tiny_wav2vec2(str(tmp_path / "encoder"), **encoder_overrides)
    return MTLSER.untrained(source, str(tmp_path / "cache"), n_speakers=2)


@pytest.mark.parametrize("norm", ["layer", "group"])
def test_padded_batch_gives_each_item_its_single_answer(tmp_path, norm):
    overrides = {"feat_extract_norm": "layer", "do_stable_layer_norm": True} if norm == "layer" else {}
    model = _interface(tmp_path, **overrides)
    assert model.pads_batches == (norm == "layer")  # group norm: encoded one utterance at a time
    rng = np.random.default_rng(1)
    # 1896 and 1970 samples make 5 frames, but scaling their share of 16000 by 49 gives 6
    lengths = [16000, 1896, 13331, 1970]
    wavs = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        wavs[i, :n] = torch.from_numpy(0.1 * rng.standard_normal(n).astype("float32"))
    relative = torch.tensor(lengths, dtype=torch.float32) / max(lengths)
    batched = model.predict_batch(wavs, relative)
    for i, n in enumerate(lengths):
        single = model.predict_batch(wavs[i : i + 1, :n])[0]
        assert batched[i].emotion == single.emotion and batched[i].text == single.text
        for name, p in single.probabilities.items():
            assert batched[i].probabilities[name] == pytest.approx(p, abs=1e-5)
        assert batched[i].speaker_score == pytest.approx(single.speaker_score, abs=1e-5)
