"""A tiny, randomly initialised wav2vec 2.0 saved to a local folder.

It stands in for ``facebook/wav2vec2-base`` in the demo, the tests and the
benchmarks, where no model hub can be reached: pass the folder as the encoder
source (``--wav2vec2_hub tiny_wav2vec2``). It keeps wav2vec 2.0's
convolutional front end (stride 320: 50 frames per second at 16 kHz) with far
fewer channels, layers and heads.

Usage::

    mtlser-tiny-encoder tiny_wav2vec2        # or: python -m mtlser_lobes.tiny_encoder tiny_wav2vec2

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

__all__ = ["TINY_WAV2VEC2_CONFIG", "save_tiny_wav2vec2"]

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


def save_tiny_wav2vec2(folder, seed=0, **overrides):
    """Saves a randomly initialised wav2vec 2.0 and its feature extractor.

    Skips the work when ``folder`` already holds the same configuration.

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
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    settings = {**TINY_WAV2VEC2_CONFIG, **overrides}
    stamp_path = os.path.join(folder, "tiny_encoder.json")
    stamp = {"seed": seed, "config": settings}
    if os.path.exists(stamp_path) and os.path.exists(os.path.join(folder, "config.json")):
        with open(stamp_path) as stamp_file:
            if json.load(stamp_file) == stamp:
                logger.info(f"tiny wav2vec2 already in {folder}")
                return folder
    os.makedirs(folder, exist_ok=True)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Wav2Vec2Model(Wav2Vec2Config(**settings))
    model.save_pretrained(folder)
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
    logger.info(f"saved a tiny wav2vec2 ({n_params} parameters) to {folder}")
    return folder


def main(argv=None):
    """Command line: ``mtlser-tiny-encoder FOLDER [--seed N] [--hidden_size N]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="where to save the encoder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden_size", type=int, default=TINY_WAV2VEC2_CONFIG["hidden_size"])
    parser.add_argument(
        "--num_hidden_layers", type=int, default=TINY_WAV2VEC2_CONFIG["num_hidden_layers"]
    )
    args = parser.parse_args(argv)
    print(
        save_tiny_wav2vec2(
            args.folder,
            seed=args.seed,
            hidden_size=args.hidden_size,
            num_hidden_layers=args.num_hidden_layers,
        )
    )


if __name__ == "__main__":
    main()
