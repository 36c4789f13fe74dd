"""The fused CPU kernel (`--backend native`, what `auto` picks on a CPU where it applies).

FSRCNN is a chain of small convolutions with per-channel PReLUs ending in a strided
ConvTranspose. ONNX Runtime runs it at about a quarter of this machine's multiply-add rate: every
56-channel intermediate makes a round trip to memory, the PReLUs are separate passes, and its
blocked kernels pad 12 channels to 16. `csrc/chain.c` runs the whole chain in one pass down the
image instead, keeping in cache only the rows each layer's window still needs, with the
activation applied in registers (see the C file). The last layer becomes a 1x1 convolution of
the LR features to (phase, offset) taps whose rows are added into the s x s output phases (exact:
the same products summed in another order): a ConvTranspose's 81 taps (9x9 kernel, any stride;
none of them zero), or a sub-pixel Conv + DepthToSpace's kernel positions (ESPCN, whose Tanh the
kernel computes to about 1e-7).

`chain_from_onnx` reads such a chain from an ONNX graph and says why when a graph is not one.
The C file is compiled on first use with the system's C compiler (`$CC`, else `cc`) and
`-march=native` into ~/.cache/srexport/native, keyed by the source, the compiler and the CPU, so
a cached library is never run on a CPU it was not built for. Every runner checks its output
against ONNX Runtime on the original graph (within 1e-5) before it is used.

`precision="bf16"` (built where the CPU has AVX512_BF16): the layers after the first read bf16
activations and bf16 weights and sum in FP32 (vdpbf16ps); the first layer reads the FP32 image
and the last writes FP32 taps. Such a runner is checked against ONNX Runtime's FP32 output on
real LR images (srexport/samples) and used only at >= 50 dB PSNR of the difference, the bar of
the FP16 graphs (`BF16_MIN_PSNR_DB`).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import MissingBackend, SRExportError

SOURCE = Path(__file__).with_name("csrc") / "chain.c"
FLAGS = ("-O3", "-march=native", "-ffp-contract=fast", "-shared", "-fPIC")
MAX_LAYERS, MAX_KH, MAX_REACH = 32, 16, 16  # the C file's MAX_LAYERS, MAX_KH and PAD
MIN_BAND_ROWS = 16  # fewer LR rows per thread and the recomputed window rows at band edges dominate


class NotAChain(SRExportError):
    """The graph is not a chain the fused kernel runs."""


class CheckFailed(SRExportError):
    """The fused kernel's output on the check inputs is not within 1e-5 of ONNX Runtime's."""


class NotBF16(SRExportError):
    """bf16 was asked for where it cannot run: a CPU or build without bf16 dot products, or a chain
    whose channels do not pair up."""


BF16_MIN_PSNR_DB = 50.0  # the FP16 graphs' bar (fp16.py), for bf16 against FP32 on real images


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux reports them (/proc/cpuinfo `flags`), empty elsewhere."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def bf16_refusal(flags: set[str] | None = None) -> str:
    """"" when this CPU (or one with `flags`) has bf16 dot products, else why --precision bf16 is
    refused: without them bf16 would be emulated by conversions around FP32 arithmetic, slower than
    FP32 and no more accurate."""
    flags = cpu_flags() if flags is None else flags
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        return ""
    if not flags:
        return "--precision bf16: cannot read this CPU's features (/proc/cpuinfo); use --precision fp32"
    return ("--precision bf16: this CPU has no bf16 dot products (AVX512_BF16 or AMX-BF16), so bf16 would be "
            "slower than FP32 here; use --precision fp32")


class NotPreferred(SRExportError):
    """`auto` leaves this chain to ONNX Runtime on this build of the kernel (see `auto_choice`)."""


ACT_NONE, ACT_PRELU, ACT_TANH = 0, 1, 2  # the C file's activation kinds


@dataclass
class Conv:
    weight: np.ndarray  # (cout, cin, kh, kw) float32
    bias: np.ndarray  # (cout,)
    top: int  # output (y, x) reads input rows y + top .. y + top + kh - 1
    left: int
    act: int = ACT_NONE
    slope: np.ndarray | None = None  # (cout,) for ACT_PRELU (Relu: 0, LeakyRelu: alpha)


@dataclass
class Chain:
    """Convolutions, the last a 1x1 whose channels are taps: channel c of LR pixel (y + dy[c],
    x + dx[c]) adds into output phase phase[c] (= ry * scale + rx) of pixel (y, x)."""

    layers: list[Conv]
    scale: int
    phase: np.ndarray  # int32; -1 for channels that only round the count up
    dy: np.ndarray
    dx: np.ndarray
    bias: np.ndarray  # (scale * scale,) float32
    upsampling: str  # "ConvTranspose" or "DepthToSpace": what the taps replace


# --- reading the chain from ONNX -------------------------------------------------------------

def chain_from_onnx(proto, where: str = "ONNX model") -> Chain:
    """The fused-kernel form of `proto`, or NotAChain saying what does not fit: Convs that keep the
    image size, each optionally followed by PRelu, Relu, LeakyRelu or Tanh, ending in a
    ConvTranspose whose output is exactly s x its input (FSRCNN) or in a Conv + DepthToSpace (ESPCN)."""
    from onnx import numpy_helper

    from .optimize import node_attributes

    g = proto.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    if len(g.input) - sum(i.name in consts for i in g.input) != 1 or len(g.output) != 1:
        raise NotAChain(f"{where}: not one input and one output")
    output = g.output[0].name
    by_input: dict[str, list] = {}
    for node in g.node:
        for name in node.input:
            by_input.setdefault(name, []).append(node)

    def only_consumer(name):
        if name == output:
            raise NotAChain(f"{where}: the graph ends without a ConvTranspose or DepthToSpace")
        users = by_input.get(name, [])
        if len(users) != 1:
            raise NotAChain(f"{where}: {name!r} feeds {len(users)} nodes; the fused kernel needs a plain chain")
        return users[0]

    def const(node, i):
        if i >= len(node.input) or not node.input[i]:
            return None
        if node.input[i] not in consts:
            raise NotAChain(f"{where}: {node.op_type} {node.name!r} input {node.input[i]!r} is not a constant")
        return consts[node.input[i]].astype(np.float32)

    tensor = next(i.name for i in g.input if i.name not in consts)
    layers: list[Conv] = []
    while True:
        node = only_consumer(tensor)
        attrs = node_attributes(node)
        if attrs.get("group", 1) != 1 or any(d != 1 for d in attrs.get("dilations", [1, 1])) or \
                attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise NotAChain(f"{where}: {node.op_type} {node.name!r} is grouped, dilated or auto-padded")
        if node.op_type == "ConvTranspose":
            if node.output[0] != output:
                raise NotAChain(f"{where}: the ConvTranspose is not the last node")
            chain = _taps_of_conv_transpose(const(node, 1), const(node, 2), attrs, where)
            break
        if node.op_type != "Conv":
            raise NotAChain(f"{where}: {node.op_type} {node.name!r} is not a Conv, activation, final "
                            "ConvTranspose or DepthToSpace")
        weight, bias = const(node, 1), const(node, 2)
        cout, cin, kh, kw = weight.shape
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
        if any(s != 1 for s in attrs.get("strides", [1, 1])) or pads[0] + pads[2] != kh - 1 \
                or pads[1] + pads[3] != kw - 1:
            raise NotAChain(f"{where}: Conv {node.name!r} does not keep the image size "
                            "(stride 1, pads summing to k - 1)")
        conv = Conv(weight, np.zeros(cout, np.float32) if bias is None else bias, -pads[0], -pads[1])
        tensor = node.output[0]
        after = by_input.get(tensor, []) if tensor != output else []
        if len(after) == 1 and after[0].op_type in ("PRelu", "Relu", "LeakyRelu"):
            conv.act, conv.slope = ACT_PRELU, _slopes(after[0], consts, cout, where)
            tensor = after[0].output[0]
        elif len(after) == 1 and after[0].op_type == "Tanh":
            conv.act, tensor = ACT_TANH, after[0].output[0]
        elif len(after) == 1 and after[0].op_type == "DepthToSpace":
            if after[0].output[0] != output:
                raise NotAChain(f"{where}: the DepthToSpace is not the last node")
            chain = _taps_of_subpixel_conv(conv, after[0], where)
            break
        layers.append(conv)
    chain.layers[:0] = layers
    _check_limits(chain, where)
    return chain


def _slopes(node, consts, channels: int, where: str) -> np.ndarray:
    from .optimize import node_attributes

    if node.op_type == "Relu":
        return np.zeros(channels, np.float32)
    if node.op_type == "LeakyRelu":
        return np.full(channels, node_attributes(node).get("alpha", 0.01), np.float32)
    slope = consts.get(node.input[1])
    if slope is None or slope.size not in (1, channels) or slope.size != max(slope.shape, default=1):
        raise NotAChain(f"{where}: PRelu {node.name!r} slopes are not a constant per channel")
    return np.broadcast_to(slope.astype(np.float32).reshape(-1), (channels,)).copy()


def _taps_of_conv_transpose(weight, bias, attrs, where: str) -> Chain:
    """A ConvTranspose (cin, 1, k, k) with stride s and output exactly s x the input, as taps:
    output pixel (s*y + r, s*x + q) sums input (y + o, x + p) times w[r + pad - s*o, q + pad - s*p]
    over the (o, p) where both kernel indices exist; each such (r, q, o, p) is one tap (81 for a
    9x9 kernel at any stride, none of them zero)."""
    cin, cout, kh, kw = weight.shape
    s = list(attrs.get("strides", [1, 1]))
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    extra = list(attrs.get("output_padding", [0, 0]))
    if cout != 1 or s[0] != s[1] or s[0] < 1:
        raise NotAChain(f"{where}: the ConvTranspose is not single-channel with one stride")
    stride = s[0]
    for axis, k in enumerate((kh, kw)):
        if pads[axis] + pads[axis + 2] != k + extra[axis] - stride:
            raise NotAChain(f"{where}: the ConvTranspose's output is not exactly {stride} x its input")

    def offsets(r, pad, k):  # (input offset, kernel index) pairs for output phase r along one axis
        return [(o, r + pad - stride * o) for o in range(-k, k + 1) if 0 <= r + pad - stride * o < k]

    taps = [(ry * stride + rx, dy, dx, weight[:, 0, ky, kx])
            for ry in range(stride) for rx in range(stride)
            for dy, ky in offsets(ry, pads[0], kh) for dx, kx in offsets(rx, pads[1], kw)]
    return _tap_chain(taps, stride, 0.0 if bias is None else bias.reshape(-1)[0], where, "ConvTranspose")


def _taps_of_subpixel_conv(conv: Conv, shuffle, where: str) -> Chain:
    """A Conv to s*s channels followed by DepthToSpace(s) to one channel (ESPCN's last layer): its
    channel c is output phase c in both DCR and CRD order; every kernel position is one tap."""
    from .optimize import node_attributes

    stride = node_attributes(shuffle).get("blocksize", 0)
    cout, cin, kh, kw = conv.weight.shape
    if stride < 1 or cout != stride * stride:
        raise NotAChain(f"{where}: the DepthToSpace does not make one channel of the Conv's {cout}")
    taps = [(c, conv.top + ky, conv.left + kx, conv.weight[c, :, ky, kx])
            for c in range(cout) for ky in range(kh) for kx in range(kw)]
    return _tap_chain(taps, stride, conv.bias, where, "DepthToSpace")


def _tap_chain(taps, stride: int, bias, where: str, upsampling: str) -> Chain:
    """Taps (phase, dy, dx, weights over cin) and the bias of each phase (or one for all) as the
    chain's last layer: a 1x1 convolution whose channel count is rounded up with zero taps to a
    multiple of a register block (chain.c's pick_row)."""
    cin = len(taps[0][3])
    count = next(n for n in range(len(taps), len(taps) + 16) if n % 14 == 0 or n % 12 == 0 or n % 8 == 0)
    taps = taps + [(-1, 0, 0, np.zeros(cin, np.float32))] * (count - len(taps))
    phase, dy, dx, w = zip(*taps)
    if max(map(abs, dx)) > MAX_REACH:
        raise NotAChain(f"{where}: the last layer reaches further sideways than the fused kernel does")
    conv = Conv(np.stack(w).reshape(count, cin, 1, 1).astype(np.float32), np.zeros(count, np.float32), 0, 0)
    return Chain([conv], stride, np.array(phase, np.int32), np.array(dy, np.int32), np.array(dx, np.int32),
                 np.broadcast_to(np.asarray(bias, np.float32), (stride * stride,)).copy(), upsampling)


def _check_limits(chain: Chain, where: str) -> None:
    layers = chain.layers
    if len(layers) > MAX_LAYERS:
        raise NotAChain(f"{where}: {len(layers)} layers; the fused kernel takes at most {MAX_LAYERS}")
    for conv in layers:
        kh, kw = conv.weight.shape[2:]
        if kh > MAX_KH or conv.left < -MAX_REACH or conv.left + kw - 1 > MAX_REACH:
            raise NotAChain(f"{where}: a {kh}x{kw} window is wider than the fused kernel reaches")
    for prev, conv in zip(layers, layers[1:]):
        if conv.weight.shape[1] != prev.weight.shape[0]:
            raise NotAChain(f"{where}: channel counts do not chain")
    if layers[0].weight.shape[1] != 1:
        raise NotAChain(f"{where}: the input is not one channel")


# --- compiling and loading the C kernel ------------------------------------------------------

class _Conv(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int) for name in ("cin", "cout", "kh", "kw", "top", "left", "act",
                                                  "in_bf16", "out_bf16")] + \
               [(name, ctypes.c_void_p) for name in ("w", "b", "slope")]


class _Taps(ctypes.Structure):
    _fields_ = [(name, ctypes.c_void_p) for name in ("phase", "dy", "dx", "bias")]


def _cpu_id() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags", "Features", "CPU part"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor() + platform.machine()


def compiler() -> str | None:
    """The C compiler's path ($CC, else cc), or None when there is none."""
    cc = os.environ.get("CC") or "cc"
    return shutil.which(cc)


@functools.lru_cache(maxsize=None)
def _library_or_error() -> ctypes.CDLL | MissingBackend:
    try:
        return _build_and_load()
    except MissingBackend as e:
        return e  # remembered: `auto` opening runner after runner must not run the compiler each time


def library() -> ctypes.CDLL:
    """The compiled kernel (built once per source, compiler and CPU, and per process only once
    tried); MissingBackend when it cannot be."""
    lib = _library_or_error()
    if isinstance(lib, MissingBackend):
        raise lib
    return lib


def forget_library() -> None:
    """Build or load again on the next `library()` (after $CC or the source changed)."""
    _library_or_error.cache_clear()


def _build_and_load() -> ctypes.CDLL:
    from .runtime import cache_dir

    cc = compiler()
    if cc is None:
        raise MissingBackend(f"no C compiler ({os.environ.get('CC') or 'cc'}) to build the fused kernel; "
                             "install one (apt-get install gcc) or use --backend onnxruntime")
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise MissingBackend(f"{cc}: cannot run the C compiler ({e})") from None
    source = SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([source, version.encode(), " ".join(FLAGS).encode(), _cpu_id().encode()]))
    folder = cache_dir() / "native"
    target = folder / f"chain-{key.hexdigest()[:16]}.so"
    if not target.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=folder)
        os.close(fd)
        try:
            done = subprocess.run([cc, *FLAGS, "-o", tmp, str(SOURCE)], capture_output=True, text=True, timeout=300)
            if done.returncode != 0:
                lines = done.stderr.strip().splitlines() or ["no message"]
                first = next((ln for ln in lines if "error" in ln), lines[0])
                raise MissingBackend(f"{SOURCE}: {cc} could not build the fused kernel ({first[:200]})")
            os.replace(tmp, target)  # atomic: a concurrent process sees the old state or a whole library
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    lib = ctypes.CDLL(str(target))
    lib.sr_chain_rows.restype = ctypes.c_int
    lib.sr_block.restype = ctypes.c_int
    lib.sr_vector_floats.restype = ctypes.c_int
    lib.sr_has_bf16.restype = ctypes.c_int
    lib.sr_block.argtypes = [ctypes.c_int]
    lib.sr_chain_rows.argtypes = [ctypes.c_int, ctypes.POINTER(_Conv), ctypes.c_int, ctypes.POINTER(_Taps),
                                  ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_int,
                                  ctypes.c_int]
    return lib


def auto_choice(chain: Chain, vector_floats: int) -> str:
    """"" when `auto` should run `chain` on the fused kernel built with `vector_floats`-wide
    vectors, else why not. Measured on this project's AVX-512 machine against the tuned ONNX
    Runtime session (benchmarks/RESULTS*.md): 3.2-4.0x faster on ConvTranspose chains (FSRCNN,
    FSRCNN-s) and 1.1-1.2x on sub-pixel ones (ESPCN), whose 64- and 32-channel layers ONNX Runtime
    already runs well. Built for AVX2 (-march=x86-64-v3) on the same CPU the kernel is 1.7-1.8x
    slower, for SSE (-march=x86-64) 5-6x: an AVX2 build keeps the ConvTranspose chains' margin but
    not the sub-pixel chains', and 4-float builds (SSE, NEON: not measured) are left out."""
    if vector_floats < 8:
        return f"the fused kernel built here has {vector_floats}-float vectors; ONNX Runtime is faster"
    if chain.upsampling == "DepthToSpace" and vector_floats < 16:
        return "sub-pixel chains gain over ONNX Runtime only with AVX-512 (the fused kernel built here has AVX2)"
    return ""


def applicable(proto, where: str = "ONNX model") -> str:
    """"" when the fused kernel can run `proto` here, else why not (one line)."""
    try:
        chain_from_onnx(proto, where)
        library()
    except SRExportError as e:
        return str(e)
    return ""


def bf16_words(weight: np.ndarray) -> np.ndarray:
    """(..., cin, ...) FP32 -> uint32 words holding bf16 pairs of channels (2p, 2p + 1) along axis
    -1 of the input (low half: 2p), rounded to nearest even as vcvtneps2bf16 does."""
    bits = np.ascontiguousarray(weight, np.float32).view(np.uint32).astype(np.uint64)
    half = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint32)
    return half[..., 0::2] | (half[..., 1::2] << 16)


def bf16_round(x: np.ndarray) -> np.ndarray:
    """FP32 values rounded to bf16 (nearest even), as FP32."""
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    return (((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16).astype(np.uint32).view(np.float32)


def _paired(layers: list[Conv], block_of) -> list[Conv]:
    """`layers` with zero channels added where bf16 needs pairs: every output but the last in an even
    count with even register blocks (FSRCNN-s's 5-channel shrink becomes 6), and the next layer's
    input to match. The added channels are 0 (zero weights and bias, PReLU keeps 0 at 0), so the
    result is the same."""
    out = [Conv(c.weight, c.bias, c.top, c.left, c.act, c.slope) for c in layers]
    for i, c in enumerate(out[:-1]):
        cout = c.weight.shape[0]
        want = cout
        while want % 2 or block_of(want) % 2:
            want += 1
        if want == cout:
            continue
        extra = want - cout
        c.weight = np.concatenate([c.weight, np.zeros((extra, *c.weight.shape[1:]), np.float32)])
        c.bias = np.concatenate([c.bias, np.zeros(extra, np.float32)])
        if c.slope is not None:
            c.slope = np.concatenate([c.slope, np.zeros(extra, np.float32)])
        nxt = out[i + 1]
        w = nxt.weight
        nxt.weight = np.concatenate([w, np.zeros((w.shape[0], extra, *w.shape[2:]), np.float32)], axis=1)
    return out


# --- the runner ------------------------------------------------------------------------------

class NativeRunner:
    """The fused kernel as a runner: (N, 1, H, W) float32 -> (N, 1, s*H, s*W), rows split into one
    band per thread (ctypes releases the GIL during the call)."""

    def __init__(self, proto, *, threads: int | None = None, where: str = "ONNX model", check: bool = True,
                 for_auto: bool = False, precision: str = "fp32"):
        from .runtime import physical_cores

        if precision not in ("fp32", "bf16"):
            raise SRExportError(f"the fused kernel computes in fp32 or bf16, not {precision}")
        self.chain = chain_from_onnx(proto, where)
        self.precision = precision
        if precision == "bf16" and bf16_refusal():
            raise NotBF16(bf16_refusal())
        self.lib = library()
        if precision == "bf16" and not self.lib.sr_has_bf16():
            raise NotBF16(f"--precision bf16: the fused kernel built here by {compiler()} has no bf16 dot products "
                          "(the compiler does not enable AVX512_BF16 for -march=native)")
        self.vector_floats = self.lib.sr_vector_floats()
        self.auto_reason = auto_choice(self.chain, self.vector_floats)  # "" when `auto` takes it
        if for_auto and self.auto_reason:
            raise NotPreferred(f"{where}: {self.auto_reason}")
        self.scale = self.chain.scale
        self.threads = threads or physical_cores()
        self._keep = []  # the arrays the C structures point into
        layers = _paired(self.chain.layers, self.lib.sr_block) if precision == "bf16" else self.chain.layers
        self._layers = (_Conv * len(layers))()
        last = len(layers) - 1
        for i, c in enumerate(layers):
            cout, cin, kh, kw = c.weight.shape
            block = self.lib.sr_block(cout)  # weights packed [cout / block][cin][kh][kw][block]
            # bf16: every layer after the first reads bf16 pairs, every layer before the last writes them
            in_bf16, out_bf16 = precision == "bf16" and i > 0, precision == "bf16" and i < last
            if (in_bf16 and cin % 2) or (out_bf16 and block % 2):
                raise NotBF16(f"{where}: layer {i + 1}'s channels ({cin} in, {cout} out in blocks of {block}) "
                              "do not pair up for bf16; use --precision fp32")
            packed = c.weight.reshape(cout // block, block, cin, kh, kw).transpose(0, 2, 3, 4, 1)
            if in_bf16:  # [cout / block][cin / 2][kh][kw][block] words of channel pairs
                packed = bf16_words(packed.transpose(0, 2, 3, 4, 1))  # pairs along cin, the last axis
                packed = packed.transpose(0, 4, 1, 2, 3)
            self._layers[i] = _Conv(cin, cout, kh, kw, c.top, c.left, c.act, int(in_bf16), int(out_bf16),
                                    self._ptr(packed), self._ptr(c.bias),
                                    None if c.slope is None else self._ptr(c.slope))
        ch = self.chain
        self._taps = _Taps(self._ptr(ch.phase), self._ptr(ch.dy), self._ptr(ch.dx), self._ptr(ch.bias))
        self._pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None
        self.name = "native-cpu-fused" + ("-bf16" if precision == "bf16" else "")
        self.info = {"backend": "native", "device": "cpu", "threads": self.threads, "precision": precision,
                     "vector_floats": self.vector_floats,
                     "kernel": f"{SOURCE.name}, fused row-streaming chain of {len(self.chain.layers)} layers"}
        self._bytes_per_lr_pixel = 4.0 * (1 + self.scale ** 2)  # input and output only: tiling never needed
        if check and precision == "bf16":
            self.info["psnr_db_vs_fp32"] = self._check_bf16(proto, where)
        elif check:
            self.info["max_abs_vs_onnxruntime"] = self._check(proto, where)

    def _ptr(self, a: np.ndarray) -> int:
        a = np.ascontiguousarray(a)
        self._keep.append(a)
        return a.ctypes.data

    def _check(self, proto, where: str) -> float:
        from .optimize import CHECK_SIZES, MAX_ABS
        from .runtime import OnnxRuntimeRunner

        reference = OnnxRuntimeRunner(proto.SerializeToString(), threads=1)
        rng = np.random.default_rng(0)
        worst = 0.0
        for n, h, w in (*CHECK_SIZES, (1, 1, 1), (1, 3 * MIN_BAND_ROWS + 5, 70)):
            x = rng.random((n, 1, h, w), dtype=np.float32)
            worst = max(worst, float(np.abs(self(x) - reference(x)).max()))
        if not worst <= MAX_ABS:
            raise CheckFailed(f"{where}: the fused kernel's output differs from ONNX Runtime's by {worst:.2e} "
                                f"(more than {MAX_ABS:g}); use --backend onnxruntime")
        return worst

    def _check_bf16(self, proto, where: str) -> float:
        """The worst PSNR of the difference from ONNX Runtime's FP32 output on real LR crops (the
        verify sizes, an odd batch of 2 included, and one of several bands per thread); CheckFailed
        under BF16_MIN_PSNR_DB."""
        from .runtime import OnnxRuntimeRunner
        from .verify import DEFAULT_SIZES, compare, real_inputs

        reference = OnnxRuntimeRunner(proto.SerializeToString(), threads=1)
        inputs = real_inputs((*DEFAULT_SIZES, (1, 3 * MIN_BAND_ROWS + 5, 120)))
        result = compare(reference, self, inputs, reference_name="onnxruntime-fp32", candidate_name=self.name,
                         min_psnr_db=BF16_MIN_PSNR_DB)
        if not result:
            raise CheckFailed(f"{where}: the fused kernel in bf16 is {result.worst_psnr_db:.1f} dB from FP32 on real "
                              f"images (under {BF16_MIN_PSNR_DB:g} dB); use --precision fp32")
        return round(result.worst_psnr_db, 2)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 4 or x.shape[1] != 1:
            raise SRExportError(f"the fused kernel takes (N, 1, H, W) input, got {x.shape}")
        n, _, h, w = x.shape
        s = self.scale
        out = np.empty((n, 1, s * h, s * w), np.float32)
        bands = max(1, min(self.threads, h // MIN_BAND_ROWS))
        edges = np.linspace(0, h, bands + 1).astype(int)
        for i in range(n):
            jobs = [(x[i, 0].ctypes.data, out[i, 0].ctypes.data, int(a), int(b)) for a, b in zip(edges, edges[1:])]
            if self._pool is None or len(jobs) == 1:
                codes = [self._run(h, w, *job) for job in jobs]
            else:
                codes = list(self._pool.map(lambda job: self._run(h, w, *job), jobs))
            if any(codes):  # -1: arguments the checks above rule out; -2: memory
                raise SRExportError("the fused kernel ran out of memory" if -2 in codes
                                    else "the fused kernel refused the chain's arguments")
        return out

    def _run(self, h, w, src, dst, y0, y1) -> int:
        return self.lib.sr_chain_rows(len(self.chain.layers), self._layers, self.scale, ctypes.byref(self._taps),
                                      src, h, w, dst, y0, y1)
