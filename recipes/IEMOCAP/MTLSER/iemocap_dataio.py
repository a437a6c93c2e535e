"""The recipe's data: datasets, label encoders and the training loader (SpeechBrain DataIO).

``train.py`` and ``benchmarks/bench.py`` build their data through these two functions.
"""

import os

import speechbrain as sb
import torch

from mtlser_lobes.artifacts import CTC_ENCODER, EMOTION_ENCODER, SPEAKER_ENCODER
from mtlser_lobes.data.audio import load_training_audio
from mtlser_lobes.data.text import ctc_label_encoder
from recipe_options import UsageError

__all__ = ["dataio_prepare", "train_loader_options"]


def dataio_prepare(hparams):
    """Builds the datasets and the label encoders (saved beside the checkpoints).

    Returns
    -------
    datasets : dict
        ``train``, ``valid``, ``test`` -> DynamicItemDataset.
    encoders : dict
        ``emotion``, ``speaker`` (CategoricalEncoder) and ``tokenizer``
        (CTCTextEncoder).
    """
    save_folder = hparams["save_folder"]
    emotion_encoder = sb.dataio.encoder.CategoricalEncoder()
    emotion_encoder.load_or_create(
        os.path.join(save_folder, EMOTION_ENCODER),
        from_iterables=[hparams["emotion_classes"]],
    )
    emotion_encoder.expect_len(len(hparams["emotion_classes"]))
    tokenizer = ctc_label_encoder(os.path.join(save_folder, CTC_ENCODER))
    if len(tokenizer) != hparams["ctc_head"].n_tokens:
        raise ValueError(
            f"the CTC head has {hparams['ctc_head'].n_tokens} outputs but the "
            f"character set has {len(tokenizer)} symbols"
        )

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        """Loads the waveform at the model's rate, mono, cropped to max_duration_s."""
        return load_training_audio(wav, hparams["sample_rate"], hparams["max_duration_s"])

    @sb.utils.data_pipeline.takes("emo")
    @sb.utils.data_pipeline.provides("emo_encoded")
    def emotion_pipeline(emo):
        """Encodes the emotion label."""
        return emotion_encoder.encode_label_torch(emo)

    @sb.utils.data_pipeline.takes("wrd")
    @sb.utils.data_pipeline.provides("tokens")
    def text_pipeline(wrd):
        """Encodes the normalised words as characters."""
        return torch.LongTensor(tokenizer.encode_sequence(list(wrd)))

    csv_paths = {"train": hparams["train_csv"], "valid": hparams["valid_csv"], "test": hparams["test_csv"]}
    datasets = {}
    for split, csv_path in csv_paths.items():
        datasets[split] = sb.dataio.dataset.DynamicItemDataset.from_csv(
            csv_path=csv_path,
            replacements={"data_root": hparams["data_folder"]},
            dynamic_items=[audio_pipeline, emotion_pipeline, text_pipeline],
            output_keys=["id", "sig", "emo_encoded", "tokens", "wrd", "spk_id"],
        )

    train_speakers = sorted({row["spk_id"] for row in datasets["train"].data.values()})
    if len(train_speakers) != hparams["n_speakers"]:
        raise UsageError(
            f"train.csv has {len(train_speakers)} speakers but n_speakers is "
            f"{hparams['n_speakers']}: pass --n_speakers {len(train_speakers)}"
        )
    speaker_encoder = sb.dataio.encoder.CategoricalEncoder()
    speaker_encoder.load_or_create(
        os.path.join(save_folder, SPEAKER_ENCODER), from_iterables=[train_speakers]
    )

    @sb.utils.data_pipeline.takes("spk_id")
    @sb.utils.data_pipeline.provides("spk_encoded")
    def speaker_pipeline(spk_id):
        """Index of a training speaker, -1 for a speaker unseen in training."""
        return torch.LongTensor([speaker_encoder.lab2ind.get(spk_id, -1)])

    sb.dataio.dataset.add_dynamic_item(list(datasets.values()), speaker_pipeline)
    sb.dataio.dataset.set_output_keys(
        list(datasets.values()), ["id", "sig", "emo_encoded", "tokens", "wrd", "spk_id", "spk_encoded"]
    )

    if hparams["sorting"] in ("ascending", "descending"):
        datasets["train"] = datasets["train"].filtered_sorted(
            sort_key="duration", reverse=hparams["sorting"] == "descending"
        )
        hparams["train_dataloader_options"]["shuffle"] = False
    elif hparams["sorting"] == "random":
        hparams["train_dataloader_options"]["shuffle"] = True
    else:
        raise ValueError(f"sorting must be random, ascending or descending, not {hparams['sorting']!r}")
    encoders = {"emotion": emotion_encoder, "speaker": speaker_encoder, "tokenizer": tokenizer}
    return datasets, encoders


def train_loader_options(hparams, train_set):
    """The training loader's options: fixed-size batches, or duration-bucketed dynamic ones.

    With ``dynamic_batching``, SpeechBrain's ``DynamicBatchSampler`` fills each
    batch with up to ``max_batch_length`` seconds of turns of similar duration,
    so little of a batch is padding (``benchmarks/README.md``).
    """
    if not hparams["dynamic_batching"]:
        return hparams["train_dataloader_options"]
    from speechbrain.dataio.sampler import DynamicBatchSampler

    def duration(item):
        return float(item["duration"])

    return {
        "batch_sampler": DynamicBatchSampler(train_set, length_func=duration, **hparams["dynamic_batch_sampler"]),
        "num_workers": hparams["num_workers"],
    }
