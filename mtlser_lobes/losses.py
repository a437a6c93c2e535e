"""Losses of the three-head model beyond SpeechBrain's: CTC normalised per frame, class-balanced
weights, the warm-up of a task weight and the joint loss."""

import speechbrain as sb
import torch
from speechbrain.utils.logger import get_logger

__all__ = ["class_balanced_weights", "combine_losses", "ctc_loss", "emotion_loss", "warmup_weight"]

logger = get_logger(__name__)


def ctc_loss(log_probs, tokens, feat_lens, token_lens, blank_index, reduction="frame"):
    """CTC loss normalised as ``reduction`` says.

    ``mean``: per target token, then over the batch (torch's ``mean``; at the
    start of training about (frames / tokens) * log(symbols), e.g. 18 on
    3-second turns); ``frame``: per input frame, then over the batch (about
    log(symbols) = 3.4 at the start, the scale of the emotion loss);
    ``batchmean``: per utterance.

    Arguments
    ---------
    log_probs : torch.Tensor
        (batch, frames, symbols) log-probabilities.
    tokens : torch.Tensor
        (batch, max_tokens) target indices.
    feat_lens, token_lens : torch.Tensor
        (batch,) relative lengths of the frames and of the targets.
    blank_index : int
        Index of the CTC blank.
    reduction : str
        ``frame``, ``mean`` or ``batchmean``.

    Returns
    -------
    torch.Tensor
        A scalar.

    Example
    -------
    >>> log_probs = torch.randn(2, 50, 5).log_softmax(-1)
    >>> tokens = torch.tensor([[1, 2, 3], [4, 1, 0]])
    >>> lens = torch.tensor([1.0, 0.8])
    >>> per_frame = ctc_loss(log_probs, tokens, lens, torch.tensor([1.0, 2 / 3]), 0, "frame")
    >>> per_token = ctc_loss(log_probs, tokens, lens, torch.tensor([1.0, 2 / 3]), 0, "mean")
    >>> bool(per_frame < per_token)  # more frames than tokens
    True
    """
    if reduction != "frame":
        return sb.nnet.losses.ctc_loss(log_probs, tokens, feat_lens, token_lens, blank_index, reduction=reduction)
    n_frames = log_probs.shape[1]
    absolute_frames = torch.round(feat_lens * n_frames).clamp(min=1)
    absolute_tokens = torch.round(token_lens * tokens.shape[1]).long()
    per_utterance = torch.nn.functional.ctc_loss(
        log_probs.transpose(0, 1), tokens, absolute_frames.long(), absolute_tokens,
        blank_index, zero_infinity=True, reduction="none",
    )  # (batch,), summed over each utterance
    return (per_utterance / absolute_frames).mean()


def emotion_loss(log_probs, targets, weight=None, label_smoothing=0.0):
    """The emotion loss: negative log-likelihood, optionally class-weighted and label-smoothed.

    With ``label_smoothing`` s > 0, each target is the one-hot label mixed with
    the uniform distribution (1 - s and s / n_classes), which keeps a head
    trained on a few hundred turns from growing ever more confident on its
    training speakers. With s = 0 it is exactly ``nll_loss``.

    Arguments
    ---------
    log_probs : torch.Tensor
        (batch, n_classes) log-probabilities.
    targets : torch.Tensor
        (batch,) class indices.
    weight : torch.Tensor, optional
        (n_classes,) class weights (:func:`class_balanced_weights`).
    label_smoothing : float
        The share of each target spread over all classes, in [0, 1).

    Example
    -------
    >>> log_probs = torch.log(torch.tensor([[0.7, 0.1, 0.1, 0.1]]))
    >>> round(float(emotion_loss(log_probs, torch.tensor([0]))), 4)  # -log 0.7
    0.3567
    >>> # smoothed target (0.7, 0.1, 0.1, 0.1): the cross-entropy of the prediction with itself
    >>> round(float(emotion_loss(log_probs, torch.tensor([0]), label_smoothing=0.4)), 4)
    0.9404
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), not {label_smoothing}")
    if label_smoothing == 0.0:
        return torch.nn.functional.nll_loss(log_probs, targets, weight=weight)
    # cross_entropy renormalises its input with log_softmax, which leaves log-probabilities unchanged
    return torch.nn.functional.cross_entropy(log_probs, targets, weight=weight, label_smoothing=label_smoothing)


def class_balanced_weights(labels, label_encoder):
    """Inverse-frequency weights of the classes of ``labels`` (mean 1 over its items).

    UA, the metric, counts every class equally, and IEMOCAP and RAVDESS are
    imbalanced: with these weights each class weighs as much in the loss.
    A class absent from ``labels`` gets weight 0 (with a warning).

    Arguments
    ---------
    labels : list of str
        The training labels, one per turn.
    label_encoder : speechbrain.dataio.encoder.CategoricalEncoder
        Maps each class to its index.

    Returns
    -------
    torch.Tensor
        (n_classes,), in the encoder's index order.

    Example
    -------
    >>> from speechbrain.dataio.encoder import CategoricalEncoder
    >>> encoder = CategoricalEncoder()
    >>> encoder.update_from_iterable(["neu", "hap"])
    >>> class_balanced_weights(["neu", "hap", "hap", "hap"], encoder).tolist()
    [2.0, 0.6666666865348816]
    """
    counts = torch.zeros(len(label_encoder))
    for label in labels:
        counts[label_encoder.lab2ind[label]] += 1
    present = counts > 0
    weights = torch.zeros_like(counts)
    weights[present] = len(labels) / (int(present.sum()) * counts[present])
    missing = [label_encoder.ind2lab[i] for i in range(len(counts)) if not present[i]]
    if missing:
        logger.warning(f"no training turn of {', '.join(missing)}: weight 0 in the emotion loss")
    logger.info(
        "class-balanced emotion loss: "
        + ", ".join(f"{label_encoder.ind2lab[i]} {w:.2f}" for i, w in enumerate(weights.tolist()))
    )
    return weights


def warmup_weight(weight, epoch, warmup_epochs):
    """``weight`` ramped up linearly from 0 over the first ``warmup_epochs`` epochs.

    With a warm-up of N epochs, epoch 1 trains without the task and epoch
    N + 1 onwards with the full weight: the emotion head learns first, before
    the lexical task pulls the shared encoder its way. 0 epochs: no warm-up.

    Example
    -------
    >>> [warmup_weight(0.1, epoch, 2) for epoch in (1, 2, 3, 4)]
    [0.0, 0.05, 0.1, 0.1]
    >>> warmup_weight(0.1, 1, 0)
    0.1
    """
    if warmup_epochs <= 0:
        return weight
    return weight * min(1.0, (max(1, epoch) - 1) / warmup_epochs)


def combine_losses(terms, weights, task_weighting=None):
    """The joint loss: ``sum(weights[task] * terms[task])``, or learned uncertainty weighting.

    Arguments
    ---------
    terms : dict
        Loss of each task that ran (``emotion``, ``ctc``, ``speaker``).
    weights : dict
        Fixed weight of each task (``alpha``, ``beta``); the prior factors of
        ``task_weighting`` when it is given.
    task_weighting : mtlser_lobes.heads.UncertaintyWeighting, optional
        Learned task weights (``loss_weighting: uncertainty``).

    Example
    -------
    >>> terms = {"emotion": torch.tensor(1.0), "ctc": torch.tensor(3.0)}
    >>> round(combine_losses(terms, {"emotion": 1.0, "ctc": 0.1}).item(), 4)
    1.3
    """
    if task_weighting is not None:
        return task_weighting(terms, weights)
    return sum(weights[name] * value for name, value in terms.items())
