"""use_tensorboard: True: train.py logs what train_log.txt gets to TensorBoard event files."""

import glob
import os

import pytest

from recipe_helpers import parse_train_log

pytestmark = pytest.mark.slow


def test_event_files_hold_every_loss_term_metric_and_learning_rate(small_experiment):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = os.path.join(small_experiment["folder"], "tensorboard")
    assert glob.glob(os.path.join(folder, "events.out.tfevents.*"))
    events = EventAccumulator(folder)
    events.Reload()
    tags = set(events.Tags()["scalars"])

    # Every number of train_log.txt, under "<name>/<stage>", one point per epoch (step = epoch).
    log = parse_train_log(os.path.join(small_experiment["folder"], "train_log.txt"))
    epochs = [entry for entry in log if "train" in entry]
    assert len(epochs) == 2
    for stage in ("train", "valid"):
        for name in epochs[0][stage]:
            if isinstance(epochs[0][stage][name], str):  # per-layer weights "0.34/0.33/0.33"
                continue
            tag = f"{name}/{stage}"
            assert tag in tags, tag
            points = events.Scalars(tag)
            assert [p.step for p in points] == [1, 2]
            logged = [entry[stage][name] for entry in epochs]
            assert [p.value for p in points] == pytest.approx(logged, rel=0.01, abs=1e-3), tag
    for tag in ("loss_emotion/train", "loss_ctc/train", "loss_speaker/train", "WA/valid", "UA/valid",
                "CER/valid", "WER/valid", "lr", "lr_wav2vec2", "UA/test", "loss_emotion/test"):
        assert tag in tags, tag
    assert [p.value for p in events.Scalars("lr")] == pytest.approx([e["meta"]["lr"] for e in epochs])


def test_without_tensorboard_installed_the_run_stops_first_saying_what_to_install(monkeypatch):
    import importlib.util

    from recipe_options import check_options

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "tensorboard" else real_find_spec(name, *args))
    problems = check_options({"alpha": 0.1, "beta": 0.1, "data_folder": "x", "use_tensorboard": True})
    assert problems == ['--use_tensorboard True needs TensorBoard: pip install mtlser[tensorboard] '
                        '(from a clone: pip install -e ".[tensorboard]")']
    assert check_options({"alpha": 0.1, "beta": 0.1, "data_folder": "x", "use_tensorboard": False}) == []
