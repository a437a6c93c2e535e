"""Offline speech synthesis with espeak-ng, for the demo corpus and the tests.

The shared library and its voice data come from the ``espeakng-loader`` wheel
on PyPI, so no system package (and no root) is needed. A system
``libespeak-ng.so.1`` is used only when that wheel is not installed.

Example
-------
>>> synth = EspeakSynthesizer()
>>> wav = synth.synthesize("hello there", voice="en-us+m3", rate=170)
>>> wav.dtype, wav.ndim, synth.sample_rate
(dtype('float32'), 1, 22050)
>>> 0.3 < len(wav) / synth.sample_rate < 3.0
True
"""

import ctypes
import ctypes.util
import threading

import numpy as np

__all__ = ["EspeakSynthesizer", "EspeakUnavailableError"]

# Values of the enums in espeak-ng's speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_ESPEAK_CHARS_UTF8 = 1
_PARAMETERS = {"rate": 1, "volume": 2, "pitch": 3, "range": 4, "wordgap": 7}
_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)

# espeak-ng keeps global state: one initialisation per process, one synthesis at a time.
_LOCK = threading.Lock()
_LIBRARY = None
# Some voice variants add breath noise drawn from the C library's rand().
_LIBC = ctypes.CDLL(None)


class EspeakUnavailableError(RuntimeError):
    """Raised when no espeak-ng library can be loaded."""


def _load_library():
    """Loads and initialises libespeak-ng once; returns (library, sample_rate)."""
    global _LIBRARY
    if _LIBRARY is not None:
        return _LIBRARY
    try:
        import espeakng_loader

        library_path = espeakng_loader.get_library_path()
        data_path = espeakng_loader.get_data_path().encode()
    except ImportError:
        library_path = ctypes.util.find_library("espeak-ng")
        data_path = None
    if library_path is None:
        raise EspeakUnavailableError(
            "espeak-ng is needed to synthesise the demo corpus: "
            "`pip install espeakng-loader` (installed by `pip install -e .`) "
            "or `apt-get install libespeak-ng1`."
        )
    try:
        library = ctypes.CDLL(library_path)
    except OSError as error:
        raise EspeakUnavailableError(
            f"could not load espeak-ng from {library_path}: {error}"
        ) from error
    library.espeak_Initialize.restype = ctypes.c_int
    library.espeak_Initialize.argtypes = [
        ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int
    ]
    library.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    library.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    library.espeak_SetSynthCallback.argtypes = [_CALLBACK]
    library.espeak_Synth.argtypes = [
        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
        ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
    ]
    sample_rate = library.espeak_Initialize(
        _AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, 0
    )
    if sample_rate <= 0:
        raise EspeakUnavailableError(
            f"espeak-ng failed to initialise (data path {data_path!r})"
        )
    _LIBRARY = (library, sample_rate)
    return _LIBRARY


class EspeakSynthesizer:
    """Synthesises float32 waveforms in [-1, 1] at espeak-ng's native rate.

    Arguments
    ---------
    None: the library is loaded on construction, and an
    :class:`EspeakUnavailableError` says how to install it when it is missing.
    """

    def __init__(self):
        self._library, self.sample_rate = _load_library()

    def synthesize(
        self, text, voice="en-us", rate=175, pitch=50, pitch_range=50, volume=100, seed=0
    ):
        """Returns the speech for ``text`` as a 1-D float32 array.

        Arguments
        ---------
        text : str
            What to say.
        voice : str
            espeak-ng voice name, with an optional variant: ``"en-us+f3"``.
        rate : int
            Speaking rate in words per minute (80-450).
        pitch : int
            Base pitch, 0-100.
        pitch_range : int
            Pitch variation, 0-100 (0 is monotone).
        volume : int
            Amplitude, 0-200; above about 160 the output clips.
        seed : int
            Seed of the noise some voice variants add. Output is reproducible
            for the same sequence of calls in a fresh process (espeak-ng also
            keeps state from one utterance to the next).

        Returns
        -------
        numpy.ndarray
            The waveform, float32, at ``self.sample_rate`` Hz.
        """
        chunks = []

        def collect(samples, count, _events):
            if samples and count > 0:
                chunks.append(np.ctypeslib.as_array(samples, shape=(count,)).copy())
            return 0

        callback = _CALLBACK(collect)
        encoded = text.encode("utf-8") + b"\0"
        settings = {"rate": rate, "pitch": pitch, "range": pitch_range, "volume": volume}
        with _LOCK:
            lib = self._library
            if lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise ValueError(f"espeak-ng has no voice {voice!r}")
            for name, value in settings.items():
                lib.espeak_SetParameter(_PARAMETERS[name], int(value), 0)
            lib.espeak_SetSynthCallback(callback)
            _LIBC.srand(int(seed) & 0xFFFFFFFF)
            status = lib.espeak_Synth(
                encoded, len(encoded), 0, _POS_CHARACTER, 0,
                _ESPEAK_CHARS_UTF8, None, None,
            )
            lib.espeak_Synchronize()
        if status != 0 or not chunks:
            raise RuntimeError(f"espeak-ng produced no audio for {text!r} (status {status})")
        return np.concatenate(chunks).astype(np.float32) / 32768.0
