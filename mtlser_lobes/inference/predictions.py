"""The answers of a model, whichever backend computed them (PyTorch or ONNX Runtime).

Plain dataclasses with no dependency, so the ONNX Runtime path
(:mod:`mtlser_lobes.inference.onnx_runtime`) answers without importing torch.

Example
-------
>>> p = Prediction(source="a.wav", emotion="ang", probabilities={"ang": 0.9, "neu": 0.1})
>>> p.to_dict()["emotion"]
'ang'
>>> Timeline(overall=p).emotion
'ang'
"""

import logging
import os
from dataclasses import asdict, dataclass, field

__all__ = [
    "Prediction", "Segment", "Timeline", "answer_files", "automatic_segment_s", "overall_answer",
    "predict_windows", "stream_windows",
]

logger = logging.getLogger(__name__)


@dataclass
class Prediction:
    """The model's answers for one utterance.

    ``probabilities`` maps every emotion class to its probability;
    ``speaker_score`` is the cosine similarity to the closest known speaker
    (``speaker`` is ``"unknown"`` below the model's threshold). ``error`` is set
    (and the answers are ``None``) when the input could not be processed.
    """

    source: str = None
    duration_s: float = None
    emotion: str = None
    probabilities: dict = None
    text: str = None
    speaker: str = None
    speaker_score: float = None
    error: str = None

    def to_dict(self):
        """A JSON-ready dict."""
        return asdict(self)


@dataclass
class Segment(Prediction):
    """A window of a long recording: a :class:`Prediction` with its time span."""

    start_s: float = None
    end_s: float = None


@dataclass
class Timeline:
    """A long recording: one answer per window and one for the whole file.

    ``overall`` averages the windows' emotion probabilities weighted by their
    duration, joins their transcripts and identifies the speaker from the mean
    of their speaker embeddings; silent or too-short windows are left out.
    The overall answer's fields read directly too (``timeline.emotion`` is
    ``timeline.overall.emotion``), so a file segmented automatically answers
    like any other.
    """

    overall: Prediction
    segments: list = field(default_factory=list)

    def __getattr__(self, name):
        if name in ("overall", "segments") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.overall, name)

    def to_dict(self):
        """A JSON-ready dict."""
        return {"overall": self.overall.to_dict(), "segments": [s.to_dict() for s in self.segments]}


def stream_windows(path, segment_s, decode_errors, error_type):
    """Reads an audio file window by window, without decoding it whole.

    Arguments
    ---------
    path : str
        The audio file (any format soundfile reads).
    segment_s : float
        Window length in seconds (the last window may be shorter).
    decode_errors : tuple of exception types
        What soundfile raises for undecodable input.
    error_type : type
        The exception raised instead (the interfaces' ``AudioError``).

    Yields
    ------
    (Segment, numpy.ndarray, int)
        The window's (empty) answer with its time span, its samples
        (time, channels) as float32, and the file's sample rate.

    Example
    -------
    >>> import os, tempfile
    >>> import numpy as np, soundfile
    >>> path = os.path.join(tempfile.mkdtemp(), "a.wav")
    >>> soundfile.write(path, np.zeros(25000, dtype="float32"), 10000)
    >>> [(s.start_s, s.end_s, a.shape) for s, a, _ in stream_windows(path, 1.0, (RuntimeError,), ValueError)]
    [(0.0, 1.0, (10000, 1)), (1.0, 2.0, (10000, 1)), (2.0, 2.5, (5000, 1))]
    """
    import soundfile

    try:
        sound = soundfile.SoundFile(path)
    except decode_errors as error:
        raise error_type(f"{path}: cannot be decoded as audio ({error})") from error
    with sound:
        rate, start = sound.samplerate, 0
        block = max(1, int(round(segment_s * rate)))
        while True:
            try:
                audio = sound.read(block, dtype="float32", always_2d=True)
            except decode_errors as error:
                raise error_type(f"{path}: cannot be decoded as audio ({error})") from error
            if audio.shape[0] == 0:
                return
            segment = Segment(source=path, start_s=round(start / rate, 3),
                              end_s=round((start + audio.shape[0]) / rate, 3))
            segment.duration_s = round(segment.end_s - segment.start_s, 3)
            start += audio.shape[0]
            yield segment, audio, rate


def automatic_segment_s(path, after_s, segment_s, decode_errors):
    """``segment_s`` when the file lasts longer than ``after_s`` seconds, else None.

    Reads the header only; a file whose header cannot be read is left to the
    backend's loading, which reports why. ``after_s`` None: never.
    """
    import soundfile

    if after_s is None or not os.path.isfile(path):
        return None
    try:
        info = soundfile.info(path)
    except decode_errors:
        return None
    duration = info.frames / info.samplerate if info.samplerate else 0.0
    if duration <= after_s:
        return None
    logger.info(f"{path}: {duration:.0f} s is longer than {after_s:g} s: answered in windows of "
                f"{segment_s:g} s, streamed (segment_s sets the window)")
    return float(segment_s)


def predict_windows(path, segment_s, batch_size, backend):
    """Streams a file window by window into a :class:`Timeline` (both backends' long-audio loop).

    Windows are answered ``batch_size`` at a time; a batch holds windows of one
    length only (the last, shorter window goes alone), so no window is padded.

    Arguments
    ---------
    path : str
        The audio file.
    segment_s : float
        Window length in seconds.
    batch_size : int
        Windows answered together.
    backend : object
        The interface: ``min_duration_s``, ``emotion_classes``, ``decode_errors``,
        ``error_type``, ``_to_model_audio(audio, rate, name, log)``,
        ``_answer_windows(wavs, path, durations)`` -> [(Prediction, embedding)],
        ``_identify_one(embedding)`` -> (labels, scores), and optionally
        ``_first_window(path, audio, rate)`` (a log line about resampling).

    Returns
    -------
    Timeline
    """
    from mtlser_lobes.data.audio import check_is_file

    if segment_s < backend.min_duration_s:
        raise ValueError(f"segment_s must be at least {backend.min_duration_s} s, not {segment_s}")
    check_is_file(path)
    segments, embeddings, pending = [], [], []
    for segment, audio, rate in stream_windows(path, segment_s, backend.decode_errors, backend.error_type):
        if not segments and hasattr(backend, "_first_window"):
            backend._first_window(path, audio, rate)
        segments.append(segment)
        try:
            wav = backend._to_model_audio(audio, rate, f"{path} [{segment.start_s}-{segment.end_s} s]", log=False)
        except backend.error_type as error:
            segment.error = str(error)
            continue
        if pending and (len(pending) >= batch_size or len(pending[0][1]) != len(wav)):
            embeddings += _answer_pending(backend, path, pending)
            pending = []
        pending.append((segment, wav))
    if pending:
        embeddings += _answer_pending(backend, path, pending)
    return overall_answer(path, segments, embeddings, backend.emotion_classes, backend._identify_one,
                          backend.error_type)


def _answer_pending(backend, path, pending):
    """Answers a batch of windows into their segments; returns their speaker embeddings."""
    windows = [segment for segment, _ in pending]
    answered = backend._answer_windows([wav for _, wav in pending], path, [s.end_s - s.start_s for s in windows])
    for segment, (answer, _) in zip(windows, answered):
        for key in ("emotion", "probabilities", "text", "speaker", "speaker_score"):
            setattr(segment, key, getattr(answer, key))
    return [embedding for _, embedding in answered]


def overall_answer(path, segments, embeddings, emotion_classes, identify, error_type):
    """The answer for a whole recording from its windows' answers.

    Emotion probabilities are averaged weighted by window duration, the
    transcripts joined, and the speaker identified from the duration-weighted
    mean of the windows' speaker embeddings; windows with an error are left out.

    Arguments
    ---------
    path : str
        The recording.
    segments : list of Segment
        Every window, answered or with its ``error``.
    embeddings : list of numpy.ndarray
        The speaker embedding of each answered window, in order.
    emotion_classes : list of str
    identify : callable
        ``identify(embeddings (1, dim))`` -> (labels, scores), the interface's.
    error_type : type
        Raised (the interfaces' ``AudioError``) when no window was answered.

    Returns
    -------
    Timeline

    Example
    -------
    >>> import numpy as np
    >>> windows = [Segment(start_s=0.0, end_s=2.0, emotion="ang", probabilities={"ang": 0.9, "neu": 0.1},
    ...                    text="hi"),
    ...            Segment(start_s=2.0, end_s=3.0, emotion="neu", probabilities={"ang": 0.3, "neu": 0.7},
    ...                    text="there")]
    >>> timeline = overall_answer("a.wav", windows, [np.ones(2), np.ones(2)], ["ang", "neu"],
    ...                           lambda e: (["anna"], [0.9]), ValueError)
    >>> timeline.emotion, timeline.probabilities, timeline.text, timeline.duration_s
    ('ang', {'ang': 0.7, 'neu': 0.3}, 'hi there', 3.0)
    """
    import numpy as np

    answered = [s for s in segments if s.error is None]
    if not answered:
        reason = segments[0].error if segments else f"{path}: is empty (0 samples)"
        raise error_type(f"{path}: no window could be answered ({reason})")
    weights = np.array([s.end_s - s.start_s for s in answered])
    probabilities = np.array([[s.probabilities[c] for c in emotion_classes] for s in answered])
    mean = (weights[:, None] * probabilities).sum(axis=0) / weights.sum()
    mean_embedding = (weights[:, None] * np.stack([np.asarray(e, dtype=np.float32) for e in embeddings])).sum(
        axis=0) / weights.sum()
    speaker, score = identify(mean_embedding[None].astype(np.float32))
    overall = Prediction(
        source=path,
        duration_s=segments[-1].end_s if segments else 0.0,
        emotion=emotion_classes[int(mean.argmax())],
        probabilities={c: round(float(p), 6) for c, p in zip(emotion_classes, mean)},
        text=" ".join(s.text for s in answered if s.text),
        speaker=speaker[0],
        speaker_score=score[0],
    )
    return Timeline(overall=overall, segments=segments)


def answer_files(model, paths, batch_size, answer_loaded, error_type):
    """Answers many files ``batch_size`` at a time; a file that fails gets its ``error`` set.

    The loop both interfaces share: a file longer than the model's
    ``auto_segment_after_s`` is streamed alone into a :class:`Timeline`
    (``model._predict_long``); the others are read (``model.load_audio``) and
    answered together by ``answer_loaded(waveforms, names)``.

    Arguments
    ---------
    model : MTLSER or OnnxMTLSER
        Gives ``_automatic_segment_s``, ``_predict_long`` and ``load_audio``.
    paths : list of str
    batch_size : int
    answer_loaded : callable
        ``(list of (time,) waveforms, list of names) -> list of Prediction``.
    error_type : type
        The interface's ``AudioError``: caught per file.

    Returns
    -------
    list
        One :class:`Prediction` or :class:`Timeline` per path, in order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    results = []
    for start in range(0, len(paths), batch_size):
        wavs, names, slots = [], [], []
        for path in [str(p) for p in paths[start : start + batch_size]]:
            try:
                segment_s = model._automatic_segment_s(path)
                if segment_s is not None:
                    results.append(model._predict_long(path, segment_s, batch_size))
                    continue
                wavs.append(model.load_audio(path))
                names.append(path)
                slots.append(len(results))
                results.append(None)
            except error_type as error:
                results.append(Prediction(source=path, error=str(error)))
        if wavs:
            for slot, answer in zip(slots, answer_loaded(wavs, names)):
                results[slot] = answer
    return results
