"""Running the recipe's train.py in tests, the way a user runs it."""

import csv
import os
import subprocess
import sys

import numpy as np
import soundfile
import torch

from conftest import RECIPE_DIR

#: Overrides that make the recipe train the tiny encoder from scratch quickly.
TINY_ENCODER_OVERRIDES = [
    "--freeze_wav2vec2_feature_extractor", "False",
    "--lr_wav2vec2", "0.001",
    "--num_workers", "0",
]


def run_train(args, timeout=900):
    """Runs ``python train.py hparams/mtl.yaml ARGS`` in the recipe folder."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    result = subprocess.run(
        [sys.executable, "train.py", "hparams/mtl.yaml", *args],
        cwd=RECIPE_DIR, env=env, capture_output=True, text=True, timeout=timeout,
    )
    if result.returncode != 0:
        raise AssertionError(f"train.py failed ({result.returncode}):\n{result.stderr[-6000:]}")
    return result


def parse_train_log(path):
    """train_log.txt -> list of {stage: {key: value}} per line."""
    entries = []
    with open(path) as log:
        for line in log:
            entry = {}
            for part in line.strip().split(" - "):
                stage, values = "meta", part
                for prefix in ("train", "valid", "test"):
                    if part.startswith(prefix + " "):
                        stage, values = prefix, part
                fields = {}
                for item in values.split(", "):
                    key, _, value = item.rpartition(": ")
                    key = key.split(" ", 1)[1] if stage != "meta" else key
                    try:
                        fields[key] = float(value)
                    except ValueError:
                        fields[key] = value
                entry[stage] = fields
            entries.append(entry)
    return entries


def brain_outputs(experiment_folder, paths):
    """What the training Brain computes for each file alone (batch of one), best checkpoint."""
    import speechbrain as sb
    from speechbrain.dataio.batch import PaddedBatch

    import train
    from mtlser_lobes.inference.export import _load_training_hparams

    hparams = _load_training_hparams(experiment_folder)
    brain = train.MTLBrain(modules=hparams["modules"], hparams=hparams, run_opts={"device": "cpu"})
    hparams["checkpointer"].recover_if_possible(max_key="UA")
    brain.modules.eval()
    tokenizer = sb.dataio.encoder.CTCTextEncoder()
    tokenizer.load(os.path.join(hparams["save_folder"], "ctc_encoder.txt"))
    outputs = []
    with torch.no_grad():
        for path in paths:
            batch = PaddedBatch([{"id": "x", "sig": sb.dataio.dataio.read_audio(path)}])
            predictions = brain.compute_forward(batch, sb.Stage.TEST)
            sequence = sb.decoders.ctc_greedy_decode(predictions["ctc"], predictions["feat_lens"], blank_id=0)[0]
            outputs.append({
                "probabilities": predictions["emotion"].exp()[0].tolist(),
                "text": "".join(tokenizer.decode_ndim(sequence)).strip(),
            })
    return outputs


def experiment_rows(experiment, split="test"):
    """The rows of an experiment's split CSV, with the wav paths resolved."""
    with open(os.path.join(experiment["folder"], f"{split}.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    return [dict(row, wav=row["wav"].replace("$data_root", experiment["data"])) for row in rows]


def conversation(experiment, path, seconds):
    """Test-session turns in order (the two speakers alternate), with 0.3 s pauses, up to ``seconds``."""
    pause = np.zeros(4800, dtype="float32")
    pieces, total = [], 0
    for row in experiment_rows(experiment):
        audio, rate = soundfile.read(row["wav"], dtype="float32")
        assert rate == 16000
        pieces += [audio, pause]
        total += len(audio) + len(pause)
        if total >= seconds * 16000:
            break
    soundfile.write(path, np.concatenate(pieces[:-1]), 16000)
    return path
