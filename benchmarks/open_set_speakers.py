#!/usr/bin/env python3
"""Open-set speaker identification of an exported model on a held-out session.

Enrols each speaker of the session from their first ``--enroll_turns`` turns (file
name order) and identifies the remaining turns of both speakers of the session,
once with the training speakers in the gallery and once with ``enrolled_only``.
Prints, per enrolled speaker, the share of their own other turns given their
name, and the share of the other speaker's turns wrongly given it (with the
training speakers) or answered "unknown" (enrolled speakers only).

Usage (in recipes/IEMOCAP/MTLSER, after the README's demo command)::

    python ../../../benchmarks/open_set_speakers.py \\
        results/MTLSER/loso_test5/alpha0.1_beta0.1/1986/model \\
        data/demo/IEMOCAP_full_release/Session5/sentences/wav
"""

import argparse
import glob
import os

from mtlser_lobes.inference.interface import MTLSER
from mtlser_lobes.precision import REFERENCE_RUN_OPTS


def speaker_of(path):
    """``Ses05F_impro01_M001.wav`` -> ``Ses05_M`` (IEMOCAP's turn naming)."""
    name = os.path.basename(path)
    return f"{name[:5]}_{name.rsplit('_', 1)[1][0]}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="exported model folder")
    parser.add_argument("wav_folder", help="a held-out session's sentences/wav folder")
    parser.add_argument("--enroll_turns", type=int, default=8)
    args = parser.parse_args(argv)

    model = MTLSER.from_hparams(source=args.model, run_opts=REFERENCE_RUN_OPTS)
    turns = {}
    for path in sorted(glob.glob(os.path.join(args.wav_folder, "**", "*.wav"), recursive=True)):
        turns.setdefault(speaker_of(path), []).append(path)
    embeddings = {spk: model.embed_files(paths) for spk, paths in turns.items()}
    print(f"speaker threshold {model.speaker_threshold}")
    for enrolled, paths in sorted(turns.items()):
        (other,) = [s for s in turns if s != enrolled]
        model.enroll(enrolled, paths[: args.enroll_turns])
        own = embeddings[enrolled][args.enroll_turns:]
        for only in (False, True):
            model.enrolled_only = only
            own_names, _ = model.identify(own)
            other_names, _ = model.identify(embeddings[other])
            own_names, other_names = list(own_names), list(other_names)
            recognised = 100 * own_names.count(enrolled) / len(own_names)
            if only:
                rejected = 100 * other_names.count("unknown") / len(other_names)
                print(f"{enrolled} enrolled, enrolled speakers only: {recognised:.0f} % of its other "
                      f"{len(own_names)} turns recognised, {rejected:.0f} % of {other}'s "
                      f"{len(other_names)} turns unknown")
            else:
                wrong = 100 * other_names.count(enrolled) / len(other_names)
                print(f"{enrolled} enrolled, with the training speakers: {recognised:.0f} % of its "
                      f"other {len(own_names)} turns recognised, {wrong:.0f} % of {other}'s "
                      f"{len(other_names)} turns given its name")
        model.enrolled_only = False
        model.forget(enrolled)


if __name__ == "__main__":
    main()
