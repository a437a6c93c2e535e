"""Audio checks and loading shared by the data preparation, the training pipeline and the interface.

Every file is checked once, at preparation time, with :func:`inspect_wav`, so
that nothing fails in the middle of an epoch because of a file that could have
been checked first; :func:`load_training_audio` then reads it at the model's
rate, mono, cropped to a maximum duration.

Authors
 * MTLSER developers
"""

import math
import os

import numpy as np
import soundfile

#: What soundfile raises for a file it cannot decode.
DECODE_ERRORS = (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError)


class AudioError(ValueError):
    """An audio file or waveform that cannot be used; the message says why."""


def read_audio_file(path):
    """Decodes a whole audio file: ((time, channels) float32, sample rate).

    Raises :class:`AudioError` naming the file when it is a folder, missing or
    undecodable (what both inference interfaces report).

    Example
    -------
    >>> import tempfile
    >>> try:
    ...     read_audio_file(tempfile.mkdtemp())
    ... except AudioError as error:
    ...     print(str(error).endswith("is a folder, not an audio file"))
    True
    """
    check_is_file(path)
    try:
        return soundfile.read(path, dtype="float32", always_2d=True)
    except DECODE_ERRORS as error:
        raise AudioError(f"{path}: cannot be decoded as audio ({error})") from error


def check_is_file(path):
    """Raises :class:`AudioError` unless ``path`` is an existing file."""
    if os.path.isdir(path):
        raise AudioError(f"{path}: is a folder, not an audio file")
    if not os.path.isfile(path):
        raise AudioError(f"{path}: no such file")


def waveform_problem(audio, sample_rate, min_duration_s, silence_peak):
    """Why a waveform cannot be used, or None.

    Arguments
    ---------
    audio : torch.Tensor or numpy.ndarray
        (time,) or (time, channels).
    sample_rate : int
        Of ``audio``.
    min_duration_s : float
        Shorter audio is refused.
    silence_peak : float
        Audio whose peak amplitude is below this is refused as silent.

    Example
    -------
    >>> import numpy as np
    >>> waveform_problem(np.zeros(16000), 16000, 0.1, 1e-4)
    'is silent (peak amplitude 0.0e+00)'
    >>> waveform_problem(np.full(800, 0.5), 16000, 0.1, 1e-4)
    'is too short (0.050 s); at least 0.10 s is needed'
    >>> waveform_problem(np.array([0.5, np.nan] * 8000), 16000, 0.1, 1e-4)
    'contains NaN or infinite samples'
    """
    audio = np.asarray(audio.detach().cpu() if hasattr(audio, "detach") else audio)
    n_samples = audio.shape[0]
    if n_samples == 0:
        return "is empty (0 samples)"
    if not np.isfinite(audio).all():
        return "contains NaN or infinite samples"
    duration = n_samples / sample_rate
    if duration < min_duration_s:
        return f"is too short ({duration:.3f} s); at least {min_duration_s:.2f} s is needed"
    peak = float(np.abs(audio).max())
    if peak < silence_peak:
        return f"is silent (peak amplitude {peak:.1e})"
    return None


def inspect_wav(path, min_duration_s=0.1, silence_peak=1e-4):
    """Decodes a whole file and checks its samples; returns its format.

    Arguments
    ---------
    path : str
        The audio file.
    min_duration_s, silence_peak : float
        See :func:`waveform_problem`.

    Returns
    -------
    dict
        ``samplerate``, ``channels``, ``frames``, ``duration`` (s).

    Raises
    ------
    AudioError
        Missing, undecodable (empty, truncated, not audio), non-finite, too
        short or silent; the message starts with the reason.
    """
    if not os.path.isfile(path):
        raise AudioError("missing")
    try:
        with soundfile.SoundFile(path) as audio_file:
            samplerate, channels = audio_file.samplerate, audio_file.channels
            audio = audio_file.read(dtype="float32", always_2d=True)
    except DECODE_ERRORS as error:
        raise AudioError(f"cannot be decoded as audio ({error})") from error
    problem = waveform_problem(audio, samplerate, min_duration_s, silence_peak)
    if problem is not None:
        raise AudioError(problem)
    return {
        "samplerate": samplerate, "channels": channels, "frames": audio.shape[0],
        "duration": audio.shape[0] / samplerate,
    }


def load_training_audio(path, sample_rate, max_duration_s=None):
    """Reads a file as (time,) float32 at ``sample_rate``, mono, at most ``max_duration_s`` long.

    Only the kept part is read from disk, so a 10-minute file costs no more
    memory than ``max_duration_s`` of audio. Other rates are resampled and
    channels averaged (SpeechBrain's ``AudioNormalizer``).

    Example
    -------
    >>> import os, tempfile
    >>> import numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "stereo.wav")
    >>> soundfile.write(path, np.full((44100 * 3, 2), 0.25, dtype="float32"), 44100)
    >>> audio = load_training_audio(path, 16000, max_duration_s=2.0)
    >>> tuple(audio.shape), round(float(audio[1000]), 3)
    ((32000,), 0.25)
    """
    with soundfile.SoundFile(path) as audio_file:
        frames = audio_file.frames
        if max_duration_s is not None:
            frames = min(frames, math.ceil(max_duration_s * audio_file.samplerate))
        audio = audio_file.read(frames, dtype="float32", always_2d=True)
        file_rate = audio_file.samplerate
    import torch

    audio = torch.from_numpy(audio)
    if file_rate == sample_rate and audio.shape[1] == 1:
        audio = audio[:, 0]
    else:
        from speechbrain.dataio.preprocess import AudioNormalizer

        audio = AudioNormalizer(sample_rate)(audio, file_rate)
    if max_duration_s is not None:
        audio = audio[: int(round(max_duration_s * sample_rate))]
    return audio
