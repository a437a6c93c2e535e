"""The int8 graph's rewrites (``mtlser_lobes.inference.onnx_quantization``) on small ONNX graphs run by ONNX Runtime."""

import os
import tempfile

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from mtlser_lobes.inference.onnx_quantization import (cancel_transposes, drop_softmax_nan_guards, fuse_gelu,
                                                      instance_norm_as_layer_norm, quantize_convolutions_per_frame,
                                                      quantize_int8)

RNG = np.random.default_rng(0)


def _run(model, feeds):
    return onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def _exact_gelu(x, y, tag):
    """The exporter's GELU: x * (0.5 * (erf(x / sqrt(2)) + 1))."""
    return [
        helper.make_node("Div", [x, "sqrt2"], [f"{tag}_d"]),
        helper.make_node("Erf", [f"{tag}_d"], [f"{tag}_e"]),
        helper.make_node("Add", [f"{tag}_e", "one"], [f"{tag}_a"]),
        helper.make_node("Mul", ["half", f"{tag}_a"], [f"{tag}_h"]),
        helper.make_node("Mul", [x, f"{tag}_h"], [y]),
    ]


def _feature_encoder(channels=16, bias=False):
    """A wav2vec 2.0-like stack: waveform conv (k10 s5), GELU, conv k3 s2, GELU, conv k2 s2, GELU, transpose."""
    weights = {
        "w0": RNG.standard_normal((channels, 1, 10)).astype("float32") * 0.3,
        "w1": RNG.standard_normal((channels, channels, 3)).astype("float32") * 0.2,
        "w2": RNG.standard_normal((channels, channels, 2)).astype("float32") * 0.2,
    }
    if bias:
        weights["b1"] = RNG.standard_normal(channels).astype("float32")
    constants = {"sqrt2": np.array(2**0.5, "float32"), "one": np.array(1.0, "float32"),
                 "half": np.array(0.5, "float32")}
    nodes = [helper.make_node("Unsqueeze", ["wav", "axis1"], ["x"]),
             helper.make_node("Conv", ["x", "w0"], ["c0"], strides=[5], name="conv0")]
    nodes += _exact_gelu("c0", "g0", "a")
    nodes.append(helper.make_node("Conv", ["g0", "w1"] + (["b1"] if bias else []), ["c1"], strides=[2], name="conv1"))
    nodes += _exact_gelu("c1", "g1", "b")
    nodes.append(helper.make_node("Conv", ["g1", "w2"], ["c2"], strides=[2], name="conv2"))
    nodes += _exact_gelu("c2", "g2", "c")
    nodes.append(helper.make_node("Transpose", ["g2"], ["features"], perm=[0, 2, 1]))
    initializers = [numpy_helper.from_array(v, k) for k, v in {**weights, **constants}.items()]
    initializers.append(numpy_helper.from_array(np.array([1], "int64"), "axis1"))
    graph = helper.make_graph(nodes, "encoder", [helper.make_tensor_value_info("wav", TensorProto.FLOAT, ["b", "t"])],
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["b", "f", channels])],
                              initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _loud_and_quiet(batch=2, seconds=0.5):
    """Noise whose level falls by 60 dB along each utterance, a different level per item."""
    n = int(16000 * seconds)
    envelope = np.geomspace(1.0, 1e-3, n, dtype="float32")
    return np.stack([(0.5 ** i) * envelope * RNG.standard_normal(n).astype("float32") for i in range(batch)])


def _frame_errors(reference, quantized):
    """Largest error of each output frame relative to that frame's largest value."""
    return np.abs(quantized - reference).max(axis=-1) / np.abs(reference).max(axis=-1)


@pytest.mark.parametrize("bias", [False, True])
def test_per_frame_convolutions_keep_quiet_frames(bias):
    model, wav = _feature_encoder(bias=bias), _loud_and_quiet()
    (reference,) = _run(model, {"wav": wav})
    assert quantize_convolutions_per_frame(model) == 2  # the waveform's convolution stays fp32
    assert [n.op_type for n in model.graph.node].count("Conv") == 1
    (quantized,) = _run(model, {"wav": wav})
    assert quantized.shape == reference.shape
    # every frame, 60 dB down included, within a few per cent of its own size
    assert _frame_errors(reference, quantized).max() < 0.1


def test_one_scale_per_tensor_loses_the_quiet_frames():
    """Why per frame: ONNX Runtime's dynamic ConvInteger, one scale per tensor, on the same audio."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model, wav = _feature_encoder(), _loud_and_quiet(batch=1)
    (reference,) = _run(model, {"wav": wav})
    with tempfile.TemporaryDirectory() as folder:
        onnx.save(model, os.path.join(folder, "fp32.onnx"))
        per_tensor_path = os.path.join(folder, "per_tensor.onnx")
        quantize_dynamic(os.path.join(folder, "fp32.onnx"), per_tensor_path, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["Conv"], nodes_to_exclude=["conv0"])
        (per_tensor,) = _run(onnx.load(per_tensor_path), {"wav": wav})
    quantize_convolutions_per_frame(model)
    (per_frame,) = _run(model, {"wav": wav})
    quiet = slice(-10, None)  # the last frames, 50-60 dB down
    assert _frame_errors(reference, per_frame)[:, quiet].max() < 0.1
    assert _frame_errors(reference, per_tensor)[:, quiet].max() > 0.5


@pytest.mark.parametrize("kernel, stride", [(3, 2), (2, 2), (4, 2), (5, 1), (3, 3), (2, 3)])
def test_every_kernel_and_stride(kernel, stride):
    """Blocks of ``stride`` frames where stride <= kernel <= 2 * stride, one row per output frame otherwise."""
    w = RNG.standard_normal((8, 6, kernel)).astype("float32")
    b = RNG.standard_normal(8).astype("float32")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], strides=[stride])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 6, "t"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 8, "f"])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    for length in (kernel, kernel + 1, 23, 24):  # every remainder of the blocks, the shortest input
        x = (RNG.standard_normal((2, 6, length)) * np.geomspace(1e-3, 1, length)).astype("float32")
        (reference,) = _run(model, {"x": x})
        quantized_model = onnx.ModelProto()
        quantized_model.CopyFrom(model)
        assert quantize_convolutions_per_frame(quantized_model) == 1
        (quantized,) = _run(quantized_model, {"x": x})
        assert quantized.shape == reference.shape
        errors = np.abs(quantized - reference).max(axis=1) / np.abs(reference).max(axis=1)
        assert errors.max() < 0.1, (length, errors.max())


def test_ineligible_convolutions_are_left_alone():
    w = RNG.standard_normal((8, 4, 3)).astype("float32")
    nodes = [helper.make_node("Conv", ["x", "w"], ["padded"], pads=[1, 1]),
             helper.make_node("Conv", ["x", "wg"], ["grouped"], group=2),
             helper.make_node("Conv", ["x", "w"], ["dilated"], dilations=[2])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 20])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 8, None]) for name in ("padded", "grouped", "dilated")],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(w[:, :2], "wg")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    before = model.SerializeToString()
    assert quantize_convolutions_per_frame(model) == 0
    assert model.SerializeToString() == before


def test_gelu_fusion_and_transpose_cancelling_keep_the_outputs():
    model, wav = _feature_encoder(), _loud_and_quiet()
    quantize_convolutions_per_frame(model)
    (before,) = _run(model, {"wav": wav})
    assert fuse_gelu(model) == 3
    assert cancel_transposes(model) == 2  # between the two rewritten convolutions, and the final one
    ops = [n.op_type for n in model.graph.node]
    assert "Erf" not in ops and ops.count("Gelu") == 3 and ops.count("Transpose") == 1  # only the one into the first rewritten convolution
    onnx.checker.check_model(model)
    (after,) = _run(model, {"wav": wav})
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-5)


def test_quantize_int8_writes_a_graph_with_integer_products(tmp_path):
    model = _feature_encoder()
    onnx.save(model, tmp_path / "model.onnx")
    quantize_int8(str(tmp_path / "model.onnx"), str(tmp_path / "model.int8.onnx"))
    int8 = onnx.load(tmp_path / "model.int8.onnx")
    ops = [n.op_type for n in int8.graph.node]
    # k3 s2: two products (taps 0-1, tap 2); k2 s2: one; the zero-point offsets stay float
    assert ops.count("MatMulInteger") == 3 and ops.count("MatMul") == 2
    assert ops.count("Conv") == 1 and ops.count("Gelu") == 3
    wav = _loud_and_quiet()
    (reference,), (quantized,) = _run(model, {"wav": wav}), _run(int8, {"wav": wav})
    assert _frame_errors(reference, quantized).max() < 0.1


@pytest.mark.parametrize("affine", [False, True])
def test_instance_norm_as_layer_norm_is_the_same_normalisation(affine):
    channels = 6
    scale = RNG.uniform(0.5, 2, channels).astype("float32") if affine else np.ones(channels, "float32")
    bias = RNG.standard_normal(channels).astype("float32") if affine else np.zeros(channels, "float32")
    graph = helper.make_graph(
        [helper.make_node("InstanceNormalization", ["x", "scale", "bias"], ["y"], epsilon=1e-5)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", channels, "t"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", channels, "t"])],
        [numpy_helper.from_array(scale, "scale"), numpy_helper.from_array(bias, "bias")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    x = (RNG.standard_normal((3, channels, 50)) * RNG.uniform(0.01, 10, (3, channels, 1))).astype("float32")
    (reference,) = _run(model, {"x": x})
    assert instance_norm_as_layer_norm(model) == 1
    assert "InstanceNormalization" not in [n.op_type for n in model.graph.node]
    (replaced,) = _run(model, {"x": x})
    np.testing.assert_allclose(replaced, reference, rtol=1e-4, atol=1e-4)


def _masked_attention(mask_value):
    """softmax(scores + mask) guarded as PyTorch's exporter guards it: Where(IsNaN(p), 0, p)."""
    nodes = [helper.make_node("Where", ["keep", "zero", "masked"], ["mask"]),
             helper.make_node("Add", ["scores", "mask"], ["masked_scores"]),
             helper.make_node("Softmax", ["masked_scores"], ["p"], axis=-1),
             helper.make_node("IsNaN", ["p"], ["nan"]),
             helper.make_node("Where", ["nan", "zero", "p"], ["weights"]),
             helper.make_node("Identity", ["weights"], ["attention"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [2, 4, 4]),
                     helper.make_tensor_value_info("keep", TensorProto.BOOL, [2, 1, 4])],
        [helper.make_tensor_value_info("attention", TensorProto.FLOAT, [2, 4, 4])],
        [numpy_helper.from_array(np.array(0.0, "float32"), "zero"),
         numpy_helper.from_array(np.array(mask_value, "float32"), "masked")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_softmax_nan_guards_go_only_where_the_mask_is_finite():
    scores = RNG.standard_normal((2, 4, 4)).astype("float32")
    keep = np.array([[[True, True, True, False]], [[True, True, False, False]]])
    finite = _masked_attention(np.finfo("float32").min)
    (reference,) = _run(finite, {"scores": scores, "keep": keep})
    assert drop_softmax_nan_guards(finite) == 1
    assert "IsNaN" not in [n.op_type for n in finite.graph.node]
    (dropped,) = _run(finite, {"scores": scores, "keep": keep})
    np.testing.assert_array_equal(dropped, reference)
    infinite = _masked_attention(-np.inf)  # a fully masked row would be NaN without its guard
    assert drop_softmax_nan_guards(infinite) == 0
