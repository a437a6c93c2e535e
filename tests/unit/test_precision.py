"""Inference precision: fp32 answers are unchanged by the inference preparation; bf16 stays close."""

import logging

import numpy as np
import pytest
import soundfile
import torch
from speechbrain.integrations.huggingface.wav2vec2 import Wav2Vec2

from mtlser_lobes.inference.interface import MTLSER
from mtlser_lobes.precision import REFERENCE_RUN_OPTS, cpu_features, int8_note, resolve_precision


@pytest.fixture(scope="module")
def wav_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wavs")
    rng = np.random.default_rng(0)
    paths = []
    for i, seconds in enumerate([0.7, 2.0, 3.3]):
        t = np.arange(int(16000 * seconds)) / 16000
        audio = 0.2 * np.sin(2 * np.pi * (120 + 40 * i) * t) + 0.02 * rng.standard_normal(t.size)
        paths.append(str(folder / f"{i}.wav"))
        soundfile.write(paths[-1], audio.astype("float32"), 16000)
    return paths


def test_fp32_encoder_after_inference_preparation_matches_the_training_encoder(tiny_encoder, tmp_path, wav_files):
    model = MTLSER.untrained(tiny_encoder, str(tmp_path / "cache"), run_opts=REFERENCE_RUN_OPTS)
    assert not torch.nn.utils.parametrize.is_parametrized(model.mods.wav2vec2.model.encoder.pos_conv_embed.conv)
    training_encoder = Wav2Vec2(tiny_encoder, save_path=str(tmp_path / "cache2"), freeze=True)
    for path in wav_files:
        wav = model.load_audio(path)[None]
        with torch.no_grad():
            expected = training_encoder(wav)
            got = model.mods.wav2vec2(wav)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_bf16_runs_the_encoder_in_bf16_and_answers_close_to_fp32(tiny_encoder, tmp_path, wav_files):
    fp32 = MTLSER.untrained(tiny_encoder, str(tmp_path / "cache"), run_opts=REFERENCE_RUN_OPTS)
    bf16 = MTLSER.untrained(tiny_encoder, str(tmp_path / "cache"), run_opts={"device": "cpu", "precision": "bf16"})
    assert bf16.mods.wav2vec2.model.encoder.layers[0].attention.q_proj.weight.dtype == torch.bfloat16
    assert bf16.mods.emotion_head.classifier[-1].weight.dtype == torch.float32
    for a, b in zip(fp32.predict_files(wav_files), bf16.predict_files(wav_files)):
        assert a.error is None and b.error is None
        assert sum(b.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
        for name, p in a.probabilities.items():
            assert b.probabilities[name] == pytest.approx(p, abs=0.03)
        assert b.speaker_score == pytest.approx(a.speaker_score, abs=0.05)


def test_fp16_on_the_cpu_is_refused_with_advice(tiny_encoder, tmp_path):
    with pytest.raises(ValueError, match="bf16"):
        MTLSER.untrained(tiny_encoder, str(tmp_path / "cache"), run_opts={"device": "cpu", "precision": "fp16"})


# ------------------------------------------------------------------ auto: chosen from the hardware


@pytest.fixture
def cpu_bf16(monkeypatch):
    """Makes torch report (or deny) native bf16 on this CPU; returns the switch."""

    def report(supported, amx=False):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: supported)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)

    return report


def test_auto_is_fp32_without_native_bf16_and_says_why(cpu_bf16, caplog, tiny_encoder, tmp_path):
    cpu_bf16(False)
    with caplog.at_level(logging.INFO, logger="mtlser_lobes.precision"):
        assert resolve_precision("auto", "cpu") == "fp32"
        model = MTLSER.untrained(tiny_encoder, str(tmp_path / "cache"))  # the interface's default
    assert model.encoder_dtype == torch.float32
    lines = [r.getMessage() for r in caplog.records if r.name == "mtlser_lobes.precision"]
    assert len(lines) == 2 and all(line.startswith("precision auto: fp32 (CPU ") for line in lines)
    assert "without AVX-512 BF16 or AMX" in lines[0]


@pytest.mark.parametrize("avx512_bf16, amx, why", [(True, False, "with AVX-512 BF16"), (False, True, "with AMX")])
def test_auto_is_bf16_where_the_cpu_has_it(cpu_bf16, caplog, tiny_encoder, tmp_path, avx512_bf16, amx, why):
    cpu_bf16(avx512_bf16, amx=amx)
    with caplog.at_level(logging.INFO, logger="mtlser_lobes.precision"):
        model = MTLSER.untrained(tiny_encoder, str(tmp_path / "cache"), run_opts={"device": "cpu"})
    assert model.encoder_dtype == torch.bfloat16
    assert model.mods.wav2vec2.model.encoder.layers[0].attention.q_proj.weight.dtype == torch.bfloat16
    [line] = [r.getMessage() for r in caplog.records if r.name == "mtlser_lobes.precision"]
    assert line.startswith("precision auto: bf16") and why in line


def test_explicit_bf16_without_native_support_runs_with_a_warning(cpu_bf16, caplog, tiny_encoder, tmp_path):
    cpu_bf16(False)
    with caplog.at_level(logging.INFO, logger="mtlser_lobes.precision"):
        model = MTLSER.untrained(tiny_encoder, str(tmp_path / "cache"), run_opts={"device": "cpu", "precision": "bf16"})
    assert model.encoder_dtype == torch.bfloat16  # still what was asked for
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "mtlser_lobes.precision"]
    assert "without native bf16" in warning.getMessage() and "27x" in warning.getMessage()
    cpu_bf16(True)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mtlser_lobes.precision"):
        assert resolve_precision("bf16", "cpu") == "bf16"
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
    with pytest.raises(ValueError, match="one of auto"):
        resolve_precision("int4", "cpu")


def test_cpu_features_name_the_instruction_sets(cpu_bf16):
    cpu_bf16(False)
    features = cpu_features()
    assert features["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert features["avx512_bf16"] is False and features["amx"] is False
    assert isinstance(features["vnni"], bool) and features["cpu_model"]
    without_torch = cpu_features(use_torch=False)  # what the torch-free ONNX path sees
    assert set(without_torch) == set(features) and "VNNI" in int8_note(without_torch)


def test_training_resolves_auto_on_the_command_line_and_in_the_yaml(cpu_bf16, caplog):
    import recipe_options
    from speechbrain.utils.run_opts import RunOptions

    cpu_bf16(False)
    argv, auto = recipe_options.resolve_auto_precision(["hparams/mtl.yaml", "--precision", "auto", "--eval_precision=auto",
                                               "--alpha", "0.1"])
    assert argv == ["hparams/mtl.yaml", "--precision", "fp32", "--eval_precision=fp32", "--alpha", "0.1"]
    assert auto == {"precision", "eval_precision"}
    cpu_bf16(True)
    assert recipe_options.resolve_auto_precision(["h.yaml", "--precision=auto"])[0] == ["h.yaml", "--precision=bf16"]
    hparams = {"precision": "auto", "eval_precision": "fp32"}
    with caplog.at_level(logging.INFO, logger="mtlser_lobes.precision"):
        recipe_options.choose_precision(hparams, RunOptions(), set())
    assert hparams == {"precision": "bf16", "eval_precision": "fp32"}
    assert any(r.getMessage().startswith("precision auto: bf16") for r in caplog.records)
