"""mtlser-demo, the browser demo: its functions directly, its server through gradio_client, its page in
a real headless Chromium (Debian's package, driven by Playwright)."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
import soundfile

from conftest import ROOT
from recipe_helpers import conversation, experiment_rows

pytestmark = pytest.mark.slow

#: Where the browser test also writes its screenshot (docs/demo.md: docs/demo_screenshot.png), when set.
DOCS_DIR = os.environ.get("MTLSER_DOCS_DIR")
WINDOW_S = 4


@pytest.fixture(scope="module")
def audio(small_experiment, tmp_path_factory):
    """A short turn, a 14 s conversation (longer than a window), a non-audio file and a silent one."""
    folder = tmp_path_factory.mktemp("demo_audio")
    rows = experiment_rows(small_experiment)
    bad = str(folder / "notes.wav")
    with open(bad, "w") as f:
        f.write("this is not audio\n")
    silent = str(folder / "silence.wav")
    soundfile.write(silent, np.zeros(16000, dtype="float32"), 16000)
    return {
        "short": rows[0]["wav"],
        "long": conversation(small_experiment, str(folder / "conversation.wav"), 14),
        "bad": bad,
        "silent": silent,
        "other_speaker": next(r["wav"] for r in rows if r["spk_id"] != rows[0]["spk_id"]),
    }


@pytest.fixture(scope="module")
def model(small_experiment):
    from mtlser_lobes.inference.interface import MTLSER

    return MTLSER.from_hparams(source=small_experiment["model"], run_opts={"device": "cpu"})


def test_analyse_and_enroll_directly(small_experiment, model, audio):
    from mtlser_lobes.inference.demo_app import WINDOW_COLUMNS, Demo

    demo = Demo(model, model_dir=small_experiment["model"], window_s=WINDOW_S)
    try:
        # a short file: the model's answer, no timeline
        expected = model.predict_file(audio["short"])
        answer = demo.analyse(audio["short"])
        assert answer.probabilities == expected.probabilities
        assert answer.transcript == expected.text
        assert answer.speaker.startswith(f"{expected.speaker} (cosine {expected.speaker_score:.2f}")
        assert answer.timeline is None and answer.windows is None
        assert answer.message.startswith(f"**{expected.emotion}**")

        # a long file: windows, a timeline figure, the overall answer
        timeline = model.predict_file(audio["long"], segment_s=WINDOW_S)
        answer = demo.analyse(audio["long"])
        assert answer.probabilities == timeline.overall.probabilities
        n_windows = int(np.ceil(soundfile.info(audio["long"]).duration / WINDOW_S))
        assert len(answer.windows) == len(timeline.segments) == n_windows
        assert all(len(row) == len(WINDOW_COLUMNS) for row in answer.windows)
        assert [row[2] for row in answer.windows] == [s.emotion or "-" for s in timeline.segments]
        assert [ax.get_ylabel() for ax in answer.timeline.axes] == ["probability", "speaker", "transcript"]
        assert f"in {len(timeline.segments)} windows of {WINDOW_S} s" in answer.message

        # bad input: a readable message naming the file, nothing else
        cases = ((audio["bad"], "cannot be decoded as audio"), (audio["silent"], "is silent"), (None, ""))
        for path, reason in cases:
            answer = demo.analyse(path)
            assert answer.probabilities is None and answer.timeline is None and answer.transcript == ""
            if path is None:
                assert answer.message == "Record or upload some speech first."
            else:
                expected_message = f"**Could not analyse this audio:** {os.path.basename(path)}: {reason}"
                assert answer.message.startswith(expected_message)
            assert "Traceback" not in answer.message

        # enrolment: the speaker of this recording is named from now on
        assert demo.enroll("", audio["short"]) == "Type the speaker's name first."
        assert demo.enroll("guest", audio["silent"]).startswith("**Could not enroll guest:** silence.wav: is silent")
        assert "guest" not in model.enrolled
        message = demo.enroll("guest", audio["short"])
        assert message == "Enrolled **guest** from 1 recording(s). Enrolled speakers: guest."
        assert demo.analyse(audio["short"]).speaker.startswith("guest (cosine 1.00")
        assert demo.enroll("guest", audio["short"]).startswith("Enrolled **guest** from 2 recording(s)")
        trained = model.trained_speakers[0]
        assert "training speaker" in demo.enroll(trained, audio["short"])

        assert "| UA (%) |" in demo.metrics
    finally:
        model.enrolled = {}


def test_the_command_says_what_is_wrong_in_one_line(tmp_path, monkeypatch, capsys):
    from mtlser_lobes.inference import demo_app

    assert demo_app.main([str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"mtlser-demo: error: {tmp_path} is not a model folder (no hyperparams.yaml); "
                                       "see mtlser-export\n")
    # a folder whose hyperparams.yaml would run code: refused (trust "safe", as in mtlser-infer)
    (tmp_path / "hyperparams.yaml").write_text("greeting: !apply:os.system [echo pwned]\n")
    assert demo_app.main([str(tmp_path), "--port", str(_free_port())]) == 2
    error = capsys.readouterr().err
    assert error.startswith("mtlser-demo: error: refused to load: ") and "os.system" in error, error
    monkeypatch.setitem(sys.modules, "gradio", None)  # as if the [demo] extra were not installed
    assert demo_app.main([str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"mtlser-demo: error: {demo_app.GRADIO_MISSING}\n"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(small_experiment, tmp_path_factory):
    """``mtlser-demo MODEL --port P`` in its own process, on 127.0.0.1; its URL once it answers."""
    port = _free_port()
    log = open(tmp_path_factory.mktemp("demo_server") / "server.log", "w+")
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "mtlser_lobes.inference.demo_app", small_experiment["model"], "--host", "127.0.0.1",
         "--port", str(port), "--window_s", str(WINDOW_S)],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 300
    try:
        while True:
            if process.poll() is not None:
                log.seek(0)
                pytest.fail(f"mtlser-demo exited with {process.returncode}:\n{log.read()[-4000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"mtlser-demo did not answer on {url}:\n{log.read()[-4000:]}")
            time.sleep(0.5)
        yield {"url": url, "log": log}
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def test_the_server_answers_through_gradio_client(server, model, audio):
    from gradio_client import Client, handle_file

    client = Client(server["url"], verbose=False)

    def analyse(path):
        return client.predict(handle_file(path), WINDOW_S, api_name="/analyse")

    # a short file: label with every class's probability, transcript, speaker; no timeline
    expected = model.predict_file(audio["short"])
    emotion, transcript, speaker, timeline, windows, message = analyse(audio["short"])
    assert emotion["label"] == expected.emotion
    assert {c["label"]: c["confidence"] for c in emotion["confidences"]} == pytest.approx(expected.probabilities)
    assert transcript == expected.text
    assert speaker.startswith(f"{expected.speaker} (cosine")
    assert timeline is None and windows["visible"] is False

    # a long file: the timeline (a PNG) and one row per window
    expected = model.predict_file(audio["long"], segment_s=WINDOW_S)
    emotion, transcript, speaker, timeline, windows, message = analyse(audio["long"])
    assert emotion["label"] == expected.overall.emotion
    assert timeline["type"] == "matplotlib" and timeline["plot"].startswith("data:image/png;base64,")
    assert windows["visible"] is True and windows["value"]["headers"][:3] == ["start (s)", "end (s)", "emotion"]
    assert [row[2] for row in windows["value"]["data"]] == [s.emotion or "-" for s in expected.segments]

    # a bad file: the reason in the message, the other outputs empty, no traceback
    emotion, transcript, speaker, timeline, windows, message = analyse(audio["bad"])
    assert message.startswith("**Could not analyse this audio:** notes.wav: cannot be decoded as audio")
    assert not emotion and transcript == "" and timeline is None
    server["log"].seek(0)
    assert "Traceback" not in message and "Traceback" not in server["log"].read()

    # enrolment through the page's action, then the same recording is named
    assert client.predict("visitor", handle_file(audio["other_speaker"]), api_name="/enroll").startswith(
        "Enrolled **visitor** from 1 recording(s)")
    emotion, transcript, speaker, timeline, windows, message = analyse(audio["other_speaker"])
    assert speaker.startswith("visitor (cosine 1.00")


def _chromium():
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def test_a_real_browser_uploads_a_recording_and_sees_the_answer(server, model, audio, tmp_path):
    chromium = _chromium()
    if chromium is None:
        message = ("headless browser test skipped: Debian's chromium is not installed "
                   "(apt-get update && apt-get install -y chromium, as .ci/run does)")
        print(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    expected = model.predict_file(audio["long"], segment_s=WINDOW_S).overall
    screenshot = str(tmp_path / "demo_screenshot.png")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(server["url"])
            page.locator("#audio").get_by_role("button", name="Upload file").click()  # the microphone is first
            page.locator("#audio input[type=file]").set_input_files(audio["long"])
            page.wait_for_function(
                "() => (document.querySelector('#message') || {}).innerText?.includes('windows of')",
                timeout=180_000,
            )
            page.locator("#timeline img").wait_for(timeout=60_000)
            emotion_text = page.locator("#emotion").inner_text()
            page_text = page.locator("body").inner_text()
            page.screenshot(path=screenshot, full_page=True)
        finally:
            browser.close()
    assert expected.emotion in emotion_text.split()
    for name in model.emotion_classes:
        assert name in emotion_text  # a bar per class
    assert "Traceback" not in page_text
    assert os.path.getsize(screenshot) > 10_000
    if DOCS_DIR:
        os.makedirs(DOCS_DIR, exist_ok=True)
        shutil.copy(screenshot, os.path.join(DOCS_DIR, "demo_screenshot.png"))
