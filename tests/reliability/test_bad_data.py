"""Bad data is found at preparation time, all of it at once, and stops or is skipped per YAML.

A small IEMOCAP tree gets one broken file or label per kind of fault; the
preparation must name every one of them with its reason (``bad_data: stop``),
or leave exactly those turns out and list them in ``prepare_report.json``
(``bad_data: skip``), while files that can be used (other rates, stereo, a
10-minute turn, a transcript with foreign characters) are kept and converted,
cropped or reported.
"""

import json
import os
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from iemocap_prepare import PreparationError, prepare_iemocap
from iemocap_tree import build_tree
from mtlser_lobes.data.audio import load_training_audio

WAV_DIR = os.path.join("Session{s}", "sentences", "wav", "Ses0{s}{dialog}")
# (fault, session, dialog suffix, turn) -> the turn that gets it; every one is a kept 4-class turn
TURNS = {
    "missing file": (1, "F_impro01", "F000"),
    "empty file": (1, "F_impro01", "M000"),
    "truncated header": (1, "F_impro01", "F001"),
    "non-audio bytes": (1, "M_impro05a", "F000"),
    "50 ms clip": (2, "F_impro01", "F000"),
    "NaN samples": (2, "F_impro01", "M000"),
    "inf samples": (2, "F_impro01", "F001"),
    "all-zero audio": (2, "M_impro05a", "F000"),
    "8 kHz": (3, "F_impro01", "F000"),
    "44.1 kHz stereo": (3, "F_impro01", "M000"),
    "10-minute file": (3, "F_impro01", "F001"),
    "transcript outside the alphabet": (4, "F_impro01", "F000"),
}
BAD = {  # fault -> words of the reason
    "missing file": "wav missing",
    "empty file": "wav cannot be decoded as audio",
    "truncated header": "wav cannot be decoded as audio",
    "non-audio bytes": "wav cannot be decoded as audio",
    "50 ms clip": "wav is too short (0.050 s)",
    "NaN samples": "wav contains NaN or infinite samples",
    "inf samples": "wav contains NaN or infinite samples",
    "all-zero audio": "wav is silent",
}
UNKNOWN_LABEL_TURN = "Ses05F_impro01_F000"


def turn_id(fault):
    session, dialog, turn = TURNS[fault]
    return f"Ses0{session}{dialog}_{turn}"


def wav_path(release, fault):
    session, dialog, _ = TURNS[fault]
    return os.path.join(release, WAV_DIR.format(s=session, dialog=dialog), turn_id(fault) + ".wav")


@pytest.fixture
def broken_release(tmp_path):
    """A tree with one fault of each kind; returns its path."""
    release = build_tree(str(tmp_path / "corpus"))
    noise = lambda n: (0.1 * np.random.default_rng(0).standard_normal(n)).astype(np.float32)  # noqa: E731
    os.remove(wav_path(release, "missing file"))
    open(wav_path(release, "empty file"), "wb").close()
    with open(wav_path(release, "truncated header"), "rb") as whole:
        header = whole.read(20)
    with open(wav_path(release, "truncated header"), "wb") as truncated:
        truncated.write(header)
    with open(wav_path(release, "non-audio bytes"), "wb") as text:
        text.write(b"<html>this is a web page, not a wav</html>" * 20)
    sf.write(wav_path(release, "50 ms clip"), noise(800), 16000)
    with_nan = noise(16000)
    with_nan[100] = np.nan
    sf.write(wav_path(release, "NaN samples"), with_nan, 16000, subtype="FLOAT")
    with_inf = noise(16000)
    with_inf[5000] = np.inf
    sf.write(wav_path(release, "inf samples"), with_inf, 16000, subtype="FLOAT")
    sf.write(wav_path(release, "all-zero audio"), np.zeros(16000, dtype=np.float32), 16000)
    sf.write(wav_path(release, "8 kHz"), noise(8000), 8000)
    sf.write(wav_path(release, "44.1 kHz stereo"), np.stack([noise(44100)] * 2, axis=1), 44100)
    sf.write(wav_path(release, "10-minute file"), noise(16000 * 600), 16000, subtype="PCM_16")
    transcript = os.path.join(release, "Session4", "dialog", "transcriptions", "Ses04F_impro01.txt")
    lines = open(transcript).read().replace("Excuse me.", "Excuse me, caf\u00e9 at 9\u20ac.")
    open(transcript, "w").write(lines)
    labels = os.path.join(release, "Session5", "dialog", "EmoEvaluation", "Ses05F_impro01.txt")
    text = open(labels).read().replace(f"{UNKNOWN_LABEL_TURN}\tneu", f"{UNKNOWN_LABEL_TURN}\tjoy")
    open(labels, "w").write(text)
    return release


def test_stop_names_every_bad_file_with_its_reason_before_anything_is_written(
    broken_release, tmp_path, ledger
):
    with pytest.raises(PreparationError) as error:
        prepare_iemocap(broken_release, str(tmp_path / "prep"))
    message = str(error.value)
    assert message.startswith(f"{len(BAD) + 1} problem(s)")
    assert "bad_data: skip" in message
    for fault, reason in BAD.items():
        line = next(l for l in message.splitlines() if turn_id(fault) in l)
        assert reason in line and wav_path(broken_release, fault) in line, (fault, line)
    assert f"{UNKNOWN_LABEL_TURN}: unknown emotion label 'joy'" in message
    for usable in ("8 kHz", "44.1 kHz stereo", "10-minute file", "transcript outside the alphabet"):
        assert turn_id(usable) not in message
    assert not os.path.exists(tmp_path / "prep" / "train.csv")
    for fault in list(BAD) + ["unknown emotion label"]:
        ledger("bad inputs stopped at preparation", fault)


def test_skip_leaves_exactly_the_bad_turns_out_and_reports_them(broken_release, tmp_path, ledger):
    clean = build_tree(str(tmp_path / "clean"))
    expected = {row["ID"] for rows in prepare_iemocap(clean, str(tmp_path / "clean_prep")).values()
                for row in rows}
    splits = prepare_iemocap(broken_release, str(tmp_path / "prep"), bad_data="skip")
    kept = {row["ID"] for rows in splits.values() for row in rows}
    bad_ids = {turn_id(fault) for fault in BAD} | {UNKNOWN_LABEL_TURN}
    assert kept == expected - bad_ids  # nothing else lost

    report = json.load(open(tmp_path / "prep" / "prepare_report.json"))
    assert report["bad_data"] == "skip" and report["checked"] == len(expected) - 1
    assert {s["ID"] for s in report["skipped"]} == bad_ids
    for skipped in report["skipped"]:
        fault = next((f for f in BAD if turn_id(f) == skipped["ID"]), None)
        assert BAD[fault] in skipped["reason"] if fault else "unknown emotion label 'joy'" == skipped["reason"]
    assert {c["ID"]: c["from"] for c in report["converted"]} == {
        turn_id("8 kHz"): "8000 Hz, 1 channel(s)", turn_id("44.1 kHz stereo"): "44100 Hz, 2 channel(s)",
    }
    assert report["cropped"] == [{"ID": turn_id("10-minute file"), "file": wav_path(broken_release, "10-minute file"),
                                  "duration": 600.0, "kept": 40.0}]
    assert report["transcript_characters_dropped"] == [
        {"ID": turn_id("transcript outside the alphabet"), "characters": "9\u00e9\u20ac"}
    ]
    rows = {row["ID"]: row for rows in splits.values() for row in rows}
    assert rows[turn_id("10-minute file")]["duration"] == 40.0
    assert rows[turn_id("transcript outside the alphabet")]["wrd"] == "excuse me caf at"
    for fault in list(BAD) + ["unknown emotion label"]:
        ledger("bad inputs skipped and reported", fault)
    for fault in ("8 kHz", "44.1 kHz stereo", "10-minute file", "transcript outside the alphabet"):
        ledger("usable odd inputs kept", fault)


def test_converted_and_cropped_files_load_at_the_model_rate_without_reading_everything(
    broken_release, ledger
):
    eight = load_training_audio(wav_path(broken_release, "8 kHz"), 16000, 40.0)
    assert tuple(eight.shape) == (16000,)
    stereo = load_training_audio(wav_path(broken_release, "44.1 kHz stereo"), 16000, 40.0)
    assert stereo.dim() == 1 and stereo.shape[0] == 16000
    tracemalloc.start()
    long = load_training_audio(wav_path(broken_release, "10-minute file"), 16000, 40.0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert tuple(long.shape) == (16000 * 40,)
    # 40 s of float32 is 2.56 MB; the whole file would be 38 MB
    assert peak < 3 * long.numel() * 4, peak
    for fault in ("8 kHz", "44.1 kHz stereo", "10-minute file"):
        ledger("odd inputs loaded for training", fault)


@pytest.mark.slow
def test_train_py_stops_before_training_or_trains_on_the_rest(broken_release, tmp_path, tiny_encoder, ledger):
    import subprocess
    import sys

    from conftest import RECIPE_DIR
    from recipe_helpers import TINY_ENCODER_OVERRIDES, run_train

    common = ["--data_folder", broken_release, "--wav2vec2_hub", tiny_encoder, "--number_of_epochs", "1",
              "--alpha", "0.1", "--beta", "0.1", *TINY_ENCODER_OVERRIDES]
    stopped = subprocess.run(
        [sys.executable, "train.py", "hparams/mtl.yaml", *common, "--output_folder", str(tmp_path / "stop")],
        cwd=RECIPE_DIR, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    assert stopped.returncode != 0
    output = stopped.stdout + stopped.stderr
    assert f"{len(BAD) + 1} problem(s)" in output and turn_id("NaN samples") in output, output[-3000:]
    assert not [name for name in os.listdir(tmp_path / "stop" / "save") if name.startswith("CKPT")]

    run_train([*common, "--bad_data", "skip", "--output_folder", str(tmp_path / "skip")])
    results = json.load(open(tmp_path / "skip" / "test_results.json"))
    test_rows = open(tmp_path / "skip" / "test.csv").read().strip().splitlines()[1:]
    assert results["n_utterances"] == len(test_rows) > 0
    report = json.load(open(tmp_path / "skip" / "prepare_report.json"))
    assert len(report["skipped"]) == len(BAD) + 1
    ledger("training runs with bad data", "stop before the first step")
    ledger("training runs with bad data", "skip, train and test on the rest")
