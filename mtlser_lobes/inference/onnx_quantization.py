"""int8 graphs for ONNX Runtime: the matrix products and the convolutions of the feature encoder.

:func:`quantize_int8` turns the fp32 graph of :mod:`~mtlser_lobes.inference.onnx_export` into
``model.int8.onnx``:

1. every convolution of the feature encoder but the first (the one on the waveform) becomes an
   integer matrix product whose activations are quantised **per output frame** at run time
   (:func:`quantize_convolutions_per_frame`): the input frames each output frame reads are laid
   out as one row (im2col), each row gets its own scale and zero point from its minimum and
   maximum, the weights are int8 per output channel, and ``MatMulInteger`` multiplies them (the
   VNNI or AMX kernels where the CPU has them);
2. element-wise work on the feature encoder's long activations shrinks: the exporter's exact GELUs
   become single ``Gelu`` nodes, the transposes the rewrite leaves around them cancel, and the group
   normalisation runs as a layer normalisation over time (:func:`fuse_gelu`,
   :func:`cancel_transposes`, :func:`instance_norm_as_layer_norm`); the attention softmaxes lose
   their NaN guards, which a finite mask makes idle (:func:`drop_softmax_nan_guards`);
3. ONNX Runtime's dynamic quantisation turns the remaining matrix products (the transformer's
   linear layers, the heads) into ``DynamicQuantizeMatMul``.

Why per frame: the layer normalisation after the feature encoder scales every frame to unit
variance, so a quiet frame's small activations matter as much as a loud frame's. One scale for the
whole tensor (ONNX Runtime's static ``QLinearConv`` with calibrated ranges, or its dynamic
``ConvInteger``) rounds quiet frames to a few levels; on the demo model that changed a fifth of the
emotion labels (``benchmarks/onnx_static_quantization.py``), and a scale per frame keeps them.

Activations take 128 levels (0-127), not 256: x86 CPUs without VNNI multiply uint8 by int8 with
``VPMADDUBSW``, whose 16-bit sums of two products saturate above 32,767; 127 * 127 * 2 stays
below it, so the graph gives the same answers on every CPU.
"""

import numpy as np

__all__ = ["cancel_transposes", "drop_softmax_nan_guards", "fuse_gelu", "instance_norm_as_layer_norm",
           "quantize_convolutions_per_frame", "quantize_int8"]


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

    Each ``Conv(x: (batch, channels, time), w: (out, channels, kernel), stride)`` becomes:
    ``x`` transposed to (batch, time, channels); ``kernel`` strided slices concatenated into rows
    (batch, frames, kernel * channels); per row, from the minimum and maximum of the input frames
    it covers, ``lo = min(row, 0)``, ``scale = (max(row, 0) - lo) / activation_levels`` and
    ``zero_point = round(-lo / scale)``; ``q = QuantizeLinear(row, scale, zero_point)`` (uint8,
    one scale per row through ``block_size``, opset 21); ``MatMulInteger(q, w_int8)``; then
    ``(acc - zero_point * sum(w_int8)) * scale * w_scale + bias``, transposed back. Exact up to the
    rounding of ``q`` and of the weights. The model's default opset is raised to 21. Returns the
    number of convolutions rewritten.

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
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    initializers = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    new_nodes, new_initializers, rewritten = [], [], 0

    def constant(name, value):
        new_initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    shared = {
        "zero": constant("pfq_zero", np.array(0.0, "float32")),
        "eps": constant("pfq_eps", np.array(1e-12, "float32")),
        "levels": constant("pfq_levels", np.array(float(activation_levels), "float32")),
        "one": constant("pfq_one", np.array(1.0, "float32")),
        "u8zero": constant("pfq_u8zero", np.array(0, "uint8")),
        "last": constant("pfq_last_axis", np.array([-1], "int64")),
        "time": constant("pfq_time_axis", np.array([1], "int64")),
    }
    for node in graph.node:
        weight = _convertible(node, initializers)
        if weight is None:
            new_nodes.append(node)
            continue
        p = f"pfq{rewritten}_"
        n_out, n_in, kernel = weight.shape
        stride = _attribute(node, "strides", [1])[0]
        # int8 weights per output channel, rows ordered (kernel position, channel) like the slices below
        matrix = weight.transpose(2, 1, 0).reshape(kernel * n_in, n_out)
        w_scale = np.maximum(np.abs(matrix).max(axis=0), 1e-12) / weight_levels
        w_int8 = np.clip(np.round(matrix / w_scale), -weight_levels, weight_levels).astype("int8")
        column_sums = (w_int8.astype("float32") * w_scale).sum(axis=0).astype("float32")
        x, y = node.input[0], node.output[0]
        nodes = [
            helper.make_node("Transpose", [x], [p + "xt"], perm=[0, 2, 1]),
            helper.make_node("ReduceMin", [p + "xt", shared["last"]], [p + "frame_min"], keepdims=1),
            helper.make_node("ReduceMax", [p + "xt", shared["last"]], [p + "frame_max"], keepdims=1),
            helper.make_node("Shape", [p + "xt"], [p + "t_in"], start=1, end=2),
            helper.make_node("Sub", [p + "t_in", constant(p + "kernel", np.array([kernel], "int64"))], [p + "t_k"]),
            helper.make_node("Div", [p + "t_k", constant(p + "stride", np.array([stride], "int64"))], [p + "steps"]),
            helper.make_node("Mul", [p + "steps", p + "stride"], [p + "span0"]),
        ]
        slices, mins, maxs = [], [], []
        if kernel >= stride:
            # taps 0 .. stride-1 of every output frame are one contiguous run of input frames: a
            # prefix of x reshaped (a plain copy), instead of one strided slice per tap
            nodes += [
                helper.make_node("Add", [p + "span0", p + "stride"], [p + "prefix_end"]),
                helper.make_node("Slice", [p + "xt", constant(p + "prefix_start", np.array([0], "int64")),
                                           p + "prefix_end", shared["time"]], [p + "prefix"]),
                helper.make_node("Reshape", [p + "prefix", constant(p + "block_shape",
                                                                    np.array([0, -1, stride * n_in], "int64"))],
                                 [p + "blocks"]),
            ]
            slices.append(p + "blocks")
        for j in range(kernel):
            start, end = constant(f"{p}start{j}", np.array([j], "int64")), f"{p}end{j}"
            nodes.append(helper.make_node(
                "Add", [p + "span0", constant(f"{p}end_offset{j}", np.array([j + 1], "int64"))], [end]))
            sources = ((p + "frame_min", mins), (p + "frame_max", maxs))
            if kernel < stride or j >= stride:
                sources += ((p + "xt", slices),)
            for source, target in sources:
                target.append(f"{source}_slice{j}")
                nodes.append(helper.make_node("Slice", [source, start, end, shared["time"], p + "stride"], [target[-1]]))
        nodes += [
            helper.make_node("Concat", slices, [p + "cols"], axis=2),
            helper.make_node("Min", [*mins, shared["zero"]], [p + "lo"]),
            helper.make_node("Max", [*maxs, shared["zero"]], [p + "hi"]),
            helper.make_node("Sub", [p + "hi", p + "lo"], [p + "range"]),
            helper.make_node("Max", [p + "range", shared["eps"]], [p + "range_eps"]),
            helper.make_node("Div", [p + "range_eps", shared["levels"]], [p + "scale"]),
            helper.make_node("Div", [p + "lo", p + "scale"], [p + "lo_units"]),
            helper.make_node("Neg", [p + "lo_units"], [p + "zero_point_f"]),
            helper.make_node("Round", [p + "zero_point_f"], [p + "zero_point_r"]),
            helper.make_node("Cast", [p + "zero_point_r"], [p + "zero_point"], to=TensorProto.UINT8),
            helper.make_node("QuantizeLinear", [p + "cols", p + "scale", p + "zero_point"], [p + "q"],
                             axis=2, block_size=kernel * n_in),
            helper.make_node("MatMulInteger", [p + "q", constant(p + "w_int8", w_int8)], [p + "acc"]),
            helper.make_node("Cast", [p + "acc"], [p + "acc_f"], to=TensorProto.FLOAT),
            helper.make_node("Mul", [p + "scale", constant(p + "w_scale", w_scale.astype("float32"))],
                             [p + "out_scale"]),
            helper.make_node("Mul", [p + "acc_f", p + "out_scale"], [p + "product"]),
            # (q - zero_point) * scale: the zero point's share, per frame and output channel
            helper.make_node("Mul", [p + "zero_point_r", p + "scale"], [p + "shift"]),
            helper.make_node("Mul", [p + "shift", constant(p + "column_sums", -column_sums)], [p + "offset"]),
        ]
        out = p + "with_offset"
        nodes.append(helper.make_node("Add", [p + "product", p + "offset"], [out]))
        if len(node.input) > 2 and node.input[2]:
            nodes.append(helper.make_node("Add", [out, node.input[2]], [p + "with_bias"]))
            out = p + "with_bias"
        nodes.append(helper.make_node("Transpose", [out], [y], perm=[0, 2, 1]))
        for new in nodes:
            new.name = new.output[0]
        new_nodes += nodes
        rewritten += 1
    del graph.node[:]
    graph.node.extend(new_nodes)
    if not rewritten:
        return 0
    graph.initializer.extend(new_initializers)
    if rewritten:
        # QuantizeLinear with one scale per row (block_size) needs opset 21
        for opset in model.opset_import:
            if opset.domain in ("", "ai.onnx"):
                opset.version = max(opset.version, 21)
    onnx.checker.check_model(model)
    return rewritten


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
    consumers, producers = _consumers(graph), {out: node for node in graph.node for out in node.output}
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
        if div is None or div.op_type != "Div" or abs((_constant_value(div.input[1], initializers) or 0) - 2**0.5) > 1e-4:
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
    del graph.node[:]
    graph.node.extend(nodes)
    return len(replacements)


def cancel_transposes(model):
    """``Transpose(p) -> Gelu -> Transpose(p)`` with ``p`` its own inverse becomes ``Gelu``. Returns how many."""
    graph = model.graph
    consumers, producers = _consumers(graph), {out: node for node in graph.node for out in node.output}
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
    del graph.node[:]
    graph.node.extend(nodes)
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
    del graph.node[:]
    graph.node.extend(nodes)
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
    consumers, producers = _consumers(graph), {out: node for node in graph.node for out in node.output}
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
    del graph.node[:]
    graph.node.extend(nodes)
    return len(rewired)


def quantize_int8(fp32_path, int8_path):
    """``model.onnx`` -> ``model.int8.onnx``: the steps of this module's description, in order."""
    import os
    import tempfile

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(fp32_path)
    if quantize_convolutions_per_frame(model):
        fuse_gelu(model)
        cancel_transposes(model)
        instance_norm_as_layer_norm(model)
        drop_softmax_nan_guards(model)
        onnx.checker.check_model(model)
    with tempfile.TemporaryDirectory() as folder:
        staged = os.path.join(folder, "convolutions.onnx")
        onnx.save(model, staged)
        quantize_dynamic(staged, int8_path, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
