"""Export an inference model folder to ONNX, for ONNX Runtime without PyTorch.

``mtlser-export EXPERIMENT --onnx`` (or ``export_onnx(MODEL_FOLDER)``) writes
``MODEL_FOLDER/onnx/``:

- ``model.onnx``: encoder and the three heads in one graph. Inputs: ``wav``
  (batch, samples) float32 at the model's rate and ``wav_lens`` (batch,),
  SpeechBrain's relative lengths. Outputs: ``emotion_probs`` (batch,
  n_emotions), ``ctc_log_probs`` (batch, frames, n_tokens), ``frame_counts``
  (batch,) real frames of each item, ``speaker_embedding`` (batch, dim) and
  ``speaker_scores`` (batch, n_training_speakers), the cosine similarity of the
  centred embedding to each training speaker. Batch and time are dynamic.
- ``model.int8.onnx``: the same in int8: the feature encoder's convolutions with
  activations quantised per frame, the other matrix products by ONNX Runtime's
  dynamic quantisation (:mod:`~mtlser_lobes.inference.onnx_quantization`).
- ``config.json``: everything else inference needs (classes, CTC characters,
  speakers, the speaker gallery, thresholds); no YAML, nothing executable.

:class:`mtlser_lobes.inference.onnx_runtime.OnnxMTLSER` answers files from that folder
with ``onnxruntime``, numpy, soundfile and scipy only. Every export is checked:
the fp32 graph must give the PyTorch model's outputs within ``tolerance`` on a
random utterance, or the export fails.
"""

import json
import os
import shutil
import tempfile

import numpy as np
import torch

from mtlser_lobes.artifacts import ONNX_CONFIG, ONNX_FOLDER, ONNX_INT8_MODEL, ONNX_MODEL
from mtlser_lobes.heads import frame_mask
from mtlser_lobes.helpers import publish_folder, write_text_atomically
from mtlser_lobes.inference.onnx_quantization import quantize_int8
from mtlser_lobes.precision import REFERENCE_RUN_OPTS

__all__ = ["InferenceGraph", "export_onnx", "export_loaded_model", "OUTPUT_NAMES"]

#: Names of the graph's outputs, in order.
OUTPUT_NAMES = ["emotion_probs", "ctc_log_probs", "frame_counts", "speaker_embedding", "speaker_scores"]
_INPUT_NAMES = ["wav", "wav_lens"]
OPSET = 18


class InferenceGraph(torch.nn.Module):
    """The forward pass of :class:`~mtlser_lobes.inference.interface.MTLSER` as one traceable module.

    It computes what ``MTLSER.forward`` computes (the encoder lobe's
    normalisation and padding mask, the heads on every hidden state or the
    last one, the speaker embedding and its cosine scores against the
    training speakers), written with tensor arithmetic only so that batch and
    time stay dynamic in the exported graph.

    Arguments
    ---------
    modules : torch.nn.ModuleDict
        ``wav2vec2``, ``emotion_head``, ``ctc_head``, ``speaker_head`` and
        ``speaker_gallery`` of a loaded model (``MTLSER.mods``).

    Example
    -------
    >>> import tempfile
    >>> from mtlser_lobes.inference.interface import MTLSER
    >>> from mtlser_lobes.demo.tiny_encoder import save_tiny_wav2vec2
    >>> model = MTLSER.untrained(save_tiny_wav2vec2(tempfile.mkdtemp()), tempfile.mkdtemp(),
    ...                          run_opts={"device": "cpu", "precision": "fp32"})
    >>> graph = InferenceGraph(model.mods)
    >>> outputs = graph(torch.randn(2, 16000), torch.tensor([1.0, 0.5]))
    >>> [tuple(o.shape) for o in outputs]
    [(2, 4), (2, 49, 29), (2,), (2, 64), (2, 8)]
    >>> outputs[2].tolist()  # real frames of each item
    [49, 24]
    """

    def __init__(self, modules):
        super().__init__()
        self.encoder = modules["wav2vec2"]
        self.emotion_head = modules["emotion_head"]
        self.ctc_head = modules["ctc_head"]
        self.speaker_head = modules["speaker_head"]
        self.speaker_gallery = modules["speaker_gallery"]
        block = getattr(self.ctc_head, "block", None)
        if isinstance(block, torch.nn.LSTM):
            raise ValueError(
                "a CTC head with an LSTM block (ctc_block: lstm) cannot be exported to ONNX with "
                "dynamic batches; use ctc_block none or transformer"
            )

    def forward(self, wav, wav_lens):
        """(batch, samples), (batch,) -> the :data:`OUTPUT_NAMES` tensors."""
        n_samples = wav.shape[1]
        samples = torch.round(wav_lens * n_samples).long()
        attention_mask = frame_mask(samples, n_samples).long()
        if self.encoder.normalize_wav:
            wav = torch.nn.functional.layer_norm(wav, wav.shape[1:])
        output = self.encoder.model(
            wav, attention_mask=attention_mask, output_hidden_states=self.encoder.output_all_hiddens
        )
        if self.encoder.output_all_hiddens:
            feats = torch.stack(list(output.hidden_states), dim=0)  # (layers, batch, frames, hidden)
            norm_shape = feats.shape[-2:]
        else:
            feats = output.last_hidden_state  # (batch, frames, hidden)
            norm_shape = feats.shape[1:]
        if self.encoder.output_norm:
            feats = torch.nn.functional.layer_norm(feats, norm_shape)
        n_frames = feats.shape[-2]
        frame_counts = self.encoder.model._get_feat_extract_output_lengths(samples).clamp(min=1, max=n_frames)
        feat_lens = frame_counts.to(wav.dtype) / n_frames
        emotion = self.emotion_head(feats, feat_lens).exp()  # (batch, n_emotions)
        ctc = self.ctc_head(feats, feat_lens)  # (batch, frames, n_tokens)
        embedding = self.speaker_head.embed(feats, feat_lens)  # (batch, dim)
        centred = torch.nn.functional.normalize(embedding - self.speaker_gallery.mean, dim=-1)
        scores = centred @ self.speaker_gallery.centroids.T  # (batch, speakers)
        return emotion, ctc, frame_counts, embedding, scores


def _config(model):
    """The JSON config of the ONNX folder: what the runtime needs besides the graph."""
    hparams = model.hparams
    gallery = model.mods.speaker_gallery
    return {
        "format": "mtlser-onnx",
        "version": 1,
        "sample_rate": int(model.sample_rate),
        "min_duration_s": float(hparams.min_duration_s),
        "silence_peak": float(hparams.silence_peak),
        "speaker_threshold": float(model.speaker_threshold),
        "blank_index": int(hparams.blank_index),
        "emotion_classes": list(model.emotion_classes),
        "tokens": [model.tokenizer.ind2lab[i] for i in range(len(model.tokenizer))],
        "speakers": list(model.trained_speakers),
        "speaker_mean": gallery.mean.tolist(),
        "speaker_centroids": gallery.centroids.tolist(),
        "pads_batches": bool(model.pads_batches),
        "auto_segment_after_s": model.auto_segment_after_s,
        "auto_segment_s": model.auto_segment_s,
        "inputs": _INPUT_NAMES,
        "outputs": OUTPUT_NAMES,
    }


def _max_differences(session, graph, wav, wav_lens):
    """Largest absolute difference of each output between ONNX Runtime and torch."""
    with torch.no_grad():
        reference = graph(wav, wav_lens)
    outputs = session.run(OUTPUT_NAMES, {"wav": wav.numpy(), "wav_lens": wav_lens.numpy()})
    return {
        name: float(np.abs(out.astype(np.float64) - ref.numpy().astype(np.float64)).max())
        for name, out, ref in zip(OUTPUT_NAMES, outputs, reference)
    }


def export_onnx(model_folder, onnx_folder=None, quantize=True, tolerance=1e-4, seed=0):
    """Writes the ONNX folder of an exported model (see the module docstring).

    Arguments
    ---------
    model_folder : str
        A folder written by :func:`mtlser_lobes.inference.export.export_model`.
    onnx_folder : str, optional
        Destination, default ``<model_folder>/onnx``; replaced whole.
    quantize : bool
        Also write ``model.int8.onnx`` (dynamic int8 quantisation).
    tolerance : float
        Largest difference from the PyTorch outputs accepted for the fp32 graph.
    seed : int
        Seed of the random check utterances.

    Returns
    -------
    dict
        ``folder`` and, per output, the largest difference from PyTorch
        (``max_difference``) measured on the check utterances.

    Raises
    ------
    ValueError
        When the exported graph does not reproduce the PyTorch outputs.
    """
    from mtlser_lobes.inference.interface import MTLSER

    model_folder = os.path.abspath(model_folder)
    # fp32 whatever the CPU: ONNX Runtime has no bf16 kernels for the convolutions (``auto`` would
    # pick bf16 on a CPU with AVX512-BF16 or AMX)
    model = MTLSER.from_hparams(source=model_folder, run_opts=REFERENCE_RUN_OPTS)
    return export_loaded_model(model, onnx_folder or os.path.join(model_folder, ONNX_FOLDER), quantize, tolerance, seed)


def export_loaded_model(model, onnx_folder, quantize=True, tolerance=1e-4, seed=0):
    """:func:`export_onnx` for a model already loaded (an fp32 ``MTLSER`` on the CPU).

    Raises
    ------
    ValueError
        For a model loaded in another precision (bf16 is what ``auto`` picks on CPUs with
        AVX512-BF16 or AMX): its graph would not load in ONNX Runtime.
    """
    import onnxruntime

    if getattr(model, "encoder_dtype", torch.float32) != torch.float32:
        raise ValueError(
            f"ONNX export needs the model in fp32, not {model.precision}: load it with "
            'run_opts={"device": "cpu", "precision": "fp32"}'
        )
    onnx_folder = os.path.abspath(onnx_folder)
    graph = InferenceGraph(model.mods).eval()
    generator = torch.Generator().manual_seed(seed)
    example = (0.1 * torch.randn(2, model.sample_rate * 2, generator=generator), torch.tensor([1.0, 0.7]))
    batch = torch.export.Dim("batch", min=1, max=1024)
    time = torch.export.Dim("time", min=int(model.sample_rate * model.hparams.min_duration_s), max=2**31 - 1)

    parent = os.path.dirname(onnx_folder)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".onnx-", dir=parent)
    try:
        path = os.path.join(staging, ONNX_MODEL)
        with torch.no_grad():
            torch.onnx.export(
                graph, example, path, input_names=_INPUT_NAMES, output_names=OUTPUT_NAMES,
                dynamic_shapes={"wav": {0: batch, 1: time}, "wav_lens": {0: batch}},
                opset_version=OPSET, dynamo=True, external_data=False, verbose=False,
            )
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        differences = {}
        for n_samples, lens in ((model.sample_rate * 3 + 123, [1.0]), (model.sample_rate, [1.0, 0.6, 0.35])):
            wav = 0.1 * torch.randn(len(lens), n_samples, generator=generator)
            for name, value in _max_differences(session, graph, wav, torch.tensor(lens)).items():
                differences[name] = max(differences.get(name, 0.0), value)
        worst = max(v for k, v in differences.items() if k != "frame_counts")
        if worst > tolerance or differences["frame_counts"] > 0:
            raise ValueError(f"the ONNX graph differs from the PyTorch model by {differences} (tolerance {tolerance})")
        if quantize:
            quantize_int8(path, os.path.join(staging, ONNX_INT8_MODEL))
        write_text_atomically(os.path.join(staging, ONNX_CONFIG), json.dumps(_config(model), indent=1) + "\n")
        publish_folder(staging, onnx_folder)  # the old folder goes only once the new one is complete
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {"folder": onnx_folder, "max_difference": differences}
