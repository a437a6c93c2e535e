"""The answers of a model, whichever backend computed them (PyTorch or ONNX Runtime).

Plain dataclasses with no dependency, so the ONNX Runtime path
(:mod:`mtlser_lobes.onnx_runtime`) answers without importing torch.

Example
-------
>>> p = Prediction(source="a.wav", emotion="ang", probabilities={"ang": 0.9, "neu": 0.1})
>>> p.to_dict()["emotion"]
'ang'
>>> Timeline(overall=p).emotion
'ang'
"""

from dataclasses import asdict, dataclass, field

__all__ = ["Prediction", "Segment", "Timeline"]


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
