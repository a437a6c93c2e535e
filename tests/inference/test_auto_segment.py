"""Long files without segment_s are streamed in windows automatically, in bounded memory."""

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile


def _noise_wav(path, seconds, seed=0):
    """Speech-level noise, written block by block (the test itself never holds it all)."""
    rng = np.random.default_rng(seed)
    with soundfile.SoundFile(str(path), "w", 16000, 1, subtype="PCM_16") as out:
        for start in range(0, seconds, 10):
            out.write((0.1 * rng.standard_normal(16000 * min(10, seconds - start))).astype("float32"))
    return str(path)


@pytest.fixture(scope="module")
def model(tiny_encoder, tmp_path_factory):
    from mtlser_lobes.inference.interface import MTLSER

    return MTLSER.untrained(tiny_encoder, savedir=str(tmp_path_factory.mktemp("encoder")))


def test_a_file_over_60_s_is_answered_by_a_timeline_with_a_log_line(model, tmp_path, caplog):
    from mtlser_lobes.inference.interface import Prediction, Timeline

    long = _noise_wav(tmp_path / "long.wav", 75)
    short = _noise_wav(tmp_path / "short.wav", 30)
    with caplog.at_level(logging.INFO, logger="mtlser_lobes.inference"):
        timeline = model.predict_file(long)
    assert f"{long}: 75 s is longer than 60 s: answered in windows of 10 s" in caplog.text
    assert isinstance(timeline, Timeline)
    assert [(s.start_s, s.end_s) for s in timeline.segments][-2:] == [(60.0, 70.0), (70.0, 75.0)]
    # It answers like a Prediction: the overall fields read directly.
    assert timeline.emotion == timeline.overall.emotion and timeline.duration_s == 75.0
    assert timeline.to_dict() == model.predict_file(long, segment_s=10).to_dict()

    assert isinstance(model.predict_file(short), Prediction)
    batch = model.predict_files([short, long, short], batch_size=2)
    assert [type(p).__name__ for p in batch] == ["Prediction", "Timeline", "Prediction"]
    assert batch[1].to_dict() == timeline.to_dict()
    assert batch[0].to_dict() == batch[2].to_dict()

    model.auto_segment_after_s = None  # off: decoded whole, as before
    try:
        assert isinstance(model.predict_file(long), Prediction)
    finally:
        model.auto_segment_after_s = type(model).auto_segment_after_s


_PEAK_MEMORY = """
import json, resource, sys
from mtlser_lobes.inference.interface import MTLSER
model = MTLSER.untrained(sys.argv[1], savedir=sys.argv[2])
answer = model.predict_file(sys.argv[3])  # no segment_s
print(json.dumps({"peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "windows": len(answer.segments)}))
"""


def test_automatic_segmentation_keeps_memory_bounded(tiny_encoder, tmp_path):
    runs = {}
    for minutes in (2, 12):
        path = _noise_wav(tmp_path / f"{minutes}min.wav", 60 * minutes, seed=minutes)
        result = subprocess.run(
            [sys.executable, "-c", _PEAK_MEMORY, tiny_encoder, str(tmp_path / "encoder"), path],
            capture_output=True, text=True, timeout=600, env=dict(os.environ, HF_HUB_OFFLINE="1"),
        )
        assert result.returncode == 0, result.stderr[-3000:]
        runs[minutes] = json.loads(result.stdout.strip().splitlines()[-1])
    assert runs[2]["windows"] == 12 and runs[12]["windows"] == 72
    # Decoded whole, 10 more minutes are 38 MB of float32 (more once copied); streamed, the
    # peak stays within a few MB.
    growth_mib = (runs[12]["peak_kib"] - runs[2]["peak_kib"]) / 1024
    assert growth_mib < 20, f"peak memory grew by {growth_mib:.0f} MiB from 2 to 12 minutes"
