"""iemocap_prepare on a miniature IEMOCAP tree with exactly known contents."""

import csv
import json
import logging
import os

import pytest

import iemocap_prepare
from iemocap_prepare import PreparationError, check_no_speaker_leakage, prepare_iemocap
from iemocap_tree import build_tree, kept_per_session


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture()
def release(tmp_path):
    return build_tree(str(tmp_path / "corpus"))


def prepared(release, save_folder, **options):
    prepare_iemocap(release, str(save_folder), **options)
    return {split: read_csv(os.path.join(save_folder, f"{split}.csv")) for split in ("train", "valid", "test")}


def test_columns_counts_classes_and_speakers(release, tmp_path):
    splits = prepared(release, tmp_path / "prep")
    rows = [row for split in splits.values() for row in split]
    assert list(rows[0]) == ["ID", "duration", "wav", "emo", "wrd", "spk_id"]
    per_session = kept_per_session()
    assert len(rows) == 5 * sum(per_session.values())
    for emotion, count in per_session.items():
        assert sum(row["emo"] == emotion for row in rows) == 5 * count
    # exc merged into hap; fru, xxx, sur dropped
    assert {row["emo"] for row in rows} == {"neu", "hap", "ang", "sad"}
    by_id = {row["ID"]: row for row in rows}
    assert by_id["Ses01F_impro01_F001"]["emo"] == "hap"  # the 'exc' turn
    assert "Ses01F_impro01_M001" not in by_id  # 'fru'
    # speaker: session + gender letter of the turn, not of the dialog name
    assert by_id["Ses02M_impro05a_F000"]["spk_id"] == "Ses02_F"
    assert by_id["Ses03F_script01_1b_M000"]["spk_id"] == "Ses03_M"
    assert {row["spk_id"] for row in rows} == {f"Ses0{s}_{g}" for s in range(1, 6) for g in "FM"}
    # paths are portable and resolve to the real files; durations from the headers
    row = by_id["Ses01F_script01_1b_M000"]
    assert row["wav"].startswith("$data_root/Session1/sentences/wav/Ses01F_script01_1b/")
    assert os.path.isfile(row["wav"].replace("$data_root", release))
    assert float(row["duration"]) == pytest.approx(0.5)


def test_transcripts_are_normalised(release, tmp_path):
    rows = {r["ID"]: r for split in prepared(release, tmp_path / "prep").values() for r in split}
    assert rows["Ses01F_impro01_M000"]["wrd"] == "oh that's great"
    assert rows["Ses01F_impro01_F001"]["wrd"] == "we won really"
    assert rows["Ses01M_impro05a_F000"]["wrd"] == "stop it now"
    assert rows["Ses01M_impro05a_M001"]["wrd"] == "okay"


def test_loso_tests_on_one_session_without_speaker_leakage(release, tmp_path):
    for test_session in (1, 5):
        splits = prepared(release, tmp_path / f"loso{test_session}", test_session=test_session)
        assert {r["spk_id"] for r in splits["test"]} == {f"Ses0{test_session}_F", f"Ses0{test_session}_M"}
        seen = {r["spk_id"] for r in splits["train"] + splits["valid"]}
        assert not seen & {r["spk_id"] for r in splits["test"]}
        assert len(splits["test"]) == sum(kept_per_session().values())
        assert splits["valid"] and splits["train"]


def test_loso_validation_is_seeded_and_stratified(release, tmp_path):
    first = prepared(release, tmp_path / "a", valid_ratio=0.25, seed=3)
    again = prepared(release, tmp_path / "b", valid_ratio=0.25, seed=3)
    other = prepared(release, tmp_path / "c", valid_ratio=0.25, seed=4)
    ids = lambda s: [r["ID"] for r in s["valid"]]
    assert ids(first) == ids(again) and ids(first) != ids(other)
    assert {r["emo"] for r in first["valid"]} == {"neu", "hap", "ang", "sad"}


@pytest.mark.parametrize("test_session, valid_session", [(1, 2), (5, 1)])
def test_session_validation_holds_out_the_next_session_whole(release, tmp_path, test_session, valid_session):
    """valid_split session: validation speakers are unseen in training, as the test speakers are."""
    splits = prepared(release, tmp_path / "prep", test_session=test_session, valid_split="session")
    speakers = {split: {r["spk_id"] for r in rows} for split, rows in splits.items()}
    assert speakers["valid"] == {f"Ses0{valid_session}_F", f"Ses0{valid_session}_M"}
    assert speakers["test"] == {f"Ses0{test_session}_F", f"Ses0{test_session}_M"}
    assert len(speakers["train"]) == 6 and not speakers["train"] & (speakers["valid"] | speakers["test"])
    assert len(splits["valid"]) == len(splits["test"]) == sum(kept_per_session().values())
    with pytest.raises(ValueError, match="needs protocol 'loso'"):
        prepare_iemocap(release, str(tmp_path / "random"), protocol="random", valid_split="session")


def test_random_protocol_mixes_sessions(release, tmp_path):
    splits = prepared(release, tmp_path / "random", protocol="random", split_ratio=(60, 20, 20))
    total = sum(len(s) for s in splits.values())
    assert len(splits["test"]) == pytest.approx(0.2 * total, abs=1)
    assert len({r["spk_id"] for r in splits["test"]}) > 2


def test_split_lists_are_written_beside_the_csvs(release, tmp_path):
    splits = prepared(release, tmp_path / "prep")
    for split, rows in splits.items():
        with open(tmp_path / "prep" / f"{split}.lst") as f:
            assert f.read().split() == [r["ID"] for r in rows]


def test_idempotent_and_redone_when_options_change(release, tmp_path, caplog):
    save = tmp_path / "prep"
    prepare_iemocap(release, str(save))
    stamp = os.path.getmtime(save / "train.csv")
    with caplog.at_level(logging.INFO):
        assert prepare_iemocap(release, str(save)) is None  # skipped
    assert os.path.getmtime(save / "train.csv") == stamp
    assert "skipping" in caplog.text
    splits = prepare_iemocap(release, str(save), test_session=2)
    assert {r["spk_id"] for r in splits["test"]} == {"Ses02_F", "Ses02_M"}
    with open(save / "prepare_options.json") as f:
        assert json.load(f)["test_session"] == 2


def test_missing_wav_is_named(release, tmp_path):
    wav = os.path.join(release, "Session3", "sentences", "wav", "Ses03M_impro05a", "Ses03M_impro05a_M000.wav")
    os.remove(wav)
    with pytest.raises(PreparationError, match="Ses03M_impro05a_M000.*missing.*" + os.path.basename(wav)):
        prepare_iemocap(release, str(tmp_path / "prep"))
    assert not os.path.exists(tmp_path / "prep" / "train.csv")


def test_unreadable_wav_is_named(release, tmp_path):
    wav = os.path.join(release, "Session2", "sentences", "wav", "Ses02F_impro01", "Ses02F_impro01_F000.wav")
    with open(wav, "wb") as f:
        f.write(b"this is not audio")
    with pytest.raises(PreparationError, match="Ses02F_impro01_F000: wav cannot be decoded as audio"):
        prepare_iemocap(release, str(tmp_path / "prep"))


def test_labelled_turn_without_transcript_is_named(release, tmp_path):
    path = os.path.join(release, "Session4", "dialog", "transcriptions", "Ses04F_impro01.txt")
    with open(path) as f:
        lines = [line for line in f if not line.startswith("Ses04F_impro01_M000 ")]
    with open(path, "w") as f:
        f.writelines(lines)
    with pytest.raises(PreparationError, match="Ses04F_impro01_M000 has no transcript in .*Ses04F_impro01.txt"):
        prepare_iemocap(release, str(tmp_path / "prep"))


def test_empty_session_is_named(tmp_path):
    release = build_tree(str(tmp_path / "corpus"))
    only_dropped = [("F_impro01", [("F", "fru", "No."), ("M", "xxx", "Hm.")])]
    build_tree(str(tmp_path / "corpus"), sessions=(6,), dialogs=only_dropped)
    with pytest.raises(PreparationError, match="Session6 has no turn labelled"):
        prepare_iemocap(release, str(tmp_path / "prep"))


def test_missing_folder_and_bad_options(tmp_path, release):
    with pytest.raises(PreparationError, match="does not exist"):
        prepare_iemocap(str(tmp_path / "nowhere"), str(tmp_path / "prep"))
    with pytest.raises(ValueError, match="protocol"):
        prepare_iemocap(release, str(tmp_path / "prep"), protocol="kfold")
    with pytest.raises(PreparationError, match="test_session 7"):
        prepare_iemocap(release, str(tmp_path / "prep"), test_session=7)


def test_count_check_warns_loudly_on_a_partial_release(release, caplog):
    turns, _, _ = iemocap_prepare.read_corpus(release)
    with caplog.at_level(logging.WARNING):
        differences = iemocap_prepare.check_full_release_counts(turns)
    n = sum(kept_per_session().values())
    assert f"total {5 * n} turns, expected 5531" in differences
    assert f"Session1: {n}, expected 1085" in differences
    assert "not comparable" in caplog.text


def test_count_check_is_quiet_on_the_full_release_figures():
    turns = []
    for session, count in iemocap_prepare.EXPECTED_SESSION_COUNTS.items():
        turns += [{"session": session, "emo": None} for _ in range(count)]
    labels = [e for e, n in iemocap_prepare.EXPECTED_CLASS_COUNTS.items() for _ in range(n)]
    for row, emotion in zip(turns, labels):
        row["emo"] = emotion
    assert iemocap_prepare.check_full_release_counts(turns) == []


def test_leakage_check_catches_a_planted_leak():
    row = lambda turn, spk: {"ID": turn, "spk_id": spk}
    clean = {"train": [row("Ses01F_impro01_F000", "Ses01_F")], "valid": [], "test": [row("Ses05F_impro01_M000", "Ses05_M")]}
    check_no_speaker_leakage(clean)
    leaky = dict(clean, valid=[row("Ses05F_impro01_F000", "Ses05_F"), row("Ses02F_impro01_M000", "Ses05_M")])
    with pytest.raises(PreparationError, match="Ses05_M"):
        check_no_speaker_leakage(leaky)


def test_other_rate_or_channels_is_kept_and_reported_as_converted(release, tmp_path):
    import numpy as np
    import soundfile as sf

    wav = os.path.join(release, "Session1", "sentences", "wav", "Ses01F_impro01", "Ses01F_impro01_F000.wav")
    sf.write(wav, 0.1 * np.ones((4410, 2), dtype=np.float32), 44100)
    splits = prepare_iemocap(release, str(tmp_path / "prep"))
    assert "Ses01F_impro01_F000" in [row["ID"] for rows in splits.values() for row in rows]
    report = json.load(open(tmp_path / "prep" / "prepare_report.json"))
    assert report["converted"] == [{"ID": "Ses01F_impro01_F000", "file": wav,
                                    "from": "44100 Hz, 2 channel(s)", "to": "16000 Hz mono"}]
