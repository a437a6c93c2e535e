"""The joint loss of the real MTLBrain on a real batch: each weight scales its term, 0 removes it."""

import os

import pytest
import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml

import train
from conftest import RECIPE_DIR
from iemocap_prepare import prepare_iemocap
from iemocap_tree import build_tree


def load_hparams(tiny_encoder, release, output, **overrides):
    """mtl.yaml with the tiny encoder, the given corpus and output folder, and overrides."""
    with open(os.path.join(RECIPE_DIR, "hparams", "mtl.yaml")) as f:
        return load_hyperpyyaml(f, {
            "wav2vec2_hub": tiny_encoder, "data_folder": release, "output_folder": output,
            "num_workers": 0, "alpha_warmup_epochs": 0, "n_speakers": 8, **overrides,
        })


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_encoder):
    root = tmp_path_factory.mktemp("joint")
    release = build_tree(str(root / "corpus"))

    def make(alpha, beta):
        output = str(root / f"exp_{alpha}_{beta}")
        hparams = load_hparams(tiny_encoder, release, output, alpha=alpha, beta=beta)
        prepare_iemocap(release, output)
        datasets, encoders = train.dataio_prepare(hparams)
        brain = train.MTLBrain(
            modules=hparams["modules"], hparams=hparams, run_opts={"device": "cpu"},
            checkpointer=hparams["checkpointer"],
        )
        brain.tokenizer = encoders["tokenizer"]
        loader = sb.dataio.dataloader.make_dataloader(datasets["train"], batch_size=4)
        return brain, next(iter(loader))

    return make


def terms_and_loss(brain, batch):
    brain.modules.eval()
    brain.on_stage_start(sb.Stage.TRAIN)
    with torch.no_grad():
        predictions = brain.compute_forward(batch, sb.Stage.TRAIN)
        loss = brain.compute_objectives(predictions, batch, sb.Stage.TRAIN)
    return predictions, {k: float(v) for k, v in brain.loss_terms.sums.items()}, float(loss)


@pytest.mark.parametrize("alpha, beta", [(1.0, 1.0), (0.3, 0.1), (0.0, 0.5), (0.7, 0.0), (0.0, 0.0)])
def test_each_weight_scales_its_term(setup, alpha, beta):
    brain, batch = setup(alpha, beta)
    predictions, terms, loss = terms_and_loss(brain, batch)
    assert ("ctc" in predictions) == (alpha > 0) and ("ctc" in terms) == (alpha > 0)
    assert ("speaker" in predictions) == (beta > 0) and ("speaker" in terms) == (beta > 0)
    expected = terms["emotion"] + alpha * terms.get("ctc", 0.0) + beta * terms.get("speaker", 0.0)
    assert loss == pytest.approx(expected, rel=1e-6)
    assert all(value > 0 for value in terms.values())


def test_terms_do_not_depend_on_the_weights(setup):
    _, full, _ = terms_and_loss(*setup(1.0, 1.0))
    _, light, _ = terms_and_loss(*setup(0.01, 0.2))
    assert light == pytest.approx(full, rel=1e-5)  # same seed, same initial weights


@pytest.mark.parametrize("alpha, beta", [(0.0, 0.2), (0.2, 0.0), (0.0, 0.0)])
def test_a_zero_weight_head_gets_no_optimizer(setup, alpha, beta):
    brain, _ = setup(alpha, beta)
    brain.init_optimizers()
    optimized = {id(p) for group in brain.optimizer.param_groups for p in group["params"]}
    heads = {"emotion_head": True, "ctc_head": alpha > 0, "speaker_head": beta > 0}
    for name, active in heads.items():
        params = {id(p) for p in getattr(brain.modules, name).parameters()}
        assert (params <= optimized) == active and (not active) == params.isdisjoint(optimized)
    assert set(brain.optimizers_dict) == {"model_optimizer", "wav2vec2_optimizer"}


def test_frozen_encoder_gets_no_optimizer(tmp_path, tiny_encoder):
    release = build_tree(str(tmp_path / "corpus"))
    hparams = load_hparams(tiny_encoder, release, str(tmp_path / "frozen"), freeze_wav2vec2=True)
    brain = train.MTLBrain(modules=hparams["modules"], hparams=hparams, run_opts={"device": "cpu"})
    brain.init_optimizers()
    assert set(brain.optimizers_dict) == {"model_optimizer"} and brain.wav2vec2_optimizer is None


def test_speaker_count_mismatch_says_which_override(tmp_path, tiny_encoder):
    release = build_tree(str(tmp_path / "corpus"))
    output = str(tmp_path / "random")
    hparams = load_hparams(tiny_encoder, release, output, protocol="random")
    prepare_iemocap(release, output, protocol="random")
    with pytest.raises(ValueError, match="train.csv has 10 speakers but n_speakers is 8: pass --n_speakers 10"):
        train.dataio_prepare(hparams)
