"""A miniature IEMOCAP, synthesised offline, in the release's exact layout.

It lets the recipe, the tests and the README's demo run on a fresh machine with
no download, and it exercises the real ``iemocap_prepare.py``: 5 sessions with
two speakers each (a distinct espeak-ng voice per speaker), suffixed dialog
names (``Ses01M_impro05a``, ``Ses01F_script01_1b``), ``EmoEvaluation`` blocks
with header and annotator lines, transcriptions with punctuation and event
tags, ``sentences/wav/<dialog>/<turn>.wav`` at 16 kHz mono 16-bit, and labels
outside the 4 classes (``exc``, ``fru``, ``xxx``, ``sur``).

Each emotion has its own prosody (rate, loudness, pitch and its range, with
seeded per-turn jitter), so emotion, words and speaker are all learnable.
Generation is seeded and deterministic.

Usage::

    python -m mtlser_lobes.demo.demo_corpus data/demo     # writes data/demo/IEMOCAP_full_release

Example
-------
>>> import tempfile, os
>>> root = generate_demo_corpus(tempfile.mkdtemp(), dialogs_per_session=1, turns_per_dialog=4)
>>> sorted(os.listdir(os.path.join(root, "Session1", "sentences", "wav")))
['Ses01F_impro01']
>>> len(os.listdir(os.path.join(root, "Session1", "sentences", "wav", "Ses01F_impro01")))
4
"""

import argparse
import json
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly
from tqdm import tqdm

from mtlser_lobes.demo.speech_synthesis import EspeakSynthesizer

__all__ = ["EMOTION_PROSODY", "generate_demo_corpus"]

# Plain logging: this module also runs in light worker processes (no torch import).
logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000

#: Prosody per consensus code: rate (wpm), volume (0-200), pitch offset, pitch range.
EMOTION_PROSODY = {
    "neu": {"rate": 165, "volume": 85, "pitch": 0, "range": 35},
    "hap": {"rate": 205, "volume": 115, "pitch": 12, "range": 85},
    "exc": {"rate": 220, "volume": 125, "pitch": 15, "range": 95},
    "ang": {"rate": 235, "volume": 150, "pitch": 5, "range": 60},
    "sad": {"rate": 120, "volume": 50, "pitch": -10, "range": 8},
    "fru": {"rate": 190, "volume": 120, "pitch": 0, "range": 50},
    "sur": {"rate": 200, "volume": 110, "pitch": 20, "range": 100},
    "xxx": {"rate": 180, "volume": 100, "pitch": 5, "range": 50},
}
#: How often each code is drawn; the kept four dominate, as in IEMOCAP.
EMOTION_WEIGHTS = {
    "neu": 0.24, "hap": 0.08, "exc": 0.14, "ang": 0.19, "sad": 0.19,
    "fru": 0.07, "sur": 0.03, "xxx": 0.06,
}
#: Categorical names written on the annotator lines.
_ANNOTATOR_NAMES = {
    "neu": "Neutral", "hap": "Happiness", "exc": "Excited", "ang": "Anger",
    "sad": "Sadness", "fru": "Frustration", "sur": "Surprise", "xxx": "Other",
}
_DIALOG_KINDS = ["F_impro01", "M_impro05a", "F_script01_1", "M_script01_1b", "F_impro03", "M_script02_2"]

SENTENCES = [
    "Excuse me.", "Do you have your forms?", "Yeah, I think so.", "Where are you going?",
    "I can't believe it!", "That's not what I said.", "We have to leave now.",
    "Let me see your license, please.", "It's been a long day.", "Are you serious?",
    "I don't know what to tell you.", "This is the best news ever!", "Please sit down.",
    "He never called me back.", "Can you hear me?", "The line was really long.",
    "Oh my God, we won!", "I waited here for an hour.", "Nothing ever works out.",
    "Thank you so much.", "Give me one good reason.", "She said she would come.",
    "Look at the ocean.", "I'm leaving tomorrow morning.", "Why would you do that?",
    "Everything is fine.", "We should go to the beach.", "I miss her so much.",
    "Stop shouting at me!", "What time is it?",
]


# espeak-ng voice variants, one per speaker; none of them adds breath noise
# (f2, f3 and f5 do, and that noise is not reproducible across processes).
_FEMALE_VARIANTS = ["f1", "f4", "linda", "belinda", "anika"]
_MALE_VARIANTS = ["m1", "m2", "m3", "m4", "m5"]


def _speaker_voice(session, gender):
    """espeak-ng voice and base pitch of the speaker ``gender`` of ``session``."""
    variants = _FEMALE_VARIANTS if gender == "F" else _MALE_VARIANTS
    accent = ["en-us", "en", "en-us", "en-gb-x-rp", "en-us"][session - 1]
    base_pitch = (58 if gender == "F" else 38) + 2 * (session - 1)
    return f"{accent}+{variants[(session - 1) % 5]}", base_pitch


def _synthesise_turn(synth, text, voice, base_pitch, code, rng):
    """Speech of one turn at 16 kHz, with the emotion's prosody and a little noise."""
    prosody = EMOTION_PROSODY[code]
    wav = synth.synthesize(
        text,
        voice=voice,
        rate=prosody["rate"] * rng.uniform(0.92, 1.08),
        pitch=np.clip(base_pitch + prosody["pitch"] + rng.integers(-4, 5), 0, 100),
        pitch_range=np.clip(prosody["range"] + rng.integers(-8, 9), 0, 100),
        volume=np.clip(prosody["volume"] + rng.integers(-8, 9), 10, 160),
        seed=int(rng.integers(2**31)),
    )
    divisor = np.gcd(SAMPLE_RATE, synth.sample_rate)
    wav = resample_poly(wav, SAMPLE_RATE // divisor, synth.sample_rate // divisor).astype(np.float32)
    # Room for a little silence around the words, as in the real segments.
    pad = np.zeros(int(SAMPLE_RATE * rng.uniform(0.05, 0.25)), dtype=np.float32)
    wav = np.concatenate([pad, wav, pad[: len(pad) // 2]])
    noise_rms = 10 ** (-rng.uniform(45, 55) / 20)
    wav = wav + rng.normal(0.0, noise_rms, size=len(wav)).astype(np.float32)
    return np.clip(wav, -1.0, 1.0)


def _vad_triple(code, rng):
    """A plausible [valence, activation, dominance] string for the block header."""
    base = {"ang": (1.5, 4.0, 4.0), "sad": (2.0, 2.0, 2.0), "hap": (4.0, 3.5, 3.0),
            "exc": (4.0, 4.0, 3.5)}.get(code, (3.0, 2.5, 2.5))
    values = [min(5.0, max(1.0, v + rng.choice([-0.5, 0.0, 0.5]))) for v in base]
    return "[" + ", ".join(f"{v:.4f}" for v in values) + "]"


def _write_session(job):
    """Synthesises and writes one session (run in a fresh process)."""
    root, session, dialogs_per_session, turns_per_dialog, seed = job
    synth = EspeakSynthesizer()
    codes, weights = zip(*EMOTION_WEIGHTS.items())
    weights = np.array(weights) / sum(weights)
    session_dir = os.path.join(root, f"Session{session}")
    emo_dir = os.path.join(session_dir, "dialog", "EmoEvaluation")
    trans_dir = os.path.join(session_dir, "dialog", "transcriptions")
    for sub in ("Categorical", "Attribute", "Self-evaluation"):
        os.makedirs(os.path.join(emo_dir, sub), exist_ok=True)
    os.makedirs(trans_dir, exist_ok=True)
    for dialog_index, kind in enumerate(_DIALOG_KINDS[:dialogs_per_session]):
        dialog = f"Ses{session:02d}{kind}"
        wav_dir = os.path.join(session_dir, "sentences", "wav", dialog)
        os.makedirs(wav_dir, exist_ok=True)
        rng = np.random.default_rng([seed, session, dialog_index])
        blocks, transcript_lines, clock = [], [], float(rng.uniform(1.0, 5.0))
        counters = {"F": 0, "M": 0}
        for turn_index in range(turns_per_dialog):
            gender = "FM"[turn_index % 2]
            turn = f"{dialog}_{gender}{counters[gender]:03d}"
            counters[gender] += 1
            # Per-turn generator: labels and words never depend on audio lengths.
            turn_rng = np.random.default_rng([seed, session, dialog_index, turn_index])
            code = str(turn_rng.choice(codes, p=weights))
            text = SENTENCES[turn_rng.integers(len(SENTENCES))]
            voice, base_pitch = _speaker_voice(session, gender)
            wav = _synthesise_turn(synth, text, voice, base_pitch, code, turn_rng)
            sf.write(os.path.join(wav_dir, f"{turn}.wav"), wav, SAMPLE_RATE, subtype="PCM_16")
            start, end = clock, clock + len(wav) / SAMPLE_RATE
            clock = end + float(rng.uniform(0.2, 1.5))
            name = _ANNOTATOR_NAMES[code]
            blocks.append(
                f"[{start:.4f} - {end:.4f}]\t{turn}\t{code}\t{_vad_triple(code, turn_rng)}\n"
                f"C-E2:\t{name};\t()\nC-E3:\t{name};\t()\n"
                f"A-E3:\tval 3; act 3; dom  3;\t()\n"
            )
            if code in ("hap", "exc") and turn_rng.random() < 0.3:
                text = f"{text} [LAUGHTER]"
            transcript_lines.append(f"{turn} [{start:08.4f}-{end:08.4f}]: {text}\n")
        with open(os.path.join(emo_dir, f"{dialog}.txt"), "w") as emo_file:
            emo_file.write("% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n")
            emo_file.write("\n".join(blocks) + "\n")
        with open(os.path.join(trans_dir, f"{dialog}.txt"), "w") as trans_file:
            trans_file.writelines(transcript_lines)


def generate_demo_corpus(
    save_folder,
    n_sessions=5,
    dialogs_per_session=6,
    turns_per_dialog=24,
    seed=1234,
):
    """Writes ``save_folder/IEMOCAP_full_release`` and returns its path.

    Does nothing when a corpus made with the same options is already there.

    Arguments
    ---------
    save_folder : str
        Parent folder of ``IEMOCAP_full_release``.
    n_sessions : int
        Number of sessions (two speakers each), at most 5.
    dialogs_per_session : int
        Dialogs per session, at most 6 (their names cycle through IEMOCAP's
        improvised and scripted patterns, suffixes included).
    turns_per_dialog : int
        Turns per dialog, alternating between the two speakers.
    seed : int
        Seed for labels, sentences and prosody jitter.

    Returns
    -------
    str
        The ``IEMOCAP_full_release`` folder, to pass as ``--data_folder``.
    """
    if not 1 <= n_sessions <= 5 or not 1 <= dialogs_per_session <= len(_DIALOG_KINDS):
        raise ValueError(
            f"n_sessions must be 1-5 and dialogs_per_session 1-{len(_DIALOG_KINDS)}"
        )
    root = os.path.join(save_folder, "IEMOCAP_full_release")
    options = {
        "n_sessions": n_sessions, "dialogs_per_session": dialogs_per_session,
        "turns_per_dialog": turns_per_dialog, "seed": seed, "version": 5,
    }
    stamp_path = os.path.join(root, "demo_corpus.json")
    if os.path.exists(stamp_path):
        with open(stamp_path) as stamp_file:
            if json.load(stamp_file) == options:
                logger.info(f"demo corpus already in {root}")
                return root
    os.makedirs(os.path.join(root, "Documentation"), exist_ok=True)
    with open(os.path.join(root, "Documentation", "README.txt"), "w") as readme:
        readme.write(
            "Synthetic demo corpus in the layout of IEMOCAP_full_release, made by "
            "mtlser_lobes.demo.demo_corpus (espeak-ng voices, emotion-dependent prosody).\n"
        )
    # espeak-ng carries internal state from one utterance to the next, so the
    # audio is only reproducible for a fixed sequence of calls in a fresh
    # process: each session is synthesised in a new process of its own.
    jobs = [(root, session, dialogs_per_session, turns_per_dialog, seed)
            for session in range(1, n_sessions + 1)]
    context = multiprocessing.get_context("spawn")
    workers = min(len(jobs), os.cpu_count() or 1)
    with ProcessPoolExecutor(workers, mp_context=context, max_tasks_per_child=1) as pool:
        progress = tqdm(total=len(jobs), desc="synthesising demo sessions", disable=None)
        for _ in pool.map(_write_session, jobs):
            progress.update()
        progress.close()
    n_turns = n_sessions * dialogs_per_session * turns_per_dialog
    with open(stamp_path, "w") as stamp_file:
        json.dump(options, stamp_file)
    logger.info(f"demo corpus: {n_turns} turns written to {root}")
    return root


def main(argv=None):
    """Command line: ``python -m mtlser_lobes.demo.demo_corpus SAVE_FOLDER [options]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("save_folder")
    parser.add_argument("--dialogs_per_session", type=int, default=6)
    parser.add_argument("--turns_per_dialog", type=int, default=24)
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args(argv)
    print(
        generate_demo_corpus(
            args.save_folder,
            dialogs_per_session=args.dialogs_per_session,
            turns_per_dialog=args.turns_per_dialog,
            seed=args.seed,
        )
    )


if __name__ == "__main__":
    main()
