#!/usr/bin/env python3
"""MTLSER benchmarks: prints a table and writes JSON (environment included).

Measured in the same run, on the same batches:

- ``train_step``: one optimisation step (forward, backward, Adam) of the three-head model and of the
  emotion-only model with the same encoder and batch; the ratio is the multi-task overhead.
- ``batching``: the share of padded audio in the batches of an IEMOCAP-sized epoch (5,531 turns,
  durations drawn from a log-normal with IEMOCAP's mean of 4.5 s, clipped to 0.6-35 s) with fixed
  batches of random order (the reference recipe's batching) and with SpeechBrain's
  ``DynamicBatchSampler`` (duration buckets), the recipe's ``dynamic_batching: True``.

Encoders have random weights (timing does not depend on them): ``tiny`` is the test encoder,
``base`` has wav2vec2-base's architecture (95 M parameters).

Usage::

    python benchmarks/bench.py --encoder tiny base --json benchmarks/results_cpu.json
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np
import speechbrain
import torch
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.dataio.sampler import DynamicBatchSampler
from speechbrain.integrations.huggingface.wav2vec2 import Wav2Vec2

from mtlser_lobes.heads import CTCHead, EmotionHead, SpeakerHead
from mtlser_lobes.helpers import encoder_output_size, frame_lengths
from mtlser_lobes.tiny_encoder import save_tiny_wav2vec2

#: wav2vec2-base's architecture, as overrides of the tiny encoder's config.
BASE_CONFIG = {
    "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
    "intermediate_size": 3072, "conv_dim": [512] * 7, "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
}
IEMOCAP_TURNS = 5531
IEMOCAP_MEAN_S = 4.5


def environment(device):
    """What the numbers were measured on."""
    return {
        "python": platform.python_version(), "torch": torch.__version__,
        "speechbrain": speechbrain.__version__, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
        or platform.machine(),
        "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
    }


def make_encoder(name, folder):
    """The recipe's SpeechBrain wav2vec 2.0 lobe, trainable, random weights."""
    overrides = BASE_CONFIG if name == "base" else {}
    source = save_tiny_wav2vec2(os.path.join(folder, name), **overrides)
    return Wav2Vec2(source, save_path=os.path.join(folder, "cache"), freeze=False,
                    freeze_feature_extractor=True)


def train_step_times(encoder, batch, steps, device):
    """Median seconds of one optimisation step, emotion-only and three-head, interleaved.

    The two models share the encoder and the batch and alternate step by step (after one
    warm-up step each), so that drifts of the machine fall on both alike.
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
    return statistics.median(times[False]), statistics.median(times[True])


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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", nargs="+", choices=["tiny", "base"], default=["tiny", "base"])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per model (after 1 warm-up)")
    parser.add_argument("--batch_size", type=int, default=None,
                        help="default: 8 on GPU; on CPU 8 (tiny) or 2 (base)")
    parser.add_argument("--seconds", type=float, default=3.0, help="audio per batch item")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default=None, help="where to write the results")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    results = {"environment": environment(device), "train_step": [], "batching": batching(8, 60.0)}
    with tempfile.TemporaryDirectory() as folder:
        for name in args.encoder:
            batch_size = args.batch_size or (8 if device.type == "cuda" or name == "tiny" else 2)
            encoder = make_encoder(name, folder).to(device)
            batch = make_batch(batch_size, args.seconds, device)
            single, multi = train_step_times(encoder, batch, args.steps, device)
            results["train_step"].append({
                "encoder": name, "parameters": sum(p.numel() for p in encoder.parameters()),
                "batch_size": batch_size, "seconds_per_item": args.seconds, "steps": args.steps,
                "emotion_only_s": single, "three_heads_s": multi, "overhead_ratio": multi / single,
            })
    print(f"environment: {json.dumps(results['environment'])}")
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
    if args.json:
        with open(args.json, "w") as out_file:
            json.dump(results, out_file, indent=2)
        print(f"\nwritten to {args.json}")
    return results


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
