"""ConvTranspose as Conv: stride 1 as a Conv with the kernel flipped; stride s (output exactly s x
the input) as one Conv whose s² x Cout outputs are the output phases, then DepthToSpace."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from .graph import Graph, conv_node, nchwc_block, node_attributes


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


def rewrite_conv_transpose(proto: onnx.ModelProto, *, strided: bool | str = True,
                           block: int | None = None) -> tuple[onnx.ModelProto, list[str]]:
    """Copy of `proto` with every coverable ConvTranspose replaced by Conv (+ DepthToSpace).
    `strided=False` rewrites only stride-1 layers; `strided="aligned"` rewrites a strided layer
    only when its phase convolution's Cout x s² output channels fill whole NCHWc blocks (x4 at
    1 output channel), which is when it beats ONNX Runtime's own ConvTranspose."""
    block = block or nchwc_block()
    g = Graph(proto)
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
        nodes.append(conv_node(g, node.input[0], w, b, conv_out, f"{label}/as_conv", pads))
        if shuffle is None:
            notes.append(f"{label}: ConvTranspose {kernel[0]}x{kernel[1]} stride 1 -> Conv {w.shape[2]}x{w.shape[3]} (flipped kernel)")
        else:
            nodes.append(helper.make_node("DepthToSpace", [conv_out], [node.output[0]],
                                          name=g.name(f"{label}/depth_to_space"), blocksize=shuffle, mode="CRD"))
            notes.append(f"{label}: ConvTranspose {kernel[0]}x{kernel[1]} stride {shuffle} -> Conv "
                         f"{w.shape[2]}x{w.shape[3]} x{w.shape[0]} + DepthToSpace({shuffle})")
    return (g.finish(nodes), notes) if notes else (proto, [])
