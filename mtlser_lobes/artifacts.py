"""The files of an experiment and of an exported model: their names, and the test-results writer.

``train.py`` writes the experiment folder, :mod:`mtlser_lobes.inference.export`
reads it and writes the model folder, :mod:`mtlser_lobes.inference.onnx_export`
adds its ONNX sub-folder, the interfaces, ``mtlser-infer``, ``mtlser-demo`` and
the studies read them. Each names a file through this module (imports nothing
heavy: the ONNX Runtime path uses it without torch), so the contract between
them is written once.

Example
-------
>>> import os, tempfile
>>> folder = tempfile.mkdtemp()
>>> write_test_results(os.path.join(folder, TEST_RESULTS), os.path.join(folder, "predictions.csv"),
...                    {"UA": 50.0}, ["ID", "emo"], [["a", "ang"]])
>>> sorted(os.listdir(folder))
['predictions.csv', 'test_results.json']
"""

import csv
import json
import os

__all__ = [
    "CTC_ENCODER", "CUSTOM_PY", "EMOTION_ENCODER", "HYPERPARAMS", "LABEL_ENCODER", "MODEL_CARD",
    "MODEL_SPEAKER_ENCODER", "MODEL_WEIGHTS", "ONNX_CONFIG", "ONNX_FOLDER", "ONNX_INT8_MODEL", "ONNX_MODEL",
    "SPEAKER_ENCODER", "TEST_RESULTS", "TOKENIZER", "results_record", "weights_file",
    "write_test_results",
]

# --- An experiment (train.py's output folder) ---------------------------------------------
#: The hyperparameters SpeechBrain saves in the output folder (and the model folder's, below).
HYPERPARAMS = "hyperparams.yaml"
#: The test metrics, in the output folder; written last, so its presence marks a finished run.
TEST_RESULTS = "test_results.json"
#: Label encoders in the experiment's ``save_folder``: emotions, training speakers, CTC characters.
EMOTION_ENCODER = "emotion_encoder.txt"
SPEAKER_ENCODER = "speaker_encoder.txt"
CTC_ENCODER = "ctc_encoder.txt"

# --- An exported model folder ----------------------------------------------------------------
#: Modules whose weights it carries, each as ``<name>.ckpt`` in safetensors format.
MODEL_WEIGHTS = ("wav2vec2", "emotion_head", "ctc_head", "speaker_head", "speaker_gallery")
#: SpeechBrain encoder text files (``Pretrainer`` names what it loads ``<name>.ckpt``).
LABEL_ENCODER = "label_encoder.ckpt"
TOKENIZER = "tokenizer.ckpt"
MODEL_SPEAKER_ENCODER = "speaker_encoder.ckpt"
MODEL_CARD = "model_card.md"
CUSTOM_PY = "custom.py"
#: The ONNX export: a sub-folder with the graphs and a JSON config (no YAML).
ONNX_FOLDER = "onnx"
ONNX_MODEL = "model.onnx"
ONNX_INT8_MODEL = "model.int8.onnx"
ONNX_CONFIG = "config.json"


def weights_file(name):
    """``<name>.ckpt``: the file of one of :data:`MODEL_WEIGHTS` in a model folder."""
    return f"{name}.ckpt"


def results_record(stats, emotion, hparams, best_valid_ua, environment):
    """The content of :data:`TEST_RESULTS`: the test stage's metrics and what produced them.

    Arguments
    ---------
    stats : dict
        The test stage's statistics (loss terms, WA, UA, CER, ``speaker_acc`` where defined).
    emotion : dict
        The emotion metrics' summary: ``recall``, ``confusion`` and ``n`` (utterances).
    hparams : namespace
        The run's hyperparameters (``alpha``, ``beta``, ``emotion_classes``, ``protocol``,
        ``test_session``, ``epoch_counter``, ``average_checkpoints``).
    best_valid_ua : float or None
        The validation UA of the tested checkpoint.
    environment : dict
        Versions and device of the run.

    Returns
    -------
    dict, JSON-serialisable; ``speaker_note`` says why a speaker accuracy is missing.

    Example
    -------
    >>> from types import SimpleNamespace
    >>> hp = SimpleNamespace(alpha=0.1, beta=0.0, emotion_classes=["neu", "hap"], protocol="loso",
    ...                      test_session=5, epoch_counter=SimpleNamespace(current=3), average_checkpoints=1)
    >>> record = results_record({"UA": 50.0}, {"recall": {}, "confusion": [], "n": 2}, hp, 60.0, {})
    >>> record["speaker_note"], record["epoch"]
    ('speaker head off (beta = 0)', 3)
    """
    speaker_note = None
    if hparams.beta <= 0:
        speaker_note = "speaker head off (beta = 0)"
    elif "speaker_acc" not in stats:
        speaker_note = "test speakers unseen in training: accuracy undefined"
    return {
        **stats, "recall": emotion["recall"], "confusion": emotion["confusion"],
        "emotion_classes": list(hparams.emotion_classes), "n_utterances": emotion["n"],
        "alpha": hparams.alpha, "beta": hparams.beta, "protocol": hparams.protocol,
        "test_session": hparams.test_session, "epoch": hparams.epoch_counter.current,
        "best_valid_UA": best_valid_ua, "averaged_checkpoints": hparams.average_checkpoints,
        "speaker_note": speaker_note, "environment": environment,
    }


def write_test_results(results_path, predictions_path, results, header, rows):
    """Writes the test metrics (JSON) and the per-utterance predictions (CSV).

    The JSON goes through a rename after the CSV is complete: its presence
    means both are whole (the studies count a cell finished by it).

    Arguments
    ---------
    results_path : str
        Where :data:`TEST_RESULTS` goes.
    predictions_path : str
        Where the predictions CSV goes.
    results : dict
        The metrics (JSON-serialisable).
    header : list of str
        The CSV's column names.
    rows : iterable of lists
        One row per utterance.
    """
    temporary = results_path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as out_file:
        json.dump(results, out_file, indent=2)
    with open(predictions_path, "w", newline="", encoding="utf-8") as out_file:
        writer = csv.writer(out_file)
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(temporary, results_path)
