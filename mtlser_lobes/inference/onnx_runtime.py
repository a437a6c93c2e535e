"""Answer audio files with the ONNX export of a model: ONNX Runtime, numpy, soundfile, scipy; no torch.

::

    from mtlser_lobes.inference.onnx_runtime import OnnxMTLSER
    model = OnnxMTLSER("results/.../model/onnx")            # or quantized=True for model.int8.onnx
    model.predict_file("speech.wav").emotion

The answers are the :class:`~mtlser_lobes.inference.predictions.Prediction` /
:class:`~mtlser_lobes.inference.predictions.Timeline` objects of the PyTorch interface,
computed the same way: audio read with soundfile, mixed to mono and resampled
(polyphase, scipy) to the model's rate, checked (empty, too short, silent,
non-finite: :class:`~mtlser_lobes.data.audio.AudioError`), encoded one file at a time
when the encoder's output depends on padding (group-norm feature extractor)
and in padded batches otherwise, greedy CTC decoding, open-set speaker
identification with enrolment. Files longer than ``auto_segment_after_s`` are
answered window by window, as by the PyTorch interface. This module and those
it imports never import torch (``tests/test_onnx.py`` checks it).
"""

import json
import logging
import os
from fractions import Fraction

import numpy as np

from mtlser_lobes.artifacts import ONNX_CONFIG, ONNX_FOLDER, ONNX_INT8_MODEL, ONNX_MODEL
from mtlser_lobes.data.audio import DECODE_ERRORS, AudioError, read_audio_file, waveform_problem
from mtlser_lobes.precision import int8_note
from mtlser_lobes.inference.predictions import Prediction, answer_files, automatic_segment_s, predict_windows

__all__ = ["OnnxMTLSER", "ctc_greedy_text", "inference_session"]

logger = logging.getLogger(__name__)

UNKNOWN_SPEAKER = "unknown"


#: ONNX Runtime graph optimisations left out: its fused SkipLayerNormalization kernel is slower here
#: than the Add and LayerNormalization it replaces (wav2vec2-base on 2 cores: 7 % of the int8 graph's
#: time, 1.5 % of the fp32 graph's; benchmarks/README.md).
DISABLED_OPTIMIZERS = ["SkipLayerNormFusion"]


def inference_session(graph, threads=None, providers=None, options=None):
    """An ``onnxruntime.InferenceSession`` of ``graph`` as :class:`OnnxMTLSER` runs it.

    ``threads``: intra-op threads (one inter-op thread); ``options``: a ``SessionOptions`` to start
    from (e.g. with profiling on).
    """
    import onnxruntime

    options = options or onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(graph, sess_options=options, providers=providers or ["CPUExecutionProvider"],
                                        disabled_optimizers=DISABLED_OPTIMIZERS)


def ctc_greedy_text(log_probs, tokens, blank_index=0):
    """Best path of CTC log-probabilities (frames, n_tokens): repeats merged, blanks dropped.

    Example
    -------
    >>> probs = np.log(np.eye(3)[[1, 1, 0, 1, 2, 2]] + 1e-6)
    >>> ctc_greedy_text(probs, ["<b>", "a", "b"])
    'aab'
    """
    best = np.asarray(log_probs).argmax(axis=-1)
    keep = np.ones(len(best), dtype=bool)
    keep[1:] = best[1:] != best[:-1]
    return "".join(tokens[i] for i in best[keep] if i != blank_index).strip()


def _unit(vectors):
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class OnnxMTLSER:
    """The exported model run by ONNX Runtime.

    Arguments
    ---------
    folder : str
        An ONNX folder written by :func:`mtlser_lobes.inference.onnx_export.export_onnx`
        (``model.onnx``, ``config.json``), or the model folder that holds it
        in ``onnx/``.
    quantized : bool
        Run ``model.int8.onnx`` (int8 matrix products and feature-encoder convolutions) instead.
    threads : int, optional
        ONNX Runtime's intra-op threads (default: its own choice, the cores).
    providers : list of str, optional
        ONNX Runtime execution providers (default: CPU).
    """

    def __init__(self, folder, quantized=False, threads=None, providers=None):
        if not os.path.isfile(os.path.join(folder, ONNX_CONFIG)) and os.path.isdir(os.path.join(folder, ONNX_FOLDER)):
            folder = os.path.join(folder, ONNX_FOLDER)
        config_path = os.path.join(folder, ONNX_CONFIG)
        if not os.path.isfile(config_path):
            raise FileNotFoundError(f"{folder} has no ONNX model (config.json); see mtlser-export --onnx")
        with open(config_path, encoding="utf-8") as fin:
            self.config = json.load(fin)
        if self.config.get("format") != "mtlser-onnx":
            raise ValueError(f"{config_path} is not the config of an MTLSER ONNX export")
        graph = os.path.join(folder, ONNX_INT8_MODEL if quantized else ONNX_MODEL)
        if not os.path.isfile(graph):
            raise FileNotFoundError(f"{graph} is missing" + (" (exported without quantize)" if quantized else ""))
        if quantized:
            logger.info(int8_note())
        self.graph_path = graph  # the ONNX file this session runs
        self.session = inference_session(graph, threads, providers)
        config = self.config
        self.sample_rate = int(config["sample_rate"])
        self.emotion_classes = list(config["emotion_classes"])
        self.tokens = list(config["tokens"])
        self.trained_speakers = list(config["speakers"])
        self.speaker_threshold = float(config["speaker_threshold"])
        self.auto_segment_after_s = config.get("auto_segment_after_s", 60.0)
        self.auto_segment_s = config.get("auto_segment_s", 10.0)
        self._mean = np.asarray(config["speaker_mean"], dtype=np.float32)
        self._centroids = np.asarray(config["speaker_centroids"], dtype=np.float32).reshape(
            len(self.trained_speakers), -1
        )
        self.enrolled = {}
        self.enrolled_only = False

    # ------------------------------------------------------------------ audio
    def check_waveform(self, audio, name="input", sample_rate=None):
        """Raises :class:`AudioError` for empty, non-finite, too short or silent audio."""
        problem = waveform_problem(audio, sample_rate or self.sample_rate,
                                   self.config["min_duration_s"], self.config["silence_peak"])
        if problem is not None:
            raise AudioError(f"{name}: {problem}")

    def _to_model_audio(self, audio, sample_rate, name, log=True):
        """(time, channels) float32 at any rate -> (time,) at the model's rate."""
        self.check_waveform(audio, name, sample_rate)
        channels = audio.shape[1]
        if log and (sample_rate != self.sample_rate or channels != 1):
            layout = "mono" if channels == 1 else "stereo" if channels == 2 else f"{channels}-channel"
            logger.info(f"{name}: {sample_rate} Hz {layout}: " + (
                f"resampled to {self.sample_rate} Hz mono" if sample_rate != self.sample_rate else "mixed down to mono"
            ))
        audio = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
        if sample_rate != self.sample_rate:
            from scipy.signal import resample_poly

            ratio = Fraction(self.sample_rate, sample_rate)
            audio = resample_poly(audio, ratio.numerator, ratio.denominator).astype(np.float32)
        return np.ascontiguousarray(audio, dtype=np.float32)

    def load_audio(self, path):
        """Reads a file, checks it and returns (time,) float32 at the model's rate, mono."""
        path = str(path)
        audio, rate = read_audio_file(path)
        return self._to_model_audio(audio, rate, path)

    # ---------------------------------------------------------------- forward
    def run(self, wavs, wav_lens=None):
        """The graph's outputs for a padded batch (batch, samples): a dict of numpy arrays."""
        wavs = np.asarray(wavs, dtype=np.float32)
        if wav_lens is None:
            wav_lens = np.ones(len(wavs), dtype=np.float32)
        outputs = self.session.run(None, {"wav": wavs, "wav_lens": np.asarray(wav_lens, dtype=np.float32)})
        return dict(zip(self.config["outputs"], outputs))

    def _encode(self, wavs):
        """A list of (time,) waveforms -> per item (probabilities, ctc log-probs, embedding)."""
        if self.config["pads_batches"] and len(wavs) > 1:
            longest = max(len(w) for w in wavs)
            batch = np.zeros((len(wavs), longest), dtype=np.float32)
            for i, wav in enumerate(wavs):
                batch[i, : len(wav)] = wav
            out = self.run(batch, np.array([len(w) / longest for w in wavs], dtype=np.float32))
            return [
                (out["emotion_probs"][i], out["ctc_log_probs"][i, : out["frame_counts"][i]],
                 out["speaker_embedding"][i])
                for i in range(len(wavs))
            ]
        answers = []
        for wav in wavs:  # the encoder's output depends on padding: one at a time
            out = self.run(wav[None])
            answers.append((out["emotion_probs"][0], out["ctc_log_probs"][0], out["speaker_embedding"][0]))
        return answers

    def _answer(self, encoded, sources, durations):
        if not encoded:
            return []
        speakers, scores = self.identify(np.stack([e for _, _, e in encoded]))
        predictions = []
        for (probs, ctc, _), source, duration, speaker, score in zip(encoded, sources, durations, speakers, scores):
            predictions.append(Prediction(
                source=source,
                duration_s=round(duration, 3),
                emotion=self.emotion_classes[int(np.argmax(probs))],
                probabilities={c: round(float(p), 6) for c, p in zip(self.emotion_classes, probs)},
                text=ctc_greedy_text(ctc, self.tokens, self.config["blank_index"]),
                speaker=speaker,
                speaker_score=score,
            ))
        return predictions

    # ----------------------------------------------------------- predictions
    def predict_file(self, path, segment_s=None, batch_size=8):
        """Answers one file: a :class:`Prediction`, or a :class:`Timeline` of windows.

        Files longer than ``auto_segment_after_s`` (or any file, given
        ``segment_s``) are answered in windows of ``segment_s`` seconds.
        """
        path = str(path)
        if segment_s is None:
            segment_s = self._automatic_segment_s(path)
        if segment_s is not None:
            return self._predict_long(path, float(segment_s), batch_size)
        wav = self.load_audio(path)
        return self._answer(self._encode([wav]), [path], [len(wav) / self.sample_rate])[0]

    def predict_files(self, paths, batch_size=1):
        """Answers many files; a file that fails gets its ``error`` set instead of raising."""
        return answer_files(self, paths, batch_size, self._answer_loaded, AudioError)

    def _answer_loaded(self, wavs, names):
        """Waveforms (time,) of several files -> their predictions."""
        return self._answer(self._encode(wavs), names, [len(w) / self.sample_rate for w in wavs])

    # Long recordings: the loop of predictions.predict_windows, with this backend's parts.
    decode_errors, error_type = DECODE_ERRORS, AudioError

    @property
    def min_duration_s(self):
        return self.config["min_duration_s"]

    def _automatic_segment_s(self, path):
        return automatic_segment_s(path, self.auto_segment_after_s, self.auto_segment_s, DECODE_ERRORS)

    def _predict_long(self, path, segment_s, batch_size):
        return predict_windows(path, segment_s, batch_size, self)

    def _answer_windows(self, wavs, path, durations):
        encoded = self._encode(wavs)
        answers = self._answer(encoded, [path] * len(wavs), durations)
        return [(answer, embedding) for answer, (_, _, embedding) in zip(answers, encoded)]

    def _identify_one(self, embedding):
        return self.identify(embedding)

    # --------------------------------------------------------------- speakers
    @property
    def speakers(self):
        """Every speaker the model can name: the training ones (unless ``enrolled_only``), then the enrolled."""
        return ([] if self.enrolled_only else self.trained_speakers) + list(self.enrolled)

    def identify(self, embeddings, threshold=None):
        """Closest known speaker of each embedding (batch, dim), or "unknown": (labels, scores)."""
        threshold = self.speaker_threshold if threshold is None else threshold
        names = self.speakers
        if not names:
            return [UNKNOWN_SPEAKER] * len(embeddings), [0.0] * len(embeddings)
        centroids = self._centroids[:0] if self.enrolled_only else self._centroids
        if self.enrolled:
            centroids = np.concatenate([centroids, np.stack(list(self.enrolled.values()))])
        similarity = _unit(np.asarray(embeddings, dtype=np.float32) - self._mean) @ centroids.T
        best = similarity.argmax(axis=-1)
        scores = similarity[np.arange(len(best)), best]
        labels = [names[i] if s >= threshold else UNKNOWN_SPEAKER for i, s in zip(best, scores)]
        return labels, [round(float(s), 6) for s in scores]

    def enroll(self, name, wav_paths):
        """Adds (or replaces) a speaker from a few recordings; returns how many were used."""
        if name in self.trained_speakers or name == UNKNOWN_SPEAKER:
            raise ValueError(f"{name!r} is a training speaker or reserved: choose another name")
        wav_paths = [wav_paths] if isinstance(wav_paths, (str, os.PathLike)) else list(wav_paths)
        if not wav_paths:
            raise ValueError(f"enroll({name!r}) needs at least one recording")
        embeddings = np.stack([self._encode([self.load_audio(p)])[0][2] for p in wav_paths])
        units = _unit(embeddings - self._mean)
        self.enrolled[name] = _unit(units.mean(axis=0))
        return len(wav_paths)

    def forget(self, name):
        """Removes an enrolled speaker."""
        if name not in self.enrolled:
            raise KeyError(f"{name!r} is not enrolled (enrolled: {sorted(self.enrolled)})")
        del self.enrolled[name]
