"""The encoder's front end: its convolutional feature encoder, or log Mel filterbanks.

A wav2vec 2.0-family encoder turns the waveform into frames with a stack of
convolutions learned in pre-training. Trained from scratch on a few hundred
turns, that stack has to learn a spectral analysis from nothing, and the
study in the recipe README shows what a from-scratch encoder then loses to a
logistic regression on filterbank statistics. ``fbank`` replaces the stack by
SpeechBrain's STFT and Mel filterbank, windowed and hopped exactly as the
stack's receptive field and stride, followed by a learned projection to the
stack's output width: every later part of the encoder (projection,
transformer, masking, attention masks, the frame counts of
:func:`mtlser_lobes.helpers.frame_lengths`) is unchanged.

The choice is recorded in the Hugging Face config (``mtlser_frontend``), so
an exported model rebuilds the same front end from its config alone
(:class:`mtlser_lobes.encoder.Wav2Vec2FromConfig`).
"""

import torch
from speechbrain.processing.features import STFT, Filterbank, spectral_magnitude

__all__ = ["FbankFrontend", "FRONTENDS", "install_frontend", "rebuild_frontend", "receptive_field"]

FRONTENDS = ("waveform", "fbank")


def receptive_field(config):
    """Samples one frame of the convolutional stack sees, and the samples between frames.

    Arguments
    ---------
    config : transformers.PretrainedConfig
        A wav2vec 2.0-family config (``conv_kernel``, ``conv_stride``).

    Returns
    -------
    (int, int)
        Window and hop in samples.

    Example
    -------
    >>> from transformers import Wav2Vec2Config
    >>> receptive_field(Wav2Vec2Config())  # wav2vec2-base: 25 ms windows every 20 ms
    (400, 320)
    """
    window, hop = 1, 1
    for kernel, stride in zip(config.conv_kernel, config.conv_stride):
        window += (kernel - 1) * hop
        hop *= stride
    return window, hop


class FbankFrontend(torch.nn.Module):
    """Log Mel filterbanks in place of the convolutional feature encoder.

    Takes the waveform ``(batch, samples)`` the feature encoder takes and
    returns what it returns, ``(batch, out_channels, frames)``, with the same
    number of frames: one frame per ``hop`` samples, each over ``window``
    samples, no padding at the edges.

    Arguments
    ---------
    out_channels : int
        The width the encoder's feature projection expects (``conv_dim[-1]``).
    window, hop : int
        Samples per frame and between frames (:func:`receptive_field`).
    n_mels : int
        Mel channels.
    sample_rate : int
        Sampling rate of the waveform.

    Example
    -------
    >>> frontend = FbankFrontend(out_channels=32, window=400, hop=320, n_mels=40)
    >>> frontend(torch.randn(2, 16000)).shape
    torch.Size([2, 32, 49])
    """

    def __init__(self, out_channels, window, hop, n_mels=80, sample_rate=16000):
        super().__init__()
        self.stft = STFT(sample_rate=sample_rate, win_length=1000.0 * window / sample_rate,
                         hop_length=1000.0 * hop / sample_rate, n_fft=window, center=False)
        self.filterbank = Filterbank(n_mels=n_mels, n_fft=window, sample_rate=sample_rate,
                                     f_max=sample_rate // 2)
        # dB values span about 100; a fixed scale brings them near unit size before the
        # learned projection (the encoder's feature projection layer-normalises after it).
        self.scale = 0.05
        self.projection = torch.nn.Conv1d(n_mels, out_channels, kernel_size=1)

    def forward(self, wav):
        """Waveform ``(batch, samples)`` to frames ``(batch, out_channels, frames)``."""
        feats = self.filterbank(spectral_magnitude(self.stft(wav)))  # (batch, frames, n_mels)
        return self.projection(self.scale * feats.transpose(1, 2))

    def _freeze_parameters(self):
        # Called by transformers' freeze_feature_encoder(); the projection is new, so it
        # keeps learning (the filterbank has no learned parameters).
        pass


def install_frontend(lobe, frontend="waveform", n_mels=80):
    """Give a SpeechBrain wav2vec 2.0-family lobe the chosen front end, in place.

    ``waveform`` keeps the model's convolutional feature encoder (and its
    pre-trained weights): the choice for a pre-trained encoder. ``fbank``
    replaces it by :class:`FbankFrontend` and records the choice in the
    model's config, so an exported model rebuilds it.

    Arguments
    ---------
    lobe : speechbrain.integrations.huggingface.wav2vec2.Wav2Vec2
        The encoder lobe (its Hugging Face model in ``.model``).
    frontend : str
        ``waveform`` or ``fbank``.
    n_mels : int
        Mel channels of the ``fbank`` front end.

    Returns
    -------
    The same lobe.

    Example
    -------
    >>> import tempfile
    >>> from speechbrain.integrations.huggingface.wav2vec2 import Wav2Vec2
    >>> from mtlser_lobes.demo.tiny_encoder import save_tiny_wav2vec2
    >>> lobe = Wav2Vec2(save_tiny_wav2vec2(tempfile.mkdtemp()), save_path=tempfile.mkdtemp())
    >>> wav = torch.randn(1, 16000)
    >>> frames = lobe(wav).shape
    >>> lobe = install_frontend(lobe, "fbank", n_mels=40)
    >>> type(lobe.model.feature_extractor).__name__, lobe(wav).shape == frames
    ('FbankFrontend', True)
    >>> lobe.model.config.mtlser_frontend
    {'type': 'fbank', 'n_mels': 40, 'sample_rate': 16000}
    >>> install_frontend(lobe, "mfcc")
    Traceback (most recent call last):
    ...
    ValueError: encoder_frontend must be one of ('waveform', 'fbank'), not 'mfcc'
    """
    if frontend not in FRONTENDS:
        raise ValueError(f"encoder_frontend must be one of {FRONTENDS}, not {frontend!r}")
    if frontend == "waveform":
        return lobe
    sample_rate = getattr(getattr(lobe, "feature_extractor", None), "sampling_rate", 16000)
    lobe.model.config.mtlser_frontend = {
        "type": frontend, "n_mels": int(n_mels), "sample_rate": int(sample_rate),
    }
    rebuild_frontend(lobe.model)
    return lobe


def rebuild_frontend(model):
    """Put back the front end a model's config records (``mtlser_frontend``), if any.

    What :class:`mtlser_lobes.encoder.Wav2Vec2FromConfig` calls so that an
    exported model has the modules its saved weights belong to.

    Arguments
    ---------
    model : transformers.PreTrainedModel
        A wav2vec 2.0-family model.

    Example
    -------
    >>> from transformers import Wav2Vec2Config, Wav2Vec2Model
    >>> config = Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
    ...                         intermediate_size=32, conv_dim=(8,) * 7)
    >>> config.mtlser_frontend = {"type": "fbank", "n_mels": 24, "sample_rate": 16000}
    >>> model = rebuild_frontend(Wav2Vec2Model(config))
    >>> model.feature_extractor.projection
    Conv1d(24, 8, kernel_size=(1,), stride=(1,))
    """
    frontend = getattr(model.config, "mtlser_frontend", None)
    if not frontend or frontend.get("type", "waveform") == "waveform":
        return model
    if frontend["type"] not in FRONTENDS:
        raise ValueError(f"unknown encoder front end {frontend['type']!r} in the model's config")
    window, hop = receptive_field(model.config)
    model.feature_extractor = FbankFrontend(
        out_channels=model.config.conv_dim[-1], window=window, hop=hop,
        n_mels=frontend["n_mels"], sample_rate=frontend.get("sample_rate", 16000),
    )
    return model
