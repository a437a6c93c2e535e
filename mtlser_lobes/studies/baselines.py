"""Floors for the studies: what a study's models must beat, on exactly the same splits.

- ``majority``: every test turn gets the most frequent training class (UA is
  then 1 / n_classes);
- ``mfcc_logreg`` / ``fbank_logreg``: utterance statistics (mean and standard
  deviation over the frames) of SpeechBrain's MFCC (20 coefficients with
  deltas and delta-deltas) or log Mel filterbank (40 bands) features,
  standardised, then scikit-learn's logistic regression with class-balanced
  weights, trained on ``train.csv`` alone.

Each floor writes a ``test_results.json`` like a ``train.py`` run (WA, UA,
per-class recall, confusion matrix, and the floor's UA on ``valid.csv`` as
``best_valid_UA``), so a study reads, averages and tests it as any cell.

Authors
 * MTLSER developers
"""

import json
import os

import numpy as np
import torch

from mtlser_lobes.data.audio import load_training_audio
from mtlser_lobes.helpers import prepared_rows, write_text_atomically
from mtlser_lobes.data.metrics import emotion_scores

__all__ = ["FLOORS", "utterance_statistics", "evaluate_floor", "write_floor_results"]

#: Floors a study can add (``run_experiments.py --floors``).
FLOORS = ("majority", "mfcc_logreg", "fbank_logreg")


def _extractor(kind, sample_rate):
    from speechbrain.lobes.features import MFCC, Fbank

    if kind == "mfcc":
        return MFCC(sample_rate=sample_rate, n_mfcc=20, deltas=True, context=False)
    if kind == "fbank":
        return Fbank(sample_rate=sample_rate, n_mels=40, deltas=False, context=False)
    raise ValueError(f"features are mfcc or fbank, not {kind!r}")


@torch.no_grad()
def utterance_statistics(paths, kind="mfcc", sample_rate=16000, max_duration_s=40.0, cache=None):
    """Mean and standard deviation over the frames of each file's features.

    Arguments
    ---------
    paths : list of str
        Audio files (any rate or channel count: converted as for training).
    kind : str
        ``mfcc`` (60-dim frames: 20 MFCCs, deltas, delta-deltas) or ``fbank``
        (40 log Mel bands).
    sample_rate : int
    max_duration_s : float
        Longer files are cropped, as for training.
    cache : dict or None
        ``(kind, path)`` -> statistics, reused across folds.

    Returns
    -------
    numpy.ndarray
        (n_files, 2 * feature dim).

    Example
    -------
    >>> import tempfile, soundfile
    >>> path = os.path.join(tempfile.mkdtemp(), "a.wav")
    >>> soundfile.write(path, np.random.default_rng(0).normal(0, 0.1, 16000), 16000)
    >>> utterance_statistics([path, path], "mfcc").shape
    (2, 120)
    """
    extractor = _extractor(kind, sample_rate)
    cache = {} if cache is None else cache
    rows = []
    for path in paths:
        key = (kind, path)
        if key not in cache:
            wav = load_training_audio(path, sample_rate, max_duration_s)
            feats = extractor(wav.unsqueeze(0))[0]  # (frames, dim)
            cache[key] = torch.cat([feats.mean(dim=0), feats.std(dim=0)]).numpy()
        rows.append(cache[key])
    return np.stack(rows)


def evaluate_floor(name, splits, emotion_classes, sample_rate=16000, max_duration_s=40.0,
                   cache=None, seed=0):
    """Trains a floor on ``splits["train"]``; scores it on ``valid`` and ``test``.

    Arguments
    ---------
    name : str
        One of :data:`FLOORS`.
    splits : dict
        ``train``, ``valid``, ``test`` -> list of CSV rows (``wav`` paths
        resolved, ``emo`` labels).
    emotion_classes : list of str

    Returns
    -------
    dict
        ``test_results.json`` content (percentages, as ``train.py`` writes).
    """
    if name not in FLOORS:
        raise ValueError(f"unknown floor {name!r}: choose from {', '.join(FLOORS)}")
    labels = {split: np.array([emotion_classes.index(r["emo"]) for r in rows])
              for split, rows in splits.items()}
    if name == "majority":
        majority = int(np.bincount(labels["train"], minlength=len(emotion_classes)).argmax())
        predict = {split: np.full(len(rows), majority) for split, rows in splits.items()}
    else:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        kind = name.split("_")[0]
        features = {
            split: utterance_statistics([r["wav"] for r in rows], kind, sample_rate,
                                        max_duration_s, cache)
            for split, rows in splits.items()
        }
        model = make_pipeline(
            StandardScaler(),
            LogisticRegression(class_weight="balanced", max_iter=5000, random_state=seed),
        )
        model.fit(features["train"], labels["train"])
        predict = {split: model.predict(features[split]) for split in splits}
    valid = emotion_scores(labels["valid"].tolist(), predict["valid"].tolist(), emotion_classes)
    test = emotion_scores(labels["test"].tolist(), predict["test"].tolist(), emotion_classes)
    return {
        "WA": 100 * test["WA"], "UA": 100 * test["UA"], "recall": test["recall"],
        "confusion": test["confusion"], "emotion_classes": list(emotion_classes),
        "n_utterances": int(len(labels["test"])), "epoch": None,
        "best_valid_UA": 100 * valid["UA"], "floor": name,
    }


def read_split_rows(folder, data_folder):
    """``train/valid/test.csv`` of an experiment folder, with ``$data_root`` resolved."""
    return {split: prepared_rows(os.path.join(folder, f"{split}.csv"), data_folder)
            for split in ("train", "valid", "test")}


def write_floor_results(path, results):
    """Writes a floor's results as ``test_results.json`` (through a rename)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_text_atomically(path, json.dumps(results, indent=2))
