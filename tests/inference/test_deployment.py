"""Deployment: safe loading of shared model folders, ONNX export and the ONNX Runtime interface.

On the model trained by the shared fixture (conftest ``trained_experiment``), exported again with
``mtlser-export --onnx`` into a folder of this module's own.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from mtlser_lobes.helpers import prepared_rows
from mtlser_lobes.precision import REFERENCE_RUN_OPTS

pytestmark = pytest.mark.slow

EMOTIONS = ("neu", "hap", "ang", "sad")


def _cli(module, args, **kwargs):
    """Runs ``mtlser_lobes.inference.<module>:main(ARGS)`` as a user runs the console script."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-c", f"import sys; from mtlser_lobes.inference.{module} import main; "
                           "sys.exit(main(sys.argv[1:]))", *args],
                          env=env, capture_output=True, text=True, timeout=900, **kwargs)


@pytest.fixture(scope="module")
def exported(trained_experiment, tmp_path_factory):
    """``mtlser-export EXPERIMENT MODEL --onnx``: a model folder with its ONNX export."""
    folder = str(tmp_path_factory.mktemp("deployment") / "model")
    result = _cli("export", [trained_experiment["folder"], folder, "--onnx"])
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip() == folder
    return folder


@pytest.fixture(scope="module")
def test_wavs(trained_experiment):
    rows = prepared_rows(os.path.join(trained_experiment["folder"], "test.csv"), trained_experiment["data"])
    return [row["wav"] for row in rows]


@pytest.fixture(scope="module")
def torch_model(exported):
    from mtlser_lobes.inference.interface import MTLSER

    return MTLSER.from_hparams(source=exported, run_opts=REFERENCE_RUN_OPTS)


# ------------------------------------------------------------------- safe loading
_PAYLOADS = {
    "hyperpyyaml_apply": 'pwned: !apply:os.system ["touch {marker}"]',
    "pyyaml_python_tag": 'pwned: !!python/object/apply:os.system ["touch {marker}"]',
    "hyperpyyaml_name": 'pwned: !apply:subprocess.call [["touch", "{marker}"]]',
}


def _tampered(model_folder, folder, payload):
    """A copy of the model folder whose hyperparams.yaml runs ``payload`` when loaded; its line."""
    shutil.copytree(model_folder, folder)
    path = os.path.join(folder, "hyperparams.yaml")
    lines = open(path, encoding="utf-8").read().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("blank_index:")) + 1
    lines.insert(at, payload)
    with open(path, "w", encoding="utf-8") as fout:
        fout.write("\n".join(lines) + "\n")
    return at + 1


def test_every_exported_folder_loads_safely(exported, trained_experiment):
    from mtlser_lobes.inference.interface import MTLSER
    from mtlser_lobes.inference.safe_loading import check_hyperparams

    for folder in (exported, trained_experiment["model"]):
        check_hyperparams(os.path.join(folder, "hyperparams.yaml"))
        model = MTLSER.from_hparams(source=folder)  # trust="safe" is the default
        assert model.emotion_classes == list(EMOTIONS)


def test_a_folder_exported_before_the_package_layout_still_loads(exported, test_wavs, tmp_path):
    """Folders written before export moved to ``mtlser_lobes.inference`` name ``mtlser_lobes.export``."""
    from mtlser_lobes.inference.interface import MTLSER

    legacy = str(tmp_path / "legacy")
    shutil.copytree(exported, legacy)
    path = os.path.join(legacy, "hyperparams.yaml")
    text = open(path, encoding="utf-8").read()
    assert "mtlser_lobes.inference.export.load_safetensors" in text
    with open(path, "w", encoding="utf-8") as fout:
        fout.write(text.replace("mtlser_lobes.inference.export.", "mtlser_lobes.export."))
    old = MTLSER.from_hparams(source=legacy, run_opts={"device": "cpu"})  # trust="safe"
    new = MTLSER.from_hparams(source=exported, run_opts={"device": "cpu"})
    assert old.predict_file(test_wavs[0]) == new.predict_file(test_wavs[0])


@pytest.mark.parametrize("kind", sorted(_PAYLOADS))
def test_a_tampered_folder_is_refused_and_its_payload_never_runs(exported, tmp_path, kind):
    from mtlser_lobes.inference.interface import MTLSER
    from mtlser_lobes.inference.safe_loading import UnsafeModelError

    marker = tmp_path / "payload_ran"
    folder = str(tmp_path / "tampered")
    line = _tampered(exported, folder, _PAYLOADS[kind].format(marker=marker))
    with pytest.raises(UnsafeModelError, match=f"line {line}: "):
        MTLSER.from_hparams(source=folder)
    assert not marker.exists()

    wav = str(tmp_path / "a.wav")
    soundfile.write(wav, 0.1 * np.sin(np.arange(16000) / 5.0), 16000)
    result = _cli("cli", [folder, wav])
    assert result.returncode == 2
    assert "refused to load" in result.stderr and f"line {line}:" in result.stderr
    assert "Traceback" not in result.stderr
    assert not marker.exists()

    # the payload is real: trusting the folder runs it
    result = _cli("cli", [folder, wav, "--trust", "all", "--quiet"])
    assert marker.exists(), result.stderr[-2000:]


# --------------------------------------------------------------------------- ONNX
def test_onnx_folder_holds_graphs_and_a_json_config_only(exported):
    names = sorted(os.listdir(os.path.join(exported, "onnx")))
    assert names == ["config.json", "model.int8.onnx", "model.onnx"]
    config = json.load(open(os.path.join(exported, "onnx", "config.json")))
    assert config["emotion_classes"] == list(EMOTIONS)
    assert len(config["speaker_centroids"]) == len(config["speakers"]) == 8


def test_onnx_answers_as_pytorch_does(exported, torch_model, test_wavs):
    from mtlser_lobes.inference.onnx_runtime import OnnxMTLSER

    model = OnnxMTLSER(exported)
    paths = test_wavs[:12]
    expected = torch_model.predict_files(paths, batch_size=4)
    for answers in (model.predict_files(paths, batch_size=4), [model.predict_file(p) for p in paths]):
        for answer, reference in zip(answers, expected):
            assert answer.error is None
            assert answer.emotion == reference.emotion
            assert answer.text == reference.text
            assert answer.speaker == reference.speaker
            assert answer.speaker_score == pytest.approx(reference.speaker_score, abs=1e-4)
            for label in EMOTIONS:
                assert answer.probabilities[label] == pytest.approx(reference.probabilities[label], abs=1e-4)


def test_int8_onnx_answers_close_to_pytorch(exported, torch_model, test_wavs):
    """model.int8.onnx: int8 matrix products and feature-encoder convolutions, on the trained model's test turns."""
    from mtlser_lobes.inference.onnx_runtime import OnnxMTLSER

    expected = torch_model.predict_files(test_wavs, batch_size=4)
    answers = OnnxMTLSER(exported, quantized=True).predict_files(test_wavs, batch_size=4)
    same = sum(a.emotion == e.emotion for a, e in zip(answers, expected))
    diff = max(abs(a.probabilities[c] - e.probabilities[c]) for a, e in zip(answers, expected) for c in EMOTIONS)
    assert all(a.error is None for a in answers)
    assert same >= 0.9 * len(test_wavs)
    assert diff < 0.1


def test_onnx_timeline_enrolment_and_bad_input(exported, torch_model, test_wavs, tmp_path):
    from mtlser_lobes.data.audio import AudioError
    from mtlser_lobes.inference.onnx_runtime import OnnxMTLSER

    model = OnnxMTLSER(exported)
    long_wav = str(tmp_path / "long.wav")
    audio = np.concatenate([soundfile.read(p, dtype="float32")[0] for p in test_wavs[:6]])
    soundfile.write(long_wav, audio, 16000)
    timeline, reference = model.predict_file(long_wav, segment_s=2.0), torch_model.predict_file(long_wav, segment_s=2.0)
    assert [s.emotion for s in timeline.segments] == [s.emotion for s in reference.segments]
    assert [s.start_s for s in timeline.segments] == [s.start_s for s in reference.segments]
    assert timeline.emotion == reference.emotion and timeline.speaker == reference.speaker

    assert model.enroll("anna", test_wavs[:2]) == 2
    torch_model.enroll("anna", test_wavs[:2])
    model.enrolled_only = torch_model.enrolled_only = True  # anna or "unknown"
    try:
        ours, theirs = model.predict_file(test_wavs[0]), torch_model.predict_file(test_wavs[0])
        assert model.speakers == ["anna"]
        assert ours.speaker == theirs.speaker
        assert ours.speaker_score == pytest.approx(theirs.speaker_score, abs=1e-4)
        assert ours.speaker_score > 0.5  # one of the recordings anna was enrolled from
    finally:
        torch_model.forget("anna")
        torch_model.enrolled_only = False

    silent = str(tmp_path / "silent.wav")
    soundfile.write(silent, np.zeros(16000, dtype="float32"), 16000)
    with pytest.raises(AudioError, match="is silent"):
        model.predict_file(silent)
    answers = model.predict_files([silent, test_wavs[0]])
    assert "is silent" in answers[0].error and answers[1].emotion in EMOTIONS


_NO_TORCH = """
import sys

class NoTorch:  # any `import torch` fails, as where torch is not installed
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ImportError(f"No module named {name!r} (blocked by the test)")

sys.meta_path.insert(0, NoTorch())
from mtlser_lobes.inference.cli import main
status = main(sys.argv[1:])
assert "torch" not in sys.modules
sys.exit(status)
"""


def test_onnx_cli_runs_without_torch(exported, test_wavs, tmp_path):
    """mtlser-infer --backend onnx never imports torch: it runs where torch cannot be imported."""
    stereo = str(tmp_path / "stereo_8k.wav")
    audio = soundfile.read(test_wavs[1], dtype="float32")[0][::2]
    soundfile.write(stereo, np.stack([audio, audio], axis=1), 8000)
    code = _NO_TORCH
    for backend in ("onnx", "onnx-int8"):
        result = subprocess.run([sys.executable, "-c", code, exported, test_wavs[0], stereo, "--json",
                                 "--backend", backend], capture_output=True, text=True, timeout=300,
                                env=dict(os.environ, HF_HUB_OFFLINE="1"))
        assert result.returncode == 0, result.stderr[-3000:]
        answers = [json.loads(line) for line in result.stdout.splitlines()]
        assert [a["source"] for a in answers] == [test_wavs[0], stereo]
        assert all(a["emotion"] in EMOTIONS and a["error"] is None for a in answers)
        assert f"{stereo}: 8000 Hz stereo: resampled to 16000 Hz mono" in result.stderr


def test_onnx_cli_refuses_a_folder_without_an_onnx_export(trained_experiment, test_wavs):
    result = _cli("cli", [trained_experiment["model"], test_wavs[0], "--backend", "onnx"])
    assert result.returncode == 2
    assert "mtlser-export --onnx" in result.stderr and "Traceback" not in result.stderr


def test_onnx_export_of_the_ctc_blocks(tmp_path, tiny_encoder):
    """A transformer CTC block exports (checked against torch by the export); an LSTM block is refused."""
    from mtlser_lobes.heads import CTCHead
    from mtlser_lobes.inference.interface import MTLSER
    from mtlser_lobes.inference.onnx_export import export_loaded_model
    from mtlser_lobes.inference.onnx_runtime import OnnxMTLSER

    model = MTLSER.untrained(tiny_encoder, str(tmp_path / "cache"), run_opts=REFERENCE_RUN_OPTS)
    hidden = model.mods.wav2vec2.model.config.hidden_size
    model.mods.ctc_head = CTCHead(hidden, 29, block="transformer", block_size=32).eval()
    check = export_loaded_model(model, str(tmp_path / "onnx"), quantize=False)
    assert max(check["max_difference"].values()) <= 1e-4
    wav = (0.1 * np.sin(np.arange(24000) / 7.0)).astype("float32")
    soundfile.write(str(tmp_path / "a.wav"), wav, 16000)
    assert OnnxMTLSER(str(tmp_path / "onnx")).predict_file(str(tmp_path / "a.wav")).emotion in EMOTIONS

    model.mods.ctc_head = CTCHead(hidden, 29, block="lstm", block_size=32).eval()
    with pytest.raises(ValueError, match="ctc_block: lstm"):
        export_loaded_model(model, str(tmp_path / "onnx_lstm"), quantize=False)
    assert not os.path.exists(tmp_path / "onnx_lstm")


def test_onnx_export_is_fp32_where_auto_would_pick_bf16(exported, tmp_path, monkeypatch):
    """On a CPU with AVX512-BF16 or AMX, ``auto`` loads the model in bf16; the ONNX export must not."""
    import mtlser_lobes.inference.interface as interface
    from mtlser_lobes.inference.interface import MTLSER
    from mtlser_lobes.inference.onnx_export import export_loaded_model, export_onnx

    real = interface.resolve_precision
    monkeypatch.setattr(interface, "resolve_precision",
                        lambda precision, device="cpu", log=True: real("bf16" if precision == "auto" else precision,
                                                                       device, log))
    assert MTLSER.from_hparams(source=exported, run_opts={"device": "cpu"}).precision == "bf16"
    check = export_onnx(exported, str(tmp_path / "onnx"), quantize=False)
    assert max(check["max_difference"].values()) <= 1e-4
    bf16 = MTLSER.from_hparams(source=exported, run_opts={"device": "cpu", "precision": "bf16"})
    with pytest.raises(ValueError, match="fp32"):
        export_loaded_model(bf16, str(tmp_path / "onnx_bf16"), quantize=False)
    assert not os.path.exists(tmp_path / "onnx_bf16")


def test_the_exported_input_checks_are_the_trainings(small_experiment, tmp_path):
    """min_duration_s and silence_peak travel from the experiment's hparams into the model folder."""
    from mtlser_lobes.data.audio import AudioError
    from mtlser_lobes.inference.export import export_model
    from mtlser_lobes.inference.interface import MTLSER

    experiment = str(tmp_path / "experiment")
    shutil.copytree(small_experiment["folder"], experiment, ignore=shutil.ignore_patterns("model"))
    path = os.path.join(experiment, "hyperparams.yaml")
    with open(path) as fin:
        text = fin.read()
    assert "\nmin_duration_s: 0.1\n" in text
    with open(path, "w") as fout:  # as if trained with --min_duration_s 0.3
        fout.write(text.replace("\nmin_duration_s: 0.1\n", "\nmin_duration_s: 0.3\n"))
    model_folder = export_model(experiment, str(tmp_path / "model"))
    model = MTLSER.from_hparams(source=model_folder, run_opts={"device": "cpu"})
    assert model.hparams.min_duration_s == 0.3 and model.hparams.silence_peak == 1.0e-4
    rng = np.random.default_rng(0)
    short = str(tmp_path / "short.wav")  # 0.2 s: long enough for the default, not for this model
    soundfile.write(short, (0.1 * rng.standard_normal(3200)).astype("float32"), 16000)
    with pytest.raises(AudioError, match="short"):
        model.predict_file(short)
