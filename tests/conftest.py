"""Shared fixtures: everything runs offline on files made here."""

import os
import sys

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE_DIR = os.path.join(ROOT, "recipes", "IEMOCAP", "MTLSER")
RAVDESS_RELEASE = os.path.join(
    os.path.dirname(ROOT), "shared", "ravdess_iemocap_layout", "IEMOCAP_full_release"
)
sys.path.insert(0, RECIPE_DIR)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory):
    """Folder of a tiny random wav2vec2 (the offline stand-in for wav2vec2-base)."""
    from mtlser_lobes.tiny_encoder import save_tiny_wav2vec2

    return save_tiny_wav2vec2(str(tmp_path_factory.mktemp("tiny_wav2vec2")))


@pytest.fixture(scope="session")
def demo_release(tmp_path_factory):
    """A small synthetic demo corpus (IEMOCAP layout), shared by the recipe tests."""
    from mtlser_lobes.demo_corpus import generate_demo_corpus

    return generate_demo_corpus(
        str(tmp_path_factory.mktemp("demo")), dialogs_per_session=2, turns_per_dialog=12
    )
