"""A tiny bench run (small output size) and the multiply-add counts it is built on."""

import json

import pytest

from srexport.archs import build
from srexport.bench import ROWS, BenchReport, bench, expand_backends, gemm_probe, parse_size
from srexport.complexity import macs
from srexport.errors import SRExportError
from srexport.native import compiler

CPU_ROWS = ["torch-fp32", "ort-default", "ort-tuned", "native-fp32", "ort-fp16"]


@pytest.fixture(scope="module")
def report():
    return bench("fsrcnn", 2, output_size=(64, 48), warmup=1, repeats=2, probe_repeats=2)


def test_bench_reports_every_cpu_row(report):
    assert isinstance(report, BenchReport)
    cpu_rows = CPU_ROWS if compiler() else [k for k in CPU_ROWS if k != "native-fp32"]
    assert [r.key for r in report.rows][:len(cpu_rows)] == cpu_rows
    assert report.auto_row() is report.row("native-fp32" if compiler() else "ort-tuned")
    assert report.lr_size == (32, 24) and report.output_size == (64, 48)
    assert report.macs == macs(build("fsrcnn", 2), 24, 32)
    assert report.gemm_gflops > 1
    for r in report.rows:
        assert r.ms_median is not None, r.note
        assert 0 < r.ms_min <= r.ms_median and r.runs == 2
        assert r.fps == pytest.approx(1000 / r.ms_median)
        assert r.mpix_s == pytest.approx(64 * 48 / 1e6 * r.fps)
        assert r.gflops == pytest.approx(2 * report.macs / 1e9 * r.fps)
        assert r.peak_fraction == pytest.approx(r.gflops / report.gemm_gflops)
        assert r.local_fraction > 0 and len(r.probe_gflops) == r.runs
        assert len(r.frames_per_run) == r.runs and min(r.frames_per_run) > 1  # millisecond frames: bursts
        assert r.speedup_vs_torch > 0
    assert report.row("torch-fp32").speedup_vs_torch == pytest.approx(1.0)
    for key in ("tensorrt-fp32", "tensorrt-fp16", "torch-cuda-fp16"):
        assert key in report.skipped or report.row(key) is not None


def test_burst_off_times_single_frames():
    r = bench("espcn", 2, output_size=(32, 24), backends=["ort-default"], repeats=3, probe_repeats=1,
              burst_s=0).row("ort-default")
    assert r.runs == 3 and r.frames_per_run == [1, 1, 1]


def test_table_and_dict(report):
    table = report.table()
    assert "| ONNX Runtime FP32, tuned |" in table and "% of GEMM probe" in table
    assert table.count("\n|") >= 2 + len(report.rows)
    d = json.loads(json.dumps(report.to_dict()))
    assert d["network"] == "fsrcnn" and len(d["rows"]) == len(report.rows)
    assert d["gflop_per_frame"] == pytest.approx(2 * report.macs / 1e9)


def test_backend_selection_and_errors():
    small = bench("espcn", 3, output_size="30x21", backends=["ort-tuned"], warmup=0, repeats=1, probe_repeats=1)
    assert [r.key for r in small.rows] == ["ort-tuned"] and small.lr_size == (10, 7)
    with pytest.raises(SRExportError, match="unknown bench backend"):
        bench("espcn", 2, output_size=(8, 8), backends=["gpu"])
    with pytest.raises(SRExportError):
        parse_size("1920by1080")
    assert parse_size("1920x1080") == (1920, 1080)
    assert set(CPU_ROWS) <= set(ROWS)
    assert expand_backends("onnxruntime") == ["ort-default", "ort-tuned", "ort-fp16"]
    assert expand_backends(["torch", "ort-tuned"]) == ["torch-fp32", "ort-tuned", "torch-cuda-fp16"]
    assert expand_backends(None) == list(ROWS) == expand_backends("auto")
    assert expand_backends("native") == ["native-fp32", "native-bf16"]
    assert expand_backends("openvino") == ["openvino-fp32", "openvino-default", "openvino-bf16"]
    with pytest.raises(SRExportError, match="--precision"):
        bench("espcn", 2, output_size=(8, 8), precision="int8")


def test_native_row_is_skipped_with_the_reason_where_it_does_not_apply():
    r = bench("red", 2, output_size=(16, 12), backends=["native", "ort-tuned"], warmup=0, repeats=1,
              probe_repeats=1)
    assert [row.key for row in r.rows] == ["ort-tuned"] and r.auto_row() is r.row("ort-tuned")
    assert "red x2: " in r.skipped["native-fp32"]
    assert "| Fused CPU kernel FP32 (native) | skipped: red x2: " in r.table()


def test_gemm_probe():
    probe = gemm_probe(n=256, repeats=2)
    assert probe["gflops"] == max(v for k, v in probe.items() if k.endswith("_gflops") and v)
    assert probe["numpy_gflops"] > 0


def test_rows_tile_when_the_frame_would_not_fit(monkeypatch):
    import srexport.tiling as tiling

    monkeypatch.setattr(tiling, "available_memory", lambda: 64 << 20)  # 16 MiB budget: 480x270 LR does not fit
    r = bench("espcn", 2, output_size=(960, 540), backends=["ort-tuned"], warmup=0, repeats=1, probe_repeats=1)
    row = r.row("ort-tuned")
    assert row.ms_median is not None, row.note
    assert "tiled to fit memory" in row.note and "tiles of" in row.note


def _bf16_missing() -> str:
    from srexport.native import bf16_refusal
    from srexport.openvino_runner import openvino_available

    return bf16_refusal() or ("" if openvino_available() else "openvino is not installed")


@pytest.mark.skipif(bool(_bf16_missing()), reason=_bf16_missing() or "")
def test_bf16_rows_beside_openvino():
    """--precision bf16: OpenVINO's default (the peer) and srexport's route, the fused kernel where
    it applies (OpenVINO's bf16 on the tuned graph skipped, with why), else the checked OpenVINO
    route; each bf16 row carries its PSNR from FP32."""
    srcnn = bench("srcnn", 2, output_size=(32, 24), precision="bf16", warmup=1, repeats=1, probe_repeats=1)
    assert [r.key for r in srcnn.rows] == ["openvino-default", "openvino-bf16"]
    assert srcnn.bf16_row() is srcnn.row("openvino-bf16")
    assert "native-bf16" in srcnn.skipped
    for r in srcnn.rows:
        assert r.ms_median is not None and r.psnr_vs_fp32_db >= 50, r.note
    assert srcnn.row("openvino-default").precision == "bfloat16"  # OpenVINO's own default on this CPU
    assert "| dB vs FP32 |" in srcnn.table()
    if compiler():
        espcn = bench("espcn", 2, output_size=(32, 24), backends=["native", "openvino"], precision="bf16",
                      warmup=1, repeats=1, probe_repeats=1)
        assert [r.key for r in espcn.rows] == ["openvino-default", "native-bf16"]
        assert espcn.bf16_row() is espcn.row("native-bf16")
        assert "fused kernel" in espcn.skipped["openvino-bf16"]
