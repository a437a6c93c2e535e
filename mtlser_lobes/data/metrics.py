"""Emotion metrics: weighted accuracy, unweighted accuracy, recalls, confusion.

WA is the overall accuracy; UA the mean of the per-class recalls over the
classes present in the references (scikit-learn's balanced accuracy).

Example
-------
>>> scores = emotion_scores([0, 0, 1, 2, 3, 3], [0, 1, 1, 2, 3, 0], ["neu", "hap", "ang", "sad"])
>>> round(scores["WA"], 4), round(scores["UA"], 4)
(0.6667, 0.75)
>>> scores["recall"]["neu"], scores["confusion"][0]
(0.5, [1, 1, 0, 0])
"""

import numpy as np
import torch
from sklearn.metrics import confusion_matrix

__all__ = ["emotion_scores", "EmotionMetricTracker", "KnownTargetAccuracy", "MeanTracker"]


def emotion_scores(targets, predictions, labels):
    """Computes WA, UA, per-class recall and the confusion matrix.

    Arguments
    ---------
    targets : sequence of int
        Reference class indices.
    predictions : sequence of int
        Predicted class indices.
    labels : sequence of str
        Class names, in index order.

    Returns
    -------
    dict
        ``WA`` and ``UA`` in [0, 1]; ``recall``: class name -> recall
        (``None`` for a class with no reference); ``confusion``: rows are
        references, columns predictions, in ``labels`` order; ``n``: count.

    Example
    -------
    >>> emotion_scores([1, 1], [1, 0], ["a", "b"])["recall"]
    {'a': None, 'b': 0.5}
    """
    targets = np.asarray(targets, dtype=int)
    predictions = np.asarray(predictions, dtype=int)
    if len(targets) == 0:
        raise ValueError("no utterances to score")
    confusion = confusion_matrix(targets, predictions, labels=list(range(len(labels))))
    support = confusion.sum(axis=1)
    recalls = [
        float(confusion[i, i] / support[i]) if support[i] else None
        for i in range(len(labels))
    ]
    present = [r for r in recalls if r is not None]
    return {
        "WA": float(np.trace(confusion) / confusion.sum()),
        "UA": float(np.mean(present)),
        "recall": dict(zip(labels, recalls)),
        "confusion": confusion.tolist(),
        "n": int(confusion.sum()),
    }


class EmotionMetricTracker:
    """Collects utterance ids, predictions and probabilities over a stage.

    Arguments
    ---------
    labels : sequence of str
        Class names in index order.

    Example
    -------
    >>> import torch
    >>> tracker = EmotionMetricTracker(["neu", "hap"])
    >>> tracker.append(["u1", "u2"], torch.log(torch.tensor([[0.9, 0.1], [0.3, 0.7]])), torch.tensor([0, 0]))
    >>> tracker.summarize()["WA"], tracker.predictions
    (0.5, [0, 1])
    """

    def __init__(self, labels):
        self.labels = list(labels)
        self.ids, self.targets, self.predictions, self.probabilities = [], [], [], []

    def append(self, ids, log_probs, targets):
        """Adds a batch: ``log_probs`` (batch, n_classes), ``targets`` (batch,)."""
        probabilities = log_probs.detach().float().exp().cpu()
        self.ids.extend(ids)
        self.targets.extend(targets.detach().view(-1).cpu().tolist())
        self.predictions.extend(probabilities.argmax(dim=-1).tolist())
        self.probabilities.extend(probabilities.tolist())

    def summarize(self):
        """Returns :func:`emotion_scores` over everything appended."""
        return emotion_scores(self.targets, self.predictions, self.labels)


class MeanTracker:
    """Mean of each named value over the batches of a stage (the loss terms); non-finite ones skipped.

    Example
    -------
    >>> import torch
    >>> tracker = MeanTracker()
    >>> tracker.append({"emotion": torch.tensor(1.0), "ctc": torch.tensor(4.0)})
    >>> tracker.append({"emotion": torch.tensor(3.0), "ctc": torch.tensor(float("nan"))})
    >>> tracker.summarize()
    {'emotion': 2.0, 'ctc': 4.0}
    """

    def __init__(self):
        self.sums, self.counts = {}, {}

    def append(self, values):
        """Adds one batch's values (name -> scalar tensor)."""
        for name, value in values.items():
            if torch.isfinite(value):  # a non-finite batch is skipped (nonfinite_patience)
                self.sums[name] = self.sums.get(name, 0.0) + value.detach()
                self.counts[name] = self.counts.get(name, 0) + 1

    def summarize(self):
        """Name -> mean over the batches where it was finite."""
        return {name: float(total) / self.counts[name] for name, total in self.sums.items()}


class KnownTargetAccuracy:
    """Accuracy over the items whose target is known (index >= 0): speakers seen in training.

    Example
    -------
    >>> import torch
    >>> accuracy = KnownTargetAccuracy()
    >>> accuracy.append(torch.tensor([1, 2, 0]), torch.tensor([1, -1, 2]))
    >>> accuracy.summarize()
    50.0
    >>> KnownTargetAccuracy().summarize() is None
    True
    """

    def __init__(self):
        self.known, self.correct = 0, 0

    def append(self, predictions, targets):
        """Adds a batch: predicted and target indices (batch,), -1 for an unknown target."""
        known = targets >= 0
        self.known += int(known.sum())
        self.correct += int((predictions[known] == targets[known]).sum())

    def summarize(self):
        """Accuracy in %, or None when no target was known."""
        return 100 * self.correct / self.known if self.known else None
