"""The switches against negative transfer (hparams/mtl.yaml), each on the real MTLBrain or head."""


import pytest
import speechbrain as sb
import torch

import train
from iemocap_prepare import prepare_iemocap
from iemocap_tree import build_tree
from mtlser_lobes.checkpoints import FallbackCheckpointer, average_best_checkpoints
from mtlser_lobes.losses import class_balanced_weights, ctc_loss
from mtlser_lobes.heads import CTCHead, EmotionHead, LayerSelection, SpeakerHead, UncertaintyWeighting
from test_joint_loss import load_hparams


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build_tree(str(tmp_path_factory.mktemp("levers") / "corpus"))


def make_brain(tiny_encoder, corpus, output, **overrides):
    hparams = load_hparams(tiny_encoder, corpus, output, **overrides)
    prepare_iemocap(corpus, output)
    datasets, encoders = train.dataio_prepare(hparams)
    brain = train.MTLBrain(modules=hparams["modules"], hparams=hparams,
                           run_opts={"device": "cpu"}, checkpointer=hparams["checkpointer"])
    brain.tokenizer = encoders["tokenizer"]
    if hparams["class_balanced_loss"]:
        labels = [row["emo"] for row in datasets["train"].data.values()]
        brain.emotion_class_weights = class_balanced_weights(labels, encoders["emotion"])
    loader = sb.dataio.dataloader.make_dataloader(datasets["train"], batch_size=4)
    return brain, next(iter(loader)), datasets, encoders


def forward_loss(brain, batch, stage=sb.Stage.TRAIN):
    brain.on_stage_start(stage)
    predictions = brain.compute_forward(batch, stage)
    return predictions, brain.compute_objectives(predictions, batch, stage)


# ------------------------------------------------------------------ where heads read


def test_weighted_layers_learn_their_weights_and_last_reads_the_top_layer():
    stack = torch.randn(3, 2, 10, 8)
    assert torch.equal(LayerSelection()(stack), stack[-1])
    selection = LayerSelection(n_layers=3)
    selection(stack).pow(2).sum().backward()
    assert selection.weights.grad is not None and selection.weights.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="needs their stack"):
        selection(stack[-1])


def test_each_head_reads_its_own_layers_on_the_brain(tiny_encoder, corpus, tmp_path):
    brain, batch, _, _ = make_brain(tiny_encoder, corpus, str(tmp_path / "w"), alpha=0.1, beta=0.1,
                                    emotion_layers="weighted", speaker_layers="weighted")
    assert brain.modules.emotion_head.layers.n_layers == 3  # 2 transformer layers + features
    assert brain.modules.ctc_head.layers.n_layers is None
    _, loss = forward_loss(brain, batch)
    loss.backward()
    assert brain.modules.emotion_head.layers.weights.grad.abs().sum() > 0
    assert brain.modules.speaker_head.layers.weights.grad.abs().sum() > 0
    stats = brain._learned_weights()
    assert stats["layers_emotion"].count("/") == 2 and "layers_ctc" not in stats


def test_meanstd_pooling_sees_how_the_voice_varies():
    torch.manual_seed(0)
    head = EmotionHead(4, n_emotions=4, hidden_size=8, pooling="meanstd").eval()
    steady = torch.zeros(1, 20, 4)
    varying = torch.cat([torch.full((1, 10, 4), -1.0), torch.full((1, 10, 4), 1.0)], dim=1)
    mean_only = EmotionHead(4, n_emotions=4, hidden_size=8, pooling="mean").eval()
    assert torch.allclose(mean_only(steady), mean_only(varying))  # same mean: blind
    assert not torch.allclose(head(steady), head(varying))
    with pytest.raises(ValueError, match="pooling"):
        EmotionHead(4, pooling="max")


def test_speaker_stats_norm_learns_speakers_hidden_under_a_common_offset():
    """Speakers that differ by 0.05 on statistics of size 3: batch norm finds them fast."""

    def train_head(stats_norm):
        torch.manual_seed(0)
        head = SpeakerHead(4, n_speakers=2, embedding_dim=8, dropout=0.0, stats_norm=stats_norm)
        optimizer = torch.optim.Adam(head.parameters(), lr=1e-3)
        for _ in range(100):
            speakers = torch.randint(2, (8,))
            frames = 3.0 + 0.05 * speakers.view(-1, 1, 1) + 0.01 * torch.randn(8, 20, 4)
            loss = torch.nn.functional.nll_loss(head(frames), speakers)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return loss.item()

    assert train_head("batch") < 0.5 < train_head("none")
    with pytest.raises(ValueError, match="stats_norm"):
        SpeakerHead(4, n_speakers=2, stats_norm="layer")


def test_speaker_stats_norm_trains_with_the_brain_and_a_batch_of_one(tiny_encoder, corpus, tmp_path):
    brain, batch, _, _ = make_brain(tiny_encoder, corpus, str(tmp_path / "bn"), alpha=0.1, beta=0.1,
                                    speaker_stats_norm="batch")
    norm = brain.modules.speaker_head.stats_norm
    before = norm.running_mean.clone()
    _, loss = forward_loss(brain, batch)
    loss.backward()
    assert not torch.equal(norm.running_mean, before)  # statistics of the training batch
    assert norm.weight.grad is not None
    # The last batch of an epoch can hold one utterance: normalised with the running statistics.
    head = brain.modules.speaker_head.train()
    feats = torch.randn(head.config["n_layers"], 1, 12, head.config["input_size"])  # stack of layers
    assert torch.isfinite(head(feats)).all()
    assert torch.allclose(head.eval()(feats), head(feats))  # what eval computes


# ------------------------------------------------------------------ the CTC block


@pytest.mark.parametrize("block", ["lstm", "transformer"])
def test_ctc_block_answers_an_item_alone_as_inside_a_padded_batch(block):
    torch.manual_seed(0)
    head = CTCHead(8, n_tokens=5, block=block, block_size=16).eval()
    long, short = torch.randn(1, 12, 8), torch.randn(1, 7, 8)
    batch = torch.cat([long, torch.cat([short, torch.full((1, 5, 8), 50.0)], dim=1)])
    out = head(batch, torch.tensor([1.0, 7 / 12]))
    assert torch.allclose(out[1, :7], head(short, torch.ones(1))[0], atol=1e-5)
    assert torch.allclose(out[0], head(long, torch.ones(1))[0], atol=1e-5)


def test_ctc_block_trains_with_the_brain(tiny_encoder, corpus, tmp_path):
    brain, batch, _, _ = make_brain(tiny_encoder, corpus, str(tmp_path / "b"), alpha=0.5, beta=0.0,
                                    ctc_block="lstm")
    brain.init_optimizers()
    assert any(p is brain.modules.ctc_head.block.weight_ih_l0
               for g in brain.optimizer.param_groups for p in g["params"])
    _, loss = forward_loss(brain, batch)
    loss.backward()
    assert brain.modules.ctc_head.block.weight_ih_l0.grad.abs().sum() > 0


# ------------------------------------------------------------------ loss scale


def test_ctc_per_frame_is_the_per_utterance_sum_over_its_frames(tiny_encoder, corpus, tmp_path):
    brain, batch, _, _ = make_brain(tiny_encoder, corpus, str(tmp_path / "f"), alpha=1.0, beta=0.0,
                                    ctc_loss_reduction="frame")
    tokens, token_lens = batch.tokens
    brain.modules.eval()
    with torch.no_grad():
        predictions, _ = forward_loss(brain, batch)
        log_probs, feat_lens = predictions["ctc"], predictions["feat_lens"]
        per_frame = ctc_loss(log_probs, tokens, feat_lens, token_lens, 0, "frame")
        n_frames = torch.round(feat_lens * log_probs.shape[1]).long()
        n_tokens = torch.round(token_lens * tokens.shape[1]).long()
        sums = torch.nn.functional.ctc_loss(log_probs.transpose(0, 1), tokens, n_frames, n_tokens,
                                            blank=0, reduction="none", zero_infinity=True)
        per_token = ctc_loss(log_probs, tokens, feat_lens, token_lens, 0, "mean")
    assert float(per_frame) == pytest.approx(float((sums / n_frames).mean()), rel=1e-5)
    assert float(brain.loss_terms.sums["ctc"]) == pytest.approx(float(per_frame), rel=1e-6)  # what trains
    assert float(per_token) == pytest.approx(float((sums / n_tokens).mean()), rel=1e-5)
    assert float(per_frame) < float(per_token)  # more frames than characters


def test_alpha_warms_up_from_zero(tiny_encoder, corpus, tmp_path):
    brain, batch, _, _ = make_brain(tiny_encoder, corpus, str(tmp_path / "a"), alpha=0.4, beta=0.0,
                                    alpha_warmup_epochs=2)
    seen = []
    for epoch in (1, 2, 3, 4):
        brain.hparams.epoch_counter.current = epoch
        seen.append(round(brain.effective_alpha(), 6))
    assert seen == [0.0, 0.2, 0.4, 0.4]
    brain.hparams.epoch_counter.current = 1
    brain.modules.eval()
    with torch.no_grad():
        _, loss = forward_loss(brain, batch)
    assert float(loss) == pytest.approx(float(brain.loss_terms.sums["emotion"]), rel=1e-6)


def test_uncertainty_weighting_is_learned_and_logged(tiny_encoder, corpus, tmp_path):
    brain, batch, _, _ = make_brain(tiny_encoder, corpus, str(tmp_path / "u"), alpha=0.3, beta=0.2,
                                    loss_weighting="uncertainty")
    brain.init_optimizers()
    weighting = brain.modules.task_weighting
    assert any(p is weighting.log_variances for g in brain.optimizer.param_groups for p in g["params"])
    _, loss = forward_loss(brain, batch)
    terms = {k: float(v) for k, v in brain.loss_terms.sums.items()}
    expected = terms["emotion"] + 0.3 * terms["ctc"] + 0.2 * terms["speaker"]  # s_i = 0 at the start
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    # d/ds (exp(-s) w L + s / 2) = 1/2 - w L at s = 0: the optimizer raises the variance (lowers
    # the weight) of a task whose weighted loss exceeds 1/2, and lowers it otherwise
    prior = [1.0, 0.3, 0.2]
    expected_grad = [0.5 - w * terms[t] for w, t in zip(prior, ("emotion", "ctc", "speaker"))]
    assert weighting.log_variances.grad.tolist() == pytest.approx(expected_grad, rel=1e-4)
    assert set(brain._learned_weights()) >= {"weight_emotion", "weight_ctc", "weight_speaker"}


def test_uncertainty_keeps_a_zero_weight_task_off():
    weighting = UncertaintyWeighting(["emotion", "ctc"])
    total = weighting({"emotion": torch.tensor(2.0), "ctc": torch.tensor(5.0)}, {"ctc": 0.0})
    assert total.item() == pytest.approx(2.0)


def test_class_balanced_loss_weighs_every_class_equally(tiny_encoder, corpus, tmp_path):
    brain, batch, datasets, encoders = make_brain(
        tiny_encoder, corpus, str(tmp_path / "c"), alpha=0.0, beta=0.0, class_balanced_loss=True)
    labels = [row["emo"] for row in datasets["train"].data.values()]
    weights = brain.emotion_class_weights
    for name in set(labels):
        index = encoders["emotion"].lab2ind[name]
        # every class's total weight is the same: n / n_classes
        assert labels.count(name) * float(weights[index]) == pytest.approx(len(labels) / len(set(labels)))
    brain.modules.eval()
    with torch.no_grad():
        predictions, loss = forward_loss(brain, batch)
    emotions = batch.emo_encoded.data.view(-1)
    expected = torch.nn.functional.nll_loss(predictions["emotion"], emotions, weight=weights)
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)


# ------------------------------------------------------------------ selection


def test_average_of_the_best_checkpoints(tmp_path):
    module = torch.nn.Linear(2, 1)
    checkpointer = FallbackCheckpointer(str(tmp_path), recoverables={"head": module})
    for value, ua in ((1.0, 50.0), (3.0, 60.0), (100.0, 10.0)):
        with torch.no_grad():
            module.weight.fill_(value)
        checkpointer.save_checkpoint(meta={"UA": ua})
    average_best_checkpoints(checkpointer, {"head": module}, "UA", 2)
    assert torch.allclose(module.weight, torch.full((1, 2), 2.0))  # the two best: 1 and 3


# ------------------------------------------------------------------ augmentation


def test_augmentation_changes_training_audio_only(tiny_encoder, corpus, tmp_path):
    brain, batch, _, _ = make_brain(tiny_encoder, corpus, str(tmp_path / "g"), alpha=0.1, beta=0.1,
                                    augment=True, wav2vec2_time_masking=True)
    seen = []
    original = brain.modules.wav2vec2.forward

    def spy(wavs, wav_lens):
        seen.append(wavs.clone())
        return original(wavs, wav_lens)

    brain.modules.wav2vec2.forward = spy
    brain.modules.eval()
    with torch.no_grad():
        torch.manual_seed(0)
        train_predictions, _ = forward_loss(brain, batch, sb.Stage.TRAIN)
        forward_loss(brain, batch, sb.Stage.VALID)
    wavs = batch.sig.data
    assert seen[0].shape[0] == wavs.shape[0]  # same batch, labels untouched
    assert seen[0].shape != wavs.shape or not torch.equal(seen[0], wavs)
    assert torch.equal(seen[1], wavs)  # validation audio is never augmented
    assert train_predictions["emotion"].shape[0] == wavs.shape[0]
    assert brain.modules.wav2vec2.model.config.apply_spec_augment is True


def test_every_lever_on_still_exports_what_it_trained(tmp_path):
    """Head arguments travel into the exported YAML (the interface builds the same heads)."""
    for head in (EmotionHead(8, n_layers=3, pooling="meanstd"),
                 CTCHead(8, n_tokens=5, n_layers=3, block="lstm", block_size=6),
                 SpeakerHead(8, n_speakers=2, n_layers=3, stats_norm="batch")):
        rebuilt = type(head)(**head.config)
        assert rebuilt.config == head.config
        rebuilt.load_state_dict(head.state_dict())  # strict: same parameters


def test_a_variants_own_option_replaces_the_one_given_to_every_cell():
    """--study levers ... --class_balanced_loss False --variant b "--class_balanced_loss True"."""
    import run_experiments

    assert run_experiments.without_options(
        ["--class_balanced_loss", "False", "--alpha_warmup_epochs=0", "--number_of_epochs", "6"],
        ["--class_balanced_loss", "True", "--alpha_warmup_epochs", "2"],
    ) == ["--number_of_epochs", "6"]


# ------------------------------------------------------------------ label smoothing


def test_label_smoothing_trains_towards_smoothed_targets(tiny_encoder, corpus, tmp_path):
    brain, batch, _, _ = make_brain(tiny_encoder, corpus, str(tmp_path / "s"), alpha=0.0, beta=0.0,
                                    class_balanced_loss=False, label_smoothing=0.2)
    brain.modules.eval()
    with torch.no_grad():
        predictions, loss = forward_loss(brain, batch)
    log_probs, emotions = predictions["emotion"], batch.emo_encoded.data.view(-1)
    targets = torch.full_like(log_probs, 0.2 / log_probs.shape[1])
    targets[torch.arange(len(emotions)), emotions] += 0.8
    assert float(loss) == pytest.approx(float(-(targets * log_probs).sum(1).mean()), rel=1e-5)
