"""An output folder holds one experiment: same identity resumes, another is refused untouched."""

import hashlib
import json
import os
import shutil

import pytest

from conftest import RECIPE_DIR
from mtlser_lobes.studies.experiment_identity import (
    ExperimentMismatch,
    check_output_folder,
    discard_experiment,
    experiment_identity,
    write_identity,
)
from recipe_helpers import TINY_ENCODER_OVERRIDES, run_train
from recipe_options import RESUMABLE_KEYS

HPARAMS = os.path.join(RECIPE_DIR, "hparams", "mtl.yaml")


def identity(overrides="", hparams=HPARAMS):
    return experiment_identity(hparams, overrides, RESUMABLE_KEYS)


def test_resumable_keys_do_not_change_the_identity():
    base = identity("data_folder: /data/IEMOCAP_full_release")
    assert identity(
        "data_folder: /data/IEMOCAP_full_release\nnumber_of_epochs: 50\nnum_workers: 0\n"
        "output_folder: elsewhere\nprecision: bf16\nexport_inference_model: False\nckpt_interval_minutes: 0"
    ) == base
    # Keys that refer to a resumable key (the loaders' num_workers) are compared as written.
    assert base["train_dataloader_options"]["num_workers"] == "!ref <num_workers>"


@pytest.mark.parametrize("override", ["alpha: 0.3", "beta: 0", "protocol: random", "test_session: 4",
                                      "seed: 7", "wav2vec2_hub: other/encoder", "lr: 0.01",
                                      "data_folder: /other/IEMOCAP_full_release"])
def test_options_that_change_what_is_trained_change_the_identity(override):
    assert identity(override) != identity()


def test_the_data_folder_counts_as_an_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert identity("data_folder: corpus")["data_folder"] == str(tmp_path / "corpus")
    assert identity("data_folder: corpus") == identity(f"data_folder: {tmp_path / 'corpus'}")


def test_a_key_added_to_the_yaml_counts_without_being_listed(tmp_path):
    hparams = tmp_path / "mtl.yaml"
    shutil.copy(HPARAMS, hparams)
    with open(hparams, "a") as f:
        f.write("\nlayer_weighting: False\n")
    assert identity("layer_weighting: True", str(hparams)) != identity("", str(hparams))


def test_every_key_of_the_yaml_is_compared_or_listed_as_resumable():
    compared = set(identity())
    with open(HPARAMS) as f:
        keys = {line.split(":")[0] for line in f if line[:1].isalpha() or line.startswith("__")}
    assert keys - compared <= set(RESUMABLE_KEYS)
    assert "data_folder" in compared and "alpha" in compared and "number_of_epochs" not in compared


def test_same_identity_resumes_other_is_refused_naming_the_keys(tmp_path):
    output = str(tmp_path / "exp")
    first = identity("alpha: 0.1")
    assert check_output_folder(output, first) == "new"
    write_identity(output, first)
    assert check_output_folder(output, identity("alpha: 0.1\nnumber_of_epochs: 40")) == "resume"
    with pytest.raises(ExperimentMismatch) as refused:
        check_output_folder(output, identity("alpha: 0.3\nprotocol: random"))
    message = str(refused.value)
    assert "alpha: 0.1 there, 0.3 now" in message and "protocol: loso there, random now" in message
    assert "--output_folder" in message and "--overwrite" in message
    assert check_output_folder(output, identity("alpha: 0.3"), overwrite=True) == "overwrite"


def test_a_folder_from_before_the_records_is_compared_through_its_hyperparams(tmp_path):
    from hyperpyyaml import resolve_references

    output = tmp_path / "results" / "exp"
    output.mkdir(parents=True)
    with open(HPARAMS) as f:  # what sb.create_experiment_directory saves
        (output / "hyperparams.yaml").write_text(
            resolve_references(f, "data_folder: corpus\noutput_folder: results/exp").getvalue()
        )
    current = f"data_folder: {tmp_path / 'corpus'}\noutput_folder: {output}"
    assert check_output_folder(str(output), identity(current)) == "old-folder"
    with pytest.raises(ExperimentMismatch, match="beta: 0.1 there, 0.5 now"):
        check_output_folder(str(output), identity(current + "\nbeta: 0.5"))
    with pytest.raises(ExperimentMismatch, match="data_folder: .*corpus there, /elsewhere now"):
        check_output_folder(str(output), identity(f"data_folder: /elsewhere\noutput_folder: {output}"))


def test_overwrite_never_deletes_what_is_not_an_experiment(tmp_path):
    folder = tmp_path / "home"
    (folder / "corpus").mkdir(parents=True)
    with pytest.raises(ExperimentMismatch, match="not an experiment folder"):
        discard_experiment(str(folder))
    write_identity(str(folder), {"data_folder": str(folder / "corpus")})
    with pytest.raises(ExperimentMismatch, match="holds the data_folder"):
        check_output_folder(str(folder), {"data_folder": str(folder / "corpus")}, overwrite=True)
    assert (folder / "corpus").is_dir()


def _snapshot(folder):
    """Every file under ``folder`` -> SHA-256 of its bytes."""
    found = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return found


def _run(args):
    import subprocess
    import sys

    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.run([sys.executable, "train.py", "hparams/mtl.yaml", *args], cwd=RECIPE_DIR, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_same_command_resumes_other_data_and_failed_runs_change_nothing_overwrite_restarts(
    tmp_path, tiny_encoder, demo_release
):
    output = str(tmp_path / "exp")
    common = ["--wav2vec2_hub", tiny_encoder, "--output_folder", output, "--number_of_epochs", "1",
              *TINY_ENCODER_OVERRIDES]
    run_train([*common, "--data_folder", demo_release])
    finished = _snapshot(output)
    assert "experiment.json" in finished and "model/model_card.md" in finished

    # Another corpus in IEMOCAP layout (a copy, at another path) into the same folder: refused.
    other = str(tmp_path / "other" / "IEMOCAP_full_release")
    shutil.copytree(demo_release, other)
    refused = _run([*common, "--data_folder", other])
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert f"data_folder: {demo_release} there, {other} now" in refused.stderr
    assert "Traceback" not in refused.stdout + refused.stderr
    # A run that fails before training, and one with a bad option: nothing changes either.
    for bad in (["--data_folder", "/nonexistent/IEMOCAP_full_release"], ["--data_folder", demo_release,
                                                                         "--alpha", "-1"]):
        failed = _run([*common, *bad])
        assert failed.returncode == 2 and "Traceback" not in failed.stderr, failed.stderr[-3000:]
    assert _snapshot(output) == finished

    # The same command resumes: nothing left to train, the test and the export run again.
    again = run_train([*common, "--data_folder", demo_release])
    assert "same experiment: resuming" in again.stdout + again.stderr
    with open(os.path.join(output, "train_log.txt")) as log:
        assert sum(line.startswith("epoch: ") for line in log) == 1

    # --overwrite discards the old experiment and trains the other data from scratch.
    old_checkpoints = {name for name in os.listdir(os.path.join(output, "save")) if name.startswith("CKPT")}
    run_train([*common, "--data_folder", other, "--overwrite"])
    with open(os.path.join(output, "experiment.json")) as f:
        assert json.load(f)["identity"]["data_folder"] == other
    with open(os.path.join(output, "train_log.txt")) as log:
        assert sum(line.startswith("epoch: ") for line in log) == 1
    assert not old_checkpoints & set(os.listdir(os.path.join(output, "save")))
    card = open(os.path.join(output, "model", "model_card.md")).read()
    assert other in card and demo_release not in card
