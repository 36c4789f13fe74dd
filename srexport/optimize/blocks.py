"""Rewrites that fill ONNX Runtime's NCHWc channel blocks (16 on AVX-512, 8 on AVX2) with useful
work: narrow Convs split by kernel row, one-output Convs as block phases or depthwise + sum, and
channel counts padded to a block multiple with zero filters."""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper

from .graph import (PASS_THROUGH, Graph, channel_slope, conv_node, keeps_size, nchwc_block, node_attributes,
                    pad_to_block, plain_conv, stride1_pads)


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
    g = Graph(proto)
    nodes, notes = [], []
    for node in g.graph.node:
        w, bias, pads = plain_conv(g, node) or (None, None, None)
        if w is None:
            nodes.append(node)
            continue
        cout, cin, kh, kw = w.shape
        mid = cout * kh
        cin_cost = cin if cin < block else pad_to_block(cin, block)
        before = cin_cost * pad_to_block(cout, block) * kh * kw
        after = cin_cost * pad_to_block(mid, block) * kw + mid * pad_to_block(cout, block) * kh
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
        nodes.append(conv_node(g, node.input[0], w_rows, None, rows, f"{label}/rows", [0, pads[1], 0, pads[3]]))
        nodes.append(conv_node(g, rows, w_sum, bias, node.output[0], f"{label}/sum_rows", [pads[0], 0, pads[2], 0]))
        notes.append(f"{label}: Conv {kh}x{kw} {cin}->{cout} -> Conv 1x{kw} {cin}->{mid} + Conv {kh}x1 {mid}->{cout} "
                     f"(padded multiply-adds per pixel {before} -> {after})")
    return (g.finish(nodes), notes) if notes else (proto, [])


def _same_size_source(g: Graph, x: str) -> str:
    """The earliest tensor with the spatial size of `x`, walking back through stride-1 'same'
    convolutions and activations: usually a plain NCHW tensor (the input, the bicubic
    DepthToSpace), whose Shape ONNX Runtime reads without reordering a blocked tensor."""
    while x in g.producers:
        node = g.producers[x]
        pads, kernel = stride1_pads(node), node_attributes(node).get("kernel_shape")
        same_conv = pads is not None and kernel is not None and len(kernel) == 2 and keeps_size(kernel, pads)
        if not (same_conv or node.op_type in PASS_THROUGH or node.op_type == "PRelu"):
            break
        x = node.input[0]
    return x


def _block_phase_conv(g: Graph, node: onnx.NodeProto, w: np.ndarray, bias, pads, p: int) -> list[onnx.NodeProto]:
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
        conv_node(g, node.input[0], phases, None if bias is None else np.repeat(bias, p * p), blocks,
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
    g = Graph(proto)
    nodes, notes = [], []
    for node in g.graph.node:
        w, bias, pads = plain_conv(g, node) or (None, None, None)
        if (w is None or w.shape[0] != 1 or w.shape[1] % block or w.shape[2] * w.shape[3] < 2
                or not keeps_size(w.shape[2:], pads)):
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
        nodes.append(conv_node(g, node.input[0], w.reshape(cin, 1, kh, kw), None, per_channel, f"{label}/depthwise",
                                pads, group=cin))
        nodes.append(conv_node(g, per_channel, np.ones((1, cin, 1, 1), np.float32), bias, node.output[0],
                                f"{label}/sum_channels", [0, 0, 0, 0]))
        notes.append(f"{label}: Conv {kh}x{kw} {cin}->1 -> depthwise Conv {kh}x{kw} ({cin} groups) + Conv 1x1 "
                     f"{cin}->1 of ones (padded multiply-adds per pixel {cin * block * kh * kw} -> "
                     f"{cin * kh * kw + cin * block})")
    return (g.finish(nodes), notes) if notes else (proto, [])


def rewrite_pad_channels(proto: onnx.ModelProto, *, block: int | None = None,
                         max_growth: float = 1.5) -> tuple[onnx.ModelProto, list[str]]:
    """Conv A -> [one elementwise activation] -> Conv B, where A has fewer output channels than a
    multiple of the NCHWc block (FSRCNN's 12): give A zero filters up to the multiple and B zero
    weights for them. The extra channels hold act(0) and are multiplied by zeros, so outputs are
    bit-identical; ONNX Runtime then keeps B's input in its blocked layout instead of reordering it
    back to NCHW (it reads inputs of fewer than `block` channels, not multiples of it, as NCHW)."""
    block = block or nchwc_block()
    g = Graph(proto)
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
        target = pad_to_block(cout, block)
        if cout % block == 0 or cout > target or target > max_growth * cout and cout >= block:
            continue
        chain = [a]
        users = consumers.get(a.output[0], [])
        if len(users) == 1 and users[0].output[0] not in graph_outputs and (
                users[0].op_type in PASS_THROUGH or channel_slope(g, users[0], cout) is not None):
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
