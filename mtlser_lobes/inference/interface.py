"""Inference: emotion, transcript and speaker of any audio, in one encoder pass.

Load a folder written by :mod:`mtlser_lobes.inference.export` (or ``train.py``)::

    from mtlser_lobes.inference.interface import MTLSER
    model = MTLSER.from_hparams(source="results/.../model")
    prediction = model.predict_file("speech.wav")
    prediction.emotion, prediction.probabilities, prediction.text, prediction.speaker

or, SpeechBrain's way for custom classes,
``foreign_class(source=folder)`` (the folder's ``custom.py`` names this class).

Audio at any sample rate and channel count is resampled to the model's rate
and mixed to mono (with a log line); empty, too short, silent, non-finite or
undecodable input raises :class:`AudioError` (in a batch: that item gets the
error, the others are answered).

Precision: ``run_opts={"precision": ...}`` (SpeechBrain's run option; the
CLI's ``--precision``). The default, ``auto``, is bf16 where the device runs it
natively (a CPU with AVX-512 BF16 or AMX, a CUDA GPU with bf16) and fp32
elsewhere, with a log line saying which and why
(:func:`mtlser_lobes.precision.resolve_precision`). bf16 stores and runs the
wav2vec 2.0 encoder in bfloat16; the heads stay in float32. On a CPU with
AVX-512 BF16 it about halves the time of wav2vec2-base; on an AVX2 CPU, where
torch emulates it, it is many times slower than fp32, and an explicit ``bf16``
there logs a warning (``benchmarks/README.md`` gives both machines' figures).
"""

import os

import torch
from speechbrain.inference.interfaces import Pretrained
from speechbrain.utils.autocast import AMPConfig
from speechbrain.utils.logger import get_logger

from mtlser_lobes.data.audio import DECODE_ERRORS, AudioError, read_audio_file, waveform_problem
from mtlser_lobes.data.text import greedy_transcripts
from mtlser_lobes.helpers import frame_lengths, pads_exactly
from mtlser_lobes.precision import resolve_precision
from mtlser_lobes.inference.predictions import (
    Prediction, Segment, Timeline, answer_files, automatic_segment_s, predict_windows,
)
from mtlser_lobes.inference.speaker_enrolment import SpeakerEnrolment

logger = get_logger(__name__)

__all__ = ["MTLSER", "AudioError", "Prediction", "Segment", "Timeline"]


class MTLSER(SpeakerEnrolment, Pretrained):
    """The exported three-head model: emotion, CTC transcript and speaker.

    One encoder pass per utterance feeds all three heads. With an encoder
    whose output depends on padding (group-norm feature extractor, as in
    ``wav2vec2-base``, ``hubert-base-ls960`` and ``wavlm-base-plus``;
    data2vec-audio's stacked positional convolutions; waveform normalisation),
    batches are encoded one utterance at a time, so an answer never depends on
    what else is in the batch; padding-invariant encoders (layer-norm front
    end, no waveform normalisation) run padded batches
    (:func:`mtlser_lobes.helpers.pads_exactly` tells which).

    Speakers: the training speakers are known from export; :meth:`enroll` adds
    new ones from a few recordings, identified by cosine similarity of the
    speaker head's embedding; below ``speaker_threshold`` the answer is
    ``"unknown"``. Set ``enrolled_only = True`` to name enrolled speakers only.

    Example (a trained model is needed, so this is not run as a doctest)::

        model = MTLSER.from_hparams(source="results/.../model")
        model.predict_file("speech.wav").emotion  # e.g. 'ang'
        model.enroll("anna", ["anna1.wav", "anna2.wav"])
        model.predict_file("meeting.wav", segment_s=10).segments
    """

    #: A file longer than this many seconds, given without ``segment_s``, is streamed
    #: in windows of ``auto_segment_s`` (a log line says so): decoded whole, half an
    #: hour costs gigabytes. ``None`` turns it off.
    auto_segment_after_s = 60.0
    #: The window length of that automatic segmentation, in seconds.
    auto_segment_s = 10.0

    HPARAMS_NEEDED = [
        "sample_rate", "min_duration_s", "silence_peak", "speaker_threshold", "blank_index",
        "label_encoder", "tokenizer", "speaker_encoder",
    ]
    MODULES_NEEDED = ["wav2vec2", "emotion_head", "ctc_head", "speaker_head", "speaker_gallery"]

    def __init__(self, modules=None, hparams=None, run_opts=None, freeze_params=True):
        # precision "auto" (the default) becomes fp32 or bf16 here, from the hardware
        run_opts = dict(run_opts or {})
        run_opts["precision"] = resolve_precision(run_opts.get("precision", "auto"), run_opts.get("device", "cpu"))
        super().__init__(modules, hparams, run_opts, freeze_params)
        labels = self.hparams.label_encoder
        labels.expect_len(self.mods.emotion_head.n_emotions)
        self.emotion_classes = [labels.ind2lab[i] for i in range(len(labels))]
        speakers = self.hparams.speaker_encoder
        speakers.expect_len(self.mods.speaker_gallery.centroids.shape[0])
        self.trained_speakers = [speakers.ind2lab[i] for i in range(len(speakers))]
        self.tokenizer = self.hparams.tokenizer
        self.tokenizer.expect_len(self.mods.ctc_head.n_tokens)
        self.sample_rate = self.hparams.sample_rate
        self.speaker_threshold = float(self.hparams.speaker_threshold)
        self.enrolled = {}  # name -> unit-length centroid (embedding_dim,)
        #: Name only enrolled speakers (e.g. the members of one household).
        self.enrolled_only = False
        self.pads_batches = pads_exactly(self.mods.wav2vec2.model.config, self.mods.wav2vec2.normalize_wav)
        self._prepare_for_inference()

    def _prepare_for_inference(self):
        """Folds weight normalisation into the weights; puts the encoder in ``precision``.

        wav2vec 2.0's positional convolution recomputes its weight from
        ``weight_g``/``weight_v`` at every forward; frozen, that is the same
        tensor each time, so it is computed once (identical outputs). Under
        ``precision`` bf16/fp16 the encoder's weights are stored in that type
        and the waveform is cast after its normalisation (in float32); the
        encoder output is cast back, so the heads and the gallery run in
        float32.
        """
        parametrize = torch.nn.utils.parametrize
        for module in self.mods.wav2vec2.modules():
            if parametrize.is_parametrized(module):
                for name in list(module.parametrizations):
                    parametrize.remove_parametrizations(module, name, leave_parametrized=True)
        self.encoder_dtype = AMPConfig.from_name(self.precision).dtype
        if self.encoder_dtype != torch.float32:
            self.mods.wav2vec2.to(self.encoder_dtype)
            self.mods.wav2vec2.model.feature_extractor.register_forward_pre_hook(
                lambda module, args: (args[0].to(self.encoder_dtype),)
            )

    @classmethod
    def from_hparams(cls, source, hparams_file="hyperparams.yaml", trust="safe", **kwargs):
        """Loads a model folder (or hub repository) written by :mod:`mtlser_lobes.inference.export`.

        Arguments
        ---------
        source : str
            The folder (or a hub name; see SpeechBrain's ``fetch``).
        hparams_file : str
            The HyperPyYAML file in it.
        trust : str
            ``"safe"`` (default): the file is first read as plain YAML and
            refused (:class:`~mtlser_lobes.inference.safe_loading.UnsafeModelError`, naming
            the line) if any ``!new:``/``!name:``/``!apply:``/``!module:`` tag
            points outside the classes an exported model uses, so a tampered
            folder's code never runs. ``"all"``: SpeechBrain's behaviour, any
            code the file names runs; only for folders you trust.
        **kwargs
            Passed to SpeechBrain's ``Pretrained.from_hparams`` (``savedir``,
            ``run_opts``, ``overrides``, ...).
        """
        from speechbrain.utils.fetching import FetchConfig, LocalStrategy, fetch

        from mtlser_lobes.inference.safe_loading import TRUST_LEVELS, check_hyperparams

        if trust not in TRUST_LEVELS:
            raise ValueError(f"trust must be one of {TRUST_LEVELS}, not {trust!r}")
        if trust == "safe":
            path = fetch(
                filename=hparams_file, source=source, savedir=kwargs.get("savedir"),
                local_strategy=kwargs.get("local_strategy", LocalStrategy.SYMLINK),
                fetch_config=kwargs.get("fetch_config", FetchConfig()),
            )
            check_hyperparams(path, name=os.path.join(str(source), hparams_file))
        return super().from_hparams(source, hparams_file=hparams_file, **kwargs)

    @classmethod
    def untrained(cls, encoder_source, savedir, n_speakers=8, run_opts=None, seed=0):
        """The model around a wav2vec 2.0 encoder, with randomly initialised heads.

        Its answers mean nothing; it has the trained model's architecture and
        cost, for timing (``benchmarks/bench.py``) and for tests.

        Arguments
        ---------
        encoder_source : str
            Hub name or local folder of the encoder (config and weights).
        savedir : str
            Cache folder for the encoder.
        n_speakers : int
            Speakers of the (random) gallery, named ``spk0``, ``spk1``...
        run_opts : dict, optional
            SpeechBrain run options (``device``, ``precision``).
        seed : int
            Seed of the random heads and gallery.
        """
        from speechbrain.dataio.encoder import CategoricalEncoder
        from speechbrain.integrations.huggingface.wav2vec2 import Wav2Vec2

        from mtlser_lobes.heads import CTCHead, EmotionHead, SpeakerHead
        from mtlser_lobes.speakers import SpeakerGallery
        from mtlser_lobes.data.text import ctc_label_encoder

        torch.manual_seed(seed)
        encoder = Wav2Vec2(encoder_source, save_path=savedir, freeze=True)
        dim = encoder.model.config.hidden_size
        emotions, speakers = CategoricalEncoder(), CategoricalEncoder()
        emotions.update_from_iterable(["neu", "hap", "ang", "sad"])
        speakers.update_from_iterable([f"spk{i}" for i in range(n_speakers)])
        tokenizer = ctc_label_encoder()
        embedding_dim = min(128, dim)
        gallery = SpeakerGallery(n_speakers, embedding_dim)
        gallery.centroids.copy_(torch.nn.functional.normalize(torch.randn(n_speakers, embedding_dim), dim=-1))
        modules = {
            "wav2vec2": encoder,
            "emotion_head": EmotionHead(dim, 4, hidden_size=min(256, dim)),
            "ctc_head": CTCHead(dim, len(tokenizer)),
            "speaker_head": SpeakerHead(dim, n_speakers, embedding_dim=embedding_dim),
            "speaker_gallery": gallery,
        }
        hparams = {
            "sample_rate": 16000, "min_duration_s": 0.1, "silence_peak": 1e-4, "speaker_threshold": 0.0,
            "blank_index": 0, "label_encoder": emotions, "tokenizer": tokenizer, "speaker_encoder": speakers,
        }
        return cls(modules=modules, hparams=hparams, run_opts=run_opts or {"device": "cpu"})

    # ------------------------------------------------------------------ audio
    def _describe(self, sample_rate, channels):
        return f"{sample_rate} Hz " + ("mono" if channels == 1 else "stereo" if channels == 2 else f"{channels}-channel")

    def _to_model_audio(self, audio, sample_rate, name, log=True):
        """(time, channels) float array at any rate -> (time,) tensor at the model's rate."""
        audio = torch.as_tensor(audio, dtype=torch.float32)
        if audio.dim() == 1:
            audio = audio.unsqueeze(1)
        channels = audio.shape[1]
        self.check_waveform(audio, name, sample_rate)
        if sample_rate == self.sample_rate and channels == 1:
            return audio[:, 0]
        if log:
            logger.info(
                f"{name}: {self._describe(sample_rate, channels)}: resampled to "
                f"{self.sample_rate} Hz mono" if sample_rate != self.sample_rate
                else f"{name}: {self._describe(sample_rate, channels)}: mixed down to mono"
            )
        return self.audio_normalizer(audio, sample_rate)  # (time, channels) -> (time,)

    def check_waveform(self, audio, name="input", sample_rate=None):
        """Raises :class:`AudioError` for empty, non-finite, too short or silent audio.

        Arguments
        ---------
        audio : torch.Tensor
            (time,) or (time, channels).
        name : str
            How to call the input in the message.
        sample_rate : int
            Of ``audio``; default the model's.
        """
        sample_rate = sample_rate or self.sample_rate
        problem = waveform_problem(
            audio, sample_rate, self.hparams.min_duration_s, self.hparams.silence_peak
        )
        if problem is not None:
            raise AudioError(f"{name}: {problem}")

    def load_audio(self, path, savedir=None):
        """Reads a file, checks it and returns (time,) at the model's rate, mono.

        Raises :class:`AudioError` if it is missing, undecodable or unusable.
        """
        path = str(path)
        audio, sample_rate = read_audio_file(path)
        return self._to_model_audio(audio, sample_rate, path)

    # ---------------------------------------------------------------- forward
    @torch.no_grad()
    def forward(self, wavs, wav_lens=None):
        """Runs the model on a padded batch (at the model's rate, mono).

        Returns, per utterance, a dict with ``emotion`` log-probabilities
        (n_emotions,), ``ctc`` log-probabilities (frames, n_tokens) and the
        speaker ``embedding`` (embedding_dim,).
        """
        wavs = wavs.to(self.device, torch.float32)
        if wav_lens is None:
            wav_lens = torch.ones(wavs.shape[0], device=self.device)
        wav_lens = wav_lens.to(self.device, torch.float32)
        if self.pads_batches or wavs.shape[0] == 1:
            return self._forward_padded(wavs, wav_lens)
        outputs = []
        for wav, relative in zip(wavs, wav_lens):
            n_samples = int(torch.round(relative * wavs.shape[1]))
            outputs.extend(self._forward_padded(wav[None, :n_samples], torch.ones(1, device=self.device)))
        return outputs

    def _forward_padded(self, wavs, wav_lens):
        # (batch, samples) -> (batch, frames, hidden), or every hidden state
        # (layers, batch, frames, hidden) for heads that weigh the encoder's layers
        feats = self.mods.wav2vec2(wavs, wav_lens).float()
        n_frames = feats.shape[-2]
        feat_lens = frame_lengths(self.mods.wav2vec2, wav_lens, wavs.shape[1], n_frames)
        emotion = self.mods.emotion_head(feats, feat_lens)  # (batch, n_emotions)
        ctc = self.mods.ctc_head(feats, feat_lens)  # (batch, frames, n_tokens)
        embedding = self.mods.speaker_head.embed(feats, feat_lens)  # (batch, embedding_dim)
        n_frames = torch.round(feat_lens * n_frames).long().tolist()
        return [
            {"emotion": emotion[i], "ctc": ctc[i, : n_frames[i]], "embedding": embedding[i]}
            for i in range(wavs.shape[0])
        ]

    def _answer(self, outputs, sources, durations):
        """Model outputs -> :class:`Prediction` objects."""
        if not outputs:
            return []
        embeddings = torch.stack([o["embedding"] for o in outputs])
        speakers, scores = self.identify(embeddings)
        predictions = []
        for output, source, duration, speaker, score in zip(outputs, sources, durations, speakers, scores):
            probabilities = output["emotion"].exp().cpu()
            text = greedy_transcripts(output["ctc"][None], torch.ones(1, device=output["ctc"].device),
                                      self.tokenizer, self.hparams.blank_index)[0]
            predictions.append(Prediction(
                source=source,
                duration_s=round(duration, 3),
                emotion=self.emotion_classes[int(probabilities.argmax())],
                probabilities={c: round(float(p), 6) for c, p in zip(self.emotion_classes, probabilities)},
                text=text.strip(),
                speaker=speaker,
                speaker_score=score,
            ))
        return predictions

    # ----------------------------------------------------------- predictions
    def predict_batch(self, wavs, wav_lens=None, sources=None):
        """Answers a padded batch of waveforms at the model's rate (mono).

        Arguments
        ---------
        wavs : torch.Tensor
            (batch, samples).
        wav_lens : torch.Tensor, optional
            Relative lengths (batch,), SpeechBrain's convention; default all 1.
        sources : list of str, optional
            Names for the items (used in messages and results).

        Returns
        -------
        list of Prediction
            One per item, in order; an item that cannot be answered has its
            ``error`` set and the others are still answered.
        """
        wavs = torch.as_tensor(wavs)
        if wavs.dim() == 1:
            wavs = wavs[None]
        if wav_lens is None:
            wav_lens = torch.ones(wavs.shape[0])
        sources = list(sources) if sources is not None else [f"item {i}" for i in range(wavs.shape[0])]
        results, good = [None] * wavs.shape[0], []
        for i, relative in enumerate(wav_lens.tolist()):
            n_samples = int(round(relative * wavs.shape[1]))
            try:
                self.check_waveform(wavs[i, :n_samples].cpu(), sources[i])
                good.append(i)
            except AudioError as error:
                results[i] = Prediction(source=sources[i], duration_s=round(n_samples / self.sample_rate, 3),
                                        error=str(error))
        if good:
            index = torch.tensor(good)
            answers = self._predict_checked(wavs[index], wav_lens[index], [sources[i] for i in good])
            for i, prediction in zip(good, answers):
                results[i] = prediction
        return results

    def _predict_checked(self, wavs, wav_lens, sources):
        """:meth:`predict_batch` for items already checked."""
        durations = [float(relative) * wavs.shape[1] / self.sample_rate for relative in wav_lens]
        return self._answer(self.forward(wavs, wav_lens), sources, durations)

    def predict_file(self, path, segment_s=None, batch_size=8):
        """Answers one audio file.

        Arguments
        ---------
        path : str
            Any format soundfile reads (wav, flac, ogg, mp3, ...), any rate and
            channel count.
        segment_s : float, optional
            Split into windows of this many seconds and return a
            :class:`Timeline`; the file is streamed, so memory does not grow
            with its length. Without it, a file longer than
            ``auto_segment_after_s`` (60 s) is segmented in windows of
            ``auto_segment_s`` (10 s), with a log line.
        batch_size : int
            Windows encoded together (with ``segment_s``).

        Returns
        -------
        Prediction or Timeline

        Raises
        ------
        AudioError
            If the file is missing, undecodable, empty, too short, silent or
            not finite (with ``segment_s``: if no window can be answered).
        """
        if segment_s is None:
            segment_s = self._automatic_segment_s(str(path))
        if segment_s is not None:
            return self._predict_long(str(path), float(segment_s), batch_size)
        wav = self.load_audio(path)
        return self._answer(self.forward(wav[None]), [str(path)], [wav.shape[0] / self.sample_rate])[0]

    def predict_files(self, paths, batch_size=1):
        """Answers many files; a file that fails gets its ``error`` set instead of raising.

        Files are read and encoded ``batch_size`` at a time; a file longer than
        ``auto_segment_after_s`` is streamed alone and answered by a
        :class:`Timeline` (see :meth:`predict_file`).
        """
        return answer_files(self, paths, batch_size, self._answer_loaded, AudioError)

    def _answer_loaded(self, wavs, names):
        """Waveforms (time,) of several files -> their predictions, as one padded batch."""
        longest = max(w.shape[0] for w in wavs)
        batch = torch.zeros(len(wavs), longest)
        for i, wav in enumerate(wavs):
            batch[i, : wav.shape[0]] = wav
        lens = torch.tensor([w.shape[0] / longest for w in wavs])
        return self._predict_checked(batch, lens, names)

    # Long recordings: the loop of predictions.predict_windows, with this backend's parts.
    decode_errors, error_type = DECODE_ERRORS, AudioError

    @property
    def min_duration_s(self):
        return self.hparams.min_duration_s

    def _automatic_segment_s(self, path):
        return automatic_segment_s(path, self.auto_segment_after_s, self.auto_segment_s, DECODE_ERRORS)

    def _predict_long(self, path, segment_s, batch_size):
        return predict_windows(path, segment_s, batch_size, self)

    def _first_window(self, path, audio, rate):
        if rate != self.sample_rate or audio.shape[1] != 1:
            logger.info(f"{path}: {self._describe(rate, audio.shape[1])}: resampled to "
                        f"{self.sample_rate} Hz mono, window by window")

    def _answer_windows(self, wavs, path, durations):
        outputs = self.forward(torch.stack(wavs))
        answers = self._answer(outputs, [path] * len(wavs), durations)
        return [(answer, output["embedding"].float().cpu().numpy()) for answer, output in zip(answers, outputs)]

    def _identify_one(self, embedding):
        return self.identify(torch.from_numpy(embedding))
