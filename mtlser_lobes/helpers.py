"""Small helpers shared by the recipe, the tests and the benchmarks."""

import os

import torch

__all__ = [
    "encoder_output_size", "encoder_hidden_states", "frame_lengths", "pads_exactly", "prepared_rows",
    "training_directory", "write_text_atomically",
]


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
    >>> from mtlser_lobes.demo.tiny_encoder import save_tiny_wav2vec2
    >>> folder = save_tiny_wav2vec2(tempfile.mkdtemp(), hidden_size=48)
    >>> encoder_output_size(Wav2Vec2(folder, save_path=tempfile.mkdtemp()))
    48
    """
    return int(encoder.model.config.hidden_size)


def encoder_hidden_states(encoder):
    """How many hidden states the encoder lobe returns with ``output_all_hiddens``.

    Its transformer layers plus the projected convolutional features before them
    (13 for ``facebook/wav2vec2-base``).

    Example
    -------
    >>> import tempfile
    >>> from speechbrain.integrations.huggingface.wav2vec2 import Wav2Vec2
    >>> from mtlser_lobes.demo.tiny_encoder import save_tiny_wav2vec2
    >>> encoder_hidden_states(Wav2Vec2(save_tiny_wav2vec2(tempfile.mkdtemp()), save_path=tempfile.mkdtemp()))
    3
    """
    return int(encoder.model.config.num_hidden_layers) + 1


def frame_lengths(encoder, wav_lens, n_samples, n_frames):
    """Relative lengths of the encoder frames that cover real (unpadded) audio.

    SpeechBrain's relative lengths are fractions of the padded batch. Scaling
    the waveform fraction by the frame count can be off by one frame, which
    then lets a padded frame into the pooling; this counts the frames exactly
    with the encoder's own convolution arithmetic, so an utterance gives the
    same heads' output alone and inside a padded batch.

    Arguments
    ---------
    encoder : speechbrain.integrations.huggingface.wav2vec2.Wav2Vec2
        The encoder lobe (its ``.model`` knows its feature-extractor strides).
    wav_lens : torch.Tensor
        Relative waveform lengths, (batch,).
    n_samples : int
        Padded waveform length.
    n_frames : int
        Number of frames the encoder returned for the padded batch.

    Returns
    -------
    torch.Tensor
        Relative frame lengths, (batch,), such that
        ``round(lengths * n_frames)`` is the exact number of real frames.

    Example
    -------
    >>> import tempfile
    >>> from speechbrain.integrations.huggingface.wav2vec2 import Wav2Vec2
    >>> from mtlser_lobes.demo.tiny_encoder import save_tiny_wav2vec2
    >>> encoder = Wav2Vec2(save_tiny_wav2vec2(tempfile.mkdtemp()), save_path=tempfile.mkdtemp())
    >>> lengths = frame_lengths(encoder, torch.tensor([1.0, 0.1185]), 16000, 49)
    >>> torch.round(lengths * 49).tolist()  # 1896 samples: 5 frames, not round(5.81) = 6
    [49.0, 5.0]
    """
    samples = torch.round(wav_lens * n_samples).long()
    encoder = getattr(encoder, "module", encoder)  # under DistributedDataParallel
    frames = encoder.model._get_feat_extract_output_lengths(samples)
    return frames.clamp(min=1, max=n_frames).to(wav_lens.dtype) / n_frames


def pads_exactly(config, normalize_wav=False):
    """Whether the encoder gives each utterance of a padded batch its output alone.

    The encoder families differ in what padding reaches:

    - wav2vec 2.0, HuBERT and WavLM with a **group-norm** front end
      (``feat_extract_norm: group``: ``wav2vec2-base``, ``hubert-base-ls960``,
      ``wavlm-base-plus``) normalise each channel of the first convolution over
      all samples, padding included: a padded batch changes every frame.
    - With a **layer-norm** front end (``feat_extract_norm: layer``: the large
      models) each frame is normalised alone and the padded frames are zeroed
      before the positional convolution: exact, unless HuBERT's
      ``conv_pos_batch_norm`` turns those zeros into its batch norm's offset.
    - **data2vec-audio** has no ``feat_extract_norm`` (a layer norm after every
      convolution of its front end), but its positional embedding stacks
      ``num_conv_pos_embeddings`` convolutions (5 in ``data2vec-audio-base``)
      without zeroing the padded frames between them, so the padding's outputs
      of one feed the real frames of the next: exact only with a single one.
    - An **adapter** (``add_adapter``) convolves the output again with no
      padding mask; ``normalize_wav`` (the feature extractor's ``do_normalize``)
      standardises each waveform over its padded length: neither is exact.

    Any other model type is treated as not exact.

    Arguments
    ---------
    config : transformers.PretrainedConfig
        The encoder's config (``encoder.model.config``).
    normalize_wav : bool
        Whether the lobe layer-normalises the waveform first (its ``normalize_wav``).

    Returns
    -------
    bool
        True when padded batches give every utterance its output alone (to
        rounding); False when utterances must be encoded one at a time for that.

    Example
    -------
    >>> from transformers import AutoConfig
    >>> pads_exactly(AutoConfig.for_model("wav2vec2", feat_extract_norm="group"))
    False
    >>> pads_exactly(AutoConfig.for_model("wavlm", feat_extract_norm="layer"))
    True
    >>> pads_exactly(AutoConfig.for_model("wavlm", feat_extract_norm="layer"), normalize_wav=True)
    False
    >>> pads_exactly(AutoConfig.for_model("data2vec-audio")), pads_exactly(
    ...     AutoConfig.for_model("data2vec-audio", num_conv_pos_embeddings=1))
    (False, True)
    """
    if normalize_wav or getattr(config, "add_adapter", False):
        return False
    model_type = getattr(config, "model_type", "wav2vec2")
    if model_type == "data2vec-audio":
        return int(config.num_conv_pos_embeddings) <= 1
    if model_type in ("wav2vec2", "hubert", "wavlm"):
        return config.feat_extract_norm == "layer" and not getattr(config, "conv_pos_batch_norm", False)
    return False


def prepared_rows(csv_path, data_folder):
    """Rows of a CSV written by ``iemocap_prepare``, with ``$data_root`` in ``wav`` resolved.

    Example
    -------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "train.csv")
    >>> _ = open(path, "w").write("ID,wav,emo\\na,$data_root/a.wav,neu\\n")
    >>> prepared_rows(path, "/data")[0]["wav"]
    '/data/a.wav'
    """
    import csv

    with open(csv_path, newline="", encoding="utf-8") as fin:
        rows = list(csv.DictReader(fin))
    for row in rows:
        row["wav"] = row["wav"].replace("$data_root", data_folder)
    return rows


def write_text_atomically(path, text):
    """Writes ``text`` to ``path`` through a temporary file and a rename.

    A reader never sees a half-written file: the old one or the new one.

    Example
    -------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "a.txt")
    >>> write_text_atomically(path, "done")
    >>> open(path).read(), os.listdir(os.path.dirname(path))
    ('done', ['a.txt'])
    """
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as out_file:
        out_file.write(text)
    os.replace(temporary, path)


def training_directory(experiment_folder, output_folder):
    """The directory train.py ran in: relative paths of its hyperparams start there.

    Arguments
    ---------
    experiment_folder : str
        Where the experiment is now (any form).
    output_folder : str
        The ``output_folder`` its saved ``hyperparams.yaml`` names (relative to
        the training directory, or absolute).

    Returns
    -------
    str
        The training directory; the current one when it cannot be told.

    Example
    -------
    >>> training_directory("/work/recipe/results/exp", "results/exp")
    '/work/recipe'
    """
    if os.path.isabs(output_folder):
        return os.getcwd()
    experiment = os.path.normpath(os.path.abspath(experiment_folder))
    relative = os.path.normpath(output_folder)
    if experiment.endswith(os.sep + relative):
        return experiment[: -len(relative) - 1]
    return os.getcwd()


def publish_folder(staging, folder):
    """Replaces ``folder`` by the complete ``staging`` folder, with the usual permissions.

    ``staging`` (made by ``tempfile.mkdtemp`` beside ``folder``, so private) gets
    the permissions the umask gives new folders and files, then takes the place
    of ``folder``: a reader sees the old folder or the new one, never a mix.

    Example
    -------
    >>> import os, tempfile
    >>> parent = tempfile.mkdtemp()
    >>> staging = tempfile.mkdtemp(dir=parent)
    >>> _ = open(os.path.join(staging, "a.txt"), "w").write("new")
    >>> publish_folder(staging, os.path.join(parent, "model"))
    >>> os.listdir(parent), open(os.path.join(parent, "model", "a.txt")).read()
    (['model'], 'new')
    """
    import shutil

    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)
    for name in os.listdir(staging):
        os.chmod(os.path.join(staging, name), 0o666 & ~umask)
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    os.replace(staging, folder)
