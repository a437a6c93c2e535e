"""The three task heads that share the wav2vec 2.0 encoder output.

Every head takes the encoder frames ``(batch, time, hidden)`` and SpeechBrain's
relative lengths ``(batch,)``; utterance-level heads pool over the real frames
only, so padding never changes their output.

Example
-------
>>> feats = torch.randn(2, 50, 16)
>>> lengths = torch.tensor([1.0, 0.6])
>>> EmotionHead(16, n_emotions=4)(feats, lengths).shape
torch.Size([2, 4])
>>> CTCHead(16, n_tokens=29)(feats).shape
torch.Size([2, 50, 29])
>>> SpeakerHead(16, n_speakers=8, embedding_dim=32)(feats, lengths).shape
torch.Size([2, 8])
"""

import torch
from speechbrain.dataio.dataio import length_to_mask

__all__ = ["MaskedPooling", "EmotionHead", "CTCHead", "SpeakerHead"]


class MaskedPooling(torch.nn.Module):
    """Mean (and optionally standard deviation) over the non-padded frames.

    SpeechBrain's ``StatisticsPooling`` loops over the batch and adds Gaussian
    noise to the mean on every call, which makes inference non-deterministic;
    this version is vectorised and exact.

    Arguments
    ---------
    return_std : bool
        Concatenate the standard deviation after the mean.
    eps : float
        Floor of the variance, for numerical safety.

    Example
    -------
    >>> x = torch.randn(1, 10, 3)
    >>> padded = torch.cat([x, torch.full((1, 5, 3), 99.0)], dim=1)
    >>> torch.allclose(MaskedPooling()(padded, torch.tensor([10 / 15])), x.mean(dim=1))
    True
    """

    def __init__(self, return_std=False, eps=1e-5):
        super().__init__()
        self.return_std = return_std
        self.eps = eps

    def forward(self, x, lengths=None):
        """Pools ``x``: (batch, time, dim) -> (batch, dim) or (batch, 2 * dim)."""
        n_frames = x.shape[1]
        if lengths is None:
            mask = torch.ones(x.shape[:2], device=x.device, dtype=x.dtype)
        else:
            # SpeechBrain's convention: frames = round(relative length * time)
            absolute = torch.round(lengths * n_frames).clamp(min=1)
            mask = length_to_mask(absolute, max_len=n_frames, device=x.device)
            mask = mask.to(x.dtype)
        mask = mask.unsqueeze(-1)  # (batch, time, 1)
        count = mask.sum(dim=1)  # (batch, 1)
        mean = (x * mask).sum(dim=1) / count  # (batch, time, dim) -> (batch, dim)
        if not self.return_std:
            return mean
        variance = (((x - mean.unsqueeze(1)) * mask) ** 2).sum(dim=1) / count
        return torch.cat([mean, torch.sqrt(variance.clamp(min=self.eps))], dim=-1)


class EmotionHead(torch.nn.Module):
    """Utterance-level emotion classifier: masked mean pooling + MLP.

    Arguments
    ---------
    input_size : int
        Encoder hidden size.
    n_emotions : int
        Number of emotion classes.
    hidden_size : int
        Width of the hidden layer.
    dropout : float
        Dropout before each linear layer.

    Example
    -------
    >>> head = EmotionHead(8, n_emotions=4, hidden_size=16)
    >>> log_probs = head(torch.randn(3, 20, 8), torch.ones(3))
    >>> torch.allclose(log_probs.exp().sum(dim=-1), torch.ones(3))
    True
    """

    def __init__(self, input_size, n_emotions=4, hidden_size=256, dropout=0.1):
        super().__init__()
        self.pooling = MaskedPooling()
        self.classifier = torch.nn.Sequential(
            torch.nn.Dropout(dropout),
            torch.nn.Linear(input_size, hidden_size),
            torch.nn.LeakyReLU(),
            torch.nn.Dropout(dropout),
            torch.nn.Linear(hidden_size, n_emotions),
        )

    def forward(self, feats, lengths=None):
        """(batch, time, hidden) -> log-probabilities (batch, n_emotions)."""
        pooled = self.pooling(feats, lengths)  # (batch, hidden)
        return torch.log_softmax(self.classifier(pooled), dim=-1)


class CTCHead(torch.nn.Module):
    """Frame-level character classifier for CTC.

    Arguments
    ---------
    input_size : int
        Encoder hidden size.
    n_tokens : int
        Output symbols including the blank (see :mod:`mtlser_lobes.text`).
    dropout : float
        Dropout on the encoder frames.

    Example
    -------
    >>> log_probs = CTCHead(8, n_tokens=5)(torch.randn(2, 7, 8))
    >>> torch.allclose(log_probs.exp().sum(dim=-1), torch.ones(2, 7))
    True
    """

    def __init__(self, input_size, n_tokens, dropout=0.1):
        super().__init__()
        self.dropout = torch.nn.Dropout(dropout)
        self.linear = torch.nn.Linear(input_size, n_tokens)

    def forward(self, feats):
        """(batch, time, hidden) -> log-probabilities (batch, time, n_tokens)."""
        return torch.log_softmax(self.linear(self.dropout(feats)), dim=-1)


class SpeakerHead(torch.nn.Module):
    """Utterance-level speaker classifier with an embedding layer.

    Mean and standard deviation pooling, a linear embedding layer, then a
    classifier over the training speakers. :meth:`embed` gives the embedding,
    for comparing speakers the classifier has never seen.

    Arguments
    ---------
    input_size : int
        Encoder hidden size.
    n_speakers : int
        Number of training speakers.
    embedding_dim : int
        Size of the speaker embedding.
    dropout : float
        Dropout before the embedding layer.

    Example
    -------
    >>> head = SpeakerHead(8, n_speakers=3, embedding_dim=4)
    >>> head.embed(torch.randn(2, 9, 8), torch.ones(2)).shape
    torch.Size([2, 4])
    """

    def __init__(self, input_size, n_speakers, embedding_dim=128, dropout=0.1):
        super().__init__()
        self.pooling = MaskedPooling(return_std=True)
        self.embedding = torch.nn.Sequential(
            torch.nn.Dropout(dropout),
            torch.nn.Linear(2 * input_size, embedding_dim),
        )
        self.classifier = torch.nn.Sequential(
            torch.nn.LeakyReLU(), torch.nn.Linear(embedding_dim, n_speakers)
        )

    def embed(self, feats, lengths=None):
        """(batch, time, hidden) -> speaker embeddings (batch, embedding_dim)."""
        return self.embedding(self.pooling(feats, lengths))

    def forward(self, feats, lengths=None):
        """(batch, time, hidden) -> log-probabilities (batch, n_speakers)."""
        return torch.log_softmax(self.classifier(self.embed(feats, lengths)), dim=-1)
