"""The three task heads that share the wav2vec 2.0 encoder output.

Every head takes the encoder frames ``(batch, time, hidden)`` and SpeechBrain's
relative lengths ``(batch,)``; utterance-level heads pool over the real frames
only, so padding never changes their output.

Each head also accepts the stack of all the encoder's hidden states
``(layers, batch, time, hidden)`` (the lobe's ``output_all_hiddens``) and
chooses where it reads the encoder (:class:`LayerSelection`): the last layer,
or a learned softmax-weighted sum of every layer (SUPERB style), so that
prosody can come from lower layers and words from upper ones.

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
>>> layers = torch.randn(3, 2, 50, 16)  # every hidden state of a 2-layer encoder
>>> EmotionHead(16, n_emotions=4, n_layers=3)(layers, lengths).shape
torch.Size([2, 4])
"""

import torch

__all__ = [
    "LayerSelection", "MaskedPooling", "EmotionHead", "CTCHead", "PooledBatchNorm", "SpeakerHead",
    "UncertaintyWeighting", "frame_mask", "layer_count", "layer_weight_stats",
]

LAYER_CHOICES = ("last", "weighted")
CTC_BLOCKS = ("none", "lstm", "transformer")
POOLINGS = ("mean", "meanstd")


def frame_mask(n_real, n_frames):
    """True on the real frames: (batch,) frame counts -> (batch, n_frames) bool.

    SpeechBrain's ``length_to_mask`` as pure tensor arithmetic, so that an exported
    graph (ONNX) keeps its batch size dynamic.

    Example
    -------
    >>> frame_mask(torch.tensor([2.0, 3.0]), 4)
    tensor([[ True,  True, False, False],
            [ True,  True,  True, False]])
    """
    return torch.arange(n_frames, device=n_real.device)[None, :] < n_real[:, None]


def layer_count(choice, n_hidden_states):
    """``n_layers`` argument of a head from its YAML choice: None (last) or the count (weighted).

    Example
    -------
    >>> layer_count("last", 3), layer_count("weighted", 3)
    (None, 3)
    """
    if choice not in LAYER_CHOICES:
        raise ValueError(f"a head reads the encoder's {' or '.join(LAYER_CHOICES)} layers, not {choice!r}")
    return int(n_hidden_states) if choice == "weighted" else None


class LayerSelection(torch.nn.Module):
    """Where a head reads the encoder: the last layer, or a learned weighted sum of all layers.

    With ``n_layers``, the input is the stack of the encoder's hidden states
    ``(layers, batch, time, hidden)``; each layer is layer-normalised (no
    parameters) and the layers are summed with softmax weights learned with the
    head, as SpeechBrain's weighted SSL lobe and the SUPERB benchmark do. Without
    it, the head reads the last layer (``feats[-1]`` of a stack, or the frames
    themselves).

    Arguments
    ---------
    n_layers : int or None
        Number of hidden states to weigh (the encoder's layers + 1); None: last layer.

    Example
    -------
    >>> stack = torch.randn(3, 2, 5, 4)
    >>> torch.equal(LayerSelection()(stack), stack[-1])
    True
    >>> selection = LayerSelection(n_layers=3)
    >>> selection(stack).shape, selection.layer_weights().tolist()  # uniform at the start
    (torch.Size([2, 5, 4]), [0.3333333432674408, 0.3333333432674408, 0.3333333432674408])
    """

    def __init__(self, n_layers=None):
        super().__init__()
        self.n_layers = n_layers
        self.weights = torch.nn.Parameter(torch.zeros(n_layers)) if n_layers else None

    def layer_weights(self):
        """The softmax weights of the layers (None when reading the last layer)."""
        return None if self.weights is None else torch.softmax(self.weights.detach(), dim=0)

    def forward(self, feats):
        """(layers, batch, time, hidden) or (batch, time, hidden) -> (batch, time, hidden)."""
        if self.weights is None:
            return feats[-1] if feats.dim() == 4 else feats
        if feats.dim() != 4 or feats.shape[0] != self.n_layers:
            raise ValueError(
                f"this head weighs {self.n_layers} encoder layers and needs their stack "
                f"(layers, batch, time, hidden) (output_all_hiddens), got {tuple(feats.shape)}"
            )
        normed = torch.nn.functional.layer_norm(feats, (int(feats.shape[-1]),))
        weights = torch.softmax(self.weights, dim=0).to(feats.dtype)
        return (weights.view(-1, 1, 1, 1) * normed).sum(dim=0)



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
            mask = frame_mask(absolute, n_frames).to(x.dtype)
        mask = mask.unsqueeze(-1)  # (batch, time, 1)
        count = mask.sum(dim=1)  # (batch, 1)
        mean = (x * mask).sum(dim=1) / count  # (batch, time, dim) -> (batch, dim)
        if not self.return_std:
            return mean
        variance = (((x - mean.unsqueeze(1)) * mask) ** 2).sum(dim=1) / count
        return torch.cat([mean, torch.sqrt(variance.clamp(min=self.eps))], dim=-1)


class EmotionHead(torch.nn.Module):
    """Utterance-level emotion classifier: masked pooling + MLP.

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
    n_layers : int or None
        Read a learned weighted sum of this many encoder hidden states
        (:class:`LayerSelection`); None reads the last layer.
    pooling : str
        ``mean`` over the frames, or ``meanstd`` (mean and standard deviation:
        how much the voice varies over the turn, not only its average).

    Example
    -------
    >>> head = EmotionHead(8, n_emotions=4, hidden_size=16, pooling="meanstd")
    >>> log_probs = head(torch.randn(3, 20, 8), torch.ones(3))
    >>> torch.allclose(log_probs.exp().sum(dim=-1), torch.ones(3))
    True
    >>> head.config["pooling"], head.n_emotions
    ('meanstd', 4)
    """

    def __init__(self, input_size, n_emotions=4, hidden_size=256, dropout=0.1, n_layers=None,
                 pooling="mean"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
        #: Constructor arguments, written into an exported model's hyperparams.yaml.
        self.config = {"input_size": input_size, "n_emotions": n_emotions,
                       "hidden_size": hidden_size, "dropout": dropout, "n_layers": n_layers,
                       "pooling": pooling}
        self.layers = LayerSelection(n_layers)
        self.pooling = MaskedPooling(return_std=pooling == "meanstd")
        pooled_size = 2 * input_size if pooling == "meanstd" else input_size
        self.classifier = torch.nn.Sequential(
            torch.nn.Dropout(dropout),
            torch.nn.Linear(pooled_size, hidden_size),
            torch.nn.LeakyReLU(),
            torch.nn.Dropout(dropout),
            torch.nn.Linear(hidden_size, n_emotions),
        )

    @property
    def n_emotions(self):
        """Number of emotion classes (the size of the output)."""
        return self.config["n_emotions"]

    def forward(self, feats, lengths=None):
        """(batch, time, hidden) or a stack of layers -> log-probabilities (batch, n_emotions)."""
        pooled = self.pooling(self.layers(feats), lengths)  # (batch, hidden or 2 * hidden)
        return torch.log_softmax(self.classifier(pooled), dim=-1)


class CTCHead(torch.nn.Module):
    """Frame-level character classifier for CTC, with an optional block of its own.

    The ``block`` is a task-specific layer between the shared encoder and the
    output layer (a bidirectional LSTM or a transformer layer), so that the
    lexical task does not have to reshape the shared top layer alone. It sees
    only the real frames of each utterance (packed LSTM, padding mask), so
    padding never changes the output.

    Arguments
    ---------
    input_size : int
        Encoder hidden size.
    n_tokens : int
        Output symbols including the blank (see :mod:`mtlser_lobes.data.text`).
    dropout : float
        Dropout on the encoder frames.
    n_layers : int or None
        Read a learned weighted sum of this many encoder hidden states; None: last layer.
    block : str
        ``none``, ``lstm`` or ``transformer``.
    block_size : int or None
        Width of the block (LSTM: both directions together); None: ``input_size``.

    Example
    -------
    >>> CTCHead(8, n_tokens=5).n_tokens
    5
    >>> log_probs = CTCHead(8, n_tokens=5)(torch.randn(2, 7, 8))
    >>> torch.allclose(log_probs.exp().sum(dim=-1), torch.ones(2, 7))
    True
    >>> CTCHead(8, n_tokens=5, block="lstm")(torch.randn(2, 7, 8), torch.tensor([1.0, 0.5])).shape
    torch.Size([2, 7, 5])
    """

    def __init__(self, input_size, n_tokens, dropout=0.1, n_layers=None, block="none",
                 block_size=None):
        super().__init__()
        if block not in CTC_BLOCKS:
            raise ValueError(f"block must be one of {CTC_BLOCKS}, not {block!r}")
        block_size = int(block_size or input_size)
        self.config = {"input_size": input_size, "n_tokens": n_tokens, "dropout": dropout,
                       "n_layers": n_layers, "block": block, "block_size": block_size}
        self.layers = LayerSelection(n_layers)
        self.dropout = torch.nn.Dropout(dropout)
        self.block = None
        output_size = input_size
        if block == "lstm":
            self.block = torch.nn.LSTM(input_size, max(1, block_size // 2), batch_first=True,
                                       bidirectional=True)
            output_size = 2 * max(1, block_size // 2)
        elif block == "transformer":
            heads = next(h for h in (4, 2, 1) if input_size % h == 0)
            self.block = torch.nn.TransformerEncoderLayer(
                input_size, heads, dim_feedforward=block_size, dropout=dropout, batch_first=True
            )
        self.linear = torch.nn.Linear(output_size, n_tokens)

    @property
    def n_tokens(self):
        """Number of output symbols, the blank included."""
        return self.config["n_tokens"]

    def forward(self, feats, lengths=None):
        """(batch, time, hidden) or a stack of layers -> log-probabilities (batch, time, n_tokens)."""
        x = self.dropout(self.layers(feats))
        if self.block is not None:
            n_frames = x.shape[1]
            if lengths is None:
                lengths = torch.ones(x.shape[0], device=x.device)
            absolute = torch.round(lengths * n_frames).clamp(min=1).long()
            if isinstance(self.block, torch.nn.LSTM):
                packed = torch.nn.utils.rnn.pack_padded_sequence(
                    x, absolute.cpu(), batch_first=True, enforce_sorted=False
                )
                output, _ = self.block(packed)
                x, _ = torch.nn.utils.rnn.pad_packed_sequence(
                    output, batch_first=True, total_length=n_frames
                )
            else:
                padding = ~frame_mask(absolute, n_frames)
                x = self.block(x, src_key_padding_mask=padding)
        return torch.log_softmax(self.linear(x), dim=-1)


class PooledBatchNorm(torch.nn.BatchNorm1d):
    """Batch normalisation of pooled utterance statistics, safe for a batch of one.

    x-vector and ECAPA-TDNN speaker models normalise their pooled statistics
    this way; without it, the per-utterance differences that tell speakers
    apart are small beside the statistics' common offset, and a linear layer
    learns them slowly. In training, a batch of one utterance (the last batch
    of an epoch can be one) is normalised with the running statistics instead
    of failing.

    Example
    -------
    >>> norm = PooledBatchNorm(3)
    >>> norm(torch.randn(1, 3)).shape
    torch.Size([1, 3])
    """

    def forward(self, x):
        """(batch, features) -> (batch, features)."""
        if self.training and x.shape[0] == 1:
            return torch.nn.functional.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(x)


#: Normalisations of the speaker head's pooled statistics (``stats_norm``).
STATS_NORMS = ("none", "batch")


class SpeakerHead(torch.nn.Module):
    """Utterance-level speaker classifier with an embedding layer.

    Mean and standard deviation pooling, optionally batch-normalised
    (``stats_norm="batch"``, as x-vectors do), a linear embedding layer, then a
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
    n_layers : int or None
        Read a learned weighted sum of this many encoder hidden states; None: last layer.
    stats_norm : str
        "batch": batch normalisation of the pooled statistics (:class:`PooledBatchNorm`);
        "none": the statistics as they are.

    Example
    -------
    >>> head = SpeakerHead(8, n_speakers=3, embedding_dim=4)
    >>> head.n_speakers, head.embedding_dim
    (3, 4)
    >>> head.embed(torch.randn(2, 9, 8), torch.ones(2)).shape
    torch.Size([2, 4])
    >>> SpeakerHead(8, n_speakers=3, embedding_dim=4, stats_norm="batch")(torch.randn(2, 9, 8)).shape
    torch.Size([2, 3])
    """

    def __init__(self, input_size, n_speakers, embedding_dim=128, dropout=0.1, n_layers=None,
                 stats_norm="none"):
        super().__init__()
        if stats_norm not in STATS_NORMS:
            raise ValueError(f"stats_norm must be one of {STATS_NORMS}, not {stats_norm!r}")
        self.config = {"input_size": input_size, "n_speakers": n_speakers,
                       "embedding_dim": embedding_dim, "dropout": dropout, "n_layers": n_layers,
                       "stats_norm": stats_norm}
        self.layers = LayerSelection(n_layers)
        self.pooling = MaskedPooling(return_std=True)
        self.stats_norm = PooledBatchNorm(2 * input_size) if stats_norm == "batch" else torch.nn.Identity()
        self.embedding = torch.nn.Sequential(
            torch.nn.Dropout(dropout),
            torch.nn.Linear(2 * input_size, embedding_dim),
        )
        self.classifier = torch.nn.Sequential(
            torch.nn.LeakyReLU(), torch.nn.Linear(embedding_dim, n_speakers)
        )

    @property
    def n_speakers(self):
        """Number of training speakers (the size of the classifier's output)."""
        return self.config["n_speakers"]

    @property
    def embedding_dim(self):
        """Size of the speaker embedding (:meth:`embed`)."""
        return self.config["embedding_dim"]

    def embed(self, feats, lengths=None):
        """(batch, time, hidden) or a stack of layers -> speaker embeddings (batch, embedding_dim)."""
        return self.embedding(self.stats_norm(self.pooling(self.layers(feats), lengths)))

    def forward(self, feats, lengths=None):
        """(batch, time, hidden) or a stack of layers -> log-probabilities (batch, n_speakers)."""
        return torch.log_softmax(self.classifier(self.embed(feats, lengths)), dim=-1)


class UncertaintyWeighting(torch.nn.Module):
    """Learned task weights: homoscedastic uncertainty weighting (Kendall et al., 2018).

    Each task ``i`` has a learned log-variance ``s_i``; the total loss is
    ``sum_i exp(-s_i) * w_i * L_i + s_i / 2``, where ``w_i`` is the task's
    fixed prior weight (1 for emotion, ``alpha``, ``beta``), so that a zero
    weight still switches a task off. A task whose loss stays large gets a
    larger variance and so a smaller weight, instead of taking over the
    shared encoder.

    Arguments
    ---------
    tasks : list of str
        Names of the tasks, in the order of :meth:`weights`.

    Example
    -------
    >>> weighting = UncertaintyWeighting(["emotion", "ctc"])
    >>> total = weighting({"emotion": torch.tensor(1.0), "ctc": torch.tensor(3.0)}, {"ctc": 0.1})
    >>> round(total.item(), 4)
    1.3
    >>> weighting.weights()
    {'emotion': 1.0, 'ctc': 1.0}
    """

    def __init__(self, tasks):
        super().__init__()
        self.tasks = list(tasks)
        self.log_variances = torch.nn.Parameter(torch.zeros(len(self.tasks)))

    def weights(self):
        """Current learned weight ``exp(-s_i)`` of each task."""
        return {t: float(torch.exp(-v)) for t, v in zip(self.tasks, self.log_variances.detach())}

    def forward(self, losses, prior_weights=None):
        """Weighted sum of the ``losses`` dict (tasks absent from it are skipped)."""
        prior_weights = prior_weights or {}
        total = 0.0
        for index, task in enumerate(self.tasks):
            if task not in losses:
                continue
            log_variance = self.log_variances[index]
            weight = prior_weights.get(task, 1.0)
            total = total + torch.exp(-log_variance) * weight * losses[task] + 0.5 * log_variance
        return total


def layer_weight_stats(heads):
    """Each head's learned layer weights (``weighted`` heads only), for the epoch log.

    Arguments
    ---------
    heads : dict
        Head name to head module (or its ``DistributedDataParallel`` wrapper).

    Returns
    -------
    dict
        ``layers_<name>``: the weights, lowest layer first, as ``w1/w2/...``.

    Example
    -------
    >>> heads = {"emotion": EmotionHead(16, n_layers=3), "ctc": CTCHead(16, n_tokens=29)}
    >>> layer_weight_stats(heads)
    {'layers_emotion': '0.33/0.33/0.33'}
    """
    stats = {}
    for name, head in heads.items():
        weights = getattr(head, "module", head).layers.layer_weights()
        if weights is not None:
            stats[f"layers_{name}"] = "/".join(f"{w:.2f}" for w in weights.tolist())
    return stats
