"""int8 graphs for ONNX Runtime: the matrix products and the convolutions of the feature encoder.

:func:`quantize_int8` turns the fp32 graph of :mod:`~mtlser_lobes.inference.onnx_export` into
``model.int8.onnx``:

1. every convolution of the feature encoder but the first (the one on the waveform) becomes
   integer matrix products whose activations are quantised **per block of frames** at run time
   (:func:`quantize_convolutions_per_frame`): each block of ``stride`` input frames gets its own
   scale and zero point from its minimum and maximum, the weights are int8 per output channel, and
   ``MatMulInteger`` multiplies them (the VNNI or AMX kernels where the CPU has them);
2. element-wise work on the feature encoder's long activations shrinks: the exporter's exact GELUs
   become single ``Gelu`` nodes, the transposes the rewrite leaves around them cancel, and the group
   normalisation runs as a layer normalisation over time (:func:`fuse_gelu`,
   :func:`cancel_transposes`, :func:`instance_norm_as_layer_norm`); the attention softmaxes lose
   their NaN guards, which a finite mask makes idle (:func:`drop_softmax_nan_guards`);
3. ONNX Runtime's dynamic quantisation turns the remaining matrix products (the transformer's
   linear layers, the heads) into ``DynamicQuantizeMatMul``.

Why per block of frames: the layer normalisation after the feature encoder scales every frame to unit
variance, so a quiet frame's small activations matter as much as a loud frame's. One scale for the
whole tensor (ONNX Runtime's static ``QLinearConv`` with calibrated ranges, or its dynamic
``ConvInteger``) rounds quiet frames to a few levels; on the demo model that changed a fifth of the
emotion labels (``benchmarks/onnx_static_quantization.py``), and a scale per block of frames keeps them.

Activations take 128 levels (0-127), not 256: x86 CPUs without VNNI multiply uint8 by int8 with
``VPMADDUBSW``, whose 16-bit sums of two products saturate above 32,767; 127 * 127 * 2 stays
below it, so the graph gives the same answers on every CPU.
"""

import numpy as np

__all__ = ["cancel_transposes", "drop_softmax_nan_guards", "fuse_gelu", "instance_norm_as_layer_norm",
           "quantize_convolutions_per_frame", "quantize_int8", "quantize_matrix_products"]


def _attribute(node, name, default):
    import onnx

    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return default


def _convertible(node, initializers):
    """The weight (out, in, kernel) of a Conv node this module rewrites, or None.

    Rewritten: 1-D, one group, no padding or dilation, constant weights, more than one input
    channel (the waveform's convolution stays fp32: it is cheap and its input is the raw signal).
    """
    if node.op_type != "Conv" or node.input[1] not in initializers:
        return None
    weight = initializers[node.input[1]]
    if weight.ndim != 3 or weight.shape[1] == 1 or _attribute(node, "group", 1) != 1:
        return None
    if any(_attribute(node, "pads", [0, 0])) or set(_attribute(node, "dilations", [1])) != {1}:
        return None
    if _attribute(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return None
    if len(node.input) > 2 and node.input[2] and node.input[2] not in initializers:
        return None
    return weight


def quantize_convolutions_per_frame(model, activation_levels=127, weight_levels=127):
    """Rewrite the eligible ``Conv`` nodes of ``model`` (an ``onnx.ModelProto``) as int8 matrix products.

    Each ``Conv(x: (batch, channels, time), w: (out, channels, kernel), stride)`` becomes, with
    ``x`` transposed to (batch, time, channels) and rows quantised to uint8 as
    ``q = QuantizeLinear(row, scale, zero_point)`` (one scale per row through ``block_size``,
    opset 21), where ``lo = min(row, 0)``, ``scale = (max(row, 0) - lo) / activation_levels`` and
    ``zero_point = round(-lo / scale)``:

    - with ``stride <= kernel <= 2 * stride`` (wav2vec 2.0's feature encoder): one scale per block
      of ``stride`` input frames; ``x`` is quantised once, and ``MatMulInteger`` multiplies uint8
      views of it, blocks ``0 .. t_out-1`` by the weights of taps ``0 .. stride-1`` and the first
      ``kernel - stride`` frames of blocks ``1 .. t_out`` by the others (:func:`_blocked_nodes`);
    - otherwise the frames each output frame reads, laid out as one row (im2col), one scale per
      row (:func:`_im2col_nodes`);

    then ``(acc - zero_point * sum(w_int8)) * scale * w_scale`` summed over the products, plus the
    bias, transposed back. Exact up to the rounding of ``q`` and of the weights. The model's default
    opset is raised to 21. Returns the number of convolutions rewritten.

    Example
    -------
    >>> import onnx, onnxruntime
    >>> from onnx import helper, numpy_helper, TensorProto
    >>> rng = np.random.default_rng(0)
    >>> w = rng.standard_normal((8, 4, 3)).astype("float32")
    >>> graph = helper.make_graph(
    ...     [helper.make_node("Conv", ["x", "w"], ["y"], strides=[2])], "g",
    ...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4, "t"])],
    ...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 8, "f"])], [numpy_helper.from_array(w, "w")])
    >>> model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    >>> x = rng.standard_normal((2, 4, 21)).astype("float32") * np.geomspace(1e-3, 1, 21, dtype="float32")
    >>> run = lambda m: onnxruntime.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0]
    >>> reference = run(model)
    >>> quantize_convolutions_per_frame(model)
    1
    >>> quantized = run(model)
    >>> quantized.shape == reference.shape
    True
    >>> # error relative to each output frame's own size: small for quiet frames too
    >>> error = np.abs(quantized - reference).max(axis=1) / np.abs(reference).max(axis=1)
    >>> bool(error.max() < 0.03)
    True
    """
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    initializers = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    new_nodes, new_initializers, rewritten = [], [], 0

    added = set()

    def constant(name, value):
        if name not in added:  # a name asked for twice holds the same value
            added.add(name)
            new_initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    shared = {
        "zero": constant("pfq_zero", np.array(0.0, "float32")),
        "eps": constant("pfq_eps", np.array(1e-12, "float32")),
        "levels": constant("pfq_levels", np.array(float(activation_levels), "float32")),
        "last": constant("pfq_last_axis", np.array([-1], "int64")),
        "time": constant("pfq_time_axis", np.array([1], "int64")),
    }
    for node in graph.node:
        weight = _convertible(node, initializers)
        if weight is None:
            new_nodes.append(node)
            continue
        stride = _attribute(node, "strides", [1])[0]
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        build = _blocked_nodes if stride <= weight.shape[2] <= 2 * stride else _im2col_nodes
        nodes = build(f"pfq{rewritten}_", node.input[0], node.output[0], weight, stride, bias, shared, constant,
                      weight_levels)
        for new in nodes:
            new.name = new.output[0]
        new_nodes += nodes
        rewritten += 1
    _set_nodes(graph, new_nodes)
    if not rewritten:
        return 0
    graph.initializer.extend(new_initializers)
    for opset in model.opset_import:  # QuantizeLinear with one scale per row (block_size) needs opset 21
        if opset.domain in ("", "ai.onnx"):
            opset.version = max(opset.version, 21)
    onnx.checker.check_model(model)
    return rewritten


def _int8_weights(weight, weight_levels):
    """(out, in, taps) -> int8 matrix (taps * in, out), rows ordered (tap, channel); scale per output channel."""
    n_out, n_in, taps = weight.shape
    matrix = weight.transpose(2, 1, 0).reshape(taps * n_in, n_out)
    w_scale = (np.maximum(np.abs(matrix).max(axis=0), 1e-12) / weight_levels).astype("float32")
    w_int8 = np.clip(np.round(matrix / w_scale), -weight_levels, weight_levels).astype("int8")
    column_sums = (w_int8.astype("float32") * w_scale).sum(axis=0).astype("float32")
    return w_int8, w_scale, column_sums


def _range_nodes(p, lo_in, hi_in, shared):
    """Per-row scale and zero point from per-row minimum and maximum (both widened to include 0)."""
    from onnx import TensorProto, helper

    return [
        helper.make_node("Min", [lo_in, shared["zero"]], [p + "lo"]),
        helper.make_node("Max", [hi_in, shared["zero"]], [p + "hi"]),
        helper.make_node("Sub", [p + "hi", p + "lo"], [p + "range"]),
        helper.make_node("Max", [p + "range", shared["eps"]], [p + "range_eps"]),
        helper.make_node("Div", [p + "range_eps", shared["levels"]], [p + "scale"]),
        helper.make_node("Div", [p + "lo", p + "scale"], [p + "lo_units"]),
        helper.make_node("Neg", [p + "lo_units"], [p + "zero_point_f"]),
        helper.make_node("Round", [p + "zero_point_f"], [p + "zero_point_r"]),
        helper.make_node("Cast", [p + "zero_point_r"], [p + "zero_point"], to=TensorProto.UINT8),
        # (q - zero_point) * scale: the zero point's share of a product is zero_point * scale * sum(w)
        helper.make_node("Mul", [p + "zero_point_r", p + "scale"], [p + "shift"]),
    ]


def _frame_nodes(p, x, shared):
    """``x`` (batch, channels, time) as ``p + "xt"`` (batch, time, channels), and each frame's minimum and maximum."""
    from onnx import helper

    return [
        helper.make_node("Transpose", [x], [p + "xt"], perm=[0, 2, 1]),
        helper.make_node("ReduceMin", [p + "xt", shared["last"]], [p + "frame_min"], keepdims=1),
        helper.make_node("ReduceMax", [p + "xt", shared["last"]], [p + "frame_max"], keepdims=1),
    ]


def _time_arithmetic(p, xt, kernel, stride, constant):
    """Nodes giving ``p + "t_in"``, ``p + "t_out"`` and ``p + "span0"`` = stride * (t_out - 1), as int64 [1]."""
    from onnx import helper

    return [
        helper.make_node("Shape", [xt], [p + "t_in"], start=1, end=2),
        helper.make_node("Sub", [p + "t_in", constant(p + "kernel", np.array([kernel], "int64"))], [p + "t_k"]),
        helper.make_node("Div", [p + "t_k", constant(p + "stride", np.array([stride], "int64"))], [p + "steps"]),
        helper.make_node("Mul", [p + "steps", p + "stride"], [p + "span0"]),
        helper.make_node("Add", [p + "steps", constant(p + "one_i", np.array([1], "int64"))], [p + "t_out"]),
    ]


def _blocked_nodes(p, x, y, weight, stride, bias, shared, constant, weight_levels):
    """A convolution with stride <= kernel <= 2 * stride as one or two integer products, no im2col.

    Input frames are grouped in blocks of ``stride``; block ``t`` holds taps 0 .. stride-1 of output
    frame ``t`` and the first ``kernel - stride`` frames of block ``t + 1`` hold its other taps. Each
    block gets one scale and zero point (from its frames' minimum and maximum), so the whole input is
    quantised once, in place, and the two products read uint8 views of it: ``blocks[:t_out] @ w[taps
    < stride]`` and ``block heads[1:t_out + 1] @ w[taps >= stride]``, each scaled by its blocks' scales.
    """
    from onnx import TensorProto, helper

    n_out, n_in, kernel = weight.shape
    extra = kernel - stride
    w1, w1_scale, sums1 = _int8_weights(weight[:, :, :stride], weight_levels)
    i64 = lambda name, values: constant(p + name, np.array(values, "int64"))  # noqa: E731
    nodes = [
        *_frame_nodes(p, x, shared),
        *_time_arithmetic(p, p + "xt", kernel, stride, constant),
        # blocks: ceil(t_in / stride); the stats of a last, partial block repeat its last frame's
        helper.make_node("Add", [p + "t_in", i64("stride_less_one", [stride - 1])], [p + "t_up"]),
        helper.make_node("Div", [p + "t_up", p + "stride"], [p + "n_blocks"]),
        helper.make_node("Mul", [p + "n_blocks", p + "stride"], [p + "t_blocks"]),
        helper.make_node("Sub", [p + "t_blocks", p + "t_in"], [p + "pad"]),
        helper.make_node("Concat", [i64("pad_head", [0, 0, 0, 0]), p + "pad", i64("pad_tail", [0])], [p + "pads"],
                         axis=0),
    ]
    for stat, reduce in (("min", "ReduceMin"), ("max", "ReduceMax")):
        nodes += [
            helper.make_node("Pad", [p + f"frame_{stat}", p + "pads"], [p + f"padded_{stat}"], mode="edge"),
            helper.make_node("Reshape", [p + f"padded_{stat}", i64("stat_blocks", [0, -1, stride])],
                             [p + f"grouped_{stat}"]),
            helper.make_node(reduce, [p + f"grouped_{stat}", shared["last"]], [p + f"block_{stat}"], keepdims=1),
        ]
    nodes += _range_nodes(p, p + "block_min", p + "block_max", shared)
    # each frame takes its block's scale and zero point: (batch, blocks, 1) -> (batch, t_in, 1)
    for name in ("scale", "zero_point"):
        nodes += [
            helper.make_node("Expand", [p + name, i64("expand_shape", [1, 1, stride])], [p + f"{name}_expanded"]),
            helper.make_node("Reshape", [p + f"{name}_expanded", i64("frame_shape", [0, -1, 1])],
                             [p + f"{name}_frames_all"]),
            helper.make_node("Slice", [p + f"{name}_frames_all", i64("zero_start", [0]), p + "t_in", shared["time"]],
                             [p + f"{name}_frames"]),
        ]
    nodes += [
        helper.make_node("QuantizeLinear", [p + "xt", p + "scale_frames", p + "zero_point_frames"], [p + "q"],
                         axis=2, block_size=n_in),
        # product 1: taps 0 .. stride-1, the first t_out blocks
        helper.make_node("Mul", [p + "t_out", p + "stride"], [p + "t_main"]),
        helper.make_node("Slice", [p + "q", i64("zero_start_q", [0]), p + "t_main", shared["time"]], [p + "q_main"]),
        helper.make_node("Reshape", [p + "q_main", i64("block_shape", [0, -1, stride * n_in])], [p + "q_blocks"]),
        helper.make_node("Slice", [p + "scale", i64("zero_start_s", [0]), p + "t_out", shared["time"]],
                         [p + "scale_1"]),
        helper.make_node("Slice", [p + "shift", i64("zero_start_h", [0]), p + "t_out", shared["time"]],
                         [p + "shift_1"]),
        helper.make_node("MatMulInteger", [p + "q_blocks", constant(p + "w1_int8", w1)], [p + "acc_1"]),
        helper.make_node("Cast", [p + "acc_1"], [p + "acc_1f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", [p + "scale_1", constant(p + "w1_scale", w1_scale)], [p + "out_scale_1"]),
        helper.make_node("Mul", [p + "acc_1f", p + "out_scale_1"], [p + "product_1"]),
    ]
    terms, shifts, sums = [p + "product_1"], [p + "shift_1"], [sums1]
    if extra:
        w2, w2_scale, sums2 = _int8_weights(weight[:, :, stride:], weight_levels)
        heads = []
        for j in range(extra):  # frame stride * (t + 1) + j of every output frame t
            nodes += [
                helper.make_node("Add", [p + "span0", i64(f"head_end_offset{j}", [stride + j + 1])],
                                 [p + f"head_end{j}"]),
                helper.make_node("Slice", [p + "q", i64(f"head_start{j}", [stride + j]), p + f"head_end{j}",
                                           shared["time"], p + "stride"], [p + f"q_head{j}"]),
            ]
            heads.append(p + f"q_head{j}")
        if extra > 1:
            nodes.append(helper.make_node("Concat", heads, [p + "q_heads"], axis=2))
        nodes += [
            helper.make_node("Add", [p + "t_out", i64("one_more", [1])], [p + "t_out_1"]),
            helper.make_node("Slice", [p + "scale", i64("one_start_s", [1]), p + "t_out_1", shared["time"]],
                             [p + "scale_2"]),
            helper.make_node("Slice", [p + "shift", i64("one_start_h", [1]), p + "t_out_1", shared["time"]],
                             [p + "shift_2"]),
            helper.make_node("MatMulInteger", [p + "q_heads" if extra > 1 else heads[0],
                                               constant(p + "w2_int8", w2)], [p + "acc_2"]),
            helper.make_node("Cast", [p + "acc_2"], [p + "acc_2f"], to=TensorProto.FLOAT),
            helper.make_node("Mul", [p + "scale_2", constant(p + "w2_scale", w2_scale)], [p + "out_scale_2"]),
            helper.make_node("Mul", [p + "acc_2f", p + "out_scale_2"], [p + "product_2"]),
        ]
        terms.append(p + "product_2")
        shifts.append(p + "shift_2")
        sums.append(sums2)
    # the zero points' shares of both products, one small matrix product: (batch, t, 1 or 2) @ (1 or 2, out)
    nodes += [
        helper.make_node("Concat", shifts, [p + "shifts"], axis=2) if len(shifts) > 1 else
        helper.make_node("Identity", shifts, [p + "shifts"]),
        helper.make_node("MatMul", [p + "shifts", constant(p + "column_sums", -np.stack(sums))], [p + "offset"]),
        helper.make_node("Sum", [*terms, p + "offset", *([bias] if bias else [])], [p + "out"]),
        helper.make_node("Transpose", [p + "out"], [y], perm=[0, 2, 1]),
    ]
    return nodes


def _im2col_nodes(p, x, y, weight, stride, bias, shared, constant, weight_levels):
    """Any other convolution: the frames each output frame reads laid out as one row (im2col), one scale per row."""
    from onnx import TensorProto, helper

    n_out, n_in, kernel = weight.shape
    w_int8, w_scale, column_sums = _int8_weights(weight, weight_levels)
    nodes = [*_frame_nodes(p, x, shared), *_time_arithmetic(p, p + "xt", kernel, stride, constant)]
    slices, mins, maxs = [], [], []
    for j in range(kernel):  # tap j of every output frame: input frames j, j + stride, ...
        start, end = constant(f"{p}start{j}", np.array([j], "int64")), f"{p}end{j}"
        nodes.append(helper.make_node(
            "Add", [p + "span0", constant(f"{p}end_offset{j}", np.array([j + 1], "int64"))], [end]))
        for source, target in ((p + "xt", slices), (p + "frame_min", mins), (p + "frame_max", maxs)):
            target.append(f"{source}_slice{j}")
            nodes.append(helper.make_node("Slice", [source, start, end, shared["time"], p + "stride"], [target[-1]]))
    nodes += [
        helper.make_node("Concat", slices, [p + "cols"], axis=2),
        helper.make_node("Min", mins, [p + "row_min"]),
        helper.make_node("Max", maxs, [p + "row_max"]),
        *_range_nodes(p, p + "row_min", p + "row_max", shared),
        helper.make_node("QuantizeLinear", [p + "cols", p + "scale", p + "zero_point"], [p + "q"],
                         axis=2, block_size=kernel * n_in),
        helper.make_node("MatMulInteger", [p + "q", constant(p + "w_int8", w_int8)], [p + "acc"]),
        helper.make_node("Cast", [p + "acc"], [p + "acc_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", [p + "scale", constant(p + "w_scale", w_scale)], [p + "out_scale"]),
        helper.make_node("Mul", [p + "acc_f", p + "out_scale"], [p + "product"]),
        helper.make_node("Mul", [p + "shift", constant(p + "column_sums", -column_sums)], [p + "offset"]),
        helper.make_node("Sum", [p + "product", p + "offset", *([bias] if bias else [])], [p + "out"]),
        helper.make_node("Transpose", [p + "out"], [y], perm=[0, 2, 1]),
    ]
    return nodes


def _producers(graph):
    return {out: node for node in graph.node for out in node.output}


def _set_nodes(graph, nodes):
    del graph.node[:]
    graph.node.extend(nodes)


def _consumers(graph):
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return consumers


def _constant_value(name, initializers):
    value = initializers.get(name)
    return None if value is None or value.size != 1 else float(value.reshape(()))


def fuse_gelu(model):
    """Replace the exporter's exact GELU, ``x * (0.5 * (erf(x / sqrt(2)) + 1))``, by one ``Gelu`` node (opset 20).

    Five element-wise passes become one; on the feature encoder's long activations that is where
    most of their time goes. Returns the number of GELUs fused. The graph must already import
    opset 20 or later.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    initializers = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:  # the exporter writes some scalars as Constant nodes
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            initializers[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    consumers, producers = _consumers(graph), _producers(graph)
    graph_outputs = {output.name for output in graph.output}

    def only_consumer(name, op_type):
        users = consumers.get(name, [])
        if len(users) != 1 or users[0].op_type != op_type or name in graph_outputs:
            return None
        return users[0]

    def other_input(node, name):
        return node.input[1] if node.input[0] == name else node.input[0]

    removed, replacements = set(), {}
    for erf in graph.node:
        if erf.op_type != "Erf":
            continue
        div = producers.get(erf.input[0])
        divisor = None if div is None else _constant_value(div.input[1], initializers)
        if div is None or div.op_type != "Div" or divisor is None or abs(divisor - 2**0.5) > 1e-4:
            continue
        x = div.input[0]
        add = only_consumer(erf.output[0], "Add")
        half = add and only_consumer(add.output[0], "Mul")
        product = half and only_consumer(half.output[0], "Mul")
        if (product is None or len(consumers.get(div.output[0], [])) != 1
                or _constant_value(other_input(add, erf.output[0]), initializers) != 1.0
                or _constant_value(other_input(half, add.output[0]), initializers) != 0.5
                or other_input(product, half.output[0]) != x):
            continue
        chain = [div, erf, add, half, product]
        removed.update(id(n) for n in chain)
        replacements[id(product)] = helper.make_node("Gelu", [x], [product.output[0]], name=product.output[0] + "_gelu")
    nodes = [replacements.get(id(n), n) for n in graph.node if id(n) not in removed or id(n) in replacements]
    _set_nodes(graph, nodes)
    return len(replacements)


def cancel_transposes(model):
    """``Transpose(p) -> Gelu -> Transpose(p)`` with ``p`` its own inverse becomes ``Gelu``. Returns how many."""
    graph = model.graph
    consumers, producers = _consumers(graph), _producers(graph)
    graph_outputs = {output.name for output in graph.output}
    removed, cancelled, stale = set(), 0, set()
    for gelu in graph.node:
        if gelu.op_type != "Gelu":
            continue
        first = producers.get(gelu.input[0])
        users = consumers.get(gelu.output[0], [])
        if (first is None or first.op_type != "Transpose" or len(users) != 1 or users[0].op_type != "Transpose"
                or len(consumers.get(first.output[0], [])) != 1 or gelu.output[0] in graph_outputs):
            continue
        second, perm = users[0], list(_attribute(first, "perm", []))
        if list(_attribute(second, "perm", [])) != perm or [perm[i] for i in perm] != list(range(len(perm))):
            continue
        removed.update((id(first), id(second)))
        stale.add(gelu.output[0])  # its layout changes; the second transpose's output keeps its name
        gelu.input[0], gelu.output[0] = first.input[0], second.output[0]
        cancelled += 1
    nodes = [n for n in graph.node if id(n) not in removed]
    _set_nodes(graph, nodes)
    kept = [info for info in graph.value_info if info.name not in stale]  # their layout changed
    del graph.value_info[:]
    graph.value_info.extend(kept)
    return cancelled


def instance_norm_as_layer_norm(model):
    """``InstanceNormalization`` over time on (batch, channels, time) -> ``LayerNormalization`` over the last axis.

    The same normalisation (each channel of each item over time, population variance, the same
    epsilon) by ONNX Runtime's vectorised layer-normalisation kernel; the per-channel scale and
    bias, when they are not 1 and 0, follow as a product and a sum. wav2vec 2.0's group
    normalisation after its first convolution is exported this way and is the largest
    normalisation of the graph. Returns how many nodes were replaced.
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    initializers = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    nodes, replaced = [], 0
    for node in graph.node:
        if node.op_type == "InstanceNormalization":
            scale, bias = (initializers.get(name) for name in node.input[1:3])
        if node.op_type != "InstanceNormalization" or scale is None or bias is None:
            nodes.append(node)
            continue
        p = f"inln{replaced}_"
        epsilon = _attribute(node, "epsilon", 1e-5)
        trivial = bool(np.all(scale == 1) and np.all(bias == 0))
        normalised = node.output[0] if trivial else p + "normalised"
        nodes += [
            helper.make_node("Shape", [node.input[0]], [p + "time"], start=-1, name=p + "time"),
            helper.make_node("ConstantOfShape", [p + "time"], [p + "ones"], name=p + "ones",
                             value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])),
            helper.make_node("LayerNormalization", [node.input[0], p + "ones"], [normalised], axis=-1,
                             epsilon=epsilon, name=p + "layer_norm"),
        ]
        if not trivial:
            shape = (-1, 1)
            graph.initializer.extend([numpy_helper.from_array(scale.reshape(shape), p + "scale"),
                                      numpy_helper.from_array(bias.reshape(shape), p + "bias")])
            nodes += [helper.make_node("Mul", [normalised, p + "scale"], [p + "scaled"], name=p + "scaled"),
                      helper.make_node("Add", [p + "scaled", p + "bias"], [node.output[0]], name=p + "shifted")]
        replaced += 1
    _set_nodes(graph, nodes)
    return replaced


def drop_softmax_nan_guards(model):
    """``Where(IsNaN(softmax), 0, softmax)`` -> ``softmax``, where the attention mask is finite.

    PyTorch's exporter guards every attention softmax against rows that are all masked, which give
    NaN with an infinite mask. The exported mask adds the smallest float32 instead of -inf, so a
    softmax here is NaN only for NaN inputs, which the interface refuses: the guards (an ``IsNaN``
    and a ``Where`` over every attention matrix of every layer) change nothing. They are dropped
    only when no ``-inf`` constant is in the graph. Returns how many were dropped.
    """
    from onnx import numpy_helper

    graph = model.graph
    initializers = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    if any(np.isneginf(value).any() for value in initializers.values() if value.dtype.kind == "f"):
        return 0
    consumers, producers = _consumers(graph), _producers(graph)
    graph_outputs = {output.name for output in graph.output}
    removed, rewired = set(), {}
    for where in graph.node:
        if where.op_type != "Where" or len(where.input) != 3 or where.output[0] in graph_outputs:
            continue
        is_nan, softmax = producers.get(where.input[0]), producers.get(where.input[2])
        if (is_nan is None or is_nan.op_type != "IsNaN" or softmax is None or softmax.op_type != "Softmax"
                or is_nan.input[0] != where.input[2] or len(consumers.get(is_nan.output[0], [])) != 1
                or _constant_value(where.input[1], initializers) != 0.0):
            continue
        removed.update((id(where), id(is_nan)))
        rewired[where.output[0]] = where.input[2]
    nodes = [n for n in graph.node if id(n) not in removed]
    for node in nodes:
        for i, name in enumerate(node.input):
            if name in rewired:
                node.input[i] = rewired[name]
    _set_nodes(graph, nodes)
    return len(rewired)


def quantize_matrix_products(fp32_path, int8_path, nodes_to_exclude=()):
    """ONNX Runtime's dynamic quantisation of a graph's matrix products (``MatMul``, ``Gemm``; int8 weights)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(fp32_path, int8_path, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"],
                     nodes_to_exclude=list(nodes_to_exclude))


def quantize_int8(fp32_path, int8_path):
    """``model.onnx`` -> ``model.int8.onnx``: the steps of this module's description, in order."""
    import os
    import tempfile

    import onnx

    model = onnx.load(fp32_path)
    if quantize_convolutions_per_frame(model):
        fuse_gelu(model)
        cancel_transposes(model)
        instance_norm_as_layer_norm(model)
        drop_softmax_nan_guards(model)
        onnx.checker.check_model(model)
    # the rewrite's own small float products (zero-point offsets) stay float
    own = [node.name for node in model.graph.node if node.op_type == "MatMul" and node.name.startswith("pfq")]
    with tempfile.TemporaryDirectory() as folder:
        staged = os.path.join(folder, "convolutions.onnx")
        onnx.save(model, staged)
        quantize_matrix_products(staged, int8_path, nodes_to_exclude=own)
