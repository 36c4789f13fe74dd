"""`bench`: every available backend and precision of one network timed in the same run.

Rows (each only where it can run): PyTorch eager FP32 (CPU, or the GPU when there is one, TF32
off), ONNX Runtime FP32 with a default session, ONNX Runtime tuned, srexport's fused CPU kernel
(`native`: FSRCNN, FSRCNN-s and ESPCN; with the tuned session, the two rows `auto` chooses from on
a CPU: `BenchReport.auto_row`), ONNX Runtime on the FP16 graph (FP32 I/O; ORT computes it in FP32
on x86, so this is a compatibility row, not an FP16 speed), TensorRT FP32 and FP16 engines,
PyTorch CUDA FP16; on the CPU's reduced precision: the fused kernel in bf16, OpenVINO with its FP32
hint and with its default precision (bf16 on a CPU with bf16 dot products: the peer users would
pick; its PSNR from FP32 on real images is in the note), and srexport's checked OpenVINO bf16 route
for the networks the fused kernel does not run. `BenchReport.bf16_row` is the row `--precision
bf16` takes.

For each row: median (and best) ms per frame after warm-up, fps, output megapixels/s, GFLOP/s
from the network's multiply-adds (`complexity.macs`, 2 FLOP each), the fraction of this machine's
peak measured by a GEMM probe in the same command (the faster of ONNX Runtime's and NumPy's FP32
2048^3 matmul, median of several, taken before and after the rows, and ONNX Runtime's again right
before and after every timed run; the highest is the peak), the same fraction against the probes
adjacent to each run (what the machine delivered at that moment: on a shared machine other
processes come and go), and the speed-up over PyTorch eager. When backends can share memory the repeats are interleaved
round-robin, so a burst of load from elsewhere on a shared machine hits every row alike; a row
whose single run takes longer than `long_run_s` is measured by that one run, and a frame shorter
than `burst_s` is timed as the median of a burst of frames lasting that long.
"""

from __future__ import annotations

import gc
import math
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from .errors import SRExportError

ROWS = ("torch-fp32", "ort-default", "ort-tuned", "native-fp32", "ort-fp16", "tensorrt-fp32", "tensorrt-fp16",
        "torch-cuda-fp16", "openvino-fp32", "openvino-default", "native-bf16", "openvino-bf16")
LABELS = {
    "torch-fp32": "PyTorch eager FP32",
    "ort-default": "ONNX Runtime FP32, default session",
    "ort-tuned": "ONNX Runtime FP32, tuned",
    "native-fp32": "Fused CPU kernel FP32 (native)",
    "ort-fp16": "ONNX Runtime FP16 graph (FP32 I/O)",
    "tensorrt-fp32": "TensorRT FP32",
    "tensorrt-fp16": "TensorRT FP16",
    "torch-cuda-fp16": "PyTorch CUDA FP16",
    "openvino-fp32": "OpenVINO, FP32 hint",
    "openvino-default": "OpenVINO, default precision",
    "native-bf16": "Fused CPU kernel bf16 (native)",
    "openvino-bf16": "srexport bf16 via OpenVINO (checked)",
}
BF16_ROWS = ("native-bf16", "openvino-bf16")  # srexport's bf16 routes, in `auto`'s order
# `--precision P`: the rows computing in P (OpenVINO's default is bf16 on the CPUs bf16 is for)
ROW_PRECISION = {key: "fp16" if "fp16" in key else "bf16" if key.endswith(("bf16", "default")) and
                 key.startswith(("native", "openvino")) else "fp32" for key in ROWS}
ROW_PRECISION["ort-default"] = "fp32"
GEMM_N = 2048
# `srexport bench --backend NAME` -> rows; row keys are accepted as well.
BACKEND_ROWS = {
    "auto": ROWS,
    "torch": ("torch-fp32", "torch-cuda-fp16"),
    "onnxruntime": ("ort-default", "ort-tuned", "ort-fp16"),
    "tensorrt": ("tensorrt-fp32", "tensorrt-fp16"),
    "native": ("native-fp32", "native-bf16"),
    "openvino": ("openvino-fp32", "openvino-default", "openvino-bf16"),
    "bf16": ("openvino-default", "native-bf16", "openvino-bf16"),
}


def expand_backends(backends: Sequence[str] | str | None) -> list[str]:
    """Backend names (auto, torch, onnxruntime, tensorrt, native) and/or row keys -> row keys, in ROWS order."""
    if backends is None:
        return list(ROWS)
    if isinstance(backends, str):
        backends = [backends]
    wanted = set()
    for b in backends:
        if b in BACKEND_ROWS:
            wanted |= set(BACKEND_ROWS[b])
        elif b in ROWS:
            wanted.add(b)
        else:
            raise SRExportError(f"unknown bench backend {b!r}; use {', '.join(BACKEND_ROWS)} or one of "
                                f"{', '.join(ROWS)}")
    return [r for r in ROWS if r in wanted]


@dataclass
class BenchRow:
    key: str
    backend: str
    device: str
    precision: str
    ms_median: float | None = None
    ms_min: float | None = None
    runs: int = 0
    fps: float | None = None
    mpix_s: float | None = None
    gflops: float | None = None
    peak_fraction: float | None = None  # GFLOP/s / the run's best GEMM probe (the machine's peak)
    local_fraction: float | None = None  # median over runs of GFLOP/s / GEMM probes just before and after it
    speedup_vs_torch: float | None = None
    setup_s: float | None = None
    psnr_vs_fp32_db: float | None = None  # reduced-precision rows: worst PSNR from FP32 on real LR crops
    note: str = ""
    times_ms: list[float] = field(default_factory=list)  # per run; a burst's median for short frames
    frames_per_run: list[int] = field(default_factory=list)
    probe_gflops: list[float] = field(default_factory=list)  # mean of the probes around each run

    def add_run(self, ms: float, frames: int, probe_gflops: float) -> None:
        self.times_ms.append(ms)
        self.frames_per_run.append(frames)
        self.probe_gflops.append(probe_gflops)

    def drop_runs(self, last_only: bool = False) -> None:
        """Forget the last run (a warm-up measured the same way) or all of them (a failed row)."""
        for runs in (self.times_ms, self.frames_per_run, self.probe_gflops):
            del runs[-1 if last_only else 0:]


@dataclass
class BenchReport:
    network: str
    scale: int
    output_size: tuple[int, int]  # (width, height)
    lr_size: tuple[int, int]  # (width, height)
    macs: int
    weights: str
    gemm_gflops: float
    gemm_detail: dict
    rows: list[BenchRow]
    skipped: dict[str, str]
    machine: dict
    warmup: int
    repeats: int
    interleaved: bool
    auto_key: str = "ort-tuned"  # the CPU row `auto` takes: "native-fp32" where the fused kernel is its choice
    bf16_key: str = ""  # the row `--precision bf16` takes ("" when neither ran)

    @property
    def gflop(self) -> float:
        return 2 * self.macs / 1e9

    def row(self, key: str) -> BenchRow | None:
        return next((r for r in self.rows if r.key == key), None)

    def auto_row(self) -> BenchRow | None:
        """The row of the CPU path `auto` takes: the fused kernel where it is auto's choice and ran,
        else the tuned session."""
        row = self.row(self.auto_key)
        return row if row is not None and row.ms_median is not None else self.row("ort-tuned")

    def bf16_row(self) -> BenchRow | None:
        """The row of srexport's bf16 route: the fused kernel in bf16 where it ran, else OpenVINO's
        checked bf16."""
        return self.row(self.bf16_key) if self.bf16_key else None

    def table(self) -> str:
        w, h = self.output_size
        lines = [
            f"**{self.network} x{self.scale}**, {self.lr_size[0]}x{self.lr_size[1]} -> {w}x{h}, "
            f"{self.macs / 1e9:,.1f} G multiply-adds/frame, GEMM probe {self.gemm_gflops:.0f} GFLOP/s, "
            f"weights: {self.weights}",
            "",
            "| backend | ms/frame (median) | best | fps | MP/s | GFLOP/s | % of GEMM probe | % of adjacent probes | vs PyTorch eager | dB vs FP32 |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in self.rows:
            if r.ms_median is None:
                lines.append(f"| {r.backend} | failed: {r.note} | | | | | | | | |")
                continue
            local = "" if r.local_fraction is None else f"{100 * r.local_fraction:.0f}%"
            lines.append(
                f"| {r.backend} | {r.ms_median:,.1f} | {r.ms_min:,.1f} | {r.fps:.2f} | {r.mpix_s:.1f} | "
                f"{r.gflops:.0f} | {100 * r.peak_fraction:.0f}% | {local} | "
                f"{'' if r.speedup_vs_torch is None else f'{r.speedup_vs_torch:.2f}x'} | "
                f"{'' if r.psnr_vs_fp32_db is None else f'{r.psnr_vs_fp32_db:.1f}'} |")
        for key, why in self.skipped.items():
            lines.append(f"| {LABELS.get(key, key)} | skipped: {why} | | | | | | | | |")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["gflop_per_frame"] = self.gflop
        return d


# --- GEMM probe -------------------------------------------------------------------------------

def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of `repeats` calls of `fn`, after one untimed call."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _ort_matmul(n: int, threads: int | None):
    """An ONNX Runtime session computing one n x n FP32 MatMul. Its idle threads do not spin: a
    spinning probe pool would steal the cores from the network run timed right after it."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from .runtime import physical_cores

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["A", "B"], ["C"])], "gemm",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [n, n]),
         helper.make_tensor_value_info("B", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("C", TensorProto.FLOAT, [n, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or physical_cores()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def gemm_probe(n: int = GEMM_N, repeats: int = 7, threads: int | None = None) -> dict:
    """FP32 GFLOP/s of an n x n x n matmul in ONNX Runtime and in NumPy (median of `repeats`)."""
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    flop = 2.0 * n ** 3
    result = {"n": n}
    result["numpy_gflops"] = flop / median_seconds(lambda: a @ b, repeats) / 1e9
    try:
        sess = _ort_matmul(n, threads)
        result["onnxruntime_gflops"] = flop / median_seconds(lambda: sess.run(None, {"A": a, "B": b}), repeats) / 1e9
    except ImportError:
        result["onnxruntime_gflops"] = None
    result["gflops"] = max(v for k, v in result.items() if k.endswith("_gflops") and v)
    return result


class QuickProbe:
    """A 2048^3 FP32 matmul in ONNX Runtime (NumPy without it), median of 3: ~0.15 s on 2 cores.
    Taken right before and after every timed run, so a row's efficiency can be related to what
    the machine delivered at that moment (other processes on a shared machine come and go)."""

    def __init__(self, n: int = GEMM_N, threads: int | None = None):
        rng = np.random.default_rng(1)
        self.a = rng.random((n, n), dtype=np.float32)
        self.b = rng.random((n, n), dtype=np.float32)
        self.flop = 2.0 * n ** 3
        try:
            sess = _ort_matmul(n, threads)
            self.fn = lambda: sess.run(None, {"A": self.a, "B": self.b})
        except ImportError:
            self.fn = lambda: self.a @ self.b
        self.fn()
        self.samples: list[float] = []

    def __call__(self, repeats: int = 3) -> float:
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            self.fn()
            times.append(time.perf_counter() - t)
        g = self.flop / statistics.median(times) / 1e9
        self.samples.append(g)
        return g


# --- runners for each row ---------------------------------------------------------------------

def _available(keys: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    from .native import bf16_refusal
    from .openvino_runner import openvino_available
    from .runtime import onnxruntime_available, tensorrt_available

    cuda = torch.cuda.is_available()
    trt = tensorrt_available()
    ort = onnxruntime_available()
    ok, skipped = [], {}
    for key in keys:
        if key not in ROWS:
            raise SRExportError(f"unknown bench backend {key!r}; known: {', '.join(ROWS)}")
        if key.startswith("ort") and not ort:
            skipped[key] = "onnxruntime not installed"
        elif key.startswith("tensorrt") and not trt:
            skipped[key] = "TensorRT or a CUDA GPU is missing"
        elif key == "torch-cuda-fp16" and not cuda:
            skipped[key] = "no CUDA GPU"
        elif key.startswith("openvino") and not openvino_available():
            skipped[key] = "openvino not installed (pip install 'srexport[openvino]')"
        elif key in BF16_ROWS and bf16_refusal():
            skipped[key] = bf16_refusal()
        else:
            ok.append(key)
    return ok, skipped


def _open(key: str, model, onnx_proto, threads):
    from .runtime import OnnxRuntimeRunner, TorchRunner, _tensorrt_runner

    if key == "torch-fp32":
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda":
            from .engine import TorchCudaFP32Runner

            r = TorchCudaFP32Runner(model)
            return r, "cuda", "fp32", "TF32 off"
        return TorchRunner(model), "cpu", "fp32", f"{torch.get_num_threads()} threads"
    if key == "torch-cuda-fp16":
        return TorchRunner(_copy(model), device="cuda", dtype=torch.float16), "cuda", "fp16", ""
    if key == "ort-default":
        return OnnxRuntimeRunner(onnx_proto.SerializeToString()), "cpu", "fp32", "default SessionOptions"
    if key == "ort-tuned":
        r = OnnxRuntimeRunner(onnx_proto.SerializeToString(), tuned=True, threads=threads)
        return r, "cpu", "fp32", f"{r.info['threads']} threads; {len(r.rewrites)} graph rewrites"
    if key == "native-fp32":
        from .native import NativeRunner

        r = NativeRunner(onnx_proto, threads=threads)
        note = f"{r.threads} threads; max |diff| vs ONNX Runtime {r.info['max_abs_vs_onnxruntime']:.1e}"
        return r, "cpu", "fp32", note + (f"; not auto's choice: {r.auto_reason}" if r.auto_reason else "")
    if key == "ort-fp16":
        from .fp16 import fp16_from_onnx

        proto16 = fp16_from_onnx(onnx_proto, io="fp32")
        return OnnxRuntimeRunner(proto16.SerializeToString(), threads=threads or 0), "cpu", "fp16 graph", \
            "x86 ORT computes FP16 graphs in FP32"
    if key == "native-bf16":
        from .native import NativeRunner

        r = NativeRunner(onnx_proto, threads=threads, precision="bf16")
        return r, "cpu", "bf16", f"{r.threads} threads; checked >= 50 dB from FP32"
    if key.startswith("openvino"):
        from .openvino_runner import OpenVINORunner

        precision = key.split("-")[1]
        r = OpenVINORunner(onnx_proto, precision=precision, threads=threads, tuned=precision == "bf16")
        if precision == "bf16":
            return r, "cpu", "bf16", f"{r.threads} threads; {len(r.rewrites)} graph rewrites; checked >= 50 dB"
        if precision == "default":
            r.info["psnr_db_vs_fp32"] = round(psnr_vs_fp32(r, onnx_proto), 2)
            r._compiled.clear()
            kind = r.info["inference_precision"].replace("<Type: '", "").replace("'>", "")
            return r, "cpu", kind, f"{r.threads} threads; unchecked (OpenVINO's own choice)"
        return r, "cpu", "fp32", f"{r.threads} threads"
    if key.startswith("tensorrt"):
        precision = key.split("-")[1]
        r = _tensorrt_runner(model, None, None, precision, True)
        return r, "cuda", precision, ""
    raise SRExportError(f"unknown bench backend {key!r}")


def psnr_vs_fp32(runner, onnx_proto) -> float:
    """The worst PSNR (dB) of `runner`'s output from ONNX Runtime's FP32 one on the real LR crops
    the bf16 checks use (for rows that are not checked themselves: OpenVINO's default)."""
    from .runtime import OnnxRuntimeRunner
    from .verify import DEFAULT_SIZES, compare, real_inputs

    reference = OnnxRuntimeRunner(onnx_proto.SerializeToString(), threads=1)
    return compare(reference, runner, real_inputs((*DEFAULT_SIZES, (1, 53, 120)))).worst_psnr_db


def _copy(model):
    import copy

    return copy.deepcopy(model)


def machine_info() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "cpu": _cpu_name(), "logical_cpus": os.cpu_count()}
    try:
        from .runtime import physical_cores

        info["physical_cores"] = physical_cores()
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# --- the benchmark ----------------------------------------------------------------------------

def parse_size(text: str) -> tuple[int, int]:
    """"1920x1080" -> (1920, 1080): an output WIDTHxHEIGHT."""
    import re

    m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", str(text))
    if not m or min(int(m[1]), int(m[2])) < 1:
        raise SRExportError(f"bad size {text!r}: expected WIDTHxHEIGHT, e.g. 1920x1080")
    return int(m[1]), int(m[2])


BURST_S = 0.25  # a frame shorter than this is timed as the median of a burst lasting this long


def bench(network: str | None, scale: int | None, *, output_size: tuple[int, int] | str = (1920, 1080),
          backends: Sequence[str] | None = None, checkpoint=None, warmup: int = 1, repeats: int = 5,
          threads: int | None = None, long_run_s: float = 20.0, interleave: bool | None = None,
          probe_repeats: int = 7, burst_s: float = BURST_S, precision: str | None = None,
          progress: Callable[[str], None] | None = None) -> BenchReport:
    """Time `network` at `scale` producing `output_size` (WIDTH, HEIGHT) on every available backend.
    `backends` limits the rows (keys of ROWS); weights come from `checkpoint`, the shipped checkpoint,
    or random initialisation when neither exists (speed does not depend on the values, except that
    a freshly initialised FSRCNN has one PReLU slope everywhere, which the tuned path turns into a
    fused LeakyRelu: noted in `weights`)."""
    from .checkpoint import resolve_network
    from .complexity import macs as count_macs
    from .onnx_export import onnx_from_model

    say = progress or (lambda msg: None)
    if isinstance(output_size, str):
        output_size = parse_size(output_size)
    out_w, out_h = output_size
    try:
        model, record = resolve_network(network, scale, checkpoint=checkpoint)
        weights = f"checkpoint ({record.training.get('kind', 'trained')})"
    except SRExportError as e:
        if checkpoint is not None or "no shipped checkpoint" not in str(e):
            raise
        model, record = resolve_network(network, scale, random_weights=True)
        weights = "random init (no shipped checkpoint)"
    scale = record.scale
    if network == "fsrcnn" or record.network.startswith("fsrcnn"):
        slopes = [m.weight for m in model.modules() if isinstance(m, torch.nn.PReLU)]
        if slopes and all(bool((s == s.flatten()[0]).all()) for s in slopes):
            weights += "; PReLU slopes uniform (fused as LeakyRelu on the tuned path)"
    lr_h, lr_w = math.ceil(out_h / scale), math.ceil(out_w / scale)
    n_macs = count_macs(model, lr_h, lr_w)
    wanted = expand_backends(backends)
    if precision is not None:
        if precision not in ("fp32", "fp16", "bf16"):
            raise SRExportError(f"--precision: must be fp32, fp16 or bf16, got {precision!r}")
        wanted = [k for k in wanted if ROW_PRECISION[k] == precision]
    keys, skipped = _available(wanted)
    onnx_proto = onnx_from_model(model, record) if any(k != "torch-fp32" for k in keys) else None
    native_keys = [k for k in ("native-fp32", "native-bf16") if k in keys]
    if native_keys:
        from .native import applicable

        why = applicable(onnx_proto, f"{record.network} x{scale}")
        for key in native_keys if why else ():
            keys.remove(key)
            skipped[key] = why
    if "native-bf16" in keys and "openvino-bf16" in keys:  # srexport's bf16 route is the fused kernel here
        keys.remove("openvino-bf16")
        skipped["openvino-bf16"] = "the fused kernel is srexport's bf16 route for this network"

    say("GEMM probe")
    probe_before = gemm_probe(repeats=probe_repeats)
    rng = np.random.default_rng(0)
    x = rng.random((1, 1, lr_h, lr_w), dtype=np.float32)

    from .tiling import activation_bytes_per_lr_pixel, auto_tile, available_memory, runner_bytes_per_lr_pixel
    from .tiling import upscale_tiled

    per_session = activation_bytes_per_lr_pixel(model) * lr_h * lr_w * 4
    if interleave is None:
        interleave = per_session * len(keys) < available_memory() * 0.5
    tiles: dict[str, int | None] = {}

    rows: dict[str, BenchRow] = {}
    runners: dict[str, object] = {}
    auto_key = "ort-tuned"
    bf16_key = ""
    last_ms: dict[str, float] = {}
    quick = QuickProbe(threads=threads)

    def timed(key, runner) -> float:
        """One run recorded with the GEMM probes right before and after it. Frames shorter than
        `burst_s` run back to back until that long and the run records their median: one frame
        of 18 ms cannot outlast a hiccup of the machine, a burst of a dozen can."""
        before = quick()
        times = [run_once(key, runner)]
        while sum(times) < burst_s * 1000:
            times.append(run_once(key, runner))
        ms = last_ms[key] = statistics.median(times)
        rows[key].add_run(ms, len(times), (before + quick()) / 2)
        return ms

    def open_row(key):
        nonlocal auto_key, bf16_key
        say(f"open {key}")
        t = time.perf_counter()
        try:
            runner, device, precision, note = _open(key, model, onnx_proto, threads)
        except Exception as e:  # noqa: BLE001 - a row that cannot run is reported, not fatal
            rows[key] = BenchRow(key, LABELS[key], "", "", note=_one_line(e))
            return None
        rows[key] = BenchRow(key, LABELS[key], device, precision, setup_s=time.perf_counter() - t, note=note,
                             psnr_vs_fp32_db=getattr(runner, "info", {}).get("psnr_db_vs_fp32"))
        if key == "native-fp32" and not runner.auto_reason:
            auto_key = key
        if key in BF16_ROWS and not bf16_key:
            bf16_key = key
        # A frame that would not fit in memory runs in tiles, as `upscale --tile auto` would run it.
        runner.arch = getattr(runner, "arch", None) or model
        try:
            tiles[key] = auto_tile(model, lr_h, lr_w, max_hw=getattr(runner, "max_input_hw", None),
                                   bytes_per_lr_pixel=runner_bytes_per_lr_pixel(runner))
        except SRExportError as e:
            rows[key].note = _join(note, _one_line(e))
            return None
        if tiles[key] is not None:
            th, tw = tiles[key]
            count = math.ceil(lr_h / th) * math.ceil(lr_w / tw)
            rows[key].note = _join(note, f"tiled to fit memory: {count} tiles of {tw}x{th} LR pixels")
        return runner

    def run_once(key, runner) -> float:
        t = time.perf_counter()
        y = upscale_tiled(runner, x, scale, tiles.get(key))
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        ms = (time.perf_counter() - t) * 1000
        if y.shape[2:] != (scale * lr_h, scale * lr_w):
            raise SRExportError(f"{key}: output shape {y.shape} is not x{scale}")
        return ms

    def warm(key, runner) -> bool:
        """Warm up; True when the warm-up run alone was long enough to be the measurement."""
        for i in range(max(1, warmup)):
            say(f"warm-up {key}")
            ms = timed(key, runner)
            if ms / 1000 > long_run_s:
                rows[key].note = _join(rows[key].note, "one run (long)")
                return True
            rows[key].drop_runs(last_only=True)
        return False

    def guarded(key, fn):
        try:
            return fn()
        except Exception as e:  # noqa: BLE001
            rows[key].note = _join(rows[key].note, f"failed: {_one_line(e)}")
            rows[key].drop_runs()
            runners.pop(key, None)
            return True

    def visit(key, runner, i) -> bool:
        """One measured run (after a discarded one when runs are short: another row's thread
        pool may still be spinning right after a switch). True when the row is finished."""
        say(f"run {i + 1}/{repeats} {key}")
        if last_ms.get(key, 0) < 1000:  # the probe's (or another row's) threads may still spin
            run_once(key, runner)
        timed(key, runner)
        return sum(rows[key].times_ms) / 1000 > long_run_s * 3  # enough time spent on this row

    if interleave:
        done = set()
        for key in keys:
            runner = open_row(key)
            if runner is not None:
                runners[key] = runner
        for key in list(runners):
            if guarded(key, lambda: warm(key, runners[key])):
                done.add(key)
        for i in range(repeats):
            for key in list(runners):
                if key not in done and guarded(key, lambda: visit(key, runners[key], i)):
                    done.add(key)
    else:
        for key in keys:
            runner = open_row(key)
            if runner is None:
                continue

            def measure():
                if warm(key, runner):
                    return
                for i in range(repeats):
                    if visit(key, runner, i):
                        return

            guarded(key, measure)
            del runner
            gc.collect()
    runners.clear()
    gc.collect()

    say("GEMM probe")
    probe_after = gemm_probe(repeats=probe_repeats)
    peak = max(probe_before["gflops"], probe_after["gflops"], *quick.samples)
    torch_row = rows.get("torch-fp32")
    torch_ms = statistics.median(torch_row.times_ms) if torch_row and torch_row.times_ms else None
    for r in rows.values():
        if not r.times_ms:
            continue
        r.ms_median = statistics.median(r.times_ms)
        r.ms_min = min(r.times_ms)
        r.runs = len(r.times_ms)
        s = r.ms_median / 1000
        r.fps = 1 / s
        r.mpix_s = out_w * out_h / 1e6 / s
        r.gflops = 2 * n_macs / 1e9 / s
        r.peak_fraction = r.gflops / peak
        r.local_fraction = statistics.median(2 * n_macs / 1e9 / (ms / 1000) / p
                                             for ms, p in zip(r.times_ms, r.probe_gflops))
        r.speedup_vs_torch = torch_ms / r.ms_median if torch_ms else None
    return BenchReport(
        network=record.network, scale=scale, output_size=(out_w, out_h), lr_size=(lr_w, lr_h), macs=n_macs,
        weights=weights, gemm_gflops=peak,
        gemm_detail={"before": probe_before, "after": probe_after, "around_runs": quick.samples},
        rows=[rows[k] for k in keys if k in rows], skipped=skipped, machine=machine_info(), warmup=warmup,
        repeats=repeats, interleaved=bool(interleave), auto_key=auto_key,
        bf16_key=bf16_key if bf16_key in rows and rows[bf16_key].times_ms else "")


def _one_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:200]


def _join(a: str, b: str) -> str:
    return f"{a}; {b}" if a else b
