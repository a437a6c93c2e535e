#!/usr/bin/env python3
"""MTLSER benchmarks: prints a table and writes JSON (environment included).

Measured in the same run, on the same batches:

- ``train_step``: one optimisation step (forward, backward, Adam) of the three-head model and of the
  emotion-only model with the same encoder and batch; the ratio is the multi-task overhead.
- ``batching``: the share of padded audio in the batches of an IEMOCAP-sized epoch (5,531 turns,
  durations drawn from a log-normal with IEMOCAP's mean of 4.5 s, clipped to 0.6-35 s) with fixed
  batches of random order (the reference recipe's batching) and with SpeechBrain's
  ``DynamicBatchSampler`` (duration buckets), the recipe's ``dynamic_batching: True``.
- ``epoch``: one training epoch of the recipe itself (``train.py``'s ``MTLBrain``, data pipeline
  and loader options) over synthetic turns with IEMOCAP's durations, written to disk as wavs, in
  the reference recipe's configuration (fixed batches of 4, random order, fp32) and in ours
  (dynamic batches; fp32 and bf16); the loader alone is timed too (utterances/s, padding). On the
  CPU a subset of the 5,531 turns is run (``--epoch_turns``) and the full epoch is projected.
- ``inference``: the real-time factor of ``MTLSER.predict_file`` on one 3 s file and the throughput
  of ``predict_files`` on many, each against the bare encoder forward on the same audio, for fp32,
  bf16 and dynamic int8, with the change of the predictions against fp32 and the top ops; and the
  same model exported to ONNX (``mtlser_lobes.inference.onnx_export``) run by ONNX Runtime through
  ``OnnxMTLSER``, fp32 and int8 (``onnx``, ``onnx-int8``), against the bare graph on the same audio,
  with the top operators from ONNX Runtime's own profiler.

Every epoch and inference case runs in a fresh process and reports the peak RSS of its measured
phase (and on GPU the maximum allocated memory).

Encoders have random weights (timing does not depend on them): ``tiny`` is the test encoder,
``base`` has wav2vec2-base's architecture (95 M parameters).

Usage::

    python benchmarks/bench.py --json benchmarks/results_cpu.json        # CPU, minutes
    python benchmarks/bench.py --encoder base --json results_gpu.json    # GPU: the full 5,531-turn epoch
"""

import argparse
import csv
import importlib
import json
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
import traceback
import warnings

import numpy as np
import soundfile
import speechbrain
import torch
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.dataio.sampler import DynamicBatchSampler
from speechbrain.integrations.huggingface.wav2vec2 import Wav2Vec2

from mtlser_lobes.heads import CTCHead, EmotionHead, SpeakerHead
from mtlser_lobes.helpers import encoder_output_size, frame_lengths
from mtlser_lobes.precision import cpu_features, resolve_precision
from mtlser_lobes.demo.tiny_encoder import save_tiny_wav2vec2

#: wav2vec2-base's architecture, as overrides of the tiny encoder's config.
BASE_CONFIG = {
    "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
    "intermediate_size": 3072, "conv_dim": [512] * 7, "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
}
IEMOCAP_TURNS = 5531
IEMOCAP_MEAN_S = 4.5
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "recipes", "IEMOCAP", "MTLSER")


def environment(device):
    """What the numbers were measured on, with the CPU's instruction sets (they decide bf16 and int8 speed)."""
    features = cpu_features()
    return {
        "python": platform.python_version(), "torch": torch.__version__,
        "speechbrain": speechbrain.__version__, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else features["cpu_model"],
        "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "cpu_model": features["cpu_model"], "cpu_capability": features["cpu_capability"],
        "avx512_bf16": features["avx512_bf16"], "amx": features["amx"], "vnni": features["vnni"],
        "precision_auto": resolve_precision("auto", str(device), log=False),
    }


def describe_machine(env):
    """One line for the tables' headers: the CPU and what it computes natively."""
    flags = ", ".join(f"{name} {'yes' if env[key] else 'no'}"
                      for name, key in (("AVX512-BF16", "avx512_bf16"), ("AMX", "amx"), ("VNNI", "vnni")))
    device = "" if env["device"] == "cpu" else f"{env['device_name']}; "
    return (f"{device}CPU {env['cpu_model']}, torch capability {env['cpu_capability']} ({flags}); "
            f"{env['threads']} threads; precision auto -> {env['precision_auto']}")


#: Speed targets, as ratios against torch fp32 measured in the same run (so that machines compare),
#: set on the AVX-512 machine where fp32 ran at RTF 0.11: bf16 at RTF 0.05 (>= 2.2x; for hardware
#: that computes bf16 natively, see precision_auto) and the ONNX int8 model at RTF 0.03 (>= 3.5x).
SPEEDUP_TARGETS = {"bf16": 2.2, "onnx-int8": 3.5}


def encoder_source(name, folder):
    """A local encoder folder (config, random weights, feature extractor) of size ``name``."""
    overrides = BASE_CONFIG if name == "base" else {}
    return save_tiny_wav2vec2(os.path.join(folder, name), **overrides)


def make_encoder(source, folder):
    """The recipe's SpeechBrain wav2vec 2.0 lobe, trainable, random weights."""
    return Wav2Vec2(source, save_path=os.path.join(folder, "cache"), freeze=False,
                    freeze_feature_extractor=True)


def train_step_times(encoder, batch, steps, device):
    """Seconds of one optimisation step, emotion-only and three-head: the fastest of ``steps``.

    The two models share the encoder and the batch and alternate step by step (after one
    warm-up step each), so that drifts of the machine fall on both alike; the fastest step
    is the one least disturbed by the rest of the machine (interference only adds time).
    """
    torch.manual_seed(0)
    dim = encoder_output_size(encoder)
    heads = torch.nn.ModuleDict({
        "emotion": EmotionHead(dim, 4, 256), "ctc": CTCHead(dim, 29), "speaker": SpeakerHead(dim, 8, 128),
    }).to(device)
    wavs, wav_lens, emotions, speakers, tokens, token_lens = batch

    def optimizer_for(names):
        parameters = list(encoder.parameters()) + [p for n in names for p in heads[n].parameters()]
        return torch.optim.Adam([p for p in parameters if p.requires_grad], lr=1e-5)

    optimizers = {False: optimizer_for(["emotion"]), True: optimizer_for(["emotion", "ctc", "speaker"])}

    def step(multitask):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        feats = encoder(wavs, wav_lens)  # the encoder runs once for every head
        feat_lens = frame_lengths(encoder, wav_lens, wavs.shape[1], feats.shape[1])
        loss = torch.nn.functional.nll_loss(heads["emotion"](feats, feat_lens), emotions)
        if multitask:
            loss = loss + 0.1 * speechbrain.nnet.losses.ctc_loss(
                heads["ctc"](feats), tokens, feat_lens, token_lens, 0
            )
            loss = loss + 0.1 * torch.nn.functional.nll_loss(heads["speaker"](feats, feat_lens), speakers)
        loss.backward()
        optimizers[multitask].step()
        optimizers[multitask].zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    step(False), step(True)  # warm-up
    times = {False: [], True: []}
    for _ in range(steps):
        for multitask in (False, True):
            times[multitask].append(step(multitask))
    return min(times[False]), min(times[True])


def make_batch(batch_size, seconds, device):
    """Random audio of ``seconds`` (the last item 70 % as long), labels and character targets."""
    generator = torch.Generator().manual_seed(0)
    n_samples = int(16000 * seconds)
    wavs = 0.1 * torch.randn(batch_size, n_samples, generator=generator)
    wav_lens = torch.ones(batch_size)
    wav_lens[-1] = 0.7
    emotions = torch.randint(0, 4, (batch_size,), generator=generator)
    speakers = torch.randint(0, 8, (batch_size,), generator=generator)
    tokens = torch.randint(1, 29, (batch_size, int(12 * seconds)), generator=generator)
    token_lens = torch.ones(batch_size)
    return tuple(t.to(device) for t in (wavs, wav_lens, emotions, speakers, tokens, token_lens))


def iemocap_durations(seed=0):
    """5,531 durations with IEMOCAP's mean (4.5 s) and long tail (clipped to 0.6-35 s)."""
    rng = np.random.default_rng(seed)
    sigma = 0.65
    mu = np.log(IEMOCAP_MEAN_S) - sigma ** 2 / 2
    return np.clip(rng.lognormal(mu, sigma, IEMOCAP_TURNS), 0.6, 35.0)


def padded_fraction(batches, durations):
    """Share of the padded audio (samples beyond each item's end) over all batches."""
    real = padded = 0.0
    for batch in batches:
        lengths = durations[list(batch)]
        real += lengths.sum()
        padded += lengths.max() * len(lengths)
    return 1.0 - real / padded


def batching(batch_size, max_batch_length):
    """Padding of fixed random batches vs SpeechBrain's DynamicBatchSampler on one epoch."""
    durations = iemocap_durations()
    order = np.random.default_rng(1).permutation(len(durations))
    fixed = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    dataset = DynamicItemDataset({str(i): {"duration": float(d)} for i, d in enumerate(durations)})
    sampler = DynamicBatchSampler(
        dataset, max_batch_length=max_batch_length, num_buckets=20, length_func=lambda x: x["duration"],
        shuffle=True, batch_ordering="random",
    )
    dynamic = list(iter(sampler))
    return {
        "turns": len(durations), "audio_hours": float(durations.sum() / 3600),
        "fixed_batch_size": batch_size, "fixed_batches": len(fixed),
        "fixed_padded_fraction": padded_fraction(fixed, durations),
        "dynamic_max_batch_length_s": max_batch_length, "dynamic_batches": len(dynamic),
        "dynamic_padded_fraction": padded_fraction(dynamic, durations),
    }


# ---------------------------------------------------------------- isolation
def isolated(threads, function, *args):
    """Runs ``function(*args)`` (which returns a dict) in a fresh process.

    The process's lifetime peak RSS (``process_peak_rss_mib``, its main
    process; loader workers are processes of their own) is added to the dict;
    the cases report the peak of their measured phase themselves.
    """
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_isolated_child, args=(sender, threads, function, args))
    process.start()
    sender.close()
    try:
        status, payload = receiver.recv()
    except EOFError:
        status, payload = "error", f"the process died (exit code {process.exitcode})"
    process.join()
    if status == "error":
        raise RuntimeError(f"{function.__name__}{args[:2]} failed:\n{payload}")
    return payload


def _isolated_child(connection, threads, function, args):
    try:
        # A spawned process spawns its own children too; loader workers fork, as under train.py
        if "fork" in multiprocessing.get_all_start_methods():
            multiprocessing.set_start_method("fork", force=True)
        torch.set_num_threads(threads)
        result = function(*args)
        result["process_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        connection.send(("ok", result))
    except BaseException:  # noqa: BLE001 (everything goes back to the parent)
        connection.send(("error", traceback.format_exc()))


def reset_peak_memory(device):
    """Starts a new peak: the RSS high-water mark (Linux ``clear_refs``), and CUDA's peak."""
    try:
        with open("/proc/self/clear_refs", "w") as out_file:
            out_file.write("5")
    except OSError:
        pass  # not Linux: the peak RSS then counts from the process start
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device):
    """Peak RSS since :func:`reset_peak_memory` (MiB) and, on GPU, peak allocated memory."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    try:
        with open("/proc/self/status") as in_file:
            peak = next(int(line.split()[1]) for line in in_file if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        pass
    memory = {"peak_rss_mib": peak}
    if torch.device(device).type == "cuda":
        memory["max_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    return memory


def progress(message):
    """One line on stderr, so that a long run shows where it is."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def synchronize(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


# -------------------------------------------------------------------- epoch
def recipe_module(name):
    """A module of the recipe folder (``train``, ``iemocap_prepare``)."""
    if RECIPE not in sys.path:
        sys.path.insert(0, RECIPE)
    return importlib.import_module(name)


def write_synthetic_turns(folder, durations, seed=0):
    """Writes one 16 kHz wav per duration and a ``train.csv`` in the recipe's format.

    The audio is a harmonic tone (one pitch per speaker, 8 speakers) with noise
    and a syllable-rate envelope; labels and transcripts are random (about 12
    characters per second). Returns the CSV's path.
    """
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(folder, "wav"), exist_ok=True)
    rows = []
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    for i, duration in enumerate(durations):
        n = int(16000 * duration)
        t = np.arange(n) / 16000
        speaker = i % 8
        f0 = 100 + 20 * speaker
        tone = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in (1, 2, 3))
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6))
        audio = (0.1 * tone * envelope + 0.01 * rng.standard_normal(n)).astype("float32")
        soundfile.write(os.path.join(folder, "wav", f"{i}.wav"), audio, 16000, subtype="PCM_16")
        n_chars = max(1, int(12 * duration))
        words = "".join(rng.choice(letters, n_chars))
        rows.append({
            "ID": f"turn{i}", "duration": f"{duration:.4f}", "wav": f"$data_root/wav/{i}.wav",
            "emo": ["neu", "hap", "ang", "sad"][i % 4], "spk_id": f"spk{speaker}",
            "wrd": " ".join(words[j:j + 5] for j in range(0, n_chars, 5)),
        })
    csv_path = os.path.join(folder, "train.csv")
    with open(csv_path, "w", encoding="utf-8", newline="") as out_file:
        writer = csv.DictWriter(out_file, fieldnames=recipe_module("iemocap_prepare").CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return csv_path


#: The training configurations compared on the same turns.
EPOCH_CONFIGS = {
    "reference": {"dynamic_batching": False, "batch_size": 4, "precision": "fp32"},
    "ours_fp32": {"dynamic_batching": True, "precision": "fp32"},
    "ours_bf16": {"dynamic_batching": True, "precision": "bf16"},
}


def epoch_case(config, encoder_source, data_folder, csv_path, device, max_batch_length, num_workers, workdir):
    """One epoch of train.py's MTLBrain over the turns of ``csv_path``; the loader alone first."""
    train = recipe_module("train")
    from hyperpyyaml import load_hyperpyyaml

    settings = EPOCH_CONFIGS[config]
    overrides = {
        "wav2vec2_hub": encoder_source, "data_folder": data_folder, "output_folder": workdir,
        "train_csv": csv_path, "valid_csv": csv_path, "test_csv": csv_path, "number_of_epochs": 1,
        "n_speakers": 8, "num_workers": num_workers, "batch_size": settings.get("batch_size", 4),
        "dynamic_batching": settings["dynamic_batching"], "sorting": "random",
        "dynamic_batch_sampler": {"max_batch_length": max_batch_length, "num_buckets": 20, "shuffle": True,
                                  "batch_ordering": "random"},
    }
    with open(os.path.join(RECIPE, "hparams", "mtl.yaml"), encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    os.makedirs(hparams["save_folder"], exist_ok=True)
    datasets, encoders = train.dataio_prepare(hparams)
    brain = train.MTLBrain(
        modules=hparams["modules"], hparams=hparams, checkpointer=None,
        run_opts={"device": device, "precision": settings["precision"], "noprogressbar": True},
    )
    brain.tokenizer = encoders["tokenizer"]
    brain.speaker_encoder = encoders["speaker"]
    loader_options = train.train_loader_options(hparams, datasets["train"])

    # The data pipeline alone: loading, resampling check, padding, collation
    loader = brain.make_dataloader(datasets["train"], speechbrain.Stage.TRAIN, **loader_options)
    start = time.perf_counter()
    real = padded = 0.0
    n_batches = n_turns = 0
    for batch in loader:
        wavs, lens = batch.sig
        real += float(lens.sum()) * wavs.shape[1]
        padded += wavs.shape[0] * wavs.shape[1]
        n_batches += 1
        n_turns += wavs.shape[0]
    loader_s = time.perf_counter() - start

    loader_options = train.train_loader_options(hparams, datasets["train"])  # fresh, as train.py has them
    reset_peak_memory(device)
    synchronize(device)
    start = time.perf_counter()
    brain.fit(hparams["epoch_counter"], datasets["train"], None, train_loader_kwargs=loader_options,
              progressbar=False)
    synchronize(device)
    epoch_s = time.perf_counter() - start
    return {
        **peak_memory_mib(device),
        "config": config, "precision": settings["precision"],
        "batching": (f"dynamic, {max_batch_length:g} s" if settings["dynamic_batching"]
                     else f"fixed {settings['batch_size']}, random order"),
        "turns": n_turns, "batches": n_batches, "padded_fraction": 1.0 - real / padded,
        "loader_s": loader_s, "loader_utterances_per_s": n_turns / loader_s,
        "epoch_s": epoch_s, "train_utterances_per_s": n_turns / epoch_s,
        "train_loss": float(brain.train_stats["loss"]),
    }


def epoch(name, encoder_source, folder, turns, device, threads, max_batch_length, num_workers):
    """The epoch configurations on the same synthetic turns, each in its own process."""
    durations = iemocap_durations()
    full_audio_s = float(durations.sum())
    subset = durations[np.random.default_rng(2).permutation(len(durations))[:turns]]
    data_folder = os.path.join(folder, f"turns_{turns}")
    if not os.path.isdir(data_folder):
        write_synthetic_turns(data_folder, subset)
    csv_path = os.path.join(data_folder, "train.csv")
    rows = []
    for config in EPOCH_CONFIGS:
        progress(f"{name}: one epoch of {turns} turns ({subset.sum() / 60:.1f} min of audio), {config}")
        row = isolated(threads, epoch_case, config, encoder_source, data_folder, csv_path, str(device),
                       max_batch_length, num_workers, os.path.join(folder, f"epoch_{name}_{config}"))
        row.update({"encoder": name, "audio_s": float(subset.sum()),
                    "full_epoch_projected_s": row["epoch_s"] * full_audio_s / float(subset.sum())})
        rows.append(row)
    reference = rows[0]["epoch_s"]
    for row in rows:
        row["speedup_vs_reference"] = reference / row["epoch_s"]
    return rows


# ---------------------------------------------------------------- inference
INFERENCE_VARIANTS = ("fp32", "bf16", "int8", "onnx", "onnx-int8")


def inference_case(name, variant, encoder_source, cache, one_file, many_files, repeats, device):
    """Interface vs bare encoder: one file's real-time factor, many files' throughput, top ops."""
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    from mtlser_lobes.inference.interface import MTLSER

    if variant.startswith("onnx"):
        return onnx_inference_case(name, variant, cache, one_file, many_files, repeats)
    precision = variant if variant in ("fp32", "bf16", "fp16") else "fp32"
    model = MTLSER.untrained(encoder_source, cache, run_opts={"device": device, "precision": precision})
    wav = model.load_audio(one_file)
    duration = wav.shape[0] / 16000
    with FlopCounterMode(display=False) as flop_counter:  # before quantisation, which it cannot count
        with torch.no_grad():
            model.mods.wav2vec2(wav[None].to(device))
    flops = flop_counter.get_total_flops()
    if variant == "export-onnx":  # the ONNX folder the onnx variants load, written in its own process
        from mtlser_lobes.inference.onnx_export import export_loaded_model

        folder = os.path.join(cache, f"onnx_{name}")
        export_loaded_model(model, folder, quantize=True)
        with open(os.path.join(folder, "flops.json"), "w") as out:
            json.dump({"encoder_flops": flops}, out)
        return {}
    if variant == "int8":  # dynamic int8 linear layers (weights int8, activations quantised per call)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.ao.quantization.quantize_dynamic(model.mods, {torch.nn.Linear}, dtype=torch.qint8,
                                                   inplace=True)
    encoder = model.mods.wav2vec2

    def bare(wav):
        with torch.no_grad():
            encoder(wav[None].to(device))

    measured = measure_inference(model, bare, wav, one_file, many_files, repeats, device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=activities) as profiler:
        model.predict_file(one_file)
    key = "self_device_time_total" if device.startswith("cuda") else "self_cpu_time_total"
    events = sorted(profiler.key_averages(), key=lambda e: getattr(e, key), reverse=True)
    total = sum(getattr(e, key) for e in events)
    top_ops = [{"op": e.key, "self_ms": getattr(e, key) / 1000, "share": getattr(e, key) / total}
               for e in events[:5]]
    return inference_row(name, variant, device, duration, flops, measured, top_ops)


def onnx_inference_case(name, variant, cache, one_file, many_files, repeats):
    """The ONNX export of the same model, run by ONNX Runtime (``mtlser_lobes.inference.onnx_runtime``).

    "Bare" is the graph (encoder and heads) on audio already in memory, without reading, checking
    or decoding. No torch model is loaded in this process (the script itself imports torch).
    """
    from mtlser_lobes.inference.onnx_runtime import OnnxMTLSER

    folder = os.path.join(cache, f"onnx_{name}")
    with open(os.path.join(folder, "flops.json")) as fin:
        flops = json.load(fin)["encoder_flops"]
    model = OnnxMTLSER(folder, quantized=variant == "onnx-int8", threads=torch.get_num_threads())
    wav = model.load_audio(one_file)

    def bare(wav):
        model.run(wav[None])

    measured = measure_inference(model, bare, wav, one_file, many_files, repeats, "cpu")
    top_ops = onnx_top_ops(model, one_file, torch.get_num_threads())
    return inference_row(name, variant, "cpu", wav.shape[0] / 16000, flops, measured, top_ops)


def onnx_top_ops(model, one_file, threads, calls=3):
    """Operator types of a ``predict_file`` call by share of the kernel time, from ONNX Runtime's profiler.

    A session of the same graph with profiling on stands in for the model's own during ``calls``
    calls (the first one warms it up, and counts); the node events of its trace
    (``<node>_kernel_time``) are summed per operator type.
    """
    import onnxruntime

    from mtlser_lobes.inference.onnx_runtime import inference_session

    options = onnxruntime.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "onnx_profile")
    own_session = model.session
    model.session = inference_session(model.graph_path, threads, options=options)
    try:
        for _ in range(calls):
            model.predict_file(one_file)
        trace = model.session.end_profiling()
    finally:
        model.session = own_session
    with open(trace) as fin:
        events = json.load(fin)
    totals = {}
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            op = event.get("args", {}).get("op_name", "?")
            totals[op] = totals.get(op, 0) + event["dur"]  # microseconds
    total = sum(totals.values()) or 1
    ranked = sorted(totals.items(), key=lambda item: item[1], reverse=True)
    return [{"op": op, "self_ms": micros / 1000 / calls, "share": micros / total} for op, micros in ranked[:5]]


def measure_inference(model, bare, wav, one_file, many_files, repeats, device):
    """Interface and bare timings (interleaved), throughput on many files, peak memory, answers."""

    def timed(function, *args):
        synchronize(device)
        start = time.perf_counter()
        function(*args)
        synchronize(device)
        return time.perf_counter() - start

    timed(model.predict_file, one_file), timed(bare, wav)  # warm-up
    interface_times, bare_times = [], []
    for _ in range(repeats):  # interleaved, so that drifts of the machine fall on both
        interface_times.append(timed(model.predict_file, one_file))
        bare_times.append(timed(bare, wav))

    wavs = [model.load_audio(path) for path in many_files]
    audio_s = sum(w.shape[0] for w in wavs) / 16000
    many_interface, many_bare = [], []
    predictions = None
    for _ in range(2):
        synchronize(device)
        start = time.perf_counter()
        predictions = model.predict_files(many_files)
        synchronize(device)
        many_interface.append(time.perf_counter() - start)
        many_bare.append(sum(timed(bare, w) for w in wavs))

    # Peak memory of each path alone over the many files (the model's weights are resident in both)
    reset_peak_memory(device)
    for w in wavs:
        bare(w)
    bare_memory = peak_memory_mib(device)
    reset_peak_memory(device)
    model.predict_files(many_files)
    interface_memory = peak_memory_mib(device)
    return {
        "interface_times": interface_times, "bare_times": bare_times, "many_interface": many_interface,
        "many_bare": many_bare, "files": len(many_files), "audio_s": audio_s, "bare_memory": bare_memory,
        "interface_memory": interface_memory, "predictions": predictions,
    }


def inference_row(name, variant, device, duration, flops, measured, top_ops):
    """One row of the inference table from :func:`measure_inference`'s figures."""
    bare_memory, interface_memory = measured["bare_memory"], measured["interface_memory"]
    audio_s = measured["audio_s"]
    return {
        "encoder": name, "variant": variant, "device": device, "one_file_s": duration,
        "rtf_interface": statistics.median(measured["interface_times"]) / duration,
        "rtf_bare_encoder": statistics.median(measured["bare_times"]) / duration,
        "files": measured["files"], "files_audio_s": audio_s,
        "throughput_interface_audio_s_per_s": audio_s / min(measured["many_interface"]),
        "throughput_bare_encoder_audio_s_per_s": audio_s / min(measured["many_bare"]),
        "throughput_ratio": min(measured["many_bare"]) / min(measured["many_interface"]),
        "encoder_gflop_per_audio_s": flops / duration / 1e9,
        "bare_encoder_gflop_per_s": flops / statistics.median(measured["bare_times"]) / 1e9,
        "peak_rss_bare_mib": bare_memory["peak_rss_mib"], "peak_rss_interface_mib": interface_memory["peak_rss_mib"],
        **({"max_allocated_bare_mib": bare_memory["max_allocated_mib"],
            "max_allocated_interface_mib": interface_memory["max_allocated_mib"]} if "max_allocated_mib" in bare_memory
           else {}),
        "top_ops": top_ops,
        "predictions": [{"emotion": p.emotion, "probabilities": p.probabilities, "text": p.text}
                        for p in measured["predictions"]],
    }


def prediction_change(rows):
    """Adds, to each non-fp32 row, how its predictions differ from the fp32 row's and its speed-up."""
    reference = next((r for r in rows if r["variant"] == "fp32"), None)
    for row in rows:
        if reference is None or row is reference:
            continue
        row["speedup_vs_torch_fp32"] = reference["rtf_interface"] / row["rtf_interface"]
        if row["variant"] in SPEEDUP_TARGETS:
            row["speedup_target"] = SPEEDUP_TARGETS[row["variant"]]
            row["speedup_target_met"] = row["speedup_vs_torch_fp32"] >= SPEEDUP_TARGETS[row["variant"]]
        pairs = list(zip(reference["predictions"], row["predictions"]))
        differences = [abs(a["probabilities"][c] - b["probabilities"][c]) for a, b in pairs for c in a["probabilities"]]
        characters = sum(len(a["text"]) for a, _ in pairs) or 1
        row["change_vs_fp32"] = {
            "emotion_agreement": sum(a["emotion"] == b["emotion"] for a, b in pairs) / len(pairs),
            "max_probability_difference": max(differences),
            "mean_probability_difference": sum(differences) / len(differences),
            "transcript_char_edit_rate": sum(_edit_distance(a["text"], b["text"]) for a, b in pairs) / characters,
        }
    for row in rows:
        del row["predictions"]


def _edit_distance(a, b):
    """Levenshtein distance between two strings."""
    from speechbrain.utils.edit_distance import accumulatable_wer_stats

    return accumulatable_wer_stats([list(a)], [list(b)])["num_edits"]


def inference(name, encoder_source, folder, variants, n_files, repeats, device, threads):
    """Inference variants on the same files, each in its own process."""
    files_folder = os.path.join(folder, "inference_files")
    os.makedirs(files_folder, exist_ok=True)
    rng = np.random.default_rng(3)
    one_file = os.path.join(files_folder, "one_3s.wav")
    soundfile.write(one_file, (0.1 * rng.standard_normal(48000)).astype("float32"), 16000)
    durations = iemocap_durations(seed=4)[:n_files]
    many_files = []
    for i, duration in enumerate(durations):
        many_files.append(os.path.join(files_folder, f"many_{i}.wav"))
        audio = (0.1 * rng.standard_normal(int(16000 * duration))).astype("float32")
        soundfile.write(many_files[-1], audio, 16000)
    rows = []
    for variant in variants:
        if variant in ("int8", "onnx", "onnx-int8") and device.type != "cpu":
            continue  # dynamic quantisation kernels, and the ONNX rows, are CPU-only
        progress(f"{name}: inference, {variant}")
        if variant.startswith("onnx") and not any(r["variant"].startswith("onnx") for r in rows):
            isolated(threads, inference_case, name, "export-onnx", encoder_source, os.path.join(folder, "cache"),
                     one_file, many_files, repeats, str(device))
        rows.append(isolated(threads, inference_case, name, variant, encoder_source, os.path.join(folder, "cache"),
                             one_file, many_files, repeats, str(device)))
    prediction_change(rows)
    return rows


def print_tables(results):
    """The results as markdown tables."""
    print(f"environment: {json.dumps(results['environment'])}")
    print(f"\nmachine: {describe_machine(results['environment'])}")
    if results["train_step"]:
        print("\n| encoder | params | batch | emotion-only step s | three-head step s | ratio (target <= 1.05) |")
        print("|---|---:|---:|---:|---:|---:|")
    for row in results["train_step"]:
        print(f"| {row['encoder']} | {row['parameters'] / 1e6:.2f} M | {row['batch_size']} x "
              f"{row['seconds_per_item']:g} s | {row['emotion_only_s']:.3f} | {row['three_heads_s']:.3f} | "
              f"{row['overhead_ratio']:.3f} |")
    b = results["batching"]
    print(f"\n| batching ({b['turns']} turns, {b['audio_hours']:.1f} h) | batches | padded audio "
          "(target <= 10 %) |\n|---|---:|---:|")
    print(f"| fixed {b['fixed_batch_size']}, random order | {b['fixed_batches']} | "
          f"{100 * b['fixed_padded_fraction']:.1f} % |")
    print(f"| DynamicBatchSampler, {b['dynamic_max_batch_length_s']:g} s per batch, 20 buckets | "
          f"{b['dynamic_batches']} | {100 * b['dynamic_padded_fraction']:.1f} % |")
    if results["epoch"]:
        print(f"\n{describe_machine(results['environment'])}:\n")
        print("| encoder | config | batching | precision | turns (audio) | padded | loader utt/s | "
              "train utt/s | epoch s | full epoch s (projected) | speed-up | peak RSS MiB |")
        print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in results["epoch"]:
        print(f"| {row['encoder']} | {row['config']} | {row['batching']} | {row['precision']} | {row['turns']} "
              f"({row['audio_s'] / 60:.1f} min) | {100 * row['padded_fraction']:.1f} % | "
              f"{row['loader_utterances_per_s']:.1f} | {row['train_utterances_per_s']:.2f} | {row['epoch_s']:.1f} | "
              f"{row['full_epoch_projected_s']:.0f} | {row['speedup_vs_reference']:.2f} | "
              f"{row['peak_rss_mib']:.0f} |")
    if results["inference"]:
        print(f"\n{describe_machine(results['environment'])}:\n")
        targets = ", ".join(f"{variant} >= {ratio}" for variant, ratio in SPEEDUP_TARGETS.items())
        print(f"| encoder | variant | RTF interface (3 s file) | speed-up vs torch fp32 (targets: {targets}) | "
              "RTF bare encoder | throughput interface / bare "
              "(audio s/s) | ratio (target >= 0.8) | bare GFLOP/s | peak RSS MiB interface / bare | "
              "emotion agreement vs fp32 | max prob. change |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in results["inference"]:
        change = row.get("change_vs_fp32")
        speedup = f"{row['speedup_vs_torch_fp32']:.2f}" if "speedup_vs_torch_fp32" in row else "1.00"
        print(f"| {row['encoder']} | {row['variant']} | {row['rtf_interface']:.4f} | {speedup} | "
              f"{row['rtf_bare_encoder']:.4f} | "
              f"{row['throughput_interface_audio_s_per_s']:.1f} / {row['throughput_bare_encoder_audio_s_per_s']:.1f} | "
              f"{row['throughput_ratio']:.3f} | {row['bare_encoder_gflop_per_s']:.0f} | "
              f"{row['peak_rss_interface_mib']:.0f} / {row['peak_rss_bare_mib']:.0f} | "
              + (f"{100 * change['emotion_agreement']:.0f} % | {change['max_probability_difference']:.4f} |"
                 if change else "- | - |"))
    for row in results["inference"]:
        ops = ", ".join(f"{op['op']} {100 * op['share']:.0f} %" for op in row["top_ops"][:3])
        if ops:
            print(f"top ops, {row['encoder']} {row['variant']}: {ops}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", nargs="+", choices=["tiny", "base"], default=["tiny", "base"])
    parser.add_argument("--parts", nargs="+", choices=["train_step", "epoch", "inference"],
                        default=["train_step", "epoch", "inference"], help="the batching part always runs")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per model (after 1 warm-up); default 30 (tiny), 6 (base)")
    parser.add_argument("--batch_size", type=int, default=None,
                        help="train step: default 8 on GPU; on CPU 8 (tiny) or 2 (base)")
    parser.add_argument("--seconds", type=float, default=3.0, help="train step: audio per batch item")
    parser.add_argument("--epoch_turns", type=int, default=None,
                        help="turns of the synthetic epoch; default all 5,531 on GPU, on CPU 400 (tiny), 40 (base)")
    parser.add_argument("--max_batch_length", type=float, default=None,
                        help="seconds of audio per dynamic batch; default 120 on GPU, 60 on CPU")
    parser.add_argument("--num_workers", type=int, default=2, help="loader workers of the epoch runs")
    parser.add_argument("--variants", nargs="+", choices=INFERENCE_VARIANTS, default=list(INFERENCE_VARIANTS))
    parser.add_argument("--inference_files", type=int, default=None,
                        help="files of the throughput run; default 200 on GPU, 12 on CPU")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats of the one-file inference")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default=None, help="where to write the results")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    results = {"environment": environment(device), "arguments": vars(args), "train_step": [],
               "batching": batching(8, 60.0), "epoch": [], "inference": []}
    with tempfile.TemporaryDirectory() as folder:
        for name in args.encoder:
            source = encoder_source(name, folder)
            if "train_step" in args.parts:
                progress(f"{name}: train steps, emotion-only vs three heads")
                batch_size = args.batch_size or (8 if gpu or name == "tiny" else 2)
                encoder = make_encoder(source, folder).to(device)
                batch = make_batch(batch_size, args.seconds, device)
                steps = args.steps or (30 if name == "tiny" else 6)
                single, multi = train_step_times(encoder, batch, steps, device)
                results["train_step"].append({
                    "encoder": name, "parameters": sum(p.numel() for p in encoder.parameters()),
                    "batch_size": batch_size, "seconds_per_item": args.seconds, "steps": steps,
                    "emotion_only_s": single, "three_heads_s": multi, "overhead_ratio": multi / single,
                })
                del encoder, batch
            if "epoch" in args.parts:
                turns = args.epoch_turns or (IEMOCAP_TURNS if gpu else 400 if name == "tiny" else 40)
                results["epoch"] += epoch(name, source, folder, turns, device, args.threads,
                                          args.max_batch_length or (120.0 if gpu else 60.0), args.num_workers)
            if "inference" in args.parts:
                results["inference"] += inference(name, source, folder, args.variants,
                                                  args.inference_files or (200 if gpu else 12), args.repeats,
                                                  device, args.threads)
    print_tables(results)
    if args.json:
        with open(args.json, "w") as out_file:
            json.dump(results, out_file, indent=2)
        print(f"\nwritten to {args.json}")
    return results


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
