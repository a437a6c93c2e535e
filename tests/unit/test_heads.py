"""Heads on tiny dimensions: shapes, probabilities, and padding invariance."""

import pytest
import torch

from mtlser_lobes.heads import CTCHead, EmotionHead, MaskedPooling, SpeakerHead


def _padded_pair(n_real=13, n_pad=7, dim=6, pad_value=50.0):
    torch.manual_seed(0)
    real = torch.randn(1, n_real, dim)
    padded = torch.cat([real, torch.full((1, n_pad, dim), pad_value)], dim=1)
    return real, padded, torch.tensor([n_real / (n_real + n_pad)])


@pytest.mark.parametrize("return_std", [False, True])
def test_pooling_ignores_padded_frames(return_std):
    real, padded, lengths = _padded_pair()
    pooling = MaskedPooling(return_std=return_std)
    assert torch.allclose(pooling(padded, lengths), pooling(real, torch.ones(1)), atol=1e-6)


def test_pooling_matches_mean_and_std_of_real_frames():
    real, padded, lengths = _padded_pair()
    pooled = MaskedPooling(return_std=True)(padded, lengths)
    expected = torch.cat([real.mean(dim=1), real.std(dim=1, unbiased=False)], dim=-1)
    assert torch.allclose(pooled, expected, atol=1e-5)


@pytest.mark.parametrize(
    "make_head",
    [lambda: EmotionHead(6, n_emotions=4, hidden_size=8), lambda: SpeakerHead(6, 5, embedding_dim=4)],
)
def test_utterance_heads_same_output_padded_or_not(make_head):
    real, padded, lengths = _padded_pair()
    head = make_head().eval()
    assert torch.allclose(head(padded, lengths), head(real, torch.ones(1)), atol=1e-6)


def test_batch_items_do_not_affect_each_other():
    torch.manual_seed(1)
    head = EmotionHead(6, n_emotions=4, hidden_size=8).eval()
    short, long = torch.randn(1, 5, 6), torch.randn(1, 9, 6)
    batch = torch.zeros(2, 9, 6)
    batch[0, :5], batch[1] = short[0], long[0]
    together = head(batch, torch.tensor([5 / 9, 1.0]))
    assert torch.allclose(together[0], head(short)[0], atol=1e-6)
    assert torch.allclose(together[1], head(long)[0], atol=1e-6)


def test_heads_return_log_probabilities_of_the_right_shape():
    feats, lengths = torch.randn(3, 11, 6), torch.tensor([1.0, 0.5, 0.2])
    emotion = EmotionHead(6, n_emotions=4, hidden_size=8)(feats, lengths)
    ctc = CTCHead(6, n_tokens=29)(feats)
    speaker_head = SpeakerHead(6, n_speakers=8, embedding_dim=4)
    speaker = speaker_head(feats, lengths)
    assert emotion.shape == (3, 4) and ctc.shape == (3, 11, 29) and speaker.shape == (3, 8)
    for log_probs in (emotion, ctc, speaker):
        assert torch.allclose(log_probs.exp().sum(dim=-1), torch.ones(log_probs.shape[:-1]), atol=1e-5)
    assert speaker_head.embed(feats, lengths).shape == (3, 4)
