"""The synthetic demo corpus: IEMOCAP's layout, deterministic, read by the real preparation."""

import hashlib
import os

import soundfile as sf

from iemocap_prepare import prepare_iemocap, read_corpus
from mtlser_lobes.demo.demo_corpus import generate_demo_corpus


def digest(folder):
    h = hashlib.sha256()
    for base, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            with open(os.path.join(base, name), "rb") as f:
                h.update(name.encode() + f.read())
    return h.hexdigest()


def test_layout_is_iemocap(demo_release):
    for session in range(1, 6):
        base = os.path.join(demo_release, f"Session{session}")
        dialogs = sorted(os.listdir(os.path.join(base, "sentences", "wav")))
        assert dialogs == [f"Ses0{session}F_impro01", f"Ses0{session}M_impro05a"]
        for dialog in dialogs:
            assert os.path.isfile(os.path.join(base, "dialog", "EmoEvaluation", dialog + ".txt"))
            assert os.path.isfile(os.path.join(base, "dialog", "transcriptions", dialog + ".txt"))
        assert os.path.isdir(os.path.join(base, "dialog", "EmoEvaluation", "Categorical"))
        wav = os.path.join(base, "sentences", "wav", dialogs[1], f"{dialogs[1]}_M000.wav")
        info = sf.info(wav)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    with open(os.path.join(demo_release, "Session1", "dialog", "EmoEvaluation", "Ses01F_impro01.txt")) as f:
        text = f.read()
    assert text.startswith("% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]")
    assert "\tSes01F_impro01_F000\t" in text and "C-E2:\t" in text and "A-E3:\t" in text


def test_all_codes_and_speakers_occur_and_preparation_reads_it(demo_release, tmp_path):
    codes = set()
    for base, _, files in os.walk(demo_release):
        if base.endswith("EmoEvaluation"):
            for name in files:
                with open(os.path.join(base, name)) as f:
                    codes |= {line.split("\t")[2] for line in f if line.startswith("[")}
    assert {"neu", "hap", "exc", "ang", "sad"} <= codes and codes - {"neu", "hap", "exc", "ang", "sad"}
    turns, n_labelled, _ = read_corpus(demo_release)
    assert n_labelled == 5 * 2 * 12 and 0 < len(turns) < n_labelled
    assert len({t["spk_id"] for t in turns}) == 10
    assert {t["emo"] for t in turns} == {"neu", "hap", "ang", "sad"}
    splits = prepare_iemocap(demo_release, str(tmp_path / "prep"))
    assert {r["spk_id"] for r in splits["test"]} == {"Ses05_F", "Ses05_M"}


def test_generation_is_deterministic_and_idempotent(tmp_path):
    options = dict(n_sessions=2, dialogs_per_session=1, turns_per_dialog=4)
    first = generate_demo_corpus(str(tmp_path / "a"), seed=7, **options)
    second = generate_demo_corpus(str(tmp_path / "b"), seed=7, **options)
    other = generate_demo_corpus(str(tmp_path / "c"), seed=8, **options)
    assert digest(first) == digest(second) != digest(other)
    stamp = os.path.getmtime(os.path.join(first, "Session1", "dialog", "transcriptions", "Ses01F_impro01.txt"))
    generate_demo_corpus(str(tmp_path / "a"), seed=7, **options)
    assert os.path.getmtime(os.path.join(first, "Session1", "dialog", "transcriptions", "Ses01F_impro01.txt")) == stamp


def test_emotions_differ_in_loudness_and_rate(demo_release):
    """The prosody the classes are meant to be learnt from is really in the audio."""
    import numpy as np

    turns, _, _ = read_corpus(demo_release)
    stats = {}
    for turn in turns:
        wav, rate = sf.read(turn["wav"].replace("$data_root", demo_release))
        rms = float(np.sqrt(np.mean(wav ** 2)))
        chars_per_s = max(len(turn["wrd"]), 1) / (len(wav) / rate)
        stats.setdefault(turn["emo"], []).append((rms, chars_per_s))
    mean = {e: np.mean(v, axis=0) for e, v in stats.items()}
    assert mean["ang"][0] > mean["neu"][0] > mean["sad"][0]
    assert mean["ang"][1] > mean["sad"][1]
