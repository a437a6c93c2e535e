"""Builds small IEMOCAP_full_release trees with exactly known contents, for tests."""

import os

import numpy as np
import soundfile as sf

#: (dialog suffix, [(turn speaker letter, code, words), ...]) used in every session.
DEFAULT_DIALOGS = [
    ("F_impro01", [
        ("F", "neu", "Excuse me."),
        ("M", "hap", "Oh, that's great! [LAUGHTER]"),
        ("F", "exc", "We won -- really?"),
        ("M", "fru", "Not again."),
    ]),
    ("M_impro05a", [
        ("F", "ang", "Stop it, NOW!"),
        ("M", "sad", "I miss her."),
        ("F", "xxx", "Hmm."),
        ("M", "neu", "[BREATHING] Okay."),
    ]),
    ("F_script01_1b", [
        ("M", "sad", "It's over."),
        ("F", "sur", "What?"),
        ("M", "ang", "Get out."),
        ("F", "hap", "I'm so happy."),
    ]),
]


def kept_per_session(dialogs=DEFAULT_DIALOGS):
    """Counts per 4-class label of one session of the tree."""
    merged = {"neu": 0, "hap": 0, "ang": 0, "sad": 0}
    for _, turns in dialogs:
        for _, code, _ in turns:
            code = "hap" if code == "exc" else code
            if code in merged:
                merged[code] += 1
    return merged


def build_tree(root, sessions=(1, 2, 3, 4, 5), dialogs=DEFAULT_DIALOGS, sample_rate=16000):
    """Writes ``root/IEMOCAP_full_release`` and returns its path."""
    release = os.path.join(root, "IEMOCAP_full_release")
    rng = np.random.default_rng(0)
    for session in sessions:
        base = os.path.join(release, f"Session{session}")
        emo_dir = os.path.join(base, "dialog", "EmoEvaluation")
        trans_dir = os.path.join(base, "dialog", "transcriptions")
        os.makedirs(os.path.join(emo_dir, "Categorical"), exist_ok=True)
        os.makedirs(trans_dir, exist_ok=True)
        for suffix, turns in dialogs:
            dialog = f"Ses{session:02d}{suffix}"
            wav_dir = os.path.join(base, "sentences", "wav", dialog)
            os.makedirs(wav_dir, exist_ok=True)
            counters = {"F": 0, "M": 0}
            blocks = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"]
            lines = []
            for index, (gender, code, words) in enumerate(turns):
                turn = f"{dialog}_{gender}{counters[gender]:03d}"
                counters[gender] += 1
                n_samples = int(sample_rate * (0.5 + 0.1 * index))
                sf.write(
                    os.path.join(wav_dir, f"{turn}.wav"),
                    (0.1 * rng.standard_normal(n_samples)).astype(np.float32),
                    sample_rate,
                    subtype="PCM_16",
                )
                blocks.append(
                    f"[{index:.4f} - {index + 0.5:.4f}]\t{turn}\t{code}\t[2.5000, 2.5000, 2.5000]\n"
                    f"C-E2:\tNeutral;\t()\nA-E3:\tval 3; act 2; dom  2;\t()\n\n"
                )
                lines.append(f"{turn} [{index:08.4f}-{index + 0.5:08.4f}]: {words}\n")
            lines.insert(1, "this line is not a turn and is skipped\n")
            with open(os.path.join(emo_dir, f"{dialog}.txt"), "w") as f:
                f.writelines(blocks)
            with open(os.path.join(trans_dir, f"{dialog}.txt"), "w") as f:
                f.writelines(lines)
    return release
