#!/usr/bin/env python3
"""Do ONNX Runtime's transformer fusions pay? wav2vec2-base with and without them, fp32 and dynamic int8.

The shipped graphs (``model.onnx``, ``model.int8.onnx``) rely on ONNX Runtime's built-in graph
optimisations. ``onnxruntime.transformers.optimizer`` fuses further (attention, GELU with its bias,
layer normalisation). This script exports wav2vec2-base with random weights (timing does not depend
on them), fuses the fp32 graph with the BERT-style patterns (12 heads, width 768), quantises the
fused and the plain graph dynamically (matrix products; the convolutions stay fp32), and reports
for the four graphs the real-time factor on one 3 s utterance (median of ``--repeats`` after a
warm-up, ``--threads`` threads; the lower of two rounds over the four graphs, so that no graph pays
for the export's memory alone), the largest output difference from the plain fp32 graph, and which
operators were fused.

Usage (from the repository root)::

    python benchmarks/onnx_fusions.py --json benchmarks/onnx_fusions_amx.json
"""

import argparse
import json
import os
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    from onnxruntime.transformers import optimizer

    from onnx_static_quantization import export_base, ort_session, session_rtf
    from mtlser_lobes.inference.onnx_quantization import quantize_matrix_products
    from mtlser_lobes.precision import cpu_features

    results = {"cpu": cpu_features(), "threads": args.threads, "repeats": args.repeats}
    with tempfile.TemporaryDirectory() as folder:
        onnx_folder = export_base(folder)
        plain = os.path.join(onnx_folder, "model.onnx")
        fused_model = optimizer.optimize_model(plain, model_type="bert", num_heads=12, hidden_size=768,
                                               opt_level=0)
        results["fused_operators"] = {k: v for k, v in fused_model.get_fused_operator_statistics().items() if v}
        fused = os.path.join(onnx_folder, "model.fused.onnx")
        fused_model.save_model_to_file(fused)
        quantize_matrix_products(plain, os.path.join(onnx_folder, "model.dynamic.onnx"))
        quantize_matrix_products(fused, os.path.join(onnx_folder, "model.fused.dynamic.onnx"))
        wav = (0.1 * np.random.default_rng(0).standard_normal(48000)).astype("float32")
        graphs = {"fp32": "model.onnx", "fp32_fused": "model.fused.onnx",
                  "dynamic_int8": "model.dynamic.onnx", "dynamic_int8_fused": "model.fused.dynamic.onnx"}
        results["rtf_base_3s"], results["max_output_difference_vs_fp32"] = {}, {}
        reference = None
        for round_ in range(2):  # two rounds over the graphs; the lower median of each is kept
            for name, file in graphs.items():
                session, feed = ort_session(os.path.join(onnx_folder, file), wav, args.threads)
                value = session_rtf(session, feed, args.repeats)
                results["rtf_base_3s"][name] = min(value, results["rtf_base_3s"].get(name, value))
                if round_ == 0:  # the outputs do not change between rounds
                    answers = session.run(None, feed)
                    reference = answers if reference is None else reference  # "fp32" comes first
                    results["max_output_difference_vs_fp32"][name] = max(
                        float(np.abs(a - b).max()) for a, b in zip(answers, reference))
    print(f"fused: {results['fused_operators']}")
    print("| graph | RTF, base, 3 s | largest output difference from fp32 |\n|---|---:|---:|")
    for name, value in results["rtf_base_3s"].items():
        print(f"| {name} | {value:.4f} | {results['max_output_difference_vs_fp32'][name]:.1e} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(results, out, indent=2)
        print(f"\nwritten to {args.json}")
    return results


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
