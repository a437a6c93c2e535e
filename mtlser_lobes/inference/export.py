"""Export a finished experiment as a self-contained inference model folder.

The folder holds everything inference needs and nothing else:

- ``hyperparams.yaml``: the inference model (encoder config inline, heads,
  label encoders, speaker gallery, the SpeechBrain ``Pretrainer``);
- ``wav2vec2.ckpt``, ``emotion_head.ckpt``, ``ctc_head.ckpt``,
  ``speaker_head.ckpt``, ``speaker_gallery.ckpt``: weights in safetensors
  format (no pickle; SpeechBrain's ``Pretrainer`` names the files it finds in a
  model folder ``<name>.ckpt``);
- ``label_encoder.ckpt`` (emotions), ``tokenizer.ckpt`` (CTC characters),
  ``speaker_encoder.ckpt`` (training speakers): SpeechBrain encoder text files;
- ``custom.py``: lets ``speechbrain.inference.interfaces.foreign_class`` load it;
- ``model_card.md``: training data, protocol and the test metrics.

It loads with ``MTLSER.from_hparams(source=folder)`` with no access to the
training folder or the network. Run as ``mtlser-export EXPERIMENT_FOLDER``, or
at the end of ``train.py``.
"""

import argparse
import datetime
import json
import os
import random
import shutil
import sys
import tempfile

import speechbrain
import torch
import transformers
import yaml
from hyperpyyaml import load_hyperpyyaml
from safetensors.torch import load_file, save_file
from speechbrain.dataio.encoder import CategoricalEncoder
from speechbrain.utils.logger import get_logger
from speechbrain.utils.metric_stats import EER

from mtlser_lobes.artifacts import (
    CTC_ENCODER, CUSTOM_PY, EMOTION_ENCODER, HYPERPARAMS, LABEL_ENCODER, MODEL_CARD, MODEL_SPEAKER_ENCODER,
    MODEL_WEIGHTS, SPEAKER_ENCODER, TOKENIZER, weights_file,
)
from mtlser_lobes.checkpoints import average_best_checkpoints
from mtlser_lobes.helpers import prepared_rows, publish_folder, training_directory
from mtlser_lobes.precision import REFERENCE_RUN_OPTS
from mtlser_lobes.speakers import SpeakerGallery, centroid
from mtlser_lobes.data.text import ctc_label_encoder

logger = get_logger(__name__)

__all__ = ["export_model", "save_safetensors", "load_safetensors", "main"]

#: Modules whose weights an exported model carries.
WEIGHTS = MODEL_WEIGHTS

_INFERENCE_YAML = """\
# ############################################################################
# MTLSER inference model: emotion, transcript and speaker in one encoder pass.
# Exported from {experiment} ({checkpoint}, epoch {epoch}) on {date}.
#
#   from mtlser_lobes.inference.interface import MTLSER
#   model = MTLSER.from_hparams(source="<this folder>")
#   model.predict_file("speech.wav")
#
# Everything is read from this folder; nothing is downloaded.
# ############################################################################

sample_rate: {sample_rate}
min_duration_s: {min_duration_s}  # shorter input is refused (the encoder needs ~25 ms per frame)
silence_peak: {silence_peak}  # input whose peak amplitude is below this is refused as silent
# Cosine similarity to the closest speaker below which the answer is "unknown".
# {threshold_note}
speaker_threshold: {speaker_threshold}
blank_index: {blank_index}

# The {encoder_type} encoder ({encoder_source}), fine-tuned; its Hugging Face config:
encoder_config:
{encoder_config}
wav2vec2: !new:mtlser_lobes.encoder.Wav2Vec2FromConfig
    config: !ref <encoder_config>
    normalize_wav: {normalize_wav}
    output_norm: {output_norm}
    output_all_hiddens: {output_all_hiddens}

# The heads, with the arguments they were trained with.
emotion_head: !new:mtlser_lobes.heads.EmotionHead
{emotion_head_args}
ctc_head: !new:mtlser_lobes.heads.CTCHead
{ctc_head_args}
speaker_head: !new:mtlser_lobes.heads.SpeakerHead
{speaker_head_args}
speaker_gallery: !new:mtlser_lobes.speakers.SpeakerGallery
    n_speakers: {n_speakers}
    embedding_dim: {embedding_dim}

label_encoder: !new:speechbrain.dataio.encoder.CategoricalEncoder
tokenizer: !new:speechbrain.dataio.encoder.CTCTextEncoder
speaker_encoder: !new:speechbrain.dataio.encoder.CategoricalEncoder

modules:
    wav2vec2: !ref <wav2vec2>
    emotion_head: !ref <emotion_head>
    ctc_head: !ref <ctc_head>
    speaker_head: !ref <speaker_head>
    speaker_gallery: !ref <speaker_gallery>

pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        wav2vec2: !ref <wav2vec2>
        emotion_head: !ref <emotion_head>
        ctc_head: !ref <ctc_head>
        speaker_head: !ref <speaker_head>
        speaker_gallery: !ref <speaker_gallery>
        label_encoder: !ref <label_encoder>
        tokenizer: !ref <tokenizer>
        speaker_encoder: !ref <speaker_encoder>
    custom_hooks:
        wav2vec2: !name:mtlser_lobes.inference.export.load_safetensors
        emotion_head: !name:mtlser_lobes.inference.export.load_safetensors
        ctc_head: !name:mtlser_lobes.inference.export.load_safetensors
        speaker_head: !name:mtlser_lobes.inference.export.load_safetensors
        speaker_gallery: !name:mtlser_lobes.inference.export.load_safetensors
"""

_CUSTOM_PY = '''\
"""Entry point for speechbrain.inference.interfaces.foreign_class (needs `pip install mtlser`)."""

from mtlser_lobes.inference.interface import MTLSER

CustomInterface = MTLSER
'''


def save_safetensors(module, path):
    """Saves a module's ``state_dict`` in safetensors format.

    Example
    -------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "head.ckpt")
    >>> save_safetensors(torch.nn.Linear(2, 3), path)
    >>> layer = torch.nn.Linear(2, 3)
    >>> load_safetensors(layer, path)
    >>> layer.weight.shape
    torch.Size([3, 2])
    """
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in module.state_dict().items()}
    save_file(state, str(path), metadata={"format": "pt"})


def load_safetensors(module, path):
    """Loads a safetensors file into a module, every key required (a ``Pretrainer`` hook)."""
    module.load_state_dict(load_file(str(path), device="cpu"), strict=True)


#: The paths export reads from an experiment's hyperparameters.
_PATH_KEYS = ("save_folder", "data_folder", "train_csv", "valid_csv", "test_results")


#: Keys whose bare values (no ``/``) are paths all the same.
_PATH_SUFFIXES = ("_folder", "_csv", "_file", "_hub", "_path", "source")


def _relative_path_overrides(node, output_folder, workdir):
    """Overrides making absolute every relative path of a composed YAML mapping, nested.

    A string is a path when it starts with ``output_folder`` or names something
    that exists under ``workdir`` (so a hub name such as
    ``facebook/wav2vec2-base`` stays a hub name, as it would in ``workdir``); a
    bare word counts only under a key named like a path (``data_folder``).
    """
    overrides = {}
    for key_node, value in node.value:
        if isinstance(value, yaml.MappingNode):
            nested = _relative_path_overrides(value, output_folder, workdir)
            if nested:
                overrides[key_node.value] = nested
        elif isinstance(value, yaml.ScalarNode) and value.tag == "tag:yaml.org,2002:str":
            text, key = value.value, key_node.value
            if not text or os.path.isabs(text):
                continue
            if "/" not in text and not text.startswith(".") and not key.endswith(_PATH_SUFFIXES):
                continue  # a bare word (``none``, ``random``) is a value, not a file that happens to exist
            inside_output = os.path.normpath(text + "/").startswith(os.path.normpath(output_folder))
            if inside_output or os.path.exists(os.path.join(workdir, text)):
                overrides[key_node.value] = os.path.normpath(os.path.join(workdir, text))
    return overrides


def _load_training_hparams(experiment_folder):
    """Loads ``<experiment>/hyperparams.yaml`` (as saved by train.py) from any directory.

    Its paths are relative to where train.py ran, found from ``output_folder``;
    they are passed back as HyperPyYAML overrides, made absolute (the parsed
    document is read with its tags unresolved: nothing is built for that).
    """
    path = os.path.join(experiment_folder, HYPERPARAMS)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{experiment_folder} has no hyperparams.yaml: give the output_folder of a train.py run"
        )
    with open(path, encoding="utf-8") as fin:
        text = fin.read()
    document = yaml.compose(text)
    top = {key.value: value for key, value in document.value}
    output_folder = top["output_folder"].value if "output_folder" in top else "."
    workdir = training_directory(experiment_folder, output_folder)
    hparams = load_hyperpyyaml(text, _relative_path_overrides(document, output_folder, workdir))
    if "wav2vec2_hub" in top:  # the encoder is built; the model card names it as the run was given it
        hparams["wav2vec2_hub"] = top["wav2vec2_hub"].value
    return hparams


def _sample_per_speaker(rows, per_speaker, seed):
    """Up to ``per_speaker`` rows of every speaker, chosen reproducibly."""
    by_speaker = {}
    for row in sorted(rows, key=lambda r: r["ID"]):
        by_speaker.setdefault(row["spk_id"], []).append(row)
    rng = random.Random(seed)
    chosen = {}
    for speaker, speaker_rows in sorted(by_speaker.items()):
        chosen[speaker] = speaker_rows if len(speaker_rows) <= per_speaker else rng.sample(speaker_rows, per_speaker)
    return chosen


def _yaml_block(value, indent=4):
    """A YAML mapping indented under its parent key."""
    text = yaml.safe_dump(value, sort_keys=True, default_flow_style=False)
    return "\n".join(" " * indent + line for line in text.splitlines())


def _calibrate(model, hparams, per_speaker, seed):
    """Speaker centroids from train.csv and the EER threshold from valid.csv trials."""
    train_rows = prepared_rows(hparams["train_csv"], hparams["data_folder"])
    speakers = [model.hparams.speaker_encoder.ind2lab[i] for i in range(len(model.hparams.speaker_encoder))]
    chosen = _sample_per_speaker(train_rows, per_speaker, seed)
    embeddings = {speaker: model.embed_files([row["wav"] for row in chosen[speaker]]) for speaker in speakers}
    mean = torch.cat(list(embeddings.values())).mean(dim=0)  # (dim,)
    centroids = torch.stack([centroid(embeddings[speaker] - mean) for speaker in speakers])  # (speakers, dim)

    note = "Not calibrated: no validation utterance of a training speaker; 0.5 is a guess."
    threshold, eer = 0.5, None
    valid_rows = [r for r in prepared_rows(hparams["valid_csv"], hparams["data_folder"]) if r["spk_id"] in speakers]
    valid_rows = [row for rows in _sample_per_speaker(valid_rows, per_speaker, seed).values() for row in rows]
    if valid_rows:
        embeddings = model.embed_files([r["wav"] for r in valid_rows]) - mean
        embeddings = torch.nn.functional.normalize(embeddings, dim=-1)
        scores = embeddings @ centroids.T  # (utterances, speakers)
        target = torch.zeros_like(scores, dtype=torch.bool)
        for i, row in enumerate(valid_rows):
            target[i, speakers.index(row["spk_id"])] = True
        eer, threshold = EER(scores[target], scores[~target])
        eer, threshold = float(eer), float(threshold)
        note = (
            f"Equal-error-rate threshold of {target.sum()} same-speaker and {(~target).sum()} "
            f"other-speaker validation trials (EER {100 * eer:.2f}%)."
        )
    return mean, centroids, threshold, eer, note


def _model_card(hparams, results, calibration, checkpoint, experiment_folder, speakers, n_train):
    """The README-style description of an exported model."""
    lines = [
        "# MTLSER model card",
        "",
        "Multi-task speech emotion recognition: one speech encoder shared by an emotion head "
        "(primary), a CTC character ASR head and a speaker head, trained with "
        f"`L = L_emotion + alpha * L_ctc + beta * L_speaker`, alpha = {hparams['alpha']}, "
        f"beta = {hparams['beta']}.",
        "",
        "## Use",
        "",
        "```python",
        "from mtlser_lobes.inference.interface import MTLSER",
        'model = MTLSER.from_hparams(source="path/to/this/folder")',
        'print(model.predict_file("speech.wav"))',
        "```",
        "",
        "or `mtlser-infer path/to/this/folder speech.wav`.",
        "",
        "## Training",
        "",
        f"- Data: `{hparams['data_folder']}` ({n_train} training utterances), "
        f"protocol `{hparams['protocol']}`"
        + (f", test session {hparams['test_session']}" if hparams["protocol"] == "loso" else "")
        + ".",
        f"- Encoder: `{hparams['wav2vec2_hub']}` ({hparams['wav2vec2'].model.config.model_type}), fine-tuned "
        f"(frozen: {hparams['freeze_wav2vec2']}), {hparams['number_of_epochs']} epochs, seed {hparams['seed']}.",
        f"- Checkpoint: `{checkpoint}` (best validation UA), from `{experiment_folder}`.",
        f"- Emotions: {', '.join(hparams['emotion_classes'])}. Training speakers: {', '.join(speakers)}.",
        f"- Speaker threshold {calibration['threshold']:.4f}: {calibration['note']}",
        f"- Software: speechbrain {speechbrain.__version__}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}.",
        "",
        "## Test results",
        "",
    ]
    if results is None:
        lines.append("No test_results.json in the experiment folder: the model was not tested.")
    else:
        lines += [
            "| Metric | Value |",
            "|---|---|",
            f"| utterances | {results['n_utterances']} |",
            f"| WA (%) | {results['WA']:.2f} |",
            f"| UA (%) | {results['UA']:.2f} |",
        ]
        for key, label in (("CER", "CER (%)"), ("WER", "WER (%)"), ("speaker_acc", "speaker accuracy (%)")):
            if key in results:
                lines.append(f"| {label} | {results[key]:.2f} |")
        lines += ["", "Recall per class: " + ", ".join(
            f"{name} {100 * value:.1f}%" if value is not None else f"{name} n/a (not in the test set)"
            for name, value in results["recall"].items()
        ) + "."]
        if results.get("speaker_note"):
            lines.append(f"Speaker: {results['speaker_note']}.")
    lines += [
        "",
        "## Files",
        "",
        "`hyperparams.yaml` (inference model), `*.ckpt` weights in safetensors format "
        "(`wav2vec2`, `emotion_head`, `ctc_head`, `speaker_head`, `speaker_gallery`), "
        "`label_encoder.ckpt` / `tokenizer.ckpt` / `speaker_encoder.ckpt` (SpeechBrain encoder text "
        "files), `custom.py` (for `foreign_class`).",
        "",
    ]
    return "\n".join(lines)


def export_model(experiment_folder, model_folder=None, max_key="UA", per_speaker=30, seed=1234,
                 checkpoints_dir=None, hparams=None):
    """Writes the inference folder of a finished ``train.py`` experiment.

    Arguments
    ---------
    experiment_folder : str
        The ``output_folder`` of a train.py run (it holds ``hyperparams.yaml``
        and ``save/CKPT+*``).
    model_folder : str, optional
        Where to write; default ``<experiment_folder>/model``. Replaced whole.
    max_key : str
        The checkpoint with the highest value of this validation metric is exported.
    per_speaker : int
        Utterances per speaker used for the speaker centroids and for the
        validation trials that set the "unknown" threshold.
    seed : int
        Seed of that choice of utterances.
    checkpoints_dir : str, optional
        Where the checkpoints are, when not in the experiment's ``save`` folder
        (SpeechBrain's ``--debug`` runs keep theirs in a temporary folder).
    hparams : dict, optional
        The experiment's loaded hyperparameters, from the process that trained it
        (``train.py`` passes its own, in the directory it ran from); default: read
        from ``<experiment_folder>/hyperparams.yaml``.

    Returns
    -------
    str
        The model folder.
    """
    experiment_folder = os.path.abspath(experiment_folder)
    model_folder = os.path.abspath(model_folder or os.path.join(experiment_folder, "model"))
    if hparams is None:
        hparams = _load_training_hparams(experiment_folder)
    else:  # the training process's own: its paths are relative to where it runs, here
        hparams = {**hparams, **{key: os.path.abspath(hparams[key]) for key in _PATH_KEYS
                                 if isinstance(hparams.get(key), str)}}
    checkpoint = _recover_tested_model(hparams, checkpoints_dir, max_key)
    logger.info(f"exporting {checkpoint.path} to {model_folder}")

    staging = tempfile.mkdtemp(prefix=".export-", dir=os.path.dirname(model_folder) or ".")
    try:
        speakers = _write_weights_and_encoders(hparams, staging)
        fields = _inference_fields(hparams, experiment_folder, checkpoint, len(speakers))
        threshold, eer, note = _calibrate_speakers(hparams, staging, fields, per_speaker, seed)
        results = None
        if os.path.isfile(hparams["test_results"]):
            with open(hparams["test_results"], encoding="utf-8") as fin:
                results = json.load(fin)
        n_train = len(prepared_rows(hparams["train_csv"], hparams["data_folder"]))
        card = _model_card(
            hparams, results, {"threshold": threshold, "eer": eer, "note": note},
            os.path.basename(checkpoint.path), experiment_folder, speakers, n_train,
        )
        with open(os.path.join(staging, MODEL_CARD), "w", encoding="utf-8") as fout:
            fout.write(card)
        publish_folder(staging, model_folder)  # the old folder goes only once the new one is complete
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info(f"model exported to {model_folder} (speaker threshold {threshold:.4f}; {note})")
    return model_folder


def _recover_tested_model(hparams, checkpoints_dir, max_key):
    """Loads the model train.py tested into the hparams' modules; returns its checkpoint."""
    checkpointer = hparams["checkpointer"]
    checkpointer.checkpoints_dir = type(checkpointer.checkpoints_dir)(checkpoints_dir or hparams["save_folder"])
    checkpoint = checkpointer.recover_if_possible(max_key=max_key)
    if checkpoint is None:
        raise FileNotFoundError(f"no checkpoint in {checkpointer.checkpoints_dir}: train first")
    n_average = int(hparams.get("average_checkpoints", 1))
    if n_average > 1 and max_key:
        # The model that was tested: the average of the best checkpoints (train.py does the same)
        average_best_checkpoints(
            checkpointer, {name: hparams[name] for name in WEIGHTS[:-1]}, max_key, n_average
        )
    return checkpoint


def _write_weights_and_encoders(hparams, folder):
    """Writes the weights, label encoders, tokenizer and ``custom.py``; returns the speakers."""
    save_folder = hparams["save_folder"]
    emotion_encoder = CategoricalEncoder()
    emotion_encoder.load(os.path.join(save_folder, EMOTION_ENCODER))
    speaker_encoder = CategoricalEncoder()
    speaker_encoder.load(os.path.join(save_folder, SPEAKER_ENCODER))
    tokenizer = ctc_label_encoder(os.path.join(save_folder, CTC_ENCODER))
    speakers = [speaker_encoder.ind2lab[i] for i in range(len(speaker_encoder))]
    for name in WEIGHTS[:-1]:
        save_safetensors(hparams[name], os.path.join(folder, weights_file(name)))
    gallery = SpeakerGallery(len(speakers), hparams["speaker_head"].embedding_dim)
    save_safetensors(gallery, os.path.join(folder, weights_file("speaker_gallery")))
    emotion_encoder.save(os.path.join(folder, LABEL_ENCODER))
    speaker_encoder.save(os.path.join(folder, MODEL_SPEAKER_ENCODER))
    tokenizer.save(os.path.join(folder, TOKENIZER))
    with open(os.path.join(folder, CUSTOM_PY), "w", encoding="utf-8") as fout:
        fout.write(_CUSTOM_PY)
    return speakers


def _inference_fields(hparams, experiment_folder, checkpoint, n_speakers):
    """The values of the inference ``hyperparams.yaml`` template, but the speaker threshold."""
    encoder = hparams["wav2vec2"]
    return {
        "experiment": experiment_folder,
        "checkpoint": os.path.basename(checkpoint.path),
        "epoch": hparams["epoch_counter"].current,
        "date": datetime.date.today().isoformat(),
        "sample_rate": hparams["sample_rate"],
        # the input checks of training; experiments older than these keys used these values
        "min_duration_s": hparams.get("min_duration_s", 0.1),
        "silence_peak": hparams.get("silence_peak", 1.0e-4),
        "blank_index": hparams["blank_index"],
        "encoder_source": hparams["wav2vec2_hub"],
        "encoder_type": encoder.model.config.model_type,
        "encoder_config": _yaml_block(encoder.model.config.to_dict()),
        "normalize_wav": bool(encoder.normalize_wav),
        "output_norm": bool(encoder.output_norm),
        "output_all_hiddens": bool(encoder.output_all_hiddens),
        "emotion_head_args": _yaml_block(hparams["emotion_head"].config),
        "ctc_head_args": _yaml_block(hparams["ctc_head"].config),
        "speaker_head_args": _yaml_block(hparams["speaker_head"].config),
        "n_speakers": n_speakers,
        "embedding_dim": hparams["speaker_head"].embedding_dim,
    }


def _calibrate_speakers(hparams, folder, fields, per_speaker, seed):
    """Writes the folder's ``hyperparams.yaml`` with the speaker gallery and threshold it calibrates.

    The centroids and threshold are computed by the exported model itself (loaded
    from ``folder`` with a placeholder threshold), so they live in exactly the
    embedding space inference uses. Returns ``(threshold, eer, note)``.
    """
    from mtlser_lobes.inference.interface import MTLSER

    yaml_path = os.path.join(folder, HYPERPARAMS)

    def write_yaml(threshold, note):
        with open(yaml_path, "w", encoding="utf-8") as fout:
            fout.write(_INFERENCE_YAML.format(speaker_threshold=threshold, threshold_note=note, **fields))

    write_yaml(0.5, "placeholder")
    # fp32 whatever the CPU (``auto`` picks bf16 where it is native), so that the gallery does not
    # depend on the machine that exported it
    model = MTLSER.from_hparams(source=folder, run_opts=REFERENCE_RUN_OPTS)
    mean, centroids, threshold, eer, note = _calibrate(model, hparams, per_speaker, seed)
    model.mods.speaker_gallery.mean.copy_(mean)
    model.mods.speaker_gallery.centroids.copy_(centroids)
    save_safetensors(model.mods.speaker_gallery, os.path.join(folder, weights_file("speaker_gallery")))
    write_yaml(round(threshold, 6), note)
    return threshold, eer, note


def main(argv=None):
    """``mtlser-export EXPERIMENT_FOLDER [MODEL_FOLDER]``."""
    parser = argparse.ArgumentParser(
        prog="mtlser-export",
        description="Write the self-contained inference folder of a finished train.py experiment.",
    )
    parser.add_argument("experiment_folder", help="output_folder of a train.py run")
    parser.add_argument("model_folder", nargs="?", help="destination (default: EXPERIMENT_FOLDER/model)")
    parser.add_argument("--max_key", default="UA", help="export the checkpoint with the best value of this metric")
    parser.add_argument("--per_speaker", type=int, default=30, help="utterances per speaker for the centroids")
    parser.add_argument("--onnx", action="store_true",
                        help="also write MODEL_FOLDER/onnx: the model as ONNX (fp32 and int8) for ONNX Runtime "
                        "(mtlser-infer --backend onnx); needs pip install mtlser[onnx]")
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.INFO, format="%(name)s - %(message)s")
    try:
        folder = export_model(args.experiment_folder, args.model_folder, args.max_key, args.per_speaker)
        if args.onnx:
            from mtlser_lobes.inference.onnx_export import export_onnx

            check = export_onnx(folder)
            worst = max(check["max_difference"].values())
            logger.info(f"ONNX model written to {check['folder']} (largest difference from PyTorch: {worst:.1e})")
    except (FileNotFoundError, ValueError) as error:
        print(f"mtlser-export: {error}", file=sys.stderr)
        return 1
    except ImportError as error:
        print(f"mtlser-export: --onnx needs ONNX Runtime and the exporter's packages ({error}): "
              "pip install mtlser[onnx]", file=sys.stderr)
        return 1
    print(folder)
    return 0
