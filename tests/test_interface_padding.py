"""Padded batches through MTLSER with a padding-invariant (layer-norm) encoder, no training needed."""

import numpy as np
import pytest
import torch
from speechbrain.dataio.encoder import CategoricalEncoder
from speechbrain.integrations.huggingface.wav2vec2 import Wav2Vec2

from mtlser_lobes.heads import CTCHead, EmotionHead, SpeakerHead
from mtlser_lobes.interface import MTLSER
from mtlser_lobes.speakers import SpeakerGallery
from mtlser_lobes.text import ctc_label_encoder
from mtlser_lobes.tiny_encoder import save_tiny_wav2vec2


def _interface(tmp_path, **encoder_overrides):
    torch.manual_seed(0)
    source = save_tiny_wav2vec2(str(tmp_path / "encoder"), **encoder_overrides)
    encoder = Wav2Vec2(source, save_path=str(tmp_path / "cache"), freeze=True)
    emotions, speakers = CategoricalEncoder(), CategoricalEncoder()
    emotions.update_from_iterable(["neu", "hap", "ang", "sad"])
    speakers.update_from_iterable(["A", "B"])
    gallery = SpeakerGallery(2, 8)
    gallery.centroids.copy_(torch.nn.functional.normalize(torch.randn(2, 8), dim=-1))
    modules = {
        "wav2vec2": encoder,
        "emotion_head": EmotionHead(64, 4, hidden_size=16),
        "ctc_head": CTCHead(64, 29),
        "speaker_head": SpeakerHead(64, 2, embedding_dim=8),
        "speaker_gallery": gallery,
    }
    hparams = {
        "sample_rate": 16000, "min_duration_s": 0.1, "silence_peak": 1e-4, "speaker_threshold": 0.0,
        "blank_index": 0, "label_encoder": emotions, "tokenizer": ctc_label_encoder(),
        "speaker_encoder": speakers,
    }
    return MTLSER(modules=modules, hparams=hparams, run_opts={"device": "cpu"})


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
