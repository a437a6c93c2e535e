#!/usr/bin/env python3
"""How to quantise the convolutions? Speed on wav2vec2-base, answers of a trained model.

Compares, on the same graphs, four int8 variants of the fp32 ``model.onnx``:

- ``dynamic_int8``: ONNX Runtime's dynamic quantisation of the matrix products only; the
  convolutions (feature extractor, positional convolution) stay fp32;
- ``per_frame_conv_int8``: the shipped ``model.int8.onnx``
  (:mod:`mtlser_lobes.inference.onnx_quantization`): the feature extractor's convolutions but the
  first as integer products with activations quantised per frame at run time, plus the above;
- ``static_conv_dynamic_int8`` and ``static_conv_but_first_dynamic_int8``: ONNX Runtime's static
  quantisation of the convolutions (QDQ, per-channel int8 weights, uint8 activations calibrated with
  MinMax on training wavs; every convolution, or every one but the first, on the waveform), plus the
  above.

It measures:

- speed: real-time factor of each graph on one 3 s utterance, wav2vec2-base architecture with
  random weights (timing does not depend on them), median of ``--repeats`` after a warm-up,
  ``--threads`` ONNX Runtime threads;
- answers: on the test turns of a trained experiment exported with ``--onnx``, the share of emotion
  labels unchanged against the PyTorch fp32 model (with ``--per_conv``, also each convolution alone
  static), with calibration on ``--calibration_turns`` of its training turns.

Usage (from the repository root)::

    python benchmarks/onnx_static_quantization.py \\
        --experiment recipes/IEMOCAP/MTLSER/results/MTLSER/loso_test5/alpha0.1_beta0.1/1986 \\
        --json benchmarks/onnx_static_quantization_amx.json
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def conv_names(path):
    """Names of the convolutions of an ONNX graph, in graph order."""
    import onnx

    return [node.name for node in onnx.load(path).graph.node if node.op_type == "Conv"]


def static_conv_int8(fp32_path, out_path, calibration_wavs, folder, static_convs=None):
    """fp32 graph -> convolutions static int8 (QDQ, calibrated) + matrix products dynamic int8.

    ``static_convs``: indices or a slice, in graph order, of the convolutions to quantise statically
    (None: all; 0 is the one on the waveform, followed by group normalisation over time in wav2vec
    2.0, and the last is the positional convolution); the others stay fp32.
    """
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from mtlser_lobes.inference.onnx_quantization import quantize_matrix_products

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter({"wav": w[None].astype("float32"), "wav_lens": np.ones(1, "float32")}
                              for w in calibration_wavs)

        def get_next(self):
            return next(self.items, None)

    prepared, convs = os.path.join(folder, "pre.onnx"), os.path.join(folder, "conv_int8.onnx")
    quant_pre_process(fp32_path, prepared, skip_symbolic_shape=True)
    conv_nodes = conv_names(prepared)
    static = conv_nodes if static_convs is None else (
        conv_nodes[static_convs] if isinstance(static_convs, slice) else [conv_nodes[i] for i in static_convs])
    quantize_static(prepared, convs, Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"],
                    per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                    nodes_to_exclude=[name for name in conv_nodes if name not in static])
    quantize_matrix_products(convs, out_path)


def ort_session(path, wav, threads):
    """An ONNX Runtime session of one graph on ``threads`` threads (as ``OnnxMTLSER`` runs it), and its feed."""
    from mtlser_lobes.inference.onnx_runtime import inference_session

    session = inference_session(path, threads)
    return session, {"wav": wav[None], "wav_lens": np.ones(1, "float32")}


def session_rtf(session, feed, repeats):
    """Median real-time factor of ``repeats`` runs after a warm-up."""
    session.run(None, feed)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return statistics.median(times) / (feed["wav"].shape[1] / 16000)


def rtf(path, wav, repeats, threads):
    """Median real-time factor of one graph on one utterance."""
    return session_rtf(*ort_session(path, wav, threads), repeats)


def export_base(folder):
    """wav2vec2-base with random weights and random heads, exported to ``<folder>/onnx`` (fp32, int8)."""
    import torch

    from bench import encoder_source
    from mtlser_lobes.inference.interface import MTLSER
    from mtlser_lobes.inference.onnx_export import export_loaded_model
    from mtlser_lobes.precision import REFERENCE_RUN_OPTS

    torch.manual_seed(0)
    model = MTLSER.untrained(encoder_source("base", folder), os.path.join(folder, "cache"),
                             run_opts=REFERENCE_RUN_OPTS)
    onnx_folder = os.path.join(folder, "onnx")
    export_loaded_model(model, onnx_folder, quantize=True)
    return onnx_folder


def speed(folder, repeats, threads):
    """fp32 / dynamic / static-conv graphs of wav2vec2-base with random weights."""
    from mtlser_lobes.inference.onnx_quantization import quantize_matrix_products

    onnx_folder = export_base(folder)
    quantize_matrix_products(os.path.join(onnx_folder, "model.onnx"),
                             os.path.join(onnx_folder, "model.dynamic.onnx"))
    rng = np.random.default_rng(0)
    calibration = [(0.1 * rng.standard_normal(int(16000 * s))).astype("float32") for s in rng.uniform(2, 5, 8)]
    static_conv_int8(os.path.join(onnx_folder, "model.onnx"), os.path.join(onnx_folder, "model.static.onnx"),
                     calibration, folder)
    static_conv_int8(os.path.join(onnx_folder, "model.onnx"), os.path.join(onnx_folder, "model.static1.onnx"),
                     calibration, folder, static_convs=slice(1, None))
    wav = (0.1 * rng.standard_normal(48000)).astype("float32")
    graphs = {"fp32": "model.onnx", "dynamic_int8": "model.dynamic.onnx", "per_frame_conv_int8": "model.int8.onnx",
              "static_conv_dynamic_int8": "model.static.onnx",
              "static_conv_but_first_dynamic_int8": "model.static1.onnx"}
    return {name: rtf(os.path.join(onnx_folder, file), wav, repeats, threads) for name, file in graphs.items()}


def answers(experiment, folder, calibration_turns, per_conv=False):
    """Label agreement with PyTorch fp32 of the dynamic and the static int8 graphs of a trained model.

    ``per_conv`` adds one graph per convolution with that one alone static (``only_conv<k>``).
    """
    from onnx_agreement import compare

    from mtlser_lobes.inference.export import _load_training_hparams
    from mtlser_lobes.helpers import prepared_rows
    from mtlser_lobes.inference.interface import MTLSER
    from mtlser_lobes.inference.onnx_quantization import quantize_matrix_products
    from mtlser_lobes.inference.onnx_runtime import OnnxMTLSER
    from mtlser_lobes.precision import REFERENCE_RUN_OPTS

    data_folder = _load_training_hparams(os.path.abspath(experiment))["data_folder"]
    model_folder = os.path.join(experiment, "model")
    shipped = os.path.join(model_folder, "onnx")
    reader = OnnxMTLSER(shipped)
    train = [row["wav"] for row in prepared_rows(os.path.join(experiment, "train.csv"), data_folder)]
    chosen = np.random.default_rng(0).choice(len(train), min(calibration_turns, len(train)), replace=False)
    calibration = [reader.load_audio(train[i]) for i in chosen]
    graphs = {"dynamic_int8": os.path.join(folder, "dynamic_int8"), "per_frame_conv_int8": shipped}
    shutil.copytree(shipped, graphs["dynamic_int8"])
    quantize_matrix_products(os.path.join(shipped, "model.onnx"),
                             os.path.join(graphs["dynamic_int8"], "model.int8.onnx"))
    variants = {"static_conv_dynamic_int8": None, "static_conv_but_first_dynamic_int8": slice(1, None)}
    if per_conv:
        variants.update({f"only_conv{k}": [k] for k in range(len(conv_names(os.path.join(shipped, "model.onnx"))))})
    for name, static_convs in variants.items():
        graphs[name] = os.path.join(folder, name)
        shutil.copytree(shipped, graphs[name])
        static_conv_int8(os.path.join(shipped, "model.onnx"), os.path.join(graphs[name], "model.int8.onnx"),
                         calibration, folder, static_convs=static_convs)
    test = [row["wav"] for row in prepared_rows(os.path.join(experiment, "test.csv"), data_folder)]
    reference = MTLSER.from_hparams(source=model_folder, run_opts=REFERENCE_RUN_OPTS)
    reference = reference.predict_files(test)
    return {name: compare(reference, OnnxMTLSER(path, quantized=True).predict_files(test))
            for name, path in graphs.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default=None,
                        help="a train.py output folder exported with --onnx (answers); without it, speed only")
    parser.add_argument("--calibration_turns", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--per_conv", action="store_true",
                        help="answers also with each convolution alone static (wav2vec 2.0: 7 + the positional one)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    from mtlser_lobes.precision import cpu_features

    results = {"cpu": cpu_features(), "threads": args.threads, "repeats": args.repeats}
    with tempfile.TemporaryDirectory() as folder:
        results["rtf_base_3s"] = speed(folder, args.repeats, args.threads)
        if args.experiment:
            results["experiment"] = args.experiment
            results["answers_vs_torch_fp32"] = answers(args.experiment, folder, args.calibration_turns,
                                                       args.per_conv)
    print("| graph | RTF, base, 3 s | emotion unchanged on the trained model's test turns |\n|---|---:|---:|")
    agreements = results.get("answers_vs_torch_fp32", {})
    for name in dict.fromkeys([*results["rtf_base_3s"], *agreements]):
        value, agreement = results["rtf_base_3s"].get(name), agreements.get(name)
        print(f"| {name} | " + (f"{value:.4f}" if value is not None else "-") + " | "
              + (f"{100 * agreement['emotion_agreement']:.2f} % |" if agreement else "- |"))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(results, out, indent=2)
        print(f"\nwritten to {args.json}")
    return results


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
