"""Small helpers shared by the recipe, the tests and the benchmarks."""

__all__ = ["encoder_output_size"]


def encoder_output_size(encoder):
    """Width of the frames a SpeechBrain Hugging Face encoder lobe returns.

    Lets the hparams size the heads from the loaded encoder itself, so the
    same file serves ``facebook/wav2vec2-base`` (768), a large model (1024)
    and the tiny test encoder.

    Arguments
    ---------
    encoder : speechbrain.integrations.huggingface.huggingface.HFTransformersInterface
        The loaded lobe (it holds the Hugging Face model in ``.model``).

    Returns
    -------
    int

    Example
    -------
    >>> import tempfile
    >>> from speechbrain.integrations.huggingface.wav2vec2 import Wav2Vec2
    >>> from mtlser_lobes.tiny_encoder import save_tiny_wav2vec2
    >>> folder = save_tiny_wav2vec2(tempfile.mkdtemp(), hidden_size=48)
    >>> encoder_output_size(Wav2Vec2(folder, save_path=tempfile.mkdtemp()))
    48
    """
    return int(encoder.model.config.hidden_size)
