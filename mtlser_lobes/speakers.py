"""Open-set speaker identification on the speaker head's embedding.

Embeddings are first centred on the training speakers' mean embedding (raw
embeddings share a large common component, which makes every cosine close to
1). Each known speaker is the mean direction (centroid) of its utterances'
centred embeddings; an utterance goes to the speaker of highest cosine similarity, or
to ``"unknown"`` when even the best similarity is below a threshold.

Example
-------
>>> centroids = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
>>> identify(torch.tensor([[2.0, 0.1, 0.0], [0.0, 0.0, 1.0]]), centroids,
...          ["anna", "ben"], threshold=0.5)
(['anna', 'unknown'], [0.998752, 0.0])
"""

import torch

__all__ = ["SpeakerGallery", "centroid", "identify", "UNKNOWN_SPEAKER"]

#: The answer for an utterance that matches no known speaker well enough.
UNKNOWN_SPEAKER = "unknown"


class SpeakerGallery(torch.nn.Module):
    """Training speakers' centroids and the mean embedding, saved with an exported model.

    Arguments
    ---------
    n_speakers : int
        Number of speakers (rows, in the speaker encoder's index order).
    embedding_dim : int
        Size of the speaker embedding.

    Example
    -------
    >>> gallery = SpeakerGallery(8, 128)
    >>> gallery.centroids.shape, gallery.mean.shape
    (torch.Size([8, 128]), torch.Size([128]))
    """

    def __init__(self, n_speakers, embedding_dim):
        super().__init__()
        self.register_buffer("centroids", torch.zeros(n_speakers, embedding_dim))
        self.register_buffer("mean", torch.zeros(embedding_dim))

    def centre(self, embeddings):
        """Subtracts the training mean: (batch, dim) -> (batch, dim)."""
        return embeddings - self.mean.to(embeddings)


def centroid(embeddings):
    """Unit-length mean direction of some embeddings, (n, dim) -> (dim,).

    Example
    -------
    >>> centroid(torch.tensor([[3.0, 0.0], [0.0, 1.0]]))
    tensor([0.7071, 0.7071])
    """
    units = torch.nn.functional.normalize(embeddings, dim=-1)
    return torch.nn.functional.normalize(units.mean(dim=0), dim=-1)


def identify(embeddings, centroids, names, threshold):
    """Closest known speaker of each embedding, or ``"unknown"``.

    Arguments
    ---------
    embeddings : torch.Tensor
        (batch, dim) utterance embeddings.
    centroids : torch.Tensor
        (speakers, dim) unit-length speaker centroids.
    names : list of str
        Name of each centroid row.
    threshold : float
        Cosine similarity below which the answer is ``"unknown"``.

    Returns
    -------
    labels : list of str
    scores : list of float
        Cosine similarity to the closest known speaker.
    """
    if len(names) == 0:
        return [UNKNOWN_SPEAKER] * len(embeddings), [0.0] * len(embeddings)
    units = torch.nn.functional.normalize(embeddings, dim=-1)
    similarity = units @ centroids.to(units).T  # (batch, speakers)
    scores, best = similarity.max(dim=-1)
    labels = [
        names[index] if score >= threshold else UNKNOWN_SPEAKER
        for index, score in zip(best.tolist(), scores.tolist())
    ]
    return labels, [round(float(s), 6) for s in scores]
