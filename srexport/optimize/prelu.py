"""PRelu as what ONNX Runtime runs well: LeakyRelu for one slope, Max/Min of x and x * slope for
per-channel slopes (channels with a slope above 1 negated around it), or, before a narrow 1x1
Conv, a Relu with the linear part carried as extra channels of the Conv before it."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from .graph import Graph, channel_slope, conv_node, conv_weights, node_attributes, plain_conv


def _fold_sign_flip(g: Graph, prelu: onnx.NodeProto, slope: np.ndarray, producer):
    """Slopes with every a > 1 replaced by 1 / a, after negating those channels' filters in
    `producer` (a Conv read only by `prelu`) and scaling their input weights by -a in every
    consumer of `prelu` (plain Convs and ConvTransposes), which keeps the network's output; None
    when the neighbours are not such layers (the graph is then left untouched). The producer and
    consumers are changed in place: `rewrite_prelu` keeps their node protos."""
    channels = slope.size
    consumers = g.consumers.get(prelu.output[0], [])
    weights = conv_weights(g, producer) if producer is not None else None
    if channel_slope(g, prelu, channels) is None or weights is None or weights[0].shape[0] != channels \
            or g.uses.get(producer.output[0]) != 1 or not consumers or g.uses.get(prelu.output[0]) != len(consumers):
        return None
    axes = []  # the consumers' input-channel axis: 1 for Conv, 0 for ConvTranspose weights
    for c in consumers:
        w = g.const(c.input[1]) if len(c.input) > 1 and c.input[0] == prelu.output[0] else None
        axis = {"Conv": 1, "ConvTranspose": 0}.get(c.op_type)
        if w is None or axis is None or node_attributes(c).get("group", 1) != 1 or w.shape[axis] != channels \
                or prelu.output[0] in c.input[1:]:
            return None
        axes.append(axis)
    a = slope.reshape(channels).astype(np.float32)
    flip = a > 1
    sign = np.where(flip, -1.0, 1.0).astype(np.float32)
    factor = np.where(flip, -a, 1.0).astype(np.float32)
    weight, bias = weights
    label = producer.name or producer.output[0]
    g.replace_const(producer, 1, f"{label}/weight_signed", weight * sign[:, None, None, None])
    if bias is not None:
        g.replace_const(producer, 2, f"{label}/bias_signed", bias * sign)
    for c, axis in zip(consumers, axes):
        w = g.const(c.input[1])
        shape = [1] * w.ndim
        shape[axis] = channels
        g.replace_const(c, 1, f"{c.name or c.output[0]}/weight_folded", w * factor.reshape(shape))
    return np.where(flip, np.float32(1) / a, a).astype(np.float32).reshape(slope.shape)


def rewrite_prelu(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """PRelu -> ops ONNX Runtime runs well. One slope for every channel: LeakyRelu(alpha), fused
    into the preceding Conv. Per-channel slopes a, all <= 1: Max(x, x * a) (all >= 1: Min), the
    same value. Slopes on both sides of 1 between two convolutions (trained FSRCNN): each channel
    with a > 1 is negated, PRelu_a(x) = -a * Max(-x, -x / a), the sign folded into the producing
    Conv's filter and -a into the consumers' weights, so that Max(x, x * slope) serves every
    channel; otherwise x + (a - 1) * Min(x, 0). Both are equal to rounding. ONNX Runtime's PRelu
    is single-threaded: 64 ms on a 56-channel 960x540 tensor where Mul + Max take 13 and
    Min + Mul + Add 21 (2 cores)."""
    g = Graph(proto)
    nodes, notes = [], []
    for node in g.graph.node:
        slope = g.const(node.input[1]) if node.op_type == "PRelu" and len(node.input) == 2 else None
        # The slope broadcasts against the input; a rewrite must not change the output's shape.
        if slope is None or slope.size == 0 or slope.dtype != np.float32 or slope.ndim > 4:
            nodes.append(node)
            continue
        label = node.name or node.output[0]
        if np.all(slope == slope.ravel()[0]):
            alpha = float(slope.ravel()[0])
            g.release(node.input[1])
            nodes.append(helper.make_node("LeakyRelu", [node.input[0]], list(node.output),
                                          name=g.name(f"{label}/leaky"), alpha=alpha))
            notes.append(f"{label}: PRelu with one slope {alpha:g} -> LeakyRelu")
            continue
        x, slope_name, flipped = node.input[0], node.input[1], ""
        if np.any(slope > 1) and np.any(slope < 1):
            folded = _fold_sign_flip(g, node, slope, g.producers.get(x))
            if folded is not None:
                g.release(slope_name)
                n = int((slope > 1).sum())
                flipped = f" ({n} channel{'s' if n > 1 else ''} negated around it)"
                slope, slope_name = folded, g.add_const(f"{label}/slope", folded)
        op = "Max" if np.all(slope <= 1) else "Min" if np.all(slope >= 1) else None
        if op is not None:
            scaled = g.name(f"{label}/scaled")
            nodes += [helper.make_node("Mul", [x, slope_name], [scaled], name=g.name(f"{label}/mul")),
                      helper.make_node(op, [x, scaled], list(node.output), name=g.name(f"{label}/{op.lower()}"))]
            notes.append(f"{label}: PRelu with {slope.size} slopes -> {op}(x, x * slope){flipped}")
            continue
        # Slopes on both sides of 1: x + (slope - 1) * Min(x, 0).
        g.release(node.input[1])
        zero, slope_m1 = g.add_const(f"{label}/zero", np.zeros(1, np.float32)), g.add_const(
            f"{label}/slope_minus_1", (slope - 1).astype(np.float32))
        neg, scaled = g.name(f"{label}/negative"), g.name(f"{label}/scaled")
        nodes += [helper.make_node("Min", [x, zero], [neg], name=g.name(f"{label}/min")),
                  helper.make_node("Mul", [neg, slope_m1], [scaled], name=g.name(f"{label}/mul")),
                  helper.make_node("Add", [x, scaled], list(node.output), name=g.name(f"{label}/add"))]
        notes.append(f"{label}: PRelu with {slope.size} slopes -> x + (slope - 1) * Min(x, 0)")
    return (g.finish(nodes), notes) if notes else (proto, [])


def rewrite_prelu_to_relu(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Conv P -> PRelu(a, per channel) -> 1x1 Conv C with few outputs (FSRCNN's 5x5 1->56 and
    56->12 shrink): no PRelu left, only a ReLU that ONNX Runtime fuses into P. With y = P(x),
        C(PRelu_a(y)) = W diag(1 - a) relu(y) + K x + k + b,   K = W diag(a) W_P,  k = W diag(a) b_P,
    exact at the borders too since C is 1x1 (unpadded); the linear term K x + k, a convolution of
    P's own input and kernel size, rides along as 2 x Cout extra outputs of P, +/-(K x + k), whose
    ReLUs C adds back with weights +1 and -1. Applied where 2 x Cout is below P's channel count
    (56 -> 12: P writes 80 channels instead of 56 and two passes of the per-channel PRelu go)."""
    g = Graph(proto)
    notes = []
    replaced: dict[int, list[onnx.NodeProto]] = {}  # id(node) -> the nodes emitted in its place
    for prelu in g.graph.node:
        producer = g.producers.get(prelu.input[0]) if prelu.op_type == "PRelu" else None
        made = plain_conv(g, producer) if producer is not None else None
        consumers = g.consumers.get(prelu.output[0], [])
        if made is None or len(consumers) != 1 or g.uses.get(producer.output[0]) != 1 \
                or g.uses.get(prelu.output[0]) != 1 or {id(producer), id(consumers[0])} & set(replaced):
            continue  # (a Conv already rewritten as another PRelu's neighbour keeps that rewrite)
        w_p, b_p, pads = made
        channels = w_p.shape[0]
        slope = channel_slope(g, prelu, channels)
        consumer = consumers[0]
        taken = plain_conv(g, consumer)
        if slope is None or np.all(slope == slope.ravel()[0]) or taken is None:
            continue
        w_c, b_c, pads_c = taken
        cout = w_c.shape[0]
        if w_c.shape[1:] != (channels, 1, 1) or any(pads_c) or 2 * cout >= channels:
            continue
        a = slope.reshape(channels).astype(np.float64)
        w_c2 = w_c[:, :, 0, 0].astype(np.float64)
        b_p = np.zeros(channels, np.float32) if b_p is None else b_p
        k = np.einsum("oc,cikl->oikl", w_c2 * a, w_p.astype(np.float64))
        k_bias = (w_c2 * a) @ b_p.astype(np.float64)
        label, label_c, label_a = (n.name or n.output[0] for n in (producer, consumer, prelu))
        relu_in, relu_out = g.name(f"{prelu.output[0]}/with_linear"), g.name(f"{prelu.output[0]}/relu")
        w_new = np.concatenate([w_p, k, -k]).astype(np.float32)
        b_new = np.concatenate([b_p, k_bias, -k_bias]).astype(np.float32)
        eye = np.eye(cout)
        w_c_new = np.concatenate([w_c2 * (1 - a), eye, -eye], axis=1)[:, :, None, None].astype(np.float32)
        g.release(*producer.input[1:], prelu.input[1], *consumer.input[1:])
        replaced[id(producer)] = [
            conv_node(g, producer.input[0], w_new, b_new, relu_in, f"{label}/with_linear", pads),
            helper.make_node("Relu", [relu_in], [relu_out], name=g.name(f"{label_a}/relu"))]
        replaced[id(prelu)] = []
        replaced[id(consumer)] = [
            conv_node(g, relu_out, w_c_new, b_c, consumer.output[0], f"{label_c}/after_relu", [0, 0, 0, 0])]
        notes.append(f"{label_a}: PRelu with {channels} slopes between Conv "
                     f"{w_p.shape[2]}x{w_p.shape[3]} {w_p.shape[1]}->{channels} and Conv 1x1 {channels}->{cout} "
                     f"-> Relu (the first Conv writes {channels + 2 * cout} channels)")
    return (g.splice(replaced), notes) if notes else (proto, [])
