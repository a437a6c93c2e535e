"""Inference precision: fp32 answers are unchanged by the inference preparation; bf16 stays close."""

import numpy as np
import pytest
import soundfile
import torch
from speechbrain.integrations.huggingface.wav2vec2 import Wav2Vec2

from mtlser_lobes.interface import MTLSER


@pytest.fixture(scope="module")
def wav_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wavs")
    rng = np.random.default_rng(0)
    paths = []
    for i, seconds in enumerate([0.7, 2.0, 3.3]):
        t = np.arange(int(16000 * seconds)) / 16000
        audio = 0.2 * np.sin(2 * np.pi * (120 + 40 * i) * t) + 0.02 * rng.standard_normal(t.size)
        paths.append(str(folder / f"{i}.wav"))
        soundfile.write(paths[-1], audio.astype("float32"), 16000)
    return paths


def test_fp32_encoder_after_inference_preparation_matches_the_training_encoder(tiny_encoder, tmp_path, wav_files):
    model = MTLSER.untrained(tiny_encoder, str(tmp_path / "cache"))
    assert not torch.nn.utils.parametrize.is_parametrized(model.mods.wav2vec2.model.encoder.pos_conv_embed.conv)
    training_encoder = Wav2Vec2(tiny_encoder, save_path=str(tmp_path / "cache2"), freeze=True)
    for path in wav_files:
        wav = model.load_audio(path)[None]
        with torch.no_grad():
            expected = training_encoder(wav)
            got = model.mods.wav2vec2(wav)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_bf16_runs_the_encoder_in_bf16_and_answers_close_to_fp32(tiny_encoder, tmp_path, wav_files):
    fp32 = MTLSER.untrained(tiny_encoder, str(tmp_path / "cache"))
    bf16 = MTLSER.untrained(tiny_encoder, str(tmp_path / "cache"), run_opts={"device": "cpu", "precision": "bf16"})
    assert bf16.mods.wav2vec2.model.encoder.layers[0].attention.q_proj.weight.dtype == torch.bfloat16
    assert bf16.mods.emotion_head.classifier[-1].weight.dtype == torch.float32
    for a, b in zip(fp32.predict_files(wav_files), bf16.predict_files(wav_files)):
        assert a.error is None and b.error is None
        assert sum(b.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
        for name, p in a.probabilities.items():
            assert b.probabilities[name] == pytest.approx(p, abs=0.03)
        assert b.speaker_score == pytest.approx(a.speaker_score, abs=0.05)


def test_fp16_on_the_cpu_is_refused_with_advice(tiny_encoder, tmp_path):
    with pytest.raises(ValueError, match="bf16"):
        MTLSER.untrained(tiny_encoder, str(tmp_path / "cache"), run_opts={"device": "cpu", "precision": "fp16"})
