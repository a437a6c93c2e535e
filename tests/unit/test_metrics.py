"""Emotion metrics against scikit-learn on known and random inputs."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, recall_score

from mtlser_lobes.data.metrics import EmotionMetricTracker, emotion_scores

LABELS = ["neu", "hap", "ang", "sad"]


def test_known_example():
    scores = emotion_scores([0, 0, 0, 1, 2, 3], [0, 0, 1, 1, 3, 3], LABELS)
    assert scores["WA"] == pytest.approx(4 / 6)
    assert scores["UA"] == pytest.approx((2 / 3 + 1 + 0 + 1) / 4)
    assert scores["recall"] == {"neu": pytest.approx(2 / 3), "hap": 1.0, "ang": 0.0, "sad": 1.0}
    assert scores["confusion"] == [[2, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 0, 1]]


@pytest.mark.parametrize("seed", range(5))
def test_random_inputs_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 4, size=200)
    predictions = np.where(rng.random(200) < 0.6, targets, rng.integers(0, 4, size=200))
    scores = emotion_scores(targets, predictions, LABELS)
    assert scores["WA"] == pytest.approx(accuracy_score(targets, predictions))
    assert scores["UA"] == pytest.approx(balanced_accuracy_score(targets, predictions))
    recalls = recall_score(targets, predictions, labels=[0, 1, 2, 3], average=None)
    assert [scores["recall"][c] for c in LABELS] == pytest.approx(list(recalls))
    assert np.array_equal(scores["confusion"], confusion_matrix(targets, predictions, labels=[0, 1, 2, 3]))


def test_absent_class_is_left_out_of_ua_like_sklearn():
    targets, predictions = [0, 0, 1, 1, 2], [0, 3, 1, 1, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ours computes it without a warning
        scores = emotion_scores(targets, predictions, LABELS)
    assert scores["recall"]["sad"] is None
    # sklearn warns about exactly this case (a predicted class absent from the references)
    with pytest.warns(UserWarning, match="y_pred contains classes not in y_true"):
        reference = balanced_accuracy_score(targets, predictions)
    assert scores["UA"] == pytest.approx(reference)


def test_empty_input_is_an_error():
    with pytest.raises(ValueError):
        emotion_scores([], [], LABELS)


def test_tracker_accumulates_batches():
    tracker = EmotionMetricTracker(LABELS)
    probabilities = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.1, 0.1, 0.1, 0.7], [0.1, 0.6, 0.2, 0.1]])
    tracker.append(["a", "b"], probabilities[:2].log(), torch.tensor([[0], [2]]))
    tracker.append(["c"], probabilities[2:].log(), torch.tensor([[1]]))
    assert tracker.ids == ["a", "b", "c"] and tracker.predictions == [0, 3, 1]
    assert tracker.summarize()["WA"] == pytest.approx(2 / 3)
    assert np.allclose(tracker.probabilities, probabilities.numpy())
