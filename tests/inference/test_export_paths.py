"""``mtlser-export`` reads an experiment's saved hyperparameters from any directory."""

import os

from mtlser_lobes.inference.export import _load_training_hparams


def test_saved_hparams_load_from_elsewhere_with_their_paths_made_absolute(tmp_path, monkeypatch):
    """Paths relative to where train.py ran resolve there; hub names and plain values stay as written."""
    recipe = tmp_path / "recipe"
    experiment = recipe / "results" / "exp"
    (experiment / "save").mkdir(parents=True)
    (recipe / "data").mkdir()
    (tmp_path / "encoder").mkdir()
    (recipe / "none").write_text("")
    (experiment / "hyperparams.yaml").write_text(
        "output_folder: results/exp\n"
        "save_folder: results/exp/save\n"
        "model_folder: results/exp/model\n"  # not written yet: inside the experiment all the same
        "data_folder: data\n"
        "hub: facebook/wav2vec2-base\n"
        "sorting: random\n"
        "block: none\n"  # a file named like the value exists: still a value
        "counts: !new:collections.Counter\n"
        "  source: ../encoder\n"
        "  other: ../not_there\n",
        encoding="utf-8",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    hparams = _load_training_hparams(str(os.path.relpath(experiment, elsewhere)))

    assert os.getcwd() == str(elsewhere)
    assert hparams["output_folder"] == str(experiment)
    assert hparams["save_folder"] == str(experiment / "save")
    assert hparams["model_folder"] == str(experiment / "model")
    assert hparams["data_folder"] == str(recipe / "data")
    assert hparams["hub"] == "facebook/wav2vec2-base"
    assert hparams["sorting"] == "random" and hparams["block"] == "none"
    assert hparams["counts"]["source"] == str(tmp_path / "encoder")
    assert hparams["counts"]["other"] == "../not_there"
