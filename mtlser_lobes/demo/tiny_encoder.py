"""Tiny, randomly initialised speech encoders saved to a local folder.

They stand in for ``facebook/wav2vec2-base`` (and the other encoder families the
recipe accepts: HuBERT, WavLM, data2vec-audio) in the demo, the tests and the
benchmarks, where no model hub can be reached: pass the folder as the encoder
source (``--wav2vec2_hub tiny_wav2vec2``). Each keeps its family's
architecture and convolutional front end (stride 320: 50 frames per second at
16 kHz) with far fewer channels, layers and heads, and loads with
``transformers.AutoModel.from_pretrained`` and SpeechBrain's wav2vec 2.0 lobe.

Usage::

    mtlser-tiny-encoder tiny_wav2vec2                  # or: python -m mtlser_lobes.demo.tiny_encoder tiny_wav2vec2
    mtlser-tiny-encoder tiny_wavlm --family wavlm      # hubert | wavlm | data2vec as well
    mtlser-tiny-encoder small_wav2vec2 --preset small  # about 1 M parameters instead of 0.1 M

Example
-------
>>> import tempfile, os
>>> folder = save_tiny_wav2vec2(tempfile.mkdtemp())
>>> sorted(os.listdir(folder))
['config.json', 'model.safetensors', 'preprocessor_config.json', 'tiny_encoder.json']
"""

import argparse
import json
import os

import torch
from speechbrain.utils.logger import get_logger

__all__ = ["FAMILIES", "PRESETS", "TINY_CONFIGS", "TINY_WAV2VEC2_CONFIG", "save_tiny_encoder", "save_tiny_wav2vec2"]

logger = get_logger(__name__)

#: Wav2Vec2Config arguments of the tiny encoder (about 0.1 M parameters).
TINY_WAV2VEC2_CONFIG = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 128,
    "conv_dim": [32] * 7,
    # wav2vec2-base's front end: group norm after the first convolution,
    # post-norm transformer layers.
    "feat_extract_norm": "group",
    "do_stable_layer_norm": False,
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 4,
    "layerdrop": 0.0,
    "vocab_size": 32,
}

#: Encoder family (``--family``) -> Hugging Face ``model_type``.
FAMILIES = {"wav2vec2": "wav2vec2", "hubert": "hubert", "wavlm": "wavlm", "data2vec": "data2vec-audio"}

#: Config arguments of each family's tiny encoder. HuBERT and WavLM take wav2vec 2.0's
#: (hubert-base-ls960 and wavlm-base-plus have its group-norm front end and post-norm
#: layers; WavLM adds its gated relative position bias, at the config's defaults).
#: data2vec-audio has no ``feat_extract_norm``: every convolution of its front end is
#: followed by a layer norm, and its positional embedding is a stack of
#: ``num_conv_pos_embeddings`` convolutions (5 of width 19, as in data2vec-audio-base).
TINY_CONFIGS = {
    "wav2vec2": TINY_WAV2VEC2_CONFIG,
    "hubert": TINY_WAV2VEC2_CONFIG,
    "wavlm": TINY_WAV2VEC2_CONFIG,
    "data2vec": {
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 128,
        "conv_dim": [32] * 7,
        "num_conv_pos_embeddings": 5,
        "conv_pos_kernel_size": 19,
        "num_conv_pos_embedding_groups": 4,
        "layerdrop": 0.0,
        "vocab_size": 32,
    },
}


#: Sizes (``--preset``) applied over a family's tiny configuration. ``small`` is the
#: from-scratch encoder of the RAVDESS encoder-size study: 4 layers of width 128 and
#: 64-channel convolutions (about 0.9 M parameters, 2.7x the tiny one's training step
#: on one CPU core); ``tiny`` (about 0.1 M) is the tests' and the demo's.
PRESETS = {
    "tiny": {},
    "small": {
        "hidden_size": 128,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "intermediate_size": 512,
        "conv_dim": [64] * 7,
    },
}


def save_tiny_encoder(folder, family="wav2vec2", seed=0, **overrides):
    """Saves a randomly initialised encoder of one family and its feature extractor.

    Skips the work when ``folder`` already holds the same family and configuration.

    Arguments
    ---------
    folder : str
        Destination; created if needed.
    family : str
        One of :data:`FAMILIES`: ``wav2vec2``, ``hubert``, ``wavlm`` or ``data2vec``.
    seed : int
        Seed of the random initialisation.
    **overrides
        Replace entries of the family's :data:`TINY_CONFIGS` (e.g. ``hidden_size``).

    Returns
    -------
    str
        ``folder``, to be passed as the encoder source.

    Example
    -------
    >>> import tempfile
    >>> from transformers import AutoModel
    >>> type(AutoModel.from_pretrained(save_tiny_encoder(tempfile.mkdtemp(), "wavlm"))).__name__
    'WavLMModel'
    """
    from transformers import AutoConfig, AutoModel, Wav2Vec2FeatureExtractor

    if family not in FAMILIES:
        raise ValueError(f"unknown encoder family {family!r}: choose one of {', '.join(FAMILIES)}")
    settings = {**TINY_CONFIGS[family], **overrides}
    stamp_path = os.path.join(folder, "tiny_encoder.json")
    stamp = {"seed": seed, "config": settings}
    if family != "wav2vec2":  # a wav2vec2 folder keeps the stamp it always had
        stamp["family"] = family
    if os.path.exists(stamp_path) and os.path.exists(os.path.join(folder, "config.json")):
        with open(stamp_path) as stamp_file:
            if json.load(stamp_file) == stamp:
                logger.info(f"tiny {family} already in {folder}")
                return folder
    os.makedirs(folder, exist_ok=True)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModel.from_config(AutoConfig.for_model(FAMILIES[family], **settings))
    model.save_pretrained(folder)
    # The four families' hub checkpoints all use wav2vec 2.0's feature extractor.
    Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=16000,
        padding_value=0.0,
        # Trained from scratch, it needs no per-utterance standardisation of
        # the waveform; without it, loudness stays visible to the encoder.
        do_normalize=False,
        return_attention_mask=True,
    ).save_pretrained(folder)
    # Written last: its presence means the folder is complete.
    with open(stamp_path + ".tmp", "w") as stamp_file:
        json.dump(stamp, stamp_file)
    os.replace(stamp_path + ".tmp", stamp_path)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info(f"saved a tiny {family} ({type(model).__name__}, {n_params} parameters) to {folder}")
    return folder


def save_tiny_wav2vec2(folder, seed=0, **overrides):
    """Saves a randomly initialised wav2vec 2.0 and its feature extractor.

    :func:`save_tiny_encoder` with ``family="wav2vec2"``.

    Arguments
    ---------
    folder : str
        Destination; created if needed.
    seed : int
        Seed of the random initialisation.
    **overrides
        Replace entries of :data:`TINY_WAV2VEC2_CONFIG` (e.g. ``hidden_size``).

    Returns
    -------
    str
        ``folder``, to be passed as the encoder source.

    Example
    -------
    >>> import tempfile
    >>> from transformers import Wav2Vec2Config
    >>> Wav2Vec2Config.from_pretrained(save_tiny_wav2vec2(tempfile.mkdtemp(), hidden_size=32)).hidden_size
    32
    """
    return save_tiny_encoder(folder, "wav2vec2", seed=seed, **overrides)


def main(argv=None):
    """Command line: ``mtlser-tiny-encoder FOLDER [--family F] [--preset tiny|small] [--seed N]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="where to save the encoder")
    parser.add_argument("--family", choices=list(FAMILIES), default="wav2vec2",
                        help="architecture: wav2vec2 (default), hubert, wavlm or data2vec (data2vec-audio)")
    parser.add_argument("--preset", choices=list(PRESETS), default="tiny",
                        help="tiny (about 0.1 M parameters, default) or small (about 0.9 M)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden_size", type=int, help="width of the transformer (overrides the preset)")
    parser.add_argument("--num_hidden_layers", type=int, help="transformer layers (overrides the preset)")
    args = parser.parse_args(argv)
    sizes = dict(PRESETS[args.preset])
    for key in ("hidden_size", "num_hidden_layers"):
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)
    print(save_tiny_encoder(args.folder, family=args.family, seed=args.seed, **sizes))


if __name__ == "__main__":
    main()
