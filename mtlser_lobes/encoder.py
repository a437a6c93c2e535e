"""The speech encoder of an exported model, built from its config alone.

SpeechBrain's :class:`~speechbrain.integrations.huggingface.wav2vec2.Wav2Vec2`
lobe needs a hub name or a folder to read its config from when it is built.
An exported model carries the config inside its ``hyperparams.yaml`` instead,
so it loads without the network or the training folder; the forward pass is
the lobe's own, unchanged, so inference computes what training computed.

The lobe builds its model with ``transformers.AutoModel``, so it runs every
family whose model takes a waveform and returns hidden states the way
wav2vec 2.0 does: wav2vec 2.0, HuBERT, WavLM and data2vec-audio. The config's
``model_type`` says which model to rebuild (exported configs have always
carried it; a config without one is taken as wav2vec 2.0).
"""

import torch
from speechbrain.integrations.huggingface.wav2vec2 import Wav2Vec2
from transformers import AutoConfig, AutoModel

from mtlser_lobes.frontend import rebuild_frontend

__all__ = ["Wav2Vec2FromConfig", "EncoderFromConfig"]


class Wav2Vec2FromConfig(Wav2Vec2):
    """SpeechBrain's wav2vec 2.0 lobe, built from a config dict (weights loaded later).

    Arguments
    ---------
    config : dict
        The Hugging Face config as a dict (``config.to_dict()``); its
        ``model_type`` (``wav2vec2``, ``hubert``, ``wavlm``,
        ``data2vec-audio``; ``wav2vec2`` when absent) picks the model.
    normalize_wav : bool
        Layer-normalise each waveform first (the feature extractor's
        ``do_normalize`` of the trained encoder).
    output_norm : bool
        Layer-normalise the output, as the training lobe's ``output_norm``.
    output_all_hiddens : bool
        Return every hidden state ``(layers, batch, frames, hidden)``, as the
        training lobe did, for heads that weigh the encoder's layers.

    Example
    -------
    >>> from transformers import Wav2Vec2Config
    >>> config = Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
    ...                         intermediate_size=32, conv_dim=(8,) * 7).to_dict()
    >>> encoder = Wav2Vec2FromConfig(config)
    >>> encoder(torch.randn(2, 16000), torch.tensor([1.0, 0.5])).shape
    torch.Size([2, 49, 16])
    >>> without_type = {key: value for key, value in config.items() if key != "model_type"}
    >>> type(Wav2Vec2FromConfig(without_type).model).__name__
    'Wav2Vec2Model'
    >>> from transformers import WavLMConfig
    >>> config = WavLMConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
    ...                      intermediate_size=32, conv_dim=(8,) * 7).to_dict()
    >>> type(Wav2Vec2FromConfig(config).model).__name__
    'WavLMModel'
    """

    def __init__(self, config, normalize_wav=False, output_norm=False, output_all_hiddens=False):
        torch.nn.Module.__init__(self)  # skips the lobe's download-and-load constructor
        config = dict(config)
        model_type = config.pop("model_type", None) or "wav2vec2"
        self.config = AutoConfig.for_model(model_type, **config)
        self.config.apply_spec_augment = False
        self.model = rebuild_frontend(AutoModel.from_config(self.config))
        self.model.eval()
        self.normalize_wav = normalize_wav
        self.output_norm = output_norm
        self.output_all_hiddens = output_all_hiddens
        self.freeze_feature_extractor = True
        self.freeze = True
        self.freeze_model(self.model)


#: The same class under a name that does not suggest wav2vec 2.0 only.
EncoderFromConfig = Wav2Vec2FromConfig
