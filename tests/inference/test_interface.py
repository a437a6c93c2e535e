"""Export, the MTLSER inference interface and the mtlser-infer CLI, on a model trained here."""

import csv
import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch

from conftest import ROOT
from mtlser_lobes.precision import REFERENCE_RUN_OPTS
from recipe_helpers import brain_outputs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def experiment(trained_experiment):
    """train.py on the demo corpus (conftest): the experiment and its exported model."""
    return trained_experiment


@pytest.fixture(scope="module")
def model(experiment):
    from mtlser_lobes.inference.interface import MTLSER

    return MTLSER.from_hparams(source=experiment["model"], run_opts=REFERENCE_RUN_OPTS)


def _rows(experiment, split):
    with open(os.path.join(experiment["folder"], f"{split}.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["wav"] = row["wav"].replace("$data_root", experiment["data"])
    return rows


_FRESH_PROCESS = """
import json, sys
from mtlser_lobes.inference.interface import MTLSER
model = MTLSER.from_hparams(source=sys.argv[1], run_opts={"device": "cpu", "precision": "fp32"})
print(json.dumps([model.predict_file(p).to_dict() for p in sys.argv[2:]]))
"""


def test_export_folder_is_self_contained_and_matches_the_brain(experiment, tmp_path, tiny_encoder):
    names = sorted(os.listdir(experiment["model"]))
    for name in ("hyperparams.yaml", "model_card.md", "custom.py", "wav2vec2.ckpt", "emotion_head.ckpt",
                 "ctc_head.ckpt", "speaker_head.ckpt", "speaker_gallery.ckpt", "label_encoder.ckpt",
                 "tokenizer.ckpt", "speaker_encoder.ckpt"):
        assert name in names
    from safetensors import safe_open

    with safe_open(os.path.join(experiment["model"], "wav2vec2.ckpt"), "pt") as weights:
        assert any(key.startswith("model.encoder.layers.") for key in weights.keys())
    with open(os.path.join(experiment["folder"], "test_results.json")) as f:
        results = json.load(f)
    card = open(os.path.join(experiment["model"], "model_card.md")).read()
    assert f"| UA (%) | {results['UA']:.2f} |" in card and "protocol `loso`" in card

    # A copy of the folder, loaded in a fresh offline process while the
    # experiment folder and the encoder it started from are out of reach.
    copy = str(tmp_path / "copied_model")
    shutil.copytree(experiment["model"], copy)
    paths = [row["wav"] for row in _rows(experiment, "test")[:3]]
    hidden = [(experiment["folder"], experiment["folder"] + ".hidden"), (tiny_encoder, tiny_encoder + ".hidden")]
    for path, moved in hidden:
        os.rename(path, moved)
    try:
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
        result = subprocess.run([sys.executable, "-c", _FRESH_PROCESS, copy, *paths],
                                capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=300)
    finally:
        for path, moved in hidden:
            os.rename(moved, path)
    assert result.returncode == 0, result.stderr[-3000:]
    predictions = json.loads(result.stdout.strip().splitlines()[-1])

    for prediction, expected in zip(predictions, brain_outputs(experiment["folder"], paths)):
        probabilities = [prediction["probabilities"][c] for c in ("neu", "hap", "ang", "sad")]
        assert probabilities == pytest.approx(expected["probabilities"], abs=1e-5)
        assert prediction["text"] == expected["text"]
        assert prediction["speaker"] and prediction["speaker_score"] is not None


def test_foreign_class_loads_the_same_model(experiment, model, tmp_path):
    from speechbrain.inference.interfaces import foreign_class

    loaded = foreign_class(source=experiment["model"], savedir=str(tmp_path / "collected"),
                           run_opts=REFERENCE_RUN_OPTS)
    assert type(loaded).__name__ == "MTLSER"
    path = _rows(experiment, "test")[0]["wav"]
    assert loaded.predict_file(path).to_dict() == model.predict_file(path).to_dict()


def test_batch_answers_equal_single_file_answers(experiment, model):
    paths = [row["wav"] for row in _rows(experiment, "test")[:5]]
    lengths = {soundfile.info(p).frames for p in paths}
    assert len(lengths) > 1  # the batch really is padded
    for batched, path in zip(model.predict_files(paths, batch_size=5), paths):
        single = model.predict_file(path)
        assert batched.emotion == single.emotion and batched.text == single.text
        assert batched.speaker == single.speaker
        for name, p in single.probabilities.items():
            assert batched.probabilities[name] == pytest.approx(p, abs=1e-5)


def test_other_rates_and_stereo_are_converted_with_a_log_line(experiment, model, tmp_path, caplog):
    path = _rows(experiment, "test")[0]["wav"]
    audio, rate = soundfile.read(path, dtype="float32")
    reference = model.predict_file(path)

    stereo = str(tmp_path / "stereo.wav")
    soundfile.write(stereo, np.stack([audio, audio], axis=1), rate, subtype="FLOAT")
    with caplog.at_level(logging.INFO, logger="mtlser_lobes.inference.interface"):
        mixed = model.predict_file(stereo)
    assert f"{stereo}: 16000 Hz stereo: mixed down to mono" in caplog.text
    assert mixed.probabilities == pytest.approx(reference.probabilities, abs=1e-5)

    import torchaudio

    resampled = torchaudio.functional.resample(torch.from_numpy(audio), rate, 44100).numpy()
    high_rate = str(tmp_path / "44k_stereo.flac")
    soundfile.write(high_rate, np.stack([resampled, resampled], axis=1), 44100)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mtlser_lobes.inference.interface"):
        converted = model.predict_file(high_rate)
    assert f"{high_rate}: 44100 Hz stereo: resampled to 16000 Hz mono" in caplog.text
    assert converted.duration_s == pytest.approx(reference.duration_s, abs=0.01)
    for name, p in reference.probabilities.items():
        assert converted.probabilities[name] == pytest.approx(p, abs=0.05)


def _bad_files(folder):
    """One file per kind of bad input, with the message each must give."""
    folder.mkdir(exist_ok=True)
    noise = 0.1 * np.random.default_rng(0).standard_normal(16000).astype("float32")
    cases = {}
    path = str(folder / "empty.wav")
    soundfile.write(path, np.zeros(0, dtype="float32"), 16000)
    cases[path] = "is empty"
    path = str(folder / "short.wav")
    soundfile.write(path, noise[:800], 16000)
    cases[path] = "is too short (0.050 s)"
    path = str(folder / "silent.wav")
    soundfile.write(path, np.zeros(16000, dtype="float32"), 16000)
    cases[path] = "is silent"
    path = str(folder / "nan.wav")
    with_nan = noise.copy()
    with_nan[100] = np.nan
    soundfile.write(path, with_nan, 16000, subtype="FLOAT")
    cases[path] = "contains NaN or infinite samples"
    path = str(folder / "text.wav")
    with open(path, "w") as f:
        f.write("this is not audio\n")
    cases[path] = "cannot be decoded as audio"
    cases[str(folder / "missing.wav")] = "no such file"
    return cases


def test_every_bad_input_gets_its_own_clear_error(model, tmp_path):
    from mtlser_lobes.inference.interface import AudioError

    for path, message in _bad_files(tmp_path / "bad").items():
        with pytest.raises(AudioError, match=".*".join(map(__import__("re").escape, [path, message]))):
            model.predict_file(path)


def test_a_bad_item_does_not_stop_the_batch(experiment, model):
    good = model.load_audio(_rows(experiment, "test")[0]["wav"])
    batch = torch.zeros(3, good.shape[0])
    batch[0] = good
    batch[1, :100] = float("nan")
    batch[2] = good
    lengths = torch.tensor([1.0, 0.5, 1.0])
    first, broken, last = model.predict_batch(batch, lengths, sources=["a", "b", "c"])
    assert broken.error == "b: contains NaN or infinite samples" and broken.emotion is None
    assert first.error is None and first.to_dict() == dict(last.to_dict(), source="a")
    assert first.probabilities == model.predict_file(_rows(experiment, "test")[0]["wav"]).probabilities


_PEAK_MEMORY = """
import json, resource, sys
from mtlser_lobes.inference.interface import MTLSER
model = MTLSER.from_hparams(source=sys.argv[1])
timeline = model.predict_file(sys.argv[2], segment_s=10.0, batch_size=4)
print(json.dumps({"peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "timeline": timeline.to_dict()}))
"""


def test_long_recordings_give_a_timeline_in_bounded_memory(experiment, tmp_path):
    utterances = [soundfile.read(row["wav"], dtype="float32")[0] for row in _rows(experiment, "test")[:6]]
    pause = np.zeros(8000, dtype="float32")
    block = np.concatenate([x for u in utterances for x in (u, pause)])
    runs = {}
    for minutes in (1, 12):
        path = str(tmp_path / f"long_{minutes}.wav")
        with soundfile.SoundFile(path, "w", 16000, 1, subtype="PCM_16") as out:
            written = 0
            while written < minutes * 60 * 16000:
                out.write(block)
                written += len(block)
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        result = subprocess.run([sys.executable, "-c", _PEAK_MEMORY, experiment["model"], path],
                                capture_output=True, text=True, env=env, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        runs[minutes] = json.loads(result.stdout.strip().splitlines()[-1])
        runs[minutes]["samples"] = written

    timeline = runs[12]["timeline"]
    segments = timeline["segments"]
    assert len(segments) == int(np.ceil(runs[12]["samples"] / 160000))
    assert segments[0]["start_s"] == 0 and segments[0]["end_s"] == 10.0
    assert segments[-1]["end_s"] == pytest.approx(runs[12]["samples"] / 16000, abs=1e-3)
    assert all(s["error"] is None and s["emotion"] in ("neu", "hap", "ang", "sad") for s in segments)
    overall = timeline["overall"]
    assert sum(overall["probabilities"].values()) == pytest.approx(1, abs=1e-4)
    assert overall["emotion"] == max(overall["probabilities"], key=overall["probabilities"].get)
    # Twelve minutes decoded at once would be 46 MB of float32 (and more once
    # resampled); streaming keeps the peak within a few MB of the 1-minute run.
    growth_mib = (runs[12]["peak_kib"] - runs[1]["peak_kib"]) / 1024
    assert growth_mib < 20, f"peak memory grew by {growth_mib:.0f} MiB from 1 to 12 minutes"


def test_enrolled_unseen_speakers_are_recognised_and_others_are_unknown(experiment, model):
    # Leave-one-session-out: the test session's two speakers were never seen in training.
    by_speaker = {}
    for row in _rows(experiment, "test"):
        by_speaker.setdefault(row["spk_id"], []).append(row["wav"])
    assert sorted(by_speaker) == ["Ses05_F", "Ses05_M"]
    assert not set(by_speaker) & set(model.trained_speakers)
    recognised, held_out, unknown, unenrolled = 0, 0, 0, 0
    try:
        for enrolled, other in (("Ses05_F", "Ses05_M"), ("Ses05_M", "Ses05_F")):
            model.enrolled = {}
            model.enroll("guest", by_speaker[enrolled][:4])
            # The trained speakers stay: an enrolled speaker is added, never confused with the other.
            model.enrolled_only = False
            assert model.speakers == model.trained_speakers + ["guest"]
            others = model.predict_files(by_speaker[other])
            assert not [p for p in others if p.speaker == "guest"]
            # Among the enrolled speakers alone: recognised, or "unknown".
            model.enrolled_only = True
            mine = model.predict_files(by_speaker[enrolled][4:])
            others = model.predict_files(by_speaker[other])
            recognised += sum(p.speaker == "guest" for p in mine)
            held_out += len(mine)
            unknown += sum(p.speaker == "unknown" for p in others)
            unenrolled += len(others)
    finally:
        model.enrolled, model.enrolled_only = {}, False
    assert recognised / held_out >= 0.5, f"{recognised} of {held_out} held-out utterances recognised"
    assert unknown / unenrolled >= 0.9, f"{unknown} of {unenrolled} unenrolled utterances unknown"

    with pytest.raises(ValueError, match="training speaker"):
        model.enroll(model.trained_speakers[0], by_speaker["Ses05_F"][:1])


def _infer(args):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "mtlser_lobes.inference.cli", *args],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def test_cli_table_json_and_exit_codes(experiment, tmp_path):
    folder = tmp_path / "mixed"
    bad = _bad_files(folder)
    good = [row["wav"] for row in _rows(experiment, "test")[:2]]
    for path in good:
        shutil.copy(path, folder)
    good_copies = sorted(str(folder / os.path.basename(p)) for p in good)
    files_in_folder = [p for p in bad if os.path.exists(p)] + good_copies

    result = _infer([experiment["model"], str(folder), "--json"])
    assert result.returncode == 0, result.stderr[-3000:]
    # precision auto by default: decided from this machine, and said
    from mtlser_lobes.precision import native_bf16

    native, _ = native_bf16("cpu")
    assert f"precision auto: {'bf16' if native else 'fp32'} (CPU " in result.stderr
    lines = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert sorted(line["source"] for line in lines) == sorted(files_in_folder)
    answered = {line["source"]: line for line in lines if not line["error"]}
    assert sorted(answered) == good_copies
    for line in answered.values():
        assert set(line["probabilities"]) == {"neu", "hap", "ang", "sad"} and line["speaker"]
    for line in lines:
        if line["error"]:
            assert line["error"] in result.stderr

    table = _infer([experiment["model"], str(folder), good_copies[0], "--quiet"])
    assert table.returncode == 0
    header, *rows = table.stdout.strip().splitlines()
    assert header.split() == ["file", "emotion", "p", "speaker", "score", "text"]
    assert len(rows) == len(files_in_folder) + 1
    assert sum("ERROR" in row for row in rows) == len(files_in_folder) - len(good_copies)

    # bf16 encoder: the same files answered, probabilities close to fp32's
    bf16 = _infer([experiment["model"], *good_copies, "--json", "--quiet", "--precision", "bf16"])
    assert bf16.returncode == 0, bf16.stderr[-3000:]
    assert ("precision bf16 on a CPU without native bf16" in bf16.stderr) == (not native)  # a warning, even --quiet
    for line in (json.loads(line) for line in bf16.stdout.strip().splitlines()):
        fp32 = answered[line["source"]]["probabilities"]
        assert line["probabilities"] == pytest.approx(fp32, abs=0.05)

    nothing = _infer([experiment["model"], *bad, "--quiet"])
    assert nothing.returncode == 1 and "no such file" in nothing.stderr
    assert _infer([str(tmp_path), good[0]]).returncode == 2  # not a model folder


def test_cli_log_lines_stay_off_the_progress_bar_and_long_files_get_a_timeline(experiment, tmp_path):
    path = _rows(experiment, "test")[0]["wav"]
    audio, rate = soundfile.read(path, dtype="float32")
    stereo = str(tmp_path / "stereo.wav")
    soundfile.write(stereo, np.stack([audio, audio], axis=1), rate, subtype="FLOAT")
    long = str(tmp_path / "long.wav")  # 65 s, no --segment_s
    soundfile.write(long, np.tile(audio, int(np.ceil(65 * rate / len(audio))))[: 65 * rate], rate, subtype="FLOAT")

    result = _infer([experiment["model"], stereo, long, path])
    assert result.returncode == 0, result.stderr[-3000:]
    log_lines = [line for line in result.stderr.split("\n") if "INFO mtlser_lobes.inference." in line]
    assert len(log_lines) == 2, result.stderr
    for line in log_lines:  # the bar's line is cleared ("\r") before a log line is written
        assert line.split("\r")[-1].startswith("INFO mtlser_lobes.inference."), repr(line)
    assert f"{long}: 65 s is longer than 60 s: answered in windows of 10 s" in result.stderr
    rows = [row.split() for row in result.stdout.strip().splitlines()[1:]]
    starts = [row[1] for row in rows if row[0] == long]
    assert starts == ["all", "0.0", "10.0", "20.0", "30.0", "40.0", "50.0", "60.0"]
