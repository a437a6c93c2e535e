"""The fbank front end stands in for the convolutional feature encoder frame for frame."""

import pytest
import torch
from transformers import Wav2Vec2Config, Wav2Vec2Model, WavLMConfig, WavLMModel

from mtlser_lobes.encoder import Wav2Vec2FromConfig
from mtlser_lobes.frontend import FbankFrontend, rebuild_frontend

SMALL = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)


@pytest.mark.parametrize("config", [
    Wav2Vec2Config(conv_dim=(8,) * 7, **SMALL),  # wav2vec2-base's strides: 25 ms every 20 ms
    Wav2Vec2Config(conv_dim=(8,) * 3, conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2), **SMALL),
    WavLMConfig(conv_dim=(8,) * 7, **SMALL),
], ids=["wav2vec2", "shorter-stack", "wavlm"])
def test_same_frames_as_the_convolutions_for_any_length(config):
    config.mtlser_frontend = {"type": "fbank", "n_mels": 24, "sample_rate": 16000}
    model_class = WavLMModel if config.model_type == "wavlm" else Wav2Vec2Model
    model = rebuild_frontend(model_class(config)).eval()
    assert isinstance(model.feature_extractor, FbankFrontend)
    for n_samples in (400, 401, 719, 720, 1000, 16000, 16319, 16320, 33333):
        frames = model.feature_extractor(torch.randn(1, n_samples)).shape[-1]
        assert frames == int(model._get_feat_extract_output_lengths(torch.tensor(n_samples)))


def test_padding_does_not_change_the_real_frames():
    frontend = FbankFrontend(out_channels=8, window=400, hop=320, n_mels=24).eval()
    wav = torch.randn(1, 12345)
    alone = frontend(wav)
    padded = frontend(torch.nn.functional.pad(wav, (0, 8000)))
    assert torch.allclose(padded[..., :alone.shape[-1]], alone, atol=1e-5)


def test_exported_config_rebuilds_the_trained_front_end_and_its_weights():
    config = Wav2Vec2Config(conv_dim=(8,) * 7, **SMALL)
    config.mtlser_frontend = {"type": "fbank", "n_mels": 24, "sample_rate": 16000}
    trained = rebuild_frontend(Wav2Vec2Model(config)).eval()
    encoder = Wav2Vec2FromConfig(config.to_dict())
    encoder.model.load_state_dict(trained.state_dict())  # strict: the same modules and shapes
    wav = torch.randn(2, 16000)
    with torch.no_grad():
        assert torch.allclose(encoder(wav, torch.tensor([1.0, 1.0])), trained(wav).last_hidden_state, atol=1e-5)


def test_an_unknown_front_end_in_a_config_is_refused():
    config = Wav2Vec2Config(conv_dim=(8,) * 7, **SMALL)
    config.mtlser_frontend = {"type": "mfcc", "n_mels": 24}
    with pytest.raises(ValueError, match="unknown encoder front end 'mfcc'"):
        rebuild_frontend(Wav2Vec2Model(config))
