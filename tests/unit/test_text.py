"""Transcript normalisation and the CTC character set."""

import pytest

from mtlser_lobes.data.text import BLANK_INDEX, CTC_CHARACTERS, ctc_label_encoder, normalize_transcript


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Excuse me.", "excuse me"),
        ("Oh, that's GREAT! [LAUGHTER]", "oh that's great"),
        ("[BREATHING] Okay -- uh-huh.", "okay uh huh"),
        ("'Cause I said 'no'.", "cause i said no"),
        ("[GARBAGE]", ""),
        ("Is it 5 o'clock?", "is it o'clock"),
    ],
)
def test_normalize(raw, expected):
    assert normalize_transcript(raw) == expected


def test_normalized_text_is_encodable_and_decodes_back(tmp_path):
    encoder = ctc_label_encoder(str(tmp_path / "ctc.txt"))
    text = normalize_transcript("Don't you dare -- [LAUGHTER] leave!")
    assert set(text) <= set(CTC_CHARACTERS)
    assert "".join(encoder.decode_ndim(encoder.encode_sequence(list(text)))) == text
    assert BLANK_INDEX not in encoder.encode_sequence(list(text))


def test_saved_encoder_reloads_identically(tmp_path):
    path = str(tmp_path / "ctc.txt")
    first = ctc_label_encoder(path)
    second = ctc_label_encoder(path)
    assert first.lab2ind == second.lab2ind and second.get_blank_index() == BLANK_INDEX
