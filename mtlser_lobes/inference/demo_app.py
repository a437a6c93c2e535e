"""``mtlser-demo``: try a trained model in the browser (Gradio).

::

    pip install -e ".[demo]"
    mtlser-demo MODEL_DIR [--host 127.0.0.1] [--port 7860] [--device cpu] [--precision auto] [--window_s 10] [--trust safe|all]

then open http://127.0.0.1:7860. Record from the microphone or upload a file:
the page shows the emotion with a bar per class probability, the transcript,
the speaker (or "unknown") with its cosine score, and, for a recording longer
than one window, the emotion timeline (:func:`mtlser_lobes.inference.plots.plot_timeline`)
with a table of the windows below it. "Enroll this speaker" adds the voice of
the current recording under a name (:meth:`~mtlser_lobes.inference.interface.MTLSER.enroll`;
each further recording under the same name is added to it); later answers name
that speaker. The model card's test metrics are shown at the bottom.

Audio that cannot be answered (silent, too short, undecodable, ...) gets the
reason as a message in the page, never a traceback. The enrolled speakers live
in the server process (shared by every open page) until it stops.

The functions behind the page work without a browser::

    demo = Demo.from_model_dir("results/.../model")
    answer = demo.analyse("speech.wav")
    answer.probabilities, answer.transcript, answer.speaker, answer.message
    demo.enroll("anna", "anna.wav")

Gradio is an optional extra, imported only by :meth:`Demo.build` and
:func:`main`: the rest of the package works without it.
"""

import argparse
import os
import shutil
import sys
import tempfile
import threading
from typing import NamedTuple

from speechbrain.utils.logger import get_logger

from mtlser_lobes.precision import PRECISIONS

logger = get_logger(__name__)

__all__ = ["Analysis", "Demo", "main", "model_card_metrics", "readable_error"]

#: What to do when Gradio is missing.
GRADIO_MISSING = 'the browser demo needs Gradio: pip install mtlser[demo] (from a clone: pip install -e ".[demo]")'
#: Columns of the windows table.
WINDOW_COLUMNS = ["start (s)", "end (s)", "emotion", "p", "speaker", "score", "transcript"]


def import_gradio():
    """Imports Gradio, or raises ImportError saying how to install it.

    Example
    -------
    >>> gr = import_gradio()  # the test extra installs it
    >>> gr.Blocks.__name__
    'Blocks'
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no network calls from the server
    try:
        import gradio
    except ImportError as error:
        raise ImportError(GRADIO_MISSING) from error
    return gradio


class Analysis(NamedTuple):
    """What the page shows for one recording (in the order of the page's outputs).

    ``probabilities`` maps each emotion to its probability (Gradio's Label
    draws it as bars), ``timeline`` is a matplotlib figure for a recording
    longer than one window (else None) and ``windows`` its rows; ``message``
    says what was answered, or why nothing could be.
    """

    probabilities: dict = None
    transcript: str = ""
    speaker: str = ""
    timeline: object = None
    windows: list = None
    message: str = ""


def readable_error(error, path):
    """An error's message with the temporary upload path replaced by the file's name.

    Example
    -------
    >>> readable_error(ValueError("/tmp/gradio/3f2a/rec.wav: is silent"), "/tmp/gradio/3f2a/rec.wav")
    'rec.wav: is silent'
    """
    return str(error).replace(str(path), os.path.basename(str(path)))


def model_card_metrics(model_dir):
    """The test results section of a model folder's ``model_card.md`` (Markdown).

    Arguments
    ---------
    model_dir : str
        A folder written by ``train.py`` or ``mtlser-export``.

    Returns
    -------
    str
        The section's text, or a sentence saying there is none.

    Example
    -------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with open(os.path.join(folder, "model_card.md"), "w") as card:
    ...     _ = card.write("# Card\\n\\n## Test results\\n\\n| UA (%) | 50.00 |\\n\\n## Files\\n\\nx\\n")
    >>> model_card_metrics(folder)
    '| UA (%) | 50.00 |'
    """
    path = os.path.join(str(model_dir), "model_card.md")
    if not os.path.isfile(path):
        return f"No model card in {model_dir}."
    with open(path, encoding="utf-8") as card:
        text = card.read()
    _, found, rest = text.partition("## Test results")
    if not found:
        return "The model card has no test results."
    return rest.split("\n## ", 1)[0].strip()


class Demo:
    """The demo's functions around one loaded model (what the page calls).

    Arguments
    ---------
    model : mtlser_lobes.inference.interface.MTLSER
        The loaded model.
    model_dir : str, optional
        Its folder (for the model card).
    window_s : float, optional
        Recordings longer than this are answered window by window, with a
        timeline; default the model's ``auto_segment_s`` (10 s).

    Example (a trained model is needed, so this is not run as a doctest)::

        demo = Demo.from_model_dir("results/.../model")
        demo.analyse("meeting.wav").timeline.savefig("meeting.png")
        demo.launch(port=7860)
    """

    def __init__(self, model, model_dir=None, window_s=None):
        self.model = model
        self.model_dir = model_dir
        self.window_s = float(window_s or model.auto_segment_s)
        self.metrics = model_card_metrics(model_dir) if model_dir else ""
        self._lock = threading.Lock()  # enrolment changes the model's speakers under predictions
        self._recordings = {}  # enrolled name -> copies of its recordings
        self._store = tempfile.mkdtemp(prefix="mtlser-demo-")

    @classmethod
    def from_model_dir(cls, model_dir, device="cpu", window_s=None, trust="safe", precision="auto"):
        """Loads the model folder (see :meth:`MTLSER.from_hparams`, ``trust`` included) and wraps it."""
        from mtlser_lobes.inference.interface import MTLSER

        model = MTLSER.from_hparams(source=model_dir, trust=trust,
                                    run_opts={"device": device, "precision": precision})
        return cls(model, model_dir=model_dir, window_s=window_s)

    # -------------------------------------------------------------- answers
    def _speaker_text(self, speaker, score):
        threshold = self.model.speaker_threshold
        if speaker == "unknown":
            return f"unknown (closest known speaker at cosine {score:.2f}, below the threshold {threshold:.2f})"
        return f"{speaker} (cosine {score:.2f}; threshold {threshold:.2f})"

    def _duration(self, path):
        """Duration from the header, or None when it cannot be read (the model then says why)."""
        import soundfile

        try:
            info = soundfile.info(path)
        except Exception:  # noqa: BLE001 (any header soundfile cannot read)
            return None
        return info.frames / info.samplerate if info.samplerate else None

    def analyse(self, path, window_s=None):
        """Answers one recording: what the page shows.

        Arguments
        ---------
        path : str
            An audio file (the page passes its upload or recording).
        window_s : float, optional
            Window length for long recordings (default: the demo's).

        Returns
        -------
        Analysis
            With ``message`` saying why, and the other fields empty, when the
            audio cannot be answered.
        """
        from mtlser_lobes.inference.interface import AudioError
        from mtlser_lobes.inference.plots import plot_timeline

        if not path:
            return Analysis(message="Record or upload some speech first.")
        window_s = float(window_s or self.window_s)
        if window_s < self.model.hparams.min_duration_s:
            return Analysis(message=f"The window must be at least {self.model.hparams.min_duration_s} s.")
        duration = self._duration(path)
        long = duration is not None and duration > window_s
        try:
            with self._lock:
                result = self.model.predict_file(path, segment_s=window_s if long else None)
        except (AudioError, ValueError) as error:
            return Analysis(message=f"**Could not analyse this audio:** {readable_error(error, path)}")
        except Exception as error:  # noqa: BLE001 (the page shows a message, the log the traceback)
            logger.exception(f"analysing {path} failed")
            return Analysis(message=f"**Unexpected error** (the server's log has the details): "
                                    f"{type(error).__name__}: {readable_error(error, path)}")
        overall = result.overall if long else result
        message = f"**{overall.emotion}** (p = {overall.probabilities[overall.emotion]:.2f}), " \
                  f"{overall.duration_s:.1f} s"
        timeline, windows = None, None
        if long:
            windows = []
            for segment in result.segments:
                if segment.error:
                    windows.append([segment.start_s, segment.end_s, "-", None, "-", None,
                                    readable_error(segment.error, path)])
                else:
                    windows.append([segment.start_s, segment.end_s, segment.emotion,
                                    round(segment.probabilities[segment.emotion], 3), segment.speaker,
                                    round(segment.speaker_score, 3), segment.text])
            timeline = plot_timeline(result, title=f"{overall.duration_s:.1f} s in windows of {window_s:g} s")
            skipped = sum(1 for s in result.segments if s.error)
            message += f" in {len(result.segments)} windows of {window_s:g} s"
            if skipped:
                message += f" ({skipped} not answered: see the table)"
        return Analysis(
            probabilities=dict(overall.probabilities),
            transcript=overall.text,
            speaker=self._speaker_text(overall.speaker, overall.speaker_score),
            timeline=timeline,
            windows=windows,
            message=message + ".",
        )

    def enroll(self, name, path):
        """Adds the voice of a recording to the speaker ``name`` (creating it).

        Every recording enrolled under one name is kept and the speaker is
        re-enrolled from all of them.

        Returns
        -------
        str
            What was done, or why not (Markdown).
        """
        from mtlser_lobes.inference.interface import AudioError

        name = (name or "").strip()
        if not name:
            return "Type the speaker's name first."
        if not path:
            return "Record or upload a recording of this speaker first."
        copy = os.path.join(self._store, f"{len(os.listdir(self._store))}{os.path.splitext(path)[1]}")
        shutil.copyfile(path, copy)
        recordings = self._recordings.get(name, []) + [copy]
        try:
            with self._lock:
                self.model.enroll(name, recordings)
        except (AudioError, ValueError) as error:
            os.remove(copy)
            reason = str(error).replace(copy, os.path.basename(str(path)))
            return f"**Could not enroll {name}:** {reason}"
        self._recordings[name] = recordings
        enrolled = ", ".join(sorted(self.model.enrolled))
        return f"Enrolled **{name}** from {len(recordings)} recording(s). Enrolled speakers: {enrolled}."

    # ----------------------------------------------------------------- page
    def build(self):
        """The Gradio page (``gradio.Blocks``); its events are also an API (``/analyse``, ``/enroll``)."""
        gr = import_gradio()
        classes = ", ".join(self.model.emotion_classes)
        with gr.Blocks(title="MTLSER demo", analytics_enabled=False) as page:
            gr.Markdown(
                "# MTLSER: emotion, transcript and speaker\n"
                f"Record or upload speech. Emotions: {classes}. Recordings longer than the window are "
                "answered window by window, with a timeline."
            )
            with gr.Row():
                with gr.Column():
                    audio = gr.Audio(sources=["microphone", "upload"], type="filepath", label="Speech",
                                     elem_id="audio")
                    window = gr.Slider(1, 60, value=self.window_s, step=1, label="Window (s)",
                                       elem_id="window")
                    button = gr.Button("Analyse", variant="primary", elem_id="analyse")
                with gr.Column():
                    emotion = gr.Label(num_top_classes=len(self.model.emotion_classes), label="Emotion",
                                       elem_id="emotion")
                    transcript = gr.Textbox(label="Transcript", interactive=False, elem_id="transcript")
                    speaker = gr.Textbox(label="Speaker", interactive=False, elem_id="speaker")
            message = gr.Markdown(elem_id="message")
            timeline = gr.Plot(label="Emotion over time", format="png", elem_id="timeline")
            windows = gr.Dataframe(headers=WINDOW_COLUMNS, label="Windows", interactive=False, wrap=True,
                                   column_widths=["9%", "9%", "9%", "7%", "12%", "8%", "46%"],
                                   elem_id="windows")
            with gr.Accordion("Enroll this speaker", open=False):
                gr.Markdown("Adds the voice of the recording above under a name; record or upload more "
                            "recordings and enroll them under the same name to make it surer.")
                with gr.Row():
                    name = gr.Textbox(label="Name", elem_id="enroll_name")
                    enroll = gr.Button("Enroll this speaker", elem_id="enroll")
                enrolled = gr.Markdown(elem_id="enrolled")
            with gr.Accordion("Model card: test metrics", open=True):
                gr.Markdown(self.metrics or "No model card given.", elem_id="metrics")

            def answer(path, window_s):
                result = self.analyse(path, window_s)
                table = result.windows if result.windows is not None else []
                return (result.probabilities, result.transcript, result.speaker, result.timeline,
                        gr.Dataframe(value=table, headers=WINDOW_COLUMNS, visible=result.windows is not None),
                        result.message)

            gr.on([audio.upload, audio.stop_recording, button.click], answer, inputs=[audio, window],
                  outputs=[emotion, transcript, speaker, timeline, windows, message], api_name="analyse")
            enroll.click(self.enroll, inputs=[name, audio], outputs=enrolled, api_name="enroll")
        return page

    def launch(self, host="127.0.0.1", port=7860, **kwargs):
        """Builds the page and serves it (blocks until stopped)."""
        return self.build().launch(server_name=host, server_port=port, show_error=False, **kwargs)


def _parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="mtlser-demo",
        description="Browser demo of a model folder written by train.py or mtlser-export: microphone or "
        "upload; emotion, transcript, speaker, timeline; speaker enrolment.",
    )
    parser.add_argument("model_dir", help="exported model folder (holds hyperparams.yaml)")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default: 127.0.0.1, "
                        "this machine only; 0.0.0.0 serves the network)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default: cpu)")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="encoder precision; auto (default): bf16 where the device runs it natively, "
                        "else fp32")
    parser.add_argument("--window_s", type=float, default=None,
                        help="recordings longer than this are answered in windows of it (default: 10)")
    parser.add_argument("--trust", default="safe", choices=["safe", "all"],
                        help="safe: refuse a hyperparams.yaml that names code other than the classes an "
                        "exported model uses (default); all: load anything (folders you trust only)")
    return parser.parse_args(argv)


def main(argv=None):
    """Entry point of ``mtlser-demo``; returns the exit status."""
    from mtlser_lobes.quiet import silence_library_noise

    silence_library_noise()
    args = _parse_args(argv)
    if not os.path.isfile(os.path.join(args.model_dir, "hyperparams.yaml")):
        print(f"mtlser-demo: error: {args.model_dir} is not a model folder (no hyperparams.yaml); see "
              "mtlser-export", file=sys.stderr)
        return 2
    try:
        import_gradio()
    except ImportError as error:
        print(f"mtlser-demo: error: {error}", file=sys.stderr)
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from mtlser_lobes.inference.cli import UsageError, _log_to_stderr, check_device, check_precision

    try:
        check_device(args.device)
        check_precision(args.precision, args.device)
    except UsageError as error:
        print(f"mtlser-demo: error: {error}", file=sys.stderr)
        return 2
    _log_to_stderr(quiet=False)
    from mtlser_lobes.inference.safe_loading import UnsafeModelError

    try:
        demo = Demo.from_model_dir(args.model_dir, device=args.device, window_s=args.window_s, trust=args.trust,
                                   precision=args.precision)
    except UnsafeModelError as error:
        print(f"mtlser-demo: error: refused to load: {error}", file=sys.stderr)
        return 2
    demo.launch(host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
