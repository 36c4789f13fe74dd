"""What the rewrites share: a mutable copy of an ONNX graph (`Graph`) and readers of the Conv and
PRelu nodes they match, plus the channel block of ONNX Runtime's NCHWc kernels on this CPU."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

# Elementwise activations a rewrite may look through: they keep a tensor's shape and channels.
PASS_THROUGH = {"Relu", "LeakyRelu", "Tanh", "Sigmoid", "Elu", "Clip", "HardSigmoid", "Selu", "Softplus"}


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


class Graph:
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


def conv_node(g: Graph, x: str, w: np.ndarray, b, out: str, label: str, pads, group: int = 1,
               stride: int = 1) -> onnx.NodeProto:
    inputs = [x, g.add_const(f"{label}/weight", w.astype(np.float32))]
    if b is not None:
        inputs.append(g.add_const(f"{label}/bias", np.asarray(b, dtype=np.float32)))
    return helper.make_node("Conv", inputs, [out], name=g.name(label), kernel_shape=list(w.shape[2:]),
                            pads=list(pads), strides=[stride, stride], dilations=[1, 1], group=group)


def nchwc_block() -> int:
    """Channel block of ONNX Runtime's NCHWc convolutions on this CPU: 16 with AVX-512, else 8."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return 8
    return 16 if " avx512f" in flags else 8


def pad_to_block(n: int, block: int) -> int:
    return -(-n // block) * block


def conv_weights(g: Graph, node: onnx.NodeProto):
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


def stride1_pads(node: onnx.NodeProto):
    """The explicit pads of a Conv with stride 1 and dilation 1; None for any other node."""
    a = node_attributes(node)
    if (node.op_type != "Conv" or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")
            or any(v != 1 for v in a.get("strides", [1, 1])) or any(v != 1 for v in a.get("dilations", [1, 1]))):
        return None
    return list(a.get("pads", [0, 0, 0, 0]))


def keeps_size(kernel, pads) -> bool:
    """Whether a stride-1 convolution with this kernel and these pads outputs its input's size."""
    return pads[0] + pads[2] == kernel[0] - 1 and pads[1] + pads[3] == kernel[1] - 1


def plain_conv(g: Graph, node: onnx.NodeProto):
    """(weight, bias or None, pads) of a `conv_weights` Conv with stride 1, dilation 1 and
    explicit pads; None for any other node."""
    weights = conv_weights(g, node)
    pads = stride1_pads(node) if weights is not None else None
    return None if pads is None else (*weights, pads)


def channel_slope(g: Graph, node: onnx.NodeProto, channels: int):
    """The constant per-channel slope of a PRelu over `channels` channels ((C,1,1) or (1,C,1,1)), else None."""
    if node.op_type != "PRelu" or len(node.input) != 2:
        return None
    slope = g.const(node.input[1])
    if slope is None or slope.ndim not in (3, 4) or slope.shape[-2:] != (1, 1) or slope.shape[-3] != channels \
            or (slope.ndim == 4 and slope.shape[0] != 1):
        return None
    return slope
