"""HuBERT, WavLM and data2vec-audio encoders, and the fbank front end, end to end: train.py,
export, the interface.

Each family's tiny random encoder (``mtlser-tiny-encoder --family F``) is trained for one epoch on
the demo corpus, exported, and the exported folder answers files as the training Brain does, alone
or in a padded batch. (wav2vec 2.0 with its own front end goes through the same steps in
test_interface.py.)
"""

import os

import pytest
import soundfile

from mtlser_lobes.helpers import prepared_rows
from mtlser_lobes.demo.tiny_encoder import main as tiny_encoder_main
from mtlser_lobes.precision import REFERENCE_RUN_OPTS
from recipe_helpers import TINY_ENCODER_OVERRIDES, brain_outputs, run_train

pytestmark = pytest.mark.slow

EMOTIONS = ("neu", "hap", "ang", "sad")


@pytest.mark.parametrize("family, model_type, model_class, frontend", [
    ("hubert", "hubert", "HubertModel", "waveform"),
    ("wavlm", "wavlm", "WavLMModel", "waveform"),
    ("data2vec", "data2vec-audio", "Data2VecAudioModel", "waveform"),
    ("wav2vec2", "wav2vec2", "Wav2Vec2Model", "fbank"),
])
def test_family_trains_exports_and_answers(tmp_path, demo_release, capsys, family, model_type, model_class,
                                           frontend):
    from transformers import AutoModel

    from mtlser_lobes.inference.interface import MTLSER

    encoder = str(tmp_path / f"tiny_{family}")
    tiny_encoder_main([encoder, "--family", family])
    assert capsys.readouterr().out.strip() == encoder
    assert type(AutoModel.from_pretrained(encoder)).__name__ == model_class

    output = str(tmp_path / "exp")
    run_train([
        "--wav2vec2_hub", encoder, "--data_folder", demo_release, "--output_folder", output,
        "--number_of_epochs", "1", "--encoder_frontend", frontend, *TINY_ENCODER_OVERRIDES,
    ])
    with open(os.path.join(output, "model", "model_card.md")) as card:
        assert f"- Encoder: `{encoder}` ({model_type})" in card.read()
    model = MTLSER.from_hparams(source=os.path.join(output, "model"), run_opts=REFERENCE_RUN_OPTS)
    assert type(model.mods.wav2vec2.model).__name__ == model_class  # rebuilt from the exported config
    frontend_class = type(model.mods.wav2vec2.model.feature_extractor).__name__
    assert frontend_class == ("FbankFrontend" if frontend == "fbank" else f"{model_class[:-5]}FeatureEncoder")

    paths = [row["wav"] for row in prepared_rows(os.path.join(output, "test.csv"), demo_release)[:4]]
    assert len({soundfile.info(path).frames for path in paths}) > 1  # the batch below really is padded
    alone = [model.predict_file(path) for path in paths]
    for answer, expected in zip(alone, brain_outputs(output, paths)):
        assert answer.emotion in EMOTIONS and answer.error is None
        assert [answer.probabilities[c] for c in EMOTIONS] == pytest.approx(expected["probabilities"], abs=1e-5)
        assert answer.text == expected["text"]
    for batched, single in zip(model.predict_files(paths, batch_size=len(paths)), alone):
        assert batched.emotion == single.emotion and batched.text == single.text
        assert batched.speaker == single.speaker
        for label, p in single.probabilities.items():
            assert batched.probabilities[label] == pytest.approx(p, abs=1e-5)

    # ONNX: the export checks its graph against PyTorch (1e-4) and the runtime answers alike
    import onnx

    from mtlser_lobes.inference.onnx_export import export_onnx
    from mtlser_lobes.inference.onnx_runtime import OnnxMTLSER

    export_onnx(os.path.join(output, "model"))
    onnx_model = OnnxMTLSER(os.path.join(output, "model"))
    for answer, single in zip(onnx_model.predict_files(paths, batch_size=len(paths)), alone):
        assert answer.emotion == single.emotion and answer.text == single.text
        for label, p in single.probabilities.items():
            assert answer.probabilities[label] == pytest.approx(p, abs=1e-4)
    # int8: the feature encoder's convolutions but the first run as integer products (fbank: its projection)
    int8_graph = onnx.load(os.path.join(output, "model", "onnx", "model.int8.onnx"))
    assert [n.op_type for n in int8_graph.graph.node].count("QuantizeLinear") == (6 if frontend == "waveform" else 1)
    int8_model = OnnxMTLSER(os.path.join(output, "model"), quantized=True)
    for answer, single in zip(int8_model.predict_files(paths, batch_size=len(paths)), alone):
        assert answer.error is None
        for label, p in single.probabilities.items():
            assert answer.probabilities[label] == pytest.approx(p, abs=0.01)


def test_small_preset_is_a_larger_encoder_that_loads_like_the_tiny_one(tmp_path):
    """``--preset small``: the RAVDESS size study's encoder, a plain Hugging Face folder."""
    from transformers import AutoModel

    sizes = {}
    for preset in ("tiny", "small"):
        folder = str(tmp_path / preset)
        tiny_encoder_main([folder, "--preset", preset])
        model = AutoModel.from_pretrained(folder)
        sizes[preset] = sum(p.numel() for p in model.parameters())
        assert type(model).__name__ == "Wav2Vec2Model"
    assert sizes["tiny"] < 200_000 < 800_000 < sizes["small"] < 1_200_000
    # Explicit sizes still override the preset.
    tiny_encoder_main([str(tmp_path / "narrow"), "--preset", "small", "--hidden_size", "96"])
    assert AutoModel.from_pretrained(str(tmp_path / "narrow")).config.hidden_size == 96
