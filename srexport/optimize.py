"""Speed rewrites of an FP32 ONNX graph for ONNX Runtime's CPU provider (the tuned path).

ONNX Runtime runs `ConvTranspose` as a GEMM followed by a scalar, single-threaded col2im, far
slower than its `Conv` kernels (blocked NCHWc layout, fused activations and sums). A
ConvTranspose can be written as a Conv with the same output, exactly (the same products,
summed in another order):

* stride 1: a Conv with the kernel flipped in both spatial axes, input and output channels
  swapped, and padding k - 1 - p (RED's decoder: about twice as fast).
* stride s whose output is exactly s x the input (FSRCNN's 9x9 and RED's final upsampler): every
  output phase (r_h, r_w) of the s x s grid is a Conv of the input with the kernel taps that land
  on that phase; the s² phases become the output channels of one Conv and DepthToSpace (CRD)
  interleaves them, the sub-pixel (ESPCN) form of the same layer. It only pays when the s² x Cout
  outputs fill whole channel blocks (x4 with one output channel), so by default only then.

The other rewrites target the NCHWc kernels, which work on channel blocks of 16 (AVX-512; 8 on
AVX2) and pad smaller counts:

* a PRelu with one slope for every channel (FSRCNN as initialised) becomes LeakyRelu, which ONNX
  Runtime fuses into the convolution; a PRelu is never fused and forces reorders around it. With
  per-channel slopes (trained FSRCNN) the tuned path switches the NCHWc layout off instead, and
  each PRelu becomes Max(x, x * slope), two passes over the tensor instead of ORT's slow PRelu
  (channels with a slope above 1 are negated around it to make that form exact). A per-channel
  PRelu between a Conv and a 1x1 Conv with few outputs (FSRCNN's 56 -> 12 shrink) goes entirely:
  the linear part of PRelu rides through the first Conv as extra channels (`rewrite_prelu_to_relu`).
* a Conv whose output feeds only Convs (through at most one activation) and has a channel count
  short of a block multiple (FSRCNN's 12, 56) gets zero filters up to the multiple and its
  consumers zero weights for them, so ONNX Runtime keeps the tensor blocked.
* a convolution with one output channel (SRCNN's last 5x5 32->1, padded to 16 outputs by the
  kernels) becomes a stride-4 convolution whose 16 outputs are the pixels of a 4x4 block, plus
  DepthToSpace (3x3 kernels: a depthwise convolution plus a 1x1 convolution of ones that adds the
  channels); one with a few (ESPCN's 3x3 32->s²) becomes a 1 x k convolution producing one
  channel per kernel row plus a k x 1 convolution that sums the rows.

`optimize_onnx` applies the rewrites and, unless told not to, checks that ONNX Runtime's outputs
on the rewritten graph stay within `MAX_ABS` (1e-5) of the original's on random inputs of a few
shapes, odd and 1-pixel ones included; when they do not, the original graph is returned unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

MAX_ABS = 1e-5
CHECK_SIZES = ((1, 11, 13), (2, 5, 7))  # (N, H, W) LR inputs for the equality check: odd, tiny ones too


@dataclass
class OptimizeReport:
    rewrites: list[str] = field(default_factory=list)  # one line per rewritten node
    checked: bool = False
    max_abs: float | None = None  # worst |optimized - original| over the check inputs
    applied: bool = False  # False when nothing was rewritten or the check failed
    reason: str = ""
    nchwc: bool = True  # False: run without ORT's blocked layout (ORT_ENABLE_EXTENDED), see optimize_onnx

    def to_dict(self) -> dict:
        return {"rewrites": list(self.rewrites), "checked": self.checked, "max_abs": self.max_abs,
                "applied": self.applied, "reason": self.reason, "nchwc": self.nchwc}


def node_attributes(node: onnx.NodeProto) -> dict:
    """A node's attributes by name, as Python values (also used by native.chain_from_onnx)."""
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _unique(name: str, taken: set[str]) -> str:
    candidate, i = name, 0
    while candidate in taken:
        i += 1
        candidate = f"{name}_{i}"
    taken.add(candidate)
    return candidate


def _transpose_geometry(node: onnx.NodeProto, weight: np.ndarray):
    """(stride, kernel, pads_begin, pads_end, output_padding) per spatial axis, or None when the
    node is outside what the rewrites cover (groups, dilation, auto_pad, explicit output_shape)."""
    a = node_attributes(node)
    if weight.ndim != 4 or a.get("group", 1) != 1 or "output_shape" in a:
        return None
    auto_pad = a.get("auto_pad", b"NOTSET")
    if auto_pad not in (b"NOTSET", "NOTSET"):
        return None
    if any(d != 1 for d in a.get("dilations", [1, 1])):
        return None
    kernel = list(a.get("kernel_shape", weight.shape[2:]))
    if kernel != list(weight.shape[2:]):
        return None
    strides = list(a.get("strides", [1, 1]))
    pads = list(a.get("pads", [0, 0, 0, 0]))
    out_pad = list(a.get("output_padding", [0, 0]))
    return strides, kernel, pads[:2], pads[2:], out_pad


def _stride1_conv(weight: np.ndarray, bias, kernel, pb, pe, op):
    """ConvTranspose stride 1 -> Conv: flipped kernel, channels swapped, padding k-1-p."""
    conv_pads_b = [k - 1 - p for k, p in zip(kernel, pb)]
    conv_pads_e = [k - 1 - p + o for k, p, o in zip(kernel, pe, op)]
    if min(conv_pads_b + conv_pads_e) < 0:
        return None
    w = np.ascontiguousarray(weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
    return w, bias, conv_pads_b + conv_pads_e


def _phase_conv(weight: np.ndarray, bias, s: int, kernel, pb):
    """ConvTranspose stride s (output exactly s x input) -> Conv with s² x Cout outputs, whose
    channel co*s*s + rh*s + rw holds output phase (rh, rw) of channel co (DepthToSpace CRD order).

    Output pixel o = s*q + r takes input q - j through tap kk = s*j + r + p_begin, 0 <= kk < k.
    """
    cin, cout = weight.shape[:2]
    ranges = []
    for axis in range(2):
        k, p = kernel[axis], pb[axis]
        ds = [-j for r in range(s) for j in range(-k, k + 1) if 0 <= s * j + r + p < k]
        if not ds:
            return None
        ranges.append((min(min(ds), 0), max(max(ds), 0)))  # keep offset 0 inside: pads >= 0
    (dh0, dh1), (dw0, dw1) = ranges
    lh, lw = dh1 - dh0 + 1, dw1 - dw0 + 1
    w = np.zeros((cout, s, s, cin, lh, lw), dtype=weight.dtype)
    for rh in range(s):
        for th in range(lh):
            kh = s * -(th + dh0) + rh + pb[0]
            if not 0 <= kh < kernel[0]:
                continue
            for rw in range(s):
                for tw in range(lw):
                    kw = s * -(tw + dw0) + rw + pb[1]
                    if 0 <= kw < kernel[1]:
                        w[:, rh, rw, :, th, tw] = weight[:, :, kh, kw].T
    w = w.reshape(cout * s * s, cin, lh, lw)
    b = None if bias is None else np.repeat(bias, s * s)
    return w, b, [-dh0, -dw0, dh1, dw1]


class _Graph:
    """Mutable view of a copied graph: constant initializers by name, use counts, the node that
    writes and the nodes that read each tensor (as the graph was copied), fresh names."""

    def __init__(self, proto: onnx.ModelProto):
        self.model = onnx.ModelProto()
        self.model.CopyFrom(proto)
        self.graph = self.model.graph
        self.inits = {t.name: t for t in self.graph.initializer}
        self.uses: dict[str, int] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        self.producers = {out: node for node in self.graph.node for out in node.output}
        for node in self.graph.node:
            for name in node.input:
                self.uses[name] = self.uses.get(name, 0) + 1
                self.consumers.setdefault(name, []).append(node)
        for out in self.graph.output:
            self.uses[out.name] = self.uses.get(out.name, 0) + 1
        self.taken = set(self.inits) | {n for node in self.graph.node for n in (*node.input, *node.output)}
        self.taken |= {n.name for n in self.graph.node if n.name} | {i.name for i in self.graph.input}
        self.new_inits: list[onnx.TensorProto] = []
        self.drop: set[str] = set()

    def const(self, name: str):
        return numpy_helper.to_array(self.inits[name]) if name in self.inits else None

    def name(self, base: str) -> str:
        return _unique(base, self.taken)

    def add_const(self, base: str, value: np.ndarray) -> str:
        """A new initializer, used once (by the node the caller gives it to)."""
        name = self.name(base)
        tensor = numpy_helper.from_array(np.ascontiguousarray(value), name)
        self.new_inits.append(tensor)
        self.inits[name], self.uses[name] = tensor, 1
        return name

    def replace_const(self, node: onnx.NodeProto, index: int, base: str, value: np.ndarray) -> None:
        """Point `node`'s input `index` (a constant) at a new initializer holding `value`."""
        self.release(node.input[index])
        node.input[index] = self.add_const(base, value)

    def release(self, *names: str) -> None:
        """One use of each of `names` is gone (its node is replaced); drop initializers left unused."""
        for n in names:
            if n and n in self.inits:
                self.uses[n] = self.uses.get(n, 0) - 1
                if self.uses[n] <= 0:
                    self.drop.add(n)

    def splice(self, replacements: dict[int, list[onnx.NodeProto]]) -> onnx.ModelProto:
        """`finish` with each node whose id() is a key replaced by that list (empty: dropped)."""
        return self.finish([new for node in self.graph.node for new in replacements.get(id(node), [node])])

    def finish(self, nodes: list[onnx.NodeProto]) -> onnx.ModelProto:
        del self.graph.node[:]
        self.graph.node.extend(nodes)
        kept = [t for t in (*self.graph.initializer, *self.new_inits) if t.name not in self.drop]
        del self.graph.initializer[:]
        self.graph.initializer.extend(kept)
        return self.model


def _conv_node(g: _Graph, x: str, w: np.ndarray, b, out: str, label: str, pads, group: int = 1,
               stride: int = 1) -> onnx.NodeProto:
    inputs = [x, g.add_const(f"{label}/weight", w.astype(np.float32))]
    if b is not None:
        inputs.append(g.add_const(f"{label}/bias", np.asarray(b, dtype=np.float32)))
    return helper.make_node("Conv", inputs, [out], name=g.name(label), kernel_shape=list(w.shape[2:]),
                            pads=list(pads), strides=[stride, stride], dilations=[1, 1], group=group)


def rewrite_conv_transpose(proto: onnx.ModelProto, *, strided: bool | str = True,
                           block: int | None = None) -> tuple[onnx.ModelProto, list[str]]:
    """Copy of `proto` with every coverable ConvTranspose replaced by Conv (+ DepthToSpace).
    `strided=False` rewrites only stride-1 layers; `strided="aligned"` rewrites a strided layer
    only when its phase convolution's Cout x s² output channels fill whole NCHWc blocks (x4 at
    1 output channel), which is when it beats ONNX Runtime's own ConvTranspose."""
    block = block or nchwc_block()
    g = _Graph(proto)
    nodes, notes = [], []
    for node in g.graph.node:
        if node.op_type != "ConvTranspose" or node.domain not in ("", "ai.onnx"):
            nodes.append(node)
            continue
        weight = g.const(node.input[1])
        has_bias = len(node.input) > 2 and bool(node.input[2])
        bias = g.const(node.input[2]) if has_bias else None
        geo = None if weight is None or weight.dtype != np.float32 or (has_bias and bias is None) \
            else _transpose_geometry(node, weight)
        done = shuffle = None
        if geo is not None:
            strides, kernel, pb, pe, op = geo
            if strides == [1, 1]:
                done = _stride1_conv(weight, bias, kernel, pb, pe, op)
            elif strided and strides[0] == strides[1] and all(
                    k - b_ - e + o == strides[0] for k, b_, e, o in zip(kernel, pb, pe, op)) and (
                    strided != "aligned" or (weight.shape[1] * strides[0] ** 2) % block == 0):
                done = _phase_conv(weight, bias, strides[0], kernel, pb)
                shuffle = strides[0]
        if done is None:
            nodes.append(node)
            continue
        w, b, pads = done
        label = node.name or node.output[0]
        g.release(*node.input[1:])
        conv_out = node.output[0] if shuffle is None else g.name(f"{node.output[0]}/phases")
        nodes.append(_conv_node(g, node.input[0], w, b, conv_out, f"{label}/as_conv", pads))
        if shuffle is None:
            notes.append(f"{label}: ConvTranspose {kernel[0]}x{kernel[1]} stride 1 -> Conv {w.shape[2]}x{w.shape[3]} (flipped kernel)")
        else:
            nodes.append(helper.make_node("DepthToSpace", [conv_out], [node.output[0]],
                                          name=g.name(f"{label}/depth_to_space"), blocksize=shuffle, mode="CRD"))
            notes.append(f"{label}: ConvTranspose {kernel[0]}x{kernel[1]} stride {shuffle} -> Conv "
                         f"{w.shape[2]}x{w.shape[3]} x{w.shape[0]} + DepthToSpace({shuffle})")
    return (g.finish(nodes), notes) if notes else (proto, [])


def _fold_sign_flip(g: _Graph, prelu: onnx.NodeProto, slope: np.ndarray, producer):
    """Slopes with every a > 1 replaced by 1 / a, after negating those channels' filters in
    `producer` (a Conv read only by `prelu`) and scaling their input weights by -a in every
    consumer of `prelu` (plain Convs and ConvTransposes), which keeps the network's output; None
    when the neighbours are not such layers (the graph is then left untouched). The producer and
    consumers are changed in place: `rewrite_prelu` keeps their node protos."""
    channels = slope.size
    consumers = g.consumers.get(prelu.output[0], [])
    weights = _conv_weights(g, producer) if producer is not None else None
    if _channel_slope(g, prelu, channels) is None or weights is None or weights[0].shape[0] != channels \
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
    g = _Graph(proto)
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
    g = _Graph(proto)
    notes = []
    replaced: dict[int, list[onnx.NodeProto]] = {}  # id(node) -> the nodes emitted in its place
    for prelu in g.graph.node:
        producer = g.producers.get(prelu.input[0]) if prelu.op_type == "PRelu" else None
        made = _plain_conv(g, producer) if producer is not None else None
        consumers = g.consumers.get(prelu.output[0], [])
        if made is None or len(consumers) != 1 or g.uses.get(producer.output[0]) != 1 \
                or g.uses.get(prelu.output[0]) != 1 or {id(producer), id(consumers[0])} & set(replaced):
            continue  # (a Conv already rewritten as another PRelu's neighbour keeps that rewrite)
        w_p, b_p, pads = made
        channels = w_p.shape[0]
        slope = _channel_slope(g, prelu, channels)
        consumer = consumers[0]
        taken = _plain_conv(g, consumer)
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
            _conv_node(g, producer.input[0], w_new, b_new, relu_in, f"{label}/with_linear", pads),
            helper.make_node("Relu", [relu_in], [relu_out], name=g.name(f"{label_a}/relu"))]
        replaced[id(prelu)] = []
        replaced[id(consumer)] = [
            _conv_node(g, relu_out, w_c_new, b_c, consumer.output[0], f"{label_c}/after_relu", [0, 0, 0, 0])]
        notes.append(f"{label_a}: PRelu with {channels} slopes between Conv "
                     f"{w_p.shape[2]}x{w_p.shape[3]} {w_p.shape[1]}->{channels} and Conv 1x1 {channels}->{cout} "
                     f"-> Relu (the first Conv writes {channels + 2 * cout} channels)")
    return (g.splice(replaced), notes) if notes else (proto, [])


def rewrite_ensemble_sum(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """DRCN's output, ReduceSum(Concat(p_1..p_D) * w) over channels, becomes a running sum
    acc_d = p_d * w_d + acc_(d-1): the same value, summed in another order.

    Why: ONNX Runtime orders nodes by a depth-first walk back from the output that enters the
    input whose producer has the highest node index first. Through the Concat it reaches p_D
    first, so it runs all D applications of the shared convolution before any reconstruction and
    keeps every 256-channel recursion alive (measured: peak memory 17.6x the largest activation,
    ~36 GB for a 1080p output). Emitting all the p_d * w_d products before the additions makes
    acc_(d-1) the newer producer of each addition, so the walk reaches p_1 first and runs each
    reconstruction right after its recursion: 3.3x, and about twice as fast at 480x270."""
    g = _Graph(proto)
    replaced: dict[int, list[onnx.NodeProto]] = {}  # id(node) -> the nodes emitted in its place
    notes = []
    for cat in g.graph.node:
        if cat.op_type != "Concat" or node_attributes(cat).get("axis") != 1 or len(cat.input) < 3:
            continue
        users = g.consumers.get(cat.output[0], [])
        if len(users) != 1 or users[0].op_type != "Mul":
            continue
        mul = users[0]
        weights = mul.input[1] if mul.input[0] == cat.output[0] else mul.input[0]
        reductions = g.consumers.get(mul.output[0], [])
        if len(reductions) != 1 or reductions[0].op_type != "ReduceSum" or len(reductions[0].input) < 2:
            continue
        red = reductions[0]
        axes = g.const(red.input[1])
        if axes is None or [int(a) for a in axes.reshape(-1)] != [1] or node_attributes(red).get("keepdims", 1) != 1:
            continue
        label = cat.name or cat.output[0]
        index = {}
        for v in range(len(cat.input) + 1):
            index[v] = g.add_const(f"{label}/index{v}", np.array([v], np.int64))
        terms, sums = [], []
        for d, pred in enumerate(cat.input):  # every product first ...
            w_d, term = g.name(f"{label}/w{d}"), g.name(f"{label}/term{d}")
            terms.append(helper.make_node("Slice", [weights, index[d], index[d + 1], index[1]], [w_d],
                                          name=g.name(f"{label}/slice{d}")))
            terms.append(helper.make_node("Mul", [pred, w_d], [term], name=g.name(f"{label}/mul{d}")))
        acc = terms[1].output[0]
        for d in range(1, len(cat.input)):  # ... then the additions, oldest prediction innermost
            out = red.output[0] if d == len(cat.input) - 1 else g.name(f"{label}/acc{d}")
            sums.append(helper.make_node("Add", [terms[2 * d + 1].output[0], acc], [out], name=g.name(f"{label}/add{d}")))
            acc = out
        replaced.update({id(cat): [], id(mul): [], id(red): terms + sums})
        g.release(red.input[1])
        notes.append(f"{label}: ReduceSum(Concat of {len(cat.input)} predictions x weights) -> running sum "
                     "(ONNX Runtime then runs each reconstruction right after its recursion: ~5x less memory)")
    return (g.splice(replaced), notes) if notes else (proto, [])


def nchwc_block() -> int:
    """Channel block of ONNX Runtime's NCHWc convolutions on this CPU: 16 with AVX-512, else 8."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return 8
    return 16 if " avx512f" in flags else 8


def _pad(n: int, block: int) -> int:
    return -(-n // block) * block


def _conv_weights(g: _Graph, node: onnx.NodeProto):
    """(weight, bias or None) of a one-group FP32 Conv whose weight (and bias) are constants; None
    for any other node."""
    w = g.const(node.input[1]) if node.op_type == "Conv" and node.domain in ("", "ai.onnx") else None
    if w is None or w.ndim != 4 or w.dtype != np.float32 or node_attributes(node).get("group", 1) != 1:
        return None
    bias = None
    if len(node.input) > 2 and node.input[2]:
        bias = g.const(node.input[2])
        if bias is None:
            return None
    return w, bias


def _stride1_pads(node: onnx.NodeProto):
    """The explicit pads of a Conv with stride 1 and dilation 1; None for any other node."""
    a = node_attributes(node)
    if (node.op_type != "Conv" or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")
            or any(v != 1 for v in a.get("strides", [1, 1])) or any(v != 1 for v in a.get("dilations", [1, 1]))):
        return None
    return list(a.get("pads", [0, 0, 0, 0]))


def _keeps_size(kernel, pads) -> bool:
    """Whether a stride-1 convolution with this kernel and these pads outputs its input's size."""
    return pads[0] + pads[2] == kernel[0] - 1 and pads[1] + pads[3] == kernel[1] - 1


def _plain_conv(g: _Graph, node: onnx.NodeProto):
    """(weight, bias or None, pads) of a `_conv_weights` Conv with stride 1, dilation 1 and
    explicit pads; None for any other node."""
    weights = _conv_weights(g, node)
    pads = _stride1_pads(node) if weights is not None else None
    return None if pads is None else (*weights, pads)


def rewrite_narrow_conv(proto: onnx.ModelProto, *, block: int | None = None) -> tuple[onnx.ModelProto, list[str]]:
    """A Conv with few output channels (ESPCN's 3x3 32->s², SRCNN's 5x5 32->1 when
    `rewrite_single_output_conv` has not taken it) is padded by ONNX
    Runtime to a full block of 16 (AVX-512) output channels, so 1 output costs as much as 16.
    Split the k_h x k_w kernel: a 1 x k_w Conv producing one channel per (output, kernel row),
    which fills the block, then a k_h x 1 Conv whose one-hot weights add the rows up:
        y[o*k_h + a](h, w) = sum_{c,b} W[o, c, a, b] x_c(h, w + b - pw)
        out[o](h, w) = sum_a y[o*k_h + a](h + a - ph, w) + bias[o]
    Applied only where ONNX Runtime's padded cost drops."""
    block = block or nchwc_block()
    g = _Graph(proto)
    nodes, notes = [], []
    for node in g.graph.node:
        w, bias, pads = _plain_conv(g, node) or (None, None, None)
        if w is None:
            nodes.append(node)
            continue
        cout, cin, kh, kw = w.shape
        mid = cout * kh
        cin_cost = cin if cin < block else _pad(cin, block)
        before = cin_cost * _pad(cout, block) * kh * kw
        after = cin_cost * _pad(mid, block) * kw + mid * _pad(cout, block) * kh
        if kh < 2 or cout >= block or mid > block or after >= 0.75 * before:
            nodes.append(node)
            continue
        label = node.name or node.output[0]
        w_rows = np.ascontiguousarray(w.transpose(0, 2, 1, 3).reshape(mid, cin, 1, kw))  # (o, a) major
        w_sum = np.zeros((cout, mid, kh, 1), np.float32)
        for o in range(cout):
            for r in range(kh):
                w_sum[o, o * kh + r, r, 0] = 1.0
        rows = g.name(f"{node.output[0]}/rows")
        g.release(*node.input[1:])
        nodes.append(_conv_node(g, node.input[0], w_rows, None, rows, f"{label}/rows", [0, pads[1], 0, pads[3]]))
        nodes.append(_conv_node(g, rows, w_sum, bias, node.output[0], f"{label}/sum_rows", [pads[0], 0, pads[2], 0]))
        notes.append(f"{label}: Conv {kh}x{kw} {cin}->{cout} -> Conv 1x{kw} {cin}->{mid} + Conv {kh}x1 {mid}->{cout} "
                     f"(padded multiply-adds per pixel {before} -> {after})")
    return (g.finish(nodes), notes) if notes else (proto, [])


def _same_size_source(g: _Graph, x: str) -> str:
    """The earliest tensor with the spatial size of `x`, walking back through stride-1 'same'
    convolutions and activations: usually a plain NCHW tensor (the input, the bicubic
    DepthToSpace), whose Shape ONNX Runtime reads without reordering a blocked tensor."""
    while x in g.producers:
        node = g.producers[x]
        pads, kernel = _stride1_pads(node), node_attributes(node).get("kernel_shape")
        same_conv = pads is not None and kernel is not None and len(kernel) == 2 and _keeps_size(kernel, pads)
        if not (same_conv or node.op_type in _PASS_THROUGH or node.op_type == "PRelu"):
            break
        x = node.input[0]
    return x


def _block_phase_conv(g: _Graph, node: onnx.NodeProto, w: np.ndarray, bias, pads, p: int) -> list[onnx.NodeProto]:
    """Conv kh x kw Cin->1 ('same' size) -> Conv of stride p with p² outputs (kernel kh+p-1 x
    kw+p-1), DepthToSpace(p) and a Slice back to the input's size."""
    _, cin, kh, kw = w.shape
    label = node.name or node.output[0]
    phases = np.zeros((p * p, cin, kh + p - 1, kw + p - 1), np.float32)
    for r in range(p):
        for c in range(p):
            phases[r * p + c, :, r:r + kh, c:c + kw] = w[0]
    # pads at the end such that the output is ceil(H / p) blocks: floor((H + pt + pe - K) / p) + 1
    end = [kh + p - 1 - pads[0] - 1, kw + p - 1 - pads[1] - 1]
    blocks, shuffled, size = (g.name(f"{node.output[0]}/{s}") for s in ("blocks", "shuffled", "size"))
    return [
        _conv_node(g, node.input[0], phases, None if bias is None else np.repeat(bias, p * p), blocks,
                   f"{label}/blocks", [pads[0], pads[1], *end], stride=p),
        helper.make_node("DepthToSpace", [blocks], [shuffled], name=g.name(f"{label}/depth_to_space"),
                         blocksize=p, mode="CRD"),
        helper.make_node("Shape", [_same_size_source(g, node.input[0])], [size], name=g.name(f"{label}/size"),
                         start=2, end=4),
        helper.make_node("Slice", [shuffled, g.add_const(f"{label}/zeros", np.zeros(2, np.int64)), size,
                                   g.add_const(f"{label}/axes", np.array([2, 3], np.int64))],
                         [node.output[0]], name=g.name(f"{label}/crop")),
    ]


def rewrite_single_output_conv(proto: onnx.ModelProto, *, block: int | None = None
                                ) -> tuple[onnx.ModelProto, list[str]]:
    """A k x k Conv with one output channel (SRCNN's last 5x5 32->1) costs ONNX Runtime as much as
    16 outputs (the NCHWc block). Two exact rewrites fill the block with useful work:

    * block phases, when the block is a square p x p (p = 4 on AVX-512) and k >= 5: a Conv of
      stride p whose p² output channels are the p x p pixels of each output block, each the
      kernel shifted to its pixel (k + p - 1 wide), then DepthToSpace(p) and a Slice to the
      input's size. Dense work, Cin x (k + p - 1)² per pixel:
          y[r*p + c](i, j) = sum_{a,b} W[0, :, a, b] x(p*i + r + a - ph, p*j + c + b - pw)
    * otherwise a depthwise k x k Conv, one filter per input channel, and a 1x1 Conv of ones
      that adds the channels up (Cin x k² + Cin x block per pixel):
          y_c(h, w) = sum_{a,b} W[0, c, a, b] x_c(h + a - ph, w + b - pw);  out = sum_c y_c + bias
      For a 3x3 kernel the phases would be 4x the useful work ((3 + 3)² / 3²), and side by side
      (VDSR's 64->1, DRCN's 256->1) they were no faster.

    Only for 'same'-size convolutions whose input is whole channel blocks."""
    block = block or nchwc_block()
    p = math.isqrt(block)
    g = _Graph(proto)
    nodes, notes = [], []
    for node in g.graph.node:
        w, bias, pads = _plain_conv(g, node) or (None, None, None)
        if (w is None or w.shape[0] != 1 or w.shape[1] % block or w.shape[2] * w.shape[3] < 2
                or not _keeps_size(w.shape[2:], pads)):
            nodes.append(node)
            continue
        _, cin, kh, kw = w.shape
        label = node.name or node.output[0]
        g.release(*node.input[1:])
        if p * p == block and min(kh, kw) >= 5:
            nodes += _block_phase_conv(g, node, w, bias, pads, p)
            notes.append(f"{label}: Conv {kh}x{kw} {cin}->1 -> Conv {kh + p - 1}x{kw + p - 1} stride {p} {cin}->{p * p} "
                         f"(one output per pixel of a {p}x{p} block) + DepthToSpace({p}) (padded multiply-adds per "
                         f"pixel {cin * block * kh * kw} -> {cin * (kh + p - 1) * (kw + p - 1)})")
            continue
        per_channel = g.name(f"{node.output[0]}/per_channel")
        nodes.append(_conv_node(g, node.input[0], w.reshape(cin, 1, kh, kw), None, per_channel, f"{label}/depthwise",
                                pads, group=cin))
        nodes.append(_conv_node(g, per_channel, np.ones((1, cin, 1, 1), np.float32), bias, node.output[0],
                                f"{label}/sum_channels", [0, 0, 0, 0]))
        notes.append(f"{label}: Conv {kh}x{kw} {cin}->1 -> depthwise Conv {kh}x{kw} ({cin} groups) + Conv 1x1 "
                     f"{cin}->1 of ones (padded multiply-adds per pixel {cin * block * kh * kw} -> "
                     f"{cin * kh * kw + cin * block})")
    return (g.finish(nodes), notes) if notes else (proto, [])


_PASS_THROUGH = {"Relu", "LeakyRelu", "Tanh", "Sigmoid", "Elu", "Clip", "HardSigmoid", "Selu", "Softplus"}


def _channel_slope(g: _Graph, node: onnx.NodeProto, channels: int):
    """The constant per-channel slope of a PRelu over `channels` channels ((C,1,1) or (1,C,1,1)), else None."""
    if node.op_type != "PRelu" or len(node.input) != 2:
        return None
    slope = g.const(node.input[1])
    if slope is None or slope.ndim not in (3, 4) or slope.shape[-2:] != (1, 1) or slope.shape[-3] != channels \
            or (slope.ndim == 4 and slope.shape[0] != 1):
        return None
    return slope


def rewrite_pad_channels(proto: onnx.ModelProto, *, block: int | None = None,
                         max_growth: float = 1.5) -> tuple[onnx.ModelProto, list[str]]:
    """Conv A -> [one elementwise activation] -> Conv B, where A has fewer output channels than a
    multiple of the NCHWc block (FSRCNN's 12): give A zero filters up to the multiple and B zero
    weights for them. The extra channels hold act(0) and are multiplied by zeros, so outputs are
    bit-identical; ONNX Runtime then keeps B's input in its blocked layout instead of reordering it
    back to NCHW (it reads inputs of fewer than `block` channels, not multiples of it, as NCHW)."""
    block = block or nchwc_block()
    g = _Graph(proto)
    consumers = g.consumers
    graph_outputs = {o.name for o in g.graph.output}
    plans = []
    for a in g.graph.node:
        if a.op_type != "Conv" or a.output[0] in graph_outputs:
            continue
        wa = g.const(a.input[1])
        attrs = node_attributes(a)
        if wa is None or wa.ndim != 4 or attrs.get("group", 1) != 1:
            continue
        cout = wa.shape[0]
        target = _pad(cout, block)
        if cout % block == 0 or cout > target or target > max_growth * cout and cout >= block:
            continue
        chain = [a]
        users = consumers.get(a.output[0], [])
        if len(users) == 1 and users[0].output[0] not in graph_outputs and (
                users[0].op_type in _PASS_THROUGH or _channel_slope(g, users[0], cout) is not None):
            chain.append(users[0])
            users = consumers.get(users[0].output[0], [])
        if not users or any(u.op_type != "Conv" or u.input[0] != chain[-1].output[0] or g.const(u.input[1]) is None
                            or node_attributes(u).get("group", 1) != 1 for u in users):
            continue
        has_bias = len(a.input) > 2 and bool(a.input[2])
        if has_bias and g.const(a.input[2]) is None:
            continue
        plans.append((a, users, target, chain[1] if len(chain) > 1 and chain[1].op_type == "PRelu" else None))
    if not plans:
        return proto, []
    pad_out = {id(a): target for a, _, target, _ in plans}
    pad_in: dict[int, int] = {}
    pad_slope = {id(prelu): target for _, _, target, prelu in plans if prelu is not None}
    for a, users, target, _ in plans:
        for u in users:
            pad_in[id(u)] = target
    notes = [f"{a.name or a.output[0]}: Conv output channels {g.const(a.input[1]).shape[0]} -> {target} (zero "
             f"filters), {len(users)} consumer(s) padded to match" for a, users, target, _ in plans]
    nodes = []
    for node in g.graph.node:
        if id(node) in pad_slope:
            n = onnx.NodeProto()
            n.CopyFrom(node)
            slope = g.const(node.input[1])
            flat = slope.reshape(-1)
            padded = np.concatenate([flat, np.zeros(pad_slope[id(node)] - flat.size, flat.dtype)])
            g.replace_const(n, 1, f"{node.name or node.output[0]}/slope_padded",
                            padded.reshape(*slope.shape[:-3], -1, 1, 1))
            nodes.append(n)
            continue
        if id(node) not in pad_out and id(node) not in pad_in:
            nodes.append(node)
            continue
        n = onnx.NodeProto()
        n.CopyFrom(node)
        label = node.name or node.output[0]
        w = g.const(node.input[1])
        if id(node) in pad_out:
            extra = pad_out[id(node)] - w.shape[0]
            w = np.concatenate([w, np.zeros((extra, *w.shape[1:]), w.dtype)])
            if len(node.input) > 2 and node.input[2]:
                b = g.const(node.input[2])
                g.replace_const(n, 2, f"{label}/b_padded", np.concatenate([b, np.zeros(extra, b.dtype)]))
        if id(node) in pad_in:
            extra = pad_in[id(node)] - w.shape[1]
            w = np.concatenate([w, np.zeros((w.shape[0], extra, *w.shape[2:]), w.dtype)], axis=1)
        g.replace_const(n, 1, f"{label}/w_padded", w)
        nodes.append(n)
    del g.graph.value_info[:]  # channel counts changed; ONNX Runtime infers shapes again
    return g.finish(nodes), notes


def _per_channel_elementwise(proto: onnx.ModelProto) -> bool:
    """Whether the graph has a PRelu, or an elementwise op with a constant of more than one value."""
    g = _Graph(proto)
    for node in g.graph.node:
        if node.op_type == "PRelu":
            return True
        if node.op_type in ("Mul", "Add", "Min", "Max") and any(
                (c := g.const(i)) is not None and c.size > 1 for i in node.input):
            return True
    return False


def max_abs_difference(a: onnx.ModelProto, b: onnx.ModelProto,
                       sizes: Sequence[Sequence[int]] = CHECK_SIZES, seed: int = 0) -> float:
    """Worst |a(x) - b(x)| in ONNX Runtime (FP32, all graph optimizations) over random x of `sizes`."""
    from .runtime import OnnxRuntimeRunner

    ra, rb = OnnxRuntimeRunner(a.SerializeToString()), OnnxRuntimeRunner(b.SerializeToString())
    rng = np.random.default_rng(seed)
    worst = 0.0
    for n, h, w in sizes:
        x = rng.random((n, 1, h, w), dtype=np.float32)
        ya, yb = ra(x), rb(x)
        if ya.shape != yb.shape:
            return float("inf")
        diff = np.abs(ya.astype(np.float64) - yb)
        worst = max(worst, float(diff.max()) if np.all(np.isfinite(diff)) else float("inf"))
    return worst


# The rewrites `optimize_onnx` applies, in order. Measured on a 2-core AVX-512 CPU, ONNX Runtime 1.32,
# x2 at 960x540 -> 1920x1080: stride-1 ConvTranspose -> Conv halves RED's decoder; the narrow-conv
# split halves SRCNN and trims ESPCN; LeakyRelu for a uniform PRelu takes FSRCNN from ~330 to
# ~230 ms, and elementwise ops for trained per-channel slopes from 193 to 148 ms. Strided ConvTranspose -> phase Conv + DepthToSpace is correct but slower than ONNX
# Runtime's own ConvTranspose for FSRCNN's 56->1 layer at x2 and x3 (its s² = 4 or 9 outputs are
# padded to 16 channels) and faster at x4 (16 outputs: 27 vs 32 ms), so it is used only there.
# Padding FSRCNN's 12-channel layers to 16 (zero filters) keeps them in the blocked layout: -10%.
# SRCNN's last 5x5 32->1 as depthwise + channel sum instead of the row split: 147 -> 138 ms at x2,
# 154 -> 141 ms at x4 (side by side); SRCNN 9-5-5 565 -> 558 ms; VDSR's 3x3 64->1 within noise.
# As 4x4 block phases instead of depthwise + sum: SRCNN 132.8 -> 125.4 ms at x2, 136.6 -> 121.0 at
# x3, 133.5 -> 121.1 at x4, 9-5-5 546.3 -> 525.6 (side by side); for 3x3 kernels phases are no
# faster (VDSR 1470 -> 1475 ms at 1/4 of 1080p; DRCN with one of its 16 reconstructions, +1.3%).
# PRelu -> Relu with the linear part as extra channels of the first Conv (side by side, 15 repeats):
# FSRCNN-s 70.6 -> 65.6 ms at x2, 40.7 -> 37.5 at x3, 26.4 -> 24.9 at x4; FSRCNN 126.9 -> 127.5,
# 76.4 -> 74.0, 55.7 -> 55.7 (its 80-channel tensor costs the shrink Conv what the PRelu passes saved).
DEFAULT_PASSES = ("ensemble_sum", "conv_transpose_aligned", "prelu_to_relu", "prelu_uniform", "pad_channels",
                  "single_output_conv", "narrow_conv")
PASSES = {
    "conv_transpose_stride1": lambda p: rewrite_conv_transpose(p, strided=False),
    "conv_transpose": lambda p: rewrite_conv_transpose(p, strided=True),
    "conv_transpose_aligned": lambda p: rewrite_conv_transpose(p, strided="aligned"),
    "prelu_to_relu": rewrite_prelu_to_relu,
    "prelu_uniform": rewrite_prelu,
    "narrow_conv": rewrite_narrow_conv,
    "single_output_conv": rewrite_single_output_conv,
    "pad_channels": rewrite_pad_channels,
    "ensemble_sum": rewrite_ensemble_sum,
}


def optimize_onnx(proto: onnx.ModelProto, *, check: bool = True, max_abs: float = MAX_ABS,
                  sizes: Sequence[Sequence[int]] = CHECK_SIZES,
                  passes: Sequence[str] = DEFAULT_PASSES) -> tuple[onnx.ModelProto, OptimizeReport]:
    """(graph to run, report). Returns `proto` itself when nothing applies or the check fails."""
    report = OptimizeReport()
    rewritten = proto
    for name in passes:
        if name not in PASSES:
            raise ValueError(f"unknown rewrite {name!r}; known: {', '.join(PASSES)}")
        if name == "pad_channels" and _per_channel_elementwise(rewritten):
            # A per-channel PRelu (or the Mul/Min/Max/Add it became) has no blocked (NCHWc) kernel,
            # so ONNX Runtime reorders to NCHW and back around each one; plain NCHW convolutions are
            # faster then (FSRCNN x2 with per-channel slopes, 960x540, 2 cores: 137 ms against 166
            # blocked), and padding channels only adds work there.
            report.nchwc = False
            continue
        rewritten, notes = PASSES[name](rewritten)
        report.rewrites += notes
    if not report.rewrites:
        report.reason = "nothing to rewrite"
        return proto, report
    if check:
        report.checked = True
        report.max_abs = max_abs_difference(proto, rewritten, sizes)
        if not report.max_abs <= max_abs:
            report.reason = f"rewritten graph differs by {report.max_abs:.3g} > {max_abs:g}; kept the original"
            return proto, report
    report.applied = True
    return rewritten, report
