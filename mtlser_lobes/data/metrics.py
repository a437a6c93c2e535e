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

__all__ = ["emotion_scores", "EmotionMetricTracker", "KnownTargetAccuracy", "MeanTracker", "StageMetrics"]


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


class StageMetrics:
    """Every metric of one validation or test stage, and one row per utterance for the predictions CSV.

    Emotion WA/UA, CER and WER of the CTC transcripts (when their factories are
    given: the CTC head is on) and speaker accuracy over the speakers seen in
    training (when ``use_speaker``).

    Arguments
    ---------
    emotion_classes : sequence of str
        Emotion class names in index order.
    cer_computer, wer_computer : callable or None
        Factories of SpeechBrain ``ErrorRateStats`` (characters, words); None when CTC is off.
    use_speaker : bool
        Whether the speaker head runs.

    Example
    -------
    >>> import torch
    >>> from speechbrain.utils.metric_stats import ErrorRateStats
    >>> metrics = StageMetrics(["neu", "hap"], ErrorRateStats, ErrorRateStats, use_speaker=True)
    >>> metrics.append(
    ...     ["u1", "u2"], torch.log(torch.tensor([[0.9, 0.1], [0.3, 0.7]])), torch.tensor([0, 1]),
    ...     words=["hi you", "no"], speakers=["A", "C"], hypotheses=["hi yo", "no"],
    ...     speaker_log_probs=torch.log(torch.tensor([[0.6, 0.4], [0.2, 0.8]])),
    ...     speaker_targets=torch.tensor([0, -1]))
    >>> stats = metrics.summarize()
    >>> stats["UA"], stats["CER"], round(stats["WER"], 2), stats["speaker_acc"]
    (100.0, 12.5, 33.33, 100.0)
    >>> header, rows = metrics.prediction_table(["A", "B"])
    >>> dict(zip(header, rows[1]))["spk_pred"], dict(zip(header, rows[1]))["p_hap"]
    ('B', '0.7000')
    >>> emotion_only = StageMetrics(["neu", "hap"])
    >>> emotion_only.append(["u1"], torch.log(torch.tensor([[0.9, 0.1]])), torch.tensor([0]), ["hi"], ["A"])
    >>> emotion_only.summarize(), emotion_only.prediction_table(["A"])[1][0][-3:]
    ({'WA': 100.0, 'UA': 100.0}, ['', 'A', ''])
    """

    def __init__(self, emotion_classes, cer_computer=None, wer_computer=None, use_speaker=False):
        self.emotion = EmotionMetricTracker(emotion_classes)
        self.cer = cer_computer() if cer_computer is not None else None
        self.wer = wer_computer() if wer_computer is not None else None
        self.speaker = KnownTargetAccuracy() if use_speaker else None
        self.rows = []  # (id, words, hypothesis, speaker, predicted speaker index or None)

    def append(self, ids, emotion_log_probs, emotion_targets, words, speakers, hypotheses=None,
               speaker_log_probs=None, speaker_targets=None):
        """Adds a batch.

        Arguments
        ---------
        ids, words, speakers : list of str
            Utterance ids, reference transcripts and speaker labels.
        emotion_log_probs : torch.Tensor
            (batch, n_emotions).
        emotion_targets : torch.Tensor
            (batch,) class indices.
        hypotheses : list of str, optional
            CTC transcripts (needed when CTC is on).
        speaker_log_probs : torch.Tensor, optional
            (batch, n_speakers), needed when the speaker head runs.
        speaker_targets : torch.Tensor, optional
            (batch,) indices of training speakers, -1 for a speaker unseen in training.
        """
        self.emotion.append(ids, emotion_log_probs, emotion_targets)
        if self.cer is not None:
            self.cer.append(ids, [list(h) for h in hypotheses], [list(r) for r in words])
        if self.wer is not None:
            self.wer.append(ids, [h.split() for h in hypotheses], [r.split() for r in words])
        speaker_predictions = [None] * len(ids)
        if self.speaker is not None:
            best = speaker_log_probs.argmax(dim=-1)  # (batch,)
            speaker_predictions = best.cpu().tolist()
            self.speaker.append(best, speaker_targets)
        hypotheses = [""] * len(ids) if hypotheses is None else hypotheses
        self.rows.extend(zip(ids, words, hypotheses, speakers, speaker_predictions))

    def summarize(self):
        """``WA`` and ``UA`` in %, ``CER``/``WER`` (CTC on), ``speaker_acc`` (known speakers only)."""
        emotion = self.emotion.summarize()
        stats = {"WA": 100 * emotion["WA"], "UA": 100 * emotion["UA"]}
        if self.cer is not None:
            stats["CER"] = self.cer.summarize("error_rate")
        if self.wer is not None:
            stats["WER"] = self.wer.summarize("error_rate")
        if self.speaker is not None and self.speaker.summarize() is not None:
            stats["speaker_acc"] = self.speaker.summarize()
        return stats

    def prediction_table(self, speaker_labels):
        """The predictions CSV: header and one row per utterance.

        ``speaker_labels`` maps a speaker index to its label (a list, or a
        label encoder's ``ind2lab``).
        """
        classes, tracker = self.emotion.labels, self.emotion
        rows = []
        for i, (utt, words, hypothesis, speaker, speaker_index) in enumerate(self.rows):
            rows.append(
                [utt, classes[tracker.targets[i]], classes[tracker.predictions[i]]]
                + [f"{p:.4f}" for p in tracker.probabilities[i]]
                + [words, hypothesis, speaker, "" if speaker_index is None else speaker_labels[speaker_index]]
            )
        header = ["ID", "emo", "emo_pred"] + [f"p_{c}" for c in classes]
        return header + ["wrd", "wrd_pred", "spk_id", "spk_pred"], rows
