"""mtlser-infer --plot and plot_timeline: the emotion timeline of one recording, as a PNG."""

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from conftest import ROOT
from recipe_helpers import conversation, experiment_rows

pytestmark = pytest.mark.slow


def test_cli_plot_writes_the_timeline_png(small_experiment, tmp_path):
    from PIL import Image

    from mtlser_lobes.inference.plots import FIGURE_DPI, FIGURE_SIZE

    wav = conversation(small_experiment, str(tmp_path / "talk.wav"), 12)
    duration = soundfile.info(wav).duration
    png = str(tmp_path / "talk.png")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "-m", "mtlser_lobes.inference.cli", small_experiment["model"], wav,
                             "--segment_s", "3", "--plot", png, "--json"],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"timeline written to {png}" in result.stderr
    with Image.open(png) as image:
        assert image.format == "PNG"
        assert image.size == (int(FIGURE_SIZE[0] * FIGURE_DPI), int(FIGURE_SIZE[1] * FIGURE_DPI))
        assert len(set(image.convert("RGB").getdata())) > 50  # drawn, not blank

    # The same figure from Python, from the JSON line mtlser-infer printed: its axes.
    import json

    from mtlser_lobes.inference.plots import plot_timeline

    answer = json.loads(result.stdout.strip().splitlines()[-1])
    windows = answer["segments"]
    assert len(windows) == int(np.ceil(duration / 3))
    figure = plot_timeline(answer)
    probabilities, speakers, transcripts = figure.axes
    assert probabilities.get_xlim() == pytest.approx((0, duration), abs=1e-3)
    assert probabilities.get_ylim() == (0, 1) and probabilities.get_ylabel() == "probability"
    assert transcripts.get_xlabel() == "time (s)"
    legend = [text.get_text() for text in probabilities.get_legend().get_texts()]
    assert legend == list(answer["overall"]["probabilities"])
    # one stacked bar per class per answered window (one hatched bar for a window not answered);
    # the winner written above each answered window
    answered = [w for w in windows if not w["error"]]
    assert len(answered) >= 3
    assert len(probabilities.patches) == sum(len(legend) if not w["error"] else 1 for w in windows)
    winners = [t.get_text() for t in probabilities.texts if t.get_text() in legend]
    assert winners == [w["emotion"] for w in answered]
    # speaker names and scores per answered window; a dashed line at each change of speaker
    labels = [t.get_text() for t in speakers.texts]
    assert labels == [f"{w['speaker']}\n{w['speaker_score']:.2f}" for w in answered]
    changes = sum(1 for a, b in zip(answered, answered[1:]) if a["speaker"] != b["speaker"])
    assert len(speakers.lines) == changes
    assert f"{duration:.1f} s" in figure._suptitle.get_text()


def test_a_short_file_is_one_window_and_bad_plot_arguments_exit_2(small_experiment, tmp_path, capsys):
    from PIL import Image

    from mtlser_lobes.inference import cli

    wav = experiment_rows(small_experiment)[0]["wav"]
    png = str(tmp_path / "one.png")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "-m", "mtlser_lobes.inference.cli", small_experiment["model"], wav, "--plot", png,
                             "--quiet"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = result.stdout.strip().splitlines()[1:]
    assert [row.split()[1] for row in rows] == ["all", "0.0"]  # one 10 s window
    with Image.open(png) as image:
        assert image.size[0] > 0

    # checked before the model is loaded: one line, exit status 2
    assert cli.main([small_experiment["model"], wav, wav, "--plot", png]) == 2
    assert capsys.readouterr().err.startswith("mtlser-infer: error: --plot draws the timeline of one file; 2 were given")
    assert cli.main([small_experiment["model"], wav, "--plot", str(tmp_path / "missing" / "x.png")]) == 2
    assert f"--plot {tmp_path / 'missing' / 'x.png'}: no folder" in capsys.readouterr().err
