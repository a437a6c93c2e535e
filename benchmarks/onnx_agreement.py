#!/usr/bin/env python3
"""How the ONNX models' answers differ from the PyTorch model's, on the test turns of a trained model.

For an experiment exported with ``mtlser-export EXPERIMENT --onnx``, answers every turn of its
``test.csv`` with the PyTorch interface (fp32), the fp32 ONNX graph and the int8 ONNX graph, and
reports for each ONNX model the share of turns whose emotion label is unchanged, the largest and
mean change of a class probability, and the character edit rate between the transcripts.

Usage (from the repository root)::

    python benchmarks/onnx_agreement.py recipes/IEMOCAP/MTLSER/results/MTLSER/loso_test5/alpha0.1_beta0.1/1986 \\
        --json benchmarks/onnx_agreement_amx.json
"""

import argparse
import json
import os
import platform
import sys


def _edit_distance(a, b):
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def compare(reference, answers):
    """Agreement of ``answers`` with ``reference`` (lists of Prediction, same files)."""
    differences = [abs(a.probabilities[c] - b.probabilities[c]) for a, b in zip(reference, answers)
                   for c in a.probabilities]
    characters = sum(len(a.text) for a in reference) or 1
    return {
        "turns": len(reference),
        "emotion_agreement": sum(a.emotion == b.emotion for a, b in zip(reference, answers)) / len(reference),
        "max_probability_difference": max(differences),
        "mean_probability_difference": sum(differences) / len(differences),
        "transcript_char_edit_rate": sum(_edit_distance(a.text, b.text) for a, b in zip(reference, answers))
        / characters,
        "speaker_agreement": sum(a.speaker == b.speaker for a, b in zip(reference, answers)) / len(reference),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", help="output_folder of a train.py run exported with --onnx")
    parser.add_argument("--json", default=None, help="where to write the results")
    args = parser.parse_args(argv)

    import onnxruntime
    import torch

    from mtlser_lobes.inference.export import _load_training_hparams
    from mtlser_lobes.helpers import prepared_rows
    from mtlser_lobes.inference.interface import MTLSER
    from mtlser_lobes.inference.onnx_runtime import OnnxMTLSER
    from mtlser_lobes.precision import REFERENCE_RUN_OPTS

    model_folder = os.path.join(args.experiment, "model")
    data_folder = _load_training_hparams(os.path.abspath(args.experiment))["data_folder"]
    paths = [row["wav"] for row in prepared_rows(os.path.join(args.experiment, "test.csv"), data_folder)]
    reference = MTLSER.from_hparams(source=model_folder, run_opts=REFERENCE_RUN_OPTS)
    reference = reference.predict_files(paths)
    results = {
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "onnxruntime": onnxruntime.__version__, "machine": platform.machine(),
                        "cpus": os.cpu_count()},
        "experiment": args.experiment,
    }
    print("| model | turns | emotion unchanged | max prob. change | mean prob. change | transcript char edits | "
          "speaker unchanged |\n|---|---:|---:|---:|---:|---:|---:|")
    for name, quantized in (("onnx fp32", False), ("onnx int8", True)):
        answers = OnnxMTLSER(model_folder, quantized=quantized).predict_files(paths)
        row = results[name.replace(" ", "_")] = compare(reference, answers)
        print(f"| {name} | {row['turns']} | {100 * row['emotion_agreement']:.2f} % | "
              f"{row['max_probability_difference']:.4f} | {row['mean_probability_difference']:.5f} | "
              f"{100 * row['transcript_char_edit_rate']:.2f} % | {100 * row['speaker_agreement']:.2f} % |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fout:
            json.dump(results, fout, indent=2)
        print(f"\nwritten to {args.json}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
