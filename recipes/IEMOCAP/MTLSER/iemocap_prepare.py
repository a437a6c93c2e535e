"""Data preparation for IEMOCAP (4 classes, transcripts, speakers).

Reads ``IEMOCAP_full_release`` (see the project's notes on its layout) and
writes ``train.csv``, ``valid.csv`` and ``test.csv`` with the columns
``ID, duration, wav, emo, wrd, spk_id``, plus ``<split>.lst`` files listing the
turn IDs of each split, so the split can be published and checked.

* Emotions: ``neu``, ``hap`` (with ``exc`` merged in), ``ang``, ``sad``; every
  other consensus code is dropped.
* Speaker: session + the gender letter of the turn (``Ses01_F``), never the
  letter of the dialog name, which names the actor wearing the markers.
* Words: normalised for CTC by :func:`mtlser_lobes.data.text.normalize_transcript`.
* Protocols: ``loso`` tests on ``test_session`` and draws a seeded,
  emotion-stratified validation set from the other sessions' turns
  (``valid_split: turns``), or holds out the next session whole
  (``valid_split: session``: validation speakers unseen in training, as the
  test speakers are), so no test speaker is in train or valid; ``random`` is
  the utterance-level random split used by papers that report on it (it
  shares speakers and dialogs between train and test).

Authors
 * MTLSER developers
"""

import csv
import json
import os
import re
from collections import Counter

from sklearn.model_selection import train_test_split
from speechbrain.utils.logger import get_logger
from tqdm import tqdm

from mtlser_lobes.data.audio import AudioError, inspect_wav
from mtlser_lobes.helpers import write_text_atomically
from mtlser_lobes.data.text import dropped_characters, normalize_transcript

logger = get_logger(__name__)

EMOTION_MAP = {"neu": "neu", "hap": "hap", "exc": "hap", "ang": "ang", "sad": "sad"}
SPLITS = ("train", "valid", "test")
#: Where loso validation comes from: a share of the training sessions' turns, or a whole session.
VALID_SPLITS = ("turns", "session")
CSV_COLUMNS = ["ID", "duration", "wav", "emo", "wrd", "spk_id"]
OPTIONS_FILE = "prepare_options.json"
#: Beside the CSVs: files skipped, converted, cropped, transcripts that lost characters.
REPORT_FILE = "prepare_report.json"
#: Every code of the EmoEvaluation files; another one is bad data.
KNOWN_CODES = {"neu", "hap", "exc", "ang", "sad", "fru", "fea", "sur", "dis", "oth", "xxx"}
PREPARATION_VERSION = 2

#: Kept turns of the full release, per session and per class (4-class setup).
EXPECTED_SESSION_COUNTS = {1: 1085, 2: 1023, 3: 1151, 4: 1031, 5: 1241}
EXPECTED_CLASS_COUNTS = {"neu": 1708, "hap": 1636, "ang": 1103, "sad": 1084}
#: The full release labels 10,039 turns; a tree with this many is checked.
FULL_RELEASE_MIN_TURNS = 10000

_BLOCK_HEADER = re.compile(
    r"^\[\s*[\d.]+\s*-\s*[\d.]+\s*\]\t(?P<turn>\S+)\t(?P<code>\w+)\t\["
)
_TRANSCRIPT_LINE = re.compile(r"^(?P<turn>\S+) \[[\d.]+-[\d.]+\]:\s?(?P<words>.*)$")
_TURN_NAME = re.compile(r"^Ses(?P<session>\d\d)[FM]_.+_(?P<gender>[FM])[0-9A-Z]+$")


class PreparationError(ValueError):
    """The corpus cannot be prepared; the message lists every problem found."""


def prepare_iemocap(
    data_folder,
    save_folder,
    test_session=5,
    protocol="loso",
    valid_ratio=0.1,
    valid_split="turns",
    split_ratio=(80, 10, 10),
    seed=1986,
    check_counts="auto",
    sample_rate=16000,
    skip_prep=False,
    bad_data="stop",
    min_duration_s=0.1,
    max_duration_s=40.0,
    silence_peak=1e-4,
):
    """Writes the train/valid/test CSVs and split lists of IEMOCAP.

    Arguments
    ---------
    data_folder : str
        Path of ``IEMOCAP_full_release`` (it holds ``Session1`` ... ``Session5``).
    save_folder : str
        Where the CSVs, split lists and ``prepare_options.json`` go.
    test_session : int
        Session held out for testing under ``loso``.
    protocol : str
        ``"loso"`` (speaker-independent, default) or ``"random"``.
    valid_ratio : float
        Share of the training sessions' turns used for validation (``loso``,
        ``valid_split="turns"``).
    valid_split : str
        ``"turns"``: validation is ``valid_ratio`` of the other sessions' turns
        (their speakers are also in training); ``"session"``: validation is the
        whole session after ``test_session`` (cyclically, see
        :func:`validation_session`), whose speakers are not in training
        (``loso`` only).
    split_ratio : sequence of 3 numbers
        Train/valid/test proportions of the ``random`` protocol.
    seed : int
        Seed of the stratified splits.
    check_counts : bool or "auto"
        Compare the kept turns with the full release's 5,531 and per-session
        figures and warn loudly on a difference. ``"auto"`` checks trees that
        label at least 10,000 turns, i.e. that look like the full release.
    sample_rate : int
        The model's rate (IEMOCAP: 16 kHz); wavs at another rate or with
        several channels are kept, resampled and mixed down when loaded.
    skip_prep : bool
        Do nothing.
    bad_data : str
        Every wav is decoded and checked once here. ``"stop"``: any missing,
        undecodable, too short, silent or non-finite wav, or unknown emotion
        code, stops the preparation with the whole list of files and
        reasons. ``"skip"``: those turns are left out, logged, and listed in
        ``prepare_report.json`` beside the CSVs.
    min_duration_s : float
        Shorter turns are bad data.
    max_duration_s : float
        Longer turns are kept but cropped to this when loaded (reported).
    silence_peak : float
        A wav whose peak amplitude is below this is bad data (silent).

    Returns
    -------
    dict
        Split name -> list of row dicts written to its CSV (``None`` when the
        preparation was skipped).
    """
    if skip_prep:
        return None
    if protocol not in ("loso", "random"):
        raise ValueError(f"protocol must be 'loso' or 'random', not {protocol!r}")
    if valid_split not in VALID_SPLITS:
        raise ValueError(f"valid_split must be one of {VALID_SPLITS}, not {valid_split!r}")
    if valid_split == "session" and protocol != "loso":
        raise ValueError("valid_split 'session' needs protocol 'loso'")
    if bad_data not in ("stop", "skip"):
        raise ValueError(f"bad_data must be 'stop' or 'skip', not {bad_data!r}")
    if protocol == "random" and (len(split_ratio) != 3 or min(split_ratio) <= 0):
        raise ValueError(f"split_ratio needs three positive numbers, got {split_ratio}")
    options = {
        "data_folder": os.path.abspath(data_folder),
        "test_session": int(test_session),
        "protocol": protocol,
        "valid_ratio": float(valid_ratio),
        "valid_split": valid_split,
        "split_ratio": [float(r) for r in split_ratio],
        "seed": int(seed),
        "sample_rate": int(sample_rate),
        "bad_data": bad_data,
        "min_duration_s": float(min_duration_s),
        "max_duration_s": float(max_duration_s),
        "silence_peak": float(silence_peak),
        "version": PREPARATION_VERSION,
    }
    if _already_prepared(save_folder, options):
        logger.info(f"IEMOCAP already prepared in {save_folder} with the same options: skipping")
        return None

    checks = {"min_duration_s": min_duration_s, "max_duration_s": max_duration_s,
              "silence_peak": silence_peak}
    turns, n_labelled, report = read_corpus(data_folder, sample_rate, bad_data, **checks)
    if check_counts is True or (check_counts == "auto" and n_labelled >= FULL_RELEASE_MIN_TURNS):
        check_full_release_counts(turns)
    if protocol == "loso":
        splits = split_leave_one_session_out(turns, test_session, valid_ratio, seed, valid_split)
        check_no_speaker_leakage(splits)
    else:
        splits = split_random(turns, split_ratio, seed)

    os.makedirs(save_folder, exist_ok=True)
    write_text_atomically(os.path.join(save_folder, REPORT_FILE), json.dumps(report, indent=2))
    for split in SPLITS:
        rows = sorted(splits[split], key=lambda row: row["ID"])
        splits[split] = rows
        write_text_atomically(os.path.join(save_folder, f"{split}.csv"), _csv_text(rows))
        write_text_atomically(
            os.path.join(save_folder, f"{split}.lst"), "".join(r["ID"] + "\n" for r in rows)
        )
        classes = Counter(row["emo"] for row in rows)
        speakers = sorted({row["spk_id"] for row in rows})
        logger.info(
            f"{split}: {len(rows)} turns, {dict(sorted(classes.items()))}, speakers {speakers}"
        )
    # Written last: its presence means the CSVs above are complete.
    write_text_atomically(os.path.join(save_folder, OPTIONS_FILE), json.dumps(options, indent=2))
    return splits


def read_corpus(data_folder, sample_rate=16000, bad_data="stop", min_duration_s=0.1,
                max_duration_s=40.0, silence_peak=1e-4):
    """Reads every labelled turn of the 4-class setup, decoding and checking each wav once.

    Arguments
    ---------
    data_folder : str
        Path of ``IEMOCAP_full_release``.
    sample_rate : int
        The model's rate; other rates and channel counts are converted when
        loaded, and reported.
    bad_data : str
        ``"stop"`` or ``"skip"`` (see :func:`prepare_iemocap`).
    min_duration_s, max_duration_s, silence_peak : float
        See :func:`prepare_iemocap`.

    Returns
    -------
    turns : list of dict
        One row per kept turn: ``ID, duration, wav, emo, wrd, spk_id, session``.
    n_labelled : int
        Number of labelled turns in the EmoEvaluation files, of any code.
    report : dict
        ``checked`` (wavs decoded), ``skipped`` (ID, file, reason), and the
        turns kept with a change: ``converted``, ``cropped``,
        ``transcript_characters_dropped``.

    Raises
    ------
    PreparationError
        Listing every structural problem (missing folders, unreadable
        transcription files, labelled turns without transcript, empty
        sessions) and, under ``bad_data="stop"``, every bad turn.
    """
    sessions = sorted(speakers_by_session(data_folder))
    problems, bad_turns, candidates, n_labelled = [], [], [], 0
    for session in sessions:
        session_dir = os.path.join(data_folder, f"Session{session}")
        session_turns, session_labelled = _read_session(session_dir, session, problems, bad_turns)
        n_labelled += session_labelled
        if not session_turns:
            problems.append(
                f"Session{session} has no turn labelled neu/hap/exc/ang/sad "
                f"(looked in {os.path.join(session_dir, 'dialog', 'EmoEvaluation')})"
            )
        candidates.extend(session_turns)

    report = {"bad_data": bad_data, "checked": 0, "skipped": [], "converted": [], "cropped": [],
              "transcript_characters_dropped": []}
    turns = []
    for row in tqdm(candidates, desc="checking wavs", unit="wav", disable=len(candidates) < 200):
        report["checked"] += 1
        try:
            info = inspect_wav(row["wav_path"], min_duration_s, silence_peak)
        except AudioError as error:
            bad_turns.append({"ID": row["ID"], "file": row["wav_path"], "reason": f"wav {error}"})
            continue
        if info["samplerate"] != sample_rate or info["channels"] != 1:
            report["converted"].append({
                "ID": row["ID"], "file": row["wav_path"],
                "from": f"{info['samplerate']} Hz, {info['channels']} channel(s)",
                "to": f"{sample_rate} Hz mono",
            })
        if info["duration"] > max_duration_s:
            report["cropped"].append({"ID": row["ID"], "file": row["wav_path"],
                                      "duration": round(info["duration"], 2),
                                      "kept": max_duration_s})
        if row["dropped"]:
            report["transcript_characters_dropped"].append(
                {"ID": row["ID"], "characters": "".join(row["dropped"])}
            )
        row["duration"] = round(min(info["duration"], max_duration_s), 4)
        turns.append(row)

    if bad_data == "stop":
        problems += [f"{bad['ID']}: {bad['reason']}: {bad['file']}" for bad in bad_turns]
    if problems:
        listing = "\n  ".join(problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        hint = (" (bad_data: skip leaves the bad turns out instead)"
                if bad_turns and bad_data == "stop" else "")
        raise PreparationError(
            f"{len(problems)} problem(s) in {data_folder}{hint}:\n  {listing}{more}"
        )
    report["skipped"] = bad_turns
    for bad in bad_turns:
        logger.warning(f"skipped {bad['ID']}: {bad['reason']}: {bad['file']}")
    for key in ("converted", "cropped", "transcript_characters_dropped"):
        if report[key]:
            logger.info(f"{len(report[key])} turn(s) {key.replace('_', ' ')}: see {REPORT_FILE}")
    logger.info(
        f"read {len(turns)} turns of 4 classes ({n_labelled} labelled, {len(bad_turns)} skipped) "
        f"from sessions {sessions} of {data_folder}"
    )
    for row in turns:
        del row["wav_path"], row["dropped"]
    return turns, n_labelled, report


def _read_session(session_dir, session, problems, bad_turns):
    """Candidate turns of one session; records structural problems and bad labels."""
    emo_dir = os.path.join(session_dir, "dialog", "EmoEvaluation")
    if not os.path.isdir(emo_dir):
        problems.append(f"missing folder {emo_dir}")
        return [], 0
    turns, n_labelled = [], 0
    for file_name in sorted(os.listdir(emo_dir)):
        emo_path = os.path.join(emo_dir, file_name)
        if not file_name.endswith(".txt") or not os.path.isfile(emo_path):
            continue  # Attribute/, Categorical/, Self-evaluation/, stray files
        dialog = file_name[: -len(".txt")]
        labels = _read_labels(emo_path)
        n_labelled += len(labels)
        for turn, code in labels.items():
            if code not in KNOWN_CODES:
                bad_turns.append({"ID": turn, "file": emo_path,
                                  "reason": f"unknown emotion label {code!r}"})
        kept = {turn: EMOTION_MAP[code] for turn, code in labels.items() if code in EMOTION_MAP}
        if not kept:
            continue
        trans_path = os.path.join(session_dir, "dialog", "transcriptions", file_name)
        words = _read_transcripts(trans_path, problems)
        if words is None:
            continue
        for turn, emotion in kept.items():
            row = _turn_row(turn, emotion, words, session, session_dir, dialog, trans_path, problems)
            if row is not None:
                turns.append(row)
    return turns, n_labelled


def _read_labels(emo_path):
    """Turn -> consensus code of one EmoEvaluation file."""
    labels = {}
    with open(emo_path, encoding="utf-8", errors="replace") as emo_file:
        for line in emo_file:
            match = _BLOCK_HEADER.match(line)
            if match:
                labels[match["turn"]] = match["code"]
    return labels


def _read_transcripts(trans_path, problems):
    """Turn -> raw words of one transcription file, or None when unreadable."""
    try:
        with open(trans_path, encoding="utf-8", errors="replace") as trans_file:
            lines = trans_file.readlines()
    except OSError as error:
        problems.append(f"cannot read transcription file {trans_path}: {error.strerror}")
        return None
    words = {}
    for line in lines:
        match = _TRANSCRIPT_LINE.match(line.rstrip("\r\n"))
        if match:  # other lines are not turns: skipped
            words[match["turn"]] = match["words"]
    return words


def _turn_row(turn, emotion, words, session, session_dir, dialog, trans_path, problems):
    """Candidate CSV row of one kept turn (its wav is checked later), or None."""
    name = _TURN_NAME.match(turn)
    if name is None or int(name["session"]) != session:
        problems.append(f"turn name {turn!r} in Session{session} does not follow Ses<NN><F|M>_..._<F|M><NNN>")
        return None
    if turn not in words:
        problems.append(f"utterance {turn} has no transcript in {trans_path}")
        return None
    wav_path = os.path.join(session_dir, "sentences", "wav", dialog, f"{turn}.wav")
    relative = os.path.relpath(wav_path, os.path.dirname(session_dir))
    return {
        "ID": turn,
        "wav": "$data_root/" + relative.replace(os.sep, "/"),
        "emo": emotion,
        "wrd": normalize_transcript(words[turn]),
        "spk_id": f"Ses{session:02d}_{name['gender']}",
        "session": session,
        "wav_path": wav_path,
        "dropped": dropped_characters(words[turn]),
    }


def speakers_by_session(data_folder):
    """Speakers with a turn of the 4 classes in each session, from the label files alone.

    A cheap look at the corpus (no wav is opened) that lets ``train.py`` check
    ``test_session`` and ``n_speakers`` before anything heavy runs.

    Arguments
    ---------
    data_folder : str
        Path of ``IEMOCAP_full_release``.

    Returns
    -------
    dict
        Session number -> sorted speaker ids (``Ses01_F``); sessions whose
        folder exists but labels no turn of the 4 classes map to ``[]``.

    Raises
    ------
    PreparationError
        When the folder does not exist or holds no ``Session<N>`` folder.
    """
    if not os.path.isdir(data_folder):
        raise PreparationError(
            f"data_folder {data_folder} does not exist: point --data_folder at "
            "IEMOCAP_full_release (the folder that holds Session1 ... Session5)"
        )
    sessions = sorted(
        int(name[len("Session"):])
        for name in os.listdir(data_folder)
        if re.fullmatch(r"Session\d+", name) and os.path.isdir(os.path.join(data_folder, name))
    )
    if not sessions:
        raise PreparationError(f"no Session<N> folder in {data_folder}: is it IEMOCAP_full_release?")
    speakers = {}
    for session in sessions:
        emo_dir = os.path.join(data_folder, f"Session{session}", "dialog", "EmoEvaluation")
        found = set()
        names = sorted(os.listdir(emo_dir)) if os.path.isdir(emo_dir) else []
        for file_name in names:
            path = os.path.join(emo_dir, file_name)
            if not file_name.endswith(".txt") or not os.path.isfile(path):
                continue
            for turn, code in _read_labels(path).items():
                name = _TURN_NAME.match(turn)
                if code in EMOTION_MAP and name is not None:
                    found.add(f"Ses{session:02d}_{name['gender']}")
        speakers[session] = sorted(found)
    return speakers


def check_full_release_counts(turns):
    """Warns loudly when the kept turns differ from the full release's figures.

    Arguments
    ---------
    turns : list of dict
        Rows from :func:`read_corpus`.

    Returns
    -------
    list of str
        The differences found (empty when the figures match).
    """
    sessions = Counter(row["session"] for row in turns)
    classes = Counter(row["emo"] for row in turns)
    differences = []
    if len(turns) != sum(EXPECTED_SESSION_COUNTS.values()):
        differences.append(f"total {len(turns)} turns, expected 5531")
    for session, expected in EXPECTED_SESSION_COUNTS.items():
        if sessions.get(session, 0) != expected:
            differences.append(f"Session{session}: {sessions.get(session, 0)}, expected {expected}")
    for emotion, expected in EXPECTED_CLASS_COUNTS.items():
        if classes.get(emotion, 0) != expected:
            differences.append(f"{emotion}: {classes.get(emotion, 0)}, expected {expected}")
    if differences:
        bar = "!" * 72
        logger.warning(
            f"\n{bar}\nThis tree does not match IEMOCAP_full_release's 4-class figures:\n  "
            + "\n  ".join(differences)
            + f"\nResults on it are not comparable with published IEMOCAP numbers.\n{bar}"
        )
    else:
        logger.info("kept turns match the full release: 5531 in all, per session and per class")
    return differences


def validation_session(sessions, test_session):
    """The session held out for validation with ``valid_split: session``: the next after the test one.

    Cyclic over the sorted sessions, so each fold of a 5-fold study validates on
    a different session.

    Arguments
    ---------
    sessions : iterable of int
        The corpus's sessions.
    test_session : int
        The held-out test session.

    Returns
    -------
    int

    Example
    -------
    >>> validation_session([1, 2, 3, 4, 5], 2), validation_session([1, 2, 3, 4, 5], 5)
    (3, 1)
    """
    ordered = sorted(set(sessions))
    if len(ordered) < 3:
        raise PreparationError(
            f"valid_split session needs at least three sessions (test, validation, training); found {ordered}"
        )
    return ordered[(ordered.index(int(test_session)) + 1) % len(ordered)]


def split_leave_one_session_out(turns, test_session, valid_ratio, seed, valid_split="turns"):
    """Test on one session; validation drawn, stratified, from the others, or a whole other session.

    Arguments
    ---------
    turns : list of dict
        Rows from :func:`read_corpus`.
    test_session : int
        The held-out session.
    valid_ratio : float
        Share of the other sessions' turns that go to validation (``valid_split="turns"``).
    seed : int
        Seed of the split.
    valid_split : str
        ``"turns"`` or ``"session"`` (:func:`validation_session` whole).

    Returns
    -------
    dict
        ``train``, ``valid``, ``test`` -> rows.
    """
    test = [row for row in turns if row["session"] == int(test_session)]
    rest = [row for row in turns if row["session"] != int(test_session)]
    if not test:
        found = sorted({row["session"] for row in turns})
        raise PreparationError(f"test_session {test_session} has no turns (sessions found: {found})")
    if not rest:
        raise PreparationError("leave-one-session-out needs at least two sessions")
    if valid_split == "session":
        held_out = validation_session({row["session"] for row in turns}, test_session)
        valid = [row for row in rest if row["session"] == held_out]
        train = [row for row in rest if row["session"] != held_out]
        return {"train": train, "valid": valid, "test": test}
    train, valid = _stratified_split(rest, valid_ratio, seed)
    return {"train": train, "valid": valid, "test": test}


def split_random(turns, split_ratio, seed):
    """Utterance-level random split, stratified by emotion (shares speakers).

    Arguments
    ---------
    turns : list of dict
        Rows from :func:`read_corpus`.
    split_ratio : sequence of 3 numbers
        Train/valid/test proportions.
    seed : int
        Seed of the split.

    Returns
    -------
    dict
        ``train``, ``valid``, ``test`` -> rows.
    """
    total = float(sum(split_ratio))
    train_valid, test = _stratified_split(turns, split_ratio[2] / total, seed)
    train, valid = _stratified_split(
        train_valid, split_ratio[1] / (split_ratio[0] + split_ratio[1]), seed + 1
    )
    return {"train": train, "valid": valid, "test": test}


def _stratified_split(rows, held_out_ratio, seed):
    """Splits ``rows`` in two, keeping the emotion proportions."""
    labels = [row["emo"] for row in rows]
    counts = Counter(labels)
    # Stratifying needs two turns per class and a held-out part with room for every class
    feasible = min(counts.values()) >= 2 and held_out_ratio * len(rows) >= len(counts)
    stratify = labels if feasible else None
    kept, held_out = train_test_split(
        rows, test_size=held_out_ratio, random_state=seed, stratify=stratify
    )
    return kept, held_out


def check_no_speaker_leakage(splits):
    """Raises when a test speaker or dialog also occurs in train or valid.

    Arguments
    ---------
    splits : dict
        ``train``, ``valid``, ``test`` -> rows.

    Example
    -------
    >>> row = lambda turn: {"ID": turn, "spk_id": turn[:5] + "_" + turn[-4]}
    >>> check_no_speaker_leakage({"train": [row("Ses01F_impro01_F000")], "valid": [], "test": [row("Ses05F_impro01_M000")]})
    >>> try:
    ...     check_no_speaker_leakage({"train": [row("Ses05F_impro01_F000")], "valid": [], "test": [row("Ses05F_impro01_F001")]})
    ... except PreparationError as error:
    ...     print(error)
    speaker leakage: test speakers ['Ses05_F'] are in train/valid; test dialogs ['Ses05F_impro01'] are in train/valid
    """
    shared_speakers, shared_dialogs, _ = split_overlap(splits)
    if shared_speakers or shared_dialogs:
        raise PreparationError(
            f"speaker leakage: test speakers {shared_speakers} are in train/valid; "
            f"test dialogs {shared_dialogs} are in train/valid"
        )


def split_overlap(splits):
    """Test speakers and test dialogs that also occur in train or valid.

    Arguments
    ---------
    splits : dict
        ``train``, ``valid``, ``test`` -> rows (``ID``, ``spk_id``).

    Returns
    -------
    shared_speakers, shared_dialogs : list of str
        Sorted.
    test_dialogs : set of str
        Every dialog of the test split.
    """
    seen = splits["train"] + splits["valid"]
    test_speakers = {row["spk_id"] for row in splits["test"]}
    test_dialogs = {row["ID"].rsplit("_", 1)[0] for row in splits["test"]}
    shared_speakers = sorted(test_speakers & {row["spk_id"] for row in seen})
    shared_dialogs = sorted(test_dialogs & {row["ID"].rsplit("_", 1)[0] for row in seen})
    return shared_speakers, shared_dialogs, test_dialogs


def _already_prepared(save_folder, options):
    """True when every output exists and was made with the same options."""
    options_path = os.path.join(save_folder, OPTIONS_FILE)
    outputs = [os.path.join(save_folder, f"{s}.{ext}") for s in SPLITS for ext in ("csv", "lst")]
    outputs.append(os.path.join(save_folder, REPORT_FILE))
    if not os.path.isfile(options_path) or not all(os.path.isfile(p) for p in outputs):
        return False
    with open(options_path) as options_file:
        try:
            previous = json.load(options_file)
        except json.JSONDecodeError:
            return False
    if previous != options:
        logger.info(f"preparation options changed since the last run: redoing {save_folder}")
        return False
    return True


def _csv_text(rows):
    """SpeechBrain CSV text of ``rows`` (columns ``CSV_COLUMNS``)."""
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
