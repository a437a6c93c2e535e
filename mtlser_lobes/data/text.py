"""Transcript normalisation and the character set of the CTC head.

The same :func:`normalize_transcript` is applied when the CSVs are written and
whenever text is compared (training targets, CER/WER references), so train and
test see one convention: lower case, letters, apostrophes inside words and
single spaces; bracketed event tags such as ``[LAUGHTER]`` are removed.

Example
-------
>>> normalize_transcript("Excuse me. [LAUGHTER] Uh-huh, it's 'mine'!")
"excuse me uh huh it's mine"
>>> encoder = ctc_label_encoder()
>>> encoder.get_blank_index(), len(encoder)
(0, 29)
>>> encoder.decode_ndim(encoder.encode_sequence(list("hi there")))
['h', 'i', ' ', 't', 'h', 'e', 'r', 'e']
"""

import re

from speechbrain.dataio.encoder import CTCTextEncoder
from speechbrain.decoders import ctc_greedy_decode
from speechbrain.utils.distributed import if_main_process

__all__ = [
    "CTC_CHARACTERS", "BLANK_INDEX", "normalize_transcript", "dropped_characters",
    "ctc_label_encoder", "greedy_transcripts",
]

#: Output symbols of the CTC head besides the blank: a-z, apostrophe, space.
CTC_CHARACTERS = list("abcdefghijklmnopqrstuvwxyz' ")
#: Index of the CTC blank in the label encoder, the loss and the greedy decoder.
BLANK_INDEX = 0

_TAGS = re.compile(r"\[[^\]]*\]|<[^>]*>|\{[^}]*\}")
_OUTSIDE_ALPHABET = re.compile(r"[^a-z' ]")
_PUNCTUATION = set(".,;:?!\"()\t\n\r")
_LOOSE_APOSTROPHE = re.compile(r"(?<![a-z])'|'(?![a-z])")
_SPACES = re.compile(r"\s+")


def normalize_transcript(text):
    """Normalises a transcript for the CTC head.

    Arguments
    ---------
    text : str
        Raw words of a turn, with punctuation and bracketed event tags.

    Returns
    -------
    str
        Lower-case text over :data:`CTC_CHARACTERS`, single-spaced, stripped.

    Example
    -------
    >>> normalize_transcript("  [BREATHING] OK -- fine.  ")
    'ok fine'
    """
    text = _TAGS.sub(" ", text).lower()
    text = text.replace("-", " ")
    text = _OUTSIDE_ALPHABET.sub("", text)
    text = _LOOSE_APOSTROPHE.sub("", text)
    return _SPACES.sub(" ", text).strip()


def dropped_characters(text):
    """Characters outside the CTC alphabet that :func:`normalize_transcript` removes.

    Event tags, hyphens, whitespace and punctuation (which the CTC head does
    not model) are not counted: what is left are letters, digits and symbols
    that the transcript loses.

    Example
    -------
    >>> dropped_characters("Caf\u00e9 at 9 -- [LAUGHTER] ok!")
    ['9', '\u00e9']
    """
    text = _TAGS.sub(" ", text).lower().replace("-", " ")
    return sorted(set(_OUTSIDE_ALPHABET.findall(text)) - _PUNCTUATION)


def ctc_label_encoder(path=None):
    """Returns the character encoder of the CTC head, blank at :data:`BLANK_INDEX`.

    The symbol set is fixed (not read from the data), so every fold, corpus and
    exported model shares one output layout.

    Arguments
    ---------
    path : str, optional
        Where to save the encoder (or load it from, when it exists), as
        SpeechBrain's ``load_or_create`` does; ``None`` keeps it in memory.

    Returns
    -------
    speechbrain.dataio.encoder.CTCTextEncoder

    Example
    -------
    >>> ctc_label_encoder().encode_label("a")
    1
    """
    encoder = CTCTextEncoder()
    if path is None or not encoder.load_if_possible(path):
        encoder.add_blank()  # first label: index 0
        encoder.update_from_iterable(CTC_CHARACTERS, sequence_input=False)
        if path is not None and if_main_process():
            encoder.save(path)
    encoder.expect_len(len(CTC_CHARACTERS) + 1)
    if encoder.get_blank_index() != BLANK_INDEX:
        raise ValueError(
            f"CTC encoder at {path} has its blank at {encoder.get_blank_index()}, "
            f"expected {BLANK_INDEX}: delete it to rebuild"
        )
    return encoder


def greedy_transcripts(log_probs, lengths, encoder, blank_index=BLANK_INDEX):
    """The CTC head's best-path transcripts (SpeechBrain's greedy decoder), as strings.

    Arguments
    ---------
    log_probs : torch.Tensor
        (batch, frames, n_tokens) CTC log-probabilities.
    lengths : torch.Tensor
        (batch,) relative lengths in frames.
    encoder : speechbrain.dataio.encoder.CTCTextEncoder
        :func:`ctc_label_encoder`.
    blank_index : int
        Index of the blank.

    Example
    -------
    >>> import torch
    >>> encoder = ctc_label_encoder()
    >>> path = [encoder.encode_label(c) for c in "hii"] + [BLANK_INDEX, encoder.encode_label("i")]
    >>> log_probs = torch.nn.functional.one_hot(torch.tensor([path]), len(encoder)).float().log()
    >>> greedy_transcripts(log_probs, torch.ones(1), encoder)
    ['hii']
    """
    sequences = ctc_greedy_decode(log_probs, lengths, blank_id=blank_index)
    return ["".join(encoder.decode_ndim(sequence)) for sequence in sequences]
