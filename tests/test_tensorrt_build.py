"""srexport.tensorrt_build: pure-Python parts everywhere; the build logic against a fake tensorrt
module that only answers to names the real 10.x/11.x bindings have; real engines on a GPU."""

from __future__ import annotations

import hashlib
import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from srexport import tensorrt_build as tb
from srexport.checkpoint import ModelRecord, resolve_network
from srexport.errors import EXIT_MISSING_BACKEND, MissingBackend, SRExportError
from srexport.onnx_export import export_onnx, load_onnx

NAMES_DIR = Path(__file__).resolve().parent / "tensorrt_names"
FAKE_GPU = {"name": "NVIDIA Fake GPU 80GB", "compute_capability": "9.0"}


@pytest.fixture(scope="module")
def espcn_onnx(tmp_path_factory):
    model, record = resolve_network("espcn", 2, random_weights=True)
    path = tmp_path_factory.mktemp("onnx") / "espcn_x2.onnx"
    export_onnx(model, record, path)
    return path, model, record


# --- options --------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, shape", [("540x960", (540, 960)), (" 7 X 11 ", (7, 11)), ("1x1", (1, 1))])
def test_parse_shape(text, shape):
    assert tb.parse_shape(text) == shape


@pytest.mark.parametrize("text", ["540", "0x5", "5x0", "axb", "540x960x3", "", "-1x5", "5.5x3"])
def test_parse_shape_rejects_bad_text(text):
    with pytest.raises(SRExportError, match="HEIGHTxWIDTH"):
        tb.parse_shape(text)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_default_options_cover_1080p_output(scale):
    opts = tb.EngineOptions.default_for(scale)
    (hmax, wmax), (hopt, wopt) = opts.max_shape, opts.opt_shape
    assert hmax * scale >= 1080 and wmax * scale >= 1920  # covers 1080p ...
    assert (hmax - 1) * scale < 1080 and (wmax - 1) * scale < 1920  # ... and no more
    assert (hopt, wopt) == (math.ceil(hmax / 2), math.ceil(wmax / 2))
    assert opts.min_shape == (1, 1) and opts.batch == (1, 1, 1)
    assert opts.workspace_gib == 4 and opts.optimization_level == 3
    assert opts.profile() == {"input": "lr", "min": [1, 1, 1, 1], "opt": [1, 1, hopt, wopt],
                              "max": [1, 1, hmax, wmax]}
    assert tb.EngineOptions.default_for(2).max_shape == (540, 960)


@pytest.mark.parametrize("kwargs", [
    dict(min_shape=(8, 8), opt_shape=(4, 8), max_shape=(16, 16)),
    dict(min_shape=(8, 8), opt_shape=(8, 8), max_shape=(16, 4)),
    dict(min_shape=(0, 8), opt_shape=(8, 8), max_shape=(16, 16)),
    dict(min_shape=(8, 8), opt_shape=(8, 8), max_shape=(16, 16), batch=(2, 1, 4)),
    dict(min_shape=(8, 8), opt_shape=(8, 8), max_shape=(16, 16), workspace_gib=0),
    dict(min_shape=(8, 8), opt_shape=(8, 8), max_shape=(16, 16), optimization_level=6),
])
def test_engine_options_reject_inconsistent_profiles(kwargs):
    with pytest.raises(SRExportError):
        tb.EngineOptions(**kwargs)


def test_engine_options_accept_lists():
    opts = tb.EngineOptions(min_shape=[1, 2], opt_shape=[3, 4], max_shape=[5, 6], batch=[1, 2, 3])
    assert opts.min_shape == (1, 2) and opts.batch == (1, 2, 3) and hash(opts)


# --- identity and cache key -----------------------------------------------------------------------

def _record(**changes) -> ModelRecord:
    base = ModelRecord(network="espcn", scale=2, hparams={"n1": 64, "n2": 32}, param_count=22_000,
                       upsampling="sub-pixel convolution")
    return base.replace(**changes)


def _identity(**changes) -> dict:
    kwargs = dict(record=_record(), onnx_sha256="a" * 64,
                  io={"inputs": [{"name": "lr", "dtype": "float32"}], "outputs": [{"name": "sr", "dtype": "float32"}],
                      "precision": "fp16"},
                  options=tb.EngineOptions((1, 1), (270, 480), (540, 960)),
                  tensorrt_version="10.16.1.11", gpu=dict(FAKE_GPU), srexport_version="0.1.0")
    kwargs.update(changes)
    return tb.engine_identity(**kwargs)


def test_cache_key_is_stable_and_order_independent():
    a, b = _identity(), _identity()
    assert tb.cache_key(a) == tb.cache_key(b)
    assert tb.cache_key(dict(reversed(list(a.items())))) == tb.cache_key(a)
    assert len(tb.cache_key(a)) == 64
    assert "verification" not in a and "layer_precisions" not in a


def test_cache_key_changes_with_every_field():
    io32 = {"inputs": [{"name": "lr", "dtype": "float32"}], "outputs": [{"name": "sr", "dtype": "float32"}]}
    variants = {
        "onnx": _identity(onnx_sha256="b" * 64),
        "input dtype": _identity(io={**io32, "inputs": [{"name": "lr", "dtype": "float16"}], "precision": "fp16"}),
        "output dtype": _identity(io={**io32, "outputs": [{"name": "sr", "dtype": "float16"}], "precision": "fp16"}),
        "precision": _identity(io={**io32, "precision": "fp32"}),
        "min": _identity(options=tb.EngineOptions((2, 2), (270, 480), (540, 960))),
        "opt": _identity(options=tb.EngineOptions((1, 1), (271, 480), (540, 960))),
        "max": _identity(options=tb.EngineOptions((1, 1), (270, 480), (540, 961))),
        "batch": _identity(options=tb.EngineOptions((1, 1), (270, 480), (540, 960), batch=(1, 1, 2))),
        "workspace": _identity(options=tb.EngineOptions((1, 1), (270, 480), (540, 960), workspace_gib=2)),
        "level": _identity(options=tb.EngineOptions((1, 1), (270, 480), (540, 960), optimization_level=5)),
        "tensorrt": _identity(tensorrt_version="11.4.0.106"),
        "gpu name": _identity(gpu={**FAKE_GPU, "name": "NVIDIA Other"}),
        "compute capability": _identity(gpu={**FAKE_GPU, "compute_capability": "8.9"}),
        "srexport": _identity(srexport_version="0.2.0"),
        "scale": _identity(record=_record(scale=3)),
        "colour space": _identity(record=_record(colour_space="RGB")),
        "value range": _identity(record=_record(value_range=(0.0, 255.0))),
        "hparams": _identity(record=_record(hparams={"n1": 32, "n2": 32})),
        "record training": _identity(record=_record(training={"epochs": 3})),
    }
    keys = {name: tb.cache_key(identity) for name, identity in variants.items()}
    base = tb.cache_key(_identity())
    assert base not in keys.values(), [n for n, k in keys.items() if k == base]
    assert len(set(keys.values())) == len(keys)


def test_identity_carries_what_the_sidecar_must_say():
    identity = _identity()
    assert identity["layout"] == "NCHW" and identity["scale"] == 2
    assert identity["colour_space"] == _record().colour_space and identity["value_range"] == [0.0, 1.0]
    assert identity["profile"]["max"] == [1, 1, 540, 960]
    assert identity["gpu"] == FAKE_GPU and identity["tensorrt_version"] == "10.16.1.11"
    assert identity["record"] == _record().to_dict()
    assert identity["build_options"]["tf32"] is False and identity["build_options"]["strongly_typed"] is True
    json.dumps(identity)  # serialisable as is


def test_timing_cache_file_is_per_version_and_gpu(tmp_path):
    a = tb.timing_cache_path(tmp_path, "10.16.1.11", FAKE_GPU)
    assert a.parent == tmp_path and "10.16.1.11" in a.name and "nvidia-fake-gpu-80gb" in a.name and "sm90" in a.name
    assert tb.timing_cache_path(tmp_path, "11.4.0.106", FAKE_GPU) != a
    assert tb.timing_cache_path(tmp_path, "10.16.1.11", {**FAKE_GPU, "compute_capability": "8.9"}) != a
    assert tb.timing_cache_path(None, "10.16.1.11", FAKE_GPU).parent.name == "timing"


def test_verification_sizes_cover_the_profile():
    profile = tb.EngineOptions((1, 1), (270, 480), (540, 960), batch=(1, 2, 4)).profile()
    sizes = tb.verification_sizes(profile)
    assert sizes[:3] == [(1, 1, 1), (2, 270, 480), (4, 540, 960)]
    n, h, w = sizes[3]
    assert h % 2 == 1 and w % 2 == 1 and 1 <= h <= 540 and 1 <= w <= 960


# --- ONNX facts -----------------------------------------------------------------------------------

def test_onnx_io_reads_precision_from_the_graph(espcn_onnx):
    from onnxconverter_common import float16

    proto = load_onnx(espcn_onnx[0])
    fp32 = tb.onnx_io(proto)
    assert fp32 == {"inputs": [{"name": "lr", "dtype": "float32"}], "outputs": [{"name": "sr", "dtype": "float32"}],
                    "precision": "fp32"}
    fp16 = tb.onnx_io(float16.convert_float_to_float16(proto, keep_io_types=True))
    assert fp16["precision"] == "fp16" and fp16["inputs"][0]["dtype"] == "float32"  # FP32 I/O around FP16


# --- inspector JSON -------------------------------------------------------------------------------

def _tensor(name, text, split=False):
    if split:  # later schema: format and type in separate fields
        return {"Name": name, "Location": "Device", "Dimensions": [1, 64, 270, 480], "Format": "Row major linear",
                "Datatype": text}
    return {"Name": name, "Location": "Device", "Dimensions": [1, 64, 270, 480], "Format/Datatype": text}


def _layer(name, layer_type, out_text, split=False, **extra):
    return {"Name": name, "LayerType": layer_type, "Inputs": [_tensor("in", out_text, split)],
            "Outputs": [_tensor(f"{name}_out", out_text, split)], **extra}


INSPECTOR_10 = json.dumps({
    "Layers": [
        _layer("Reformatting CopyNode for Input Tensor 0 to /conv1/Conv", "Reformat", "Row major linear FP16 format"),
        _layer("/conv1/Conv + /act1/Tanh", "CaskConvolution", "Channel major FP16 format where channel % 8 == 0",
               ParameterType="Convolution", Activation="TANH"),
        _layer("/conv2/Conv + /act2/Tanh", "CaskConvolution", "Channel major FP16 format where channel % 8 == 0",
               ParameterType="Convolution"),
        _layer("/conv3/Conv", "CaskConvolution", "Row major linear FP32 format", ParameterType="Convolution"),
        _layer("/shuffle/DepthToSpace", "Shuffle", "Row major linear FP16 format", ParameterType="Shuffle"),
        _layer("PWN(/act/Relu)", "PointWiseV2", "Half", ParameterType="PointWise"),
    ],
    "Bindings": ["lr", "sr"],
})

INSPECTOR_11 = json.dumps({
    "Layers": [
        _layer("/conv1/Conv", "CaskConvolution", "FP16", split=True),
        _layer("/deconv/ConvTranspose", "CaskDeconvolution", "Half", split=True),
        _layer("/gemm", "MatrixMultiply", "Float", split=True),
        _layer("cast", "Reformat", "Float", split=True),
    ],
    "I/O Tensors": [
        {"Name": "lr", "IOMode": "Input", "DataType": "Float", "Dimensions": [-1, 1, -1, -1], "Location": "Device",
         "IsShapeInferenceIO": False, "ProfileInfo": [{"MinShape": [1, 1, 1, 1], "OptShape": [1, 1, 270, 480],
                                                       "MaxShape": [1, 1, 540, 960], "Format": "Row major linear FP32 format (kLINEAR)"}]},
        {"Name": "sr", "IOMode": "Output", "DataType": "Float", "Dimensions": [-1, 1, -1, -1], "Location": "Device",
         "IsShapeInferenceIO": False, "ProfileInfo": []},
    ],
})


def test_inspector_json_tensorrt_10_schema():
    summary = tb.precisions_from_inspector_json(INSPECTOR_10)
    assert summary["layers"] == 6 and summary["detailed"]
    assert summary["by_precision"] == {"FP16": 5, "FP32": 1}
    # Compute: three convolutions and the pointwise activation; Reformat and Shuffle are not.
    assert summary["compute_layers"] == 4 and summary["compute_by_precision"] == {"FP16": 3, "FP32": 1}
    assert summary["fp16_share"] == 0.75 == tb.fp16_share_from_inspector_json(INSPECTOR_10)
    assert summary["io_tensors"] == ["lr", "sr"]


def test_inspector_json_tensorrt_11_schema():
    summary = tb.precisions_from_inspector_json(INSPECTOR_11)
    assert summary["compute_by_precision"] == {"FP16": 2, "FP32": 1}
    assert summary["fp16_share"] == round(2 / 3, 4)
    assert summary["io_tensors"] == ["lr", "sr"]


def test_inspector_json_without_detail_or_shapes():
    names_only = json.dumps({"Layers": ["/conv1/Conv + /act1/Tanh", "/conv2/Conv"], "Bindings": ["lr", "sr"]})
    summary = tb.precisions_from_inspector_json(names_only)
    assert summary["layers"] == 2 and not summary["detailed"] and summary["fp16_share"] is None
    dynamic = json.dumps({"Layers": [_layer("/conv1/Conv", "CaskConvolution", "N/A due to dynamic shapes")]})
    summary = tb.precisions_from_inspector_json(dynamic)
    assert summary["compute_by_precision"] == {"unknown": 1} and summary["fp16_share"] == 0.0
    with pytest.raises(SRExportError, match="not JSON"):
        tb.precisions_from_inspector_json("Layers: none")


# --- missing backends -----------------------------------------------------------------------------

def test_missing_tensorrt_raises_missing_backend_with_install_hint(monkeypatch, tmp_path, espcn_onnx):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` raise ImportError
    with pytest.raises(MissingBackend, match=r"pip install 'srexport\[tensorrt\]'") as info:
        tb._trt()
    assert info.value.exit_code == EXIT_MISSING_BACKEND == 4
    assert str(info.value) == tb.INSTALL_HINT
    with pytest.raises(MissingBackend):
        tb.engine_from_onnx(espcn_onnx[0], tmp_path / "e.engine")
    assert not (tmp_path / "e.engine").exists()
    with pytest.raises(MissingBackend):
        tb.TensorRTRunner(tmp_path / "e.engine")


def test_user_errors_come_before_the_backend_check(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(SRExportError, match="no such file") as info:
        tb.engine_from_onnx(tmp_path / "missing.onnx", tmp_path / "e.engine")
    assert not isinstance(info.value, MissingBackend)


def test_no_cuda_raises_missing_backend(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not tb.cuda_available()
    with pytest.raises(MissingBackend, match="no CUDA GPU"):
        tb.require_cuda()
    with pytest.raises(MissingBackend):
        tb.torch_gpu_reference(torch.nn.Identity())


# --- the build logic against a fake tensorrt ------------------------------------------------------

class FakeTensorRT(types.ModuleType):
    """A stand-in for `tensorrt` that answers only to names the real bindings of `version` have
    (from tests/tensorrt_names/trt<major>.json) and records every "Class.member" touched."""

    def __init__(self, version: str, layers_json: str = INSPECTOR_10, parse_errors=()):
        super().__init__("tensorrt")
        self.version = version
        self.names = set(json.loads((NAMES_DIR / f"trt{version.split('.')[0]}.json").read_text())["names"])
        self.used: set[str] = set()
        self.calls: dict[str, object] = {}
        self.layers_json, self.parse_errors = layers_json, list(parse_errors)
        enum = self.obj
        self._members = {
            "__version__": version,
            "Logger": self.obj("Logger", WARNING="Severity.WARNING", _call=lambda *a: self.obj("Logger")),
            "Builder": self.obj("Builder", _call=self._builder),
            "OnnxParser": self.obj("OnnxParser", _call=self._parser),
            "Runtime": self.obj("Runtime", _call=lambda logger: self.obj(
                "Runtime", deserialize_cuda_engine=self._engine)),
            "NetworkDefinitionCreationFlag": enum("NetworkDefinitionCreationFlag",
                                                  STRONGLY_TYPED=1 if version.startswith("10.") else 0),
            "MemoryPoolType": enum("MemoryPoolType", WORKSPACE="WORKSPACE"),
            "ProfilingVerbosity": enum("ProfilingVerbosity", DETAILED="DETAILED"),
            "BuilderFlag": enum("BuilderFlag", TF32="TF32", FP16="FP16"),
            "TensorIOMode": enum("TensorIOMode", INPUT="INPUT", OUTPUT="OUTPUT"),
            "DataType": enum("DataType", FLOAT="FLOAT", HALF="HALF", BF16="BF16"),
            "LayerInformationFormat": enum("LayerInformationFormat", JSON="JSON"),
        }

    def __getattr__(self, name):
        if name.startswith("_") and name != "__version__":
            raise AttributeError(name)
        self.touch(name)
        return self._members[name]

    def touch(self, name: str) -> None:
        if name not in self.names:  # what the real module of this version does
            raise AttributeError(f"module 'tensorrt' {self.version} has no attribute {name!r}")
        self.used.add(name)

    def obj(self, cls: str, _call=None, **attrs):
        return FakeObject(self, cls, _call, attrs)

    # behaviour
    def _builder(self, logger):
        def create_network(*flags):
            self.calls["create_network"] = flags
            return self.obj("INetworkDefinition", num_inputs=1,
                            get_input=lambda i: self.obj("ITensor", name="lr"))

        def build(network, config):
            self.calls["config"] = dict(config._attrs["_state"])
            return b"fake-plan for " + self.calls["onnx"].encode()

        return self.obj("Builder", create_network=create_network, build_serialized_network=build,
                        create_builder_config=self._config, create_optimization_profile=lambda: self.obj(
                            "IOptimizationProfile", set_shape=lambda *a: self.calls.__setitem__("profile", a)))

    def _config(self):
        state = {"flags_cleared": [], "profiles": 0}
        cache = self.obj("ITimingCache", serialize=lambda: memoryview(b"timing-cache-v1"))

        def create_timing_cache(data):
            state["timing_cache_loaded"] = bytes(data)
            return cache

        config = self.obj(
            "IBuilderConfig", _state=state,
            set_memory_pool_limit=lambda pool, size: state.__setitem__(pool, size),
            clear_flag=lambda flag: state["flags_cleared"].append(flag),
            add_optimization_profile=lambda p: state.__setitem__("profiles", state["profiles"] + 1),
            create_timing_cache=create_timing_cache, set_timing_cache=lambda c, ignore: True,
            get_timing_cache=lambda: cache)
        return config

    def _parser(self, network, logger):
        def parse_from_file(path):
            self.calls["onnx"] = path
            return not self.parse_errors

        return self.obj("OnnxParser", parse_from_file=parse_from_file, num_errors=len(self.parse_errors),
                        get_error=lambda i: self.obj("ParserError", _str=self.parse_errors[i],
                                                     desc=lambda: self.parse_errors[i]))

    def _engine(self, plan):
        io = tb.onnx_io(load_onnx(self.calls["onnx"], load_weights=False))
        dtypes = {"float32": "FLOAT", "float16": "HALF"}
        tensors = [(t["name"], "INPUT", dtypes[t["dtype"]]) for t in io["inputs"]] + \
                  [(t["name"], "OUTPUT", dtypes[t["dtype"]]) for t in io["outputs"]]
        _, lo, opt, hi = self.calls["profile"]
        context = self.obj("IExecutionContext", set_input_shape=lambda name, shape: True)
        return self.obj(
            "ICudaEngine", num_io_tensors=len(tensors), get_tensor_name=lambda i: tensors[i][0],
            get_tensor_mode=lambda n: dict((t[0], t[1]) for t in tensors)[n],
            get_tensor_dtype=lambda n: dict((t[0], t[2]) for t in tensors)[n],
            get_tensor_profile_shape=lambda n, i: [lo, opt, hi],
            create_execution_context=lambda *a: context,
            create_engine_inspector=lambda: self.obj("EngineInspector", execution_context=None,
                                                     get_engine_information=lambda fmt: self.layers_json))


class FakeObject:
    def __init__(self, trt, cls, call, attrs):
        self.__dict__.update(_trt=trt, _cls=cls, _callable=call, _attrs=attrs)

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        self._trt.touch(f"{self._cls}.{name}")
        return self._attrs[name]

    def __setattr__(self, name, value):
        self._trt.touch(f"{self._cls}.{name}")
        self._attrs[name] = value
        self._attrs.get("_state", {})[name] = value

    def __call__(self, *args):
        return self._callable(*args)

    def __str__(self):
        return self._attrs.get("_str", self._cls)


@pytest.fixture(params=["10.16.1.11", "11.4.0.106"])
def fake_trt(request, monkeypatch):
    fake = FakeTensorRT(request.param)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(tb, "gpu_info", lambda: dict(FAKE_GPU))
    return fake


SMALL = tb.EngineOptions((1, 1), (32, 48), (64, 96), batch=(1, 1, 2), workspace_gib=1, optimization_level=2)


def test_build_configures_tensorrt_by_name_only(fake_trt, espcn_onnx, tmp_path):
    onnx_path = espcn_onnx[0]
    result = tb.engine_from_onnx(onnx_path, tmp_path / "e.engine", SMALL, timing_cache_dir=tmp_path / "timing")
    major = int(fake_trt.version.split(".")[0])
    # Strongly typed by name on 10.x; plain create_network() on 11.x, which never touches the flag.
    assert fake_trt.calls["create_network"] == ((1 << 1,) if major == 10 else ())
    assert ("NetworkDefinitionCreationFlag.STRONGLY_TYPED" in fake_trt.used) == (major == 10)
    config = fake_trt.calls["config"]
    assert config["WORKSPACE"] == 1 << 30 and config["builder_optimization_level"] == 2
    assert config["profiling_verbosity"] == "DETAILED" and config["flags_cleared"] == ["TF32"]
    assert config["profiles"] == 1 and config["timing_cache_loaded"] == b""
    assert fake_trt.calls["profile"] == ("lr", (1, 1, 1, 1), (1, 1, 32, 48), (2, 1, 64, 96))
    # Every name touched is declared, and exists in this version (FakeTensorRT.touch enforces that).
    declared = {".".join(n.split(".")[:i]) for n in tb.TENSORRT_NAMES_USED for i in range(1, n.count(".") + 2)}
    assert fake_trt.used <= declared, fake_trt.used - declared
    assert "BuilderFlag.FP16" not in fake_trt.used

    assert not result.reused and result.graph_precision == "fp32" and result.fp16_share == 0.75
    plan = (tmp_path / "e.engine").read_bytes()
    assert plan == b"fake-plan for " + str(onnx_path).encode()
    sidecar = json.loads((tmp_path / "e.engine.json").read_text())
    assert sidecar == result.sidecar
    assert sidecar["inputs"] == [{"name": "lr", "dtype": "float32"}]
    assert sidecar["outputs"] == [{"name": "sr", "dtype": "float32"}]
    assert sidecar["layout"] == "NCHW" and sidecar["scale"] == 2 and sidecar["value_range"] == [0.0, 1.0]
    assert sidecar["colour_space"] == espcn_onnx[2].colour_space
    assert sidecar["record"] == espcn_onnx[2].to_dict()
    assert sidecar["profile"] == SMALL.profile()
    assert sidecar["tensorrt_version"] == fake_trt.version and sidecar["gpu"] == FAKE_GPU
    assert sidecar["onnx_sha256"] == hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    assert sidecar["engine_sha256"] == hashlib.sha256(plan).hexdigest()
    assert sidecar["build_options"]["workspace_gib"] == 1 and sidecar["srexport_version"]
    assert sidecar["layer_precisions"]["fp16_share"] == 0.75 and sidecar["verification"] is None
    identity = {k: sidecar[k] for k in _identity()}
    assert tb.cache_key(identity) == sidecar["cache_key"]
    cache_files = list((tmp_path / "timing").iterdir())
    assert [f.read_bytes() for f in cache_files] == [b"timing-cache-v1"] and fake_trt.version in cache_files[0].name


def test_build_is_reused_only_for_the_same_inputs(fake_trt, espcn_onnx, tmp_path):
    engine = tmp_path / "e.engine"
    first = tb.engine_from_onnx(espcn_onnx[0], engine, SMALL, timing_cache_dir=tmp_path)
    # A recorded verification does not change the key.
    sidecar = json.loads(tb.sidecar_path(engine).read_text())
    sidecar["verification"] = {"passed": True}
    tb.sidecar_path(engine).write_text(json.dumps(sidecar))
    again = tb.engine_from_onnx(espcn_onnx[0], engine, SMALL, timing_cache_dir=tmp_path)
    assert again.reused and again.sidecar["cache_key"] == first.sidecar["cache_key"]
    assert fake_trt.calls["config"]["timing_cache_loaded"] == b""  # no second build happened

    other = tb.EngineOptions((1, 1), (32, 48), (64, 97))
    with pytest.raises(SRExportError, match="other inputs or options"):
        tb.engine_from_onnx(espcn_onnx[0], engine, other, timing_cache_dir=tmp_path)
    rebuilt = tb.engine_from_onnx(espcn_onnx[0], engine, other, force=True, timing_cache_dir=tmp_path)
    assert not rebuilt.reused and rebuilt.sidecar["profile"]["max"] == [1, 1, 64, 97]
    assert fake_trt.calls["config"]["timing_cache_loaded"] == b"timing-cache-v1"  # the saved cache is used

    engine.write_bytes(b"damaged")  # the sidecar no longer describes the file
    with pytest.raises(SRExportError, match="differs from the engine its sidecar describes"):
        tb.engine_from_onnx(espcn_onnx[0], engine, other, timing_cache_dir=tmp_path)
    tb.sidecar_path(engine).unlink()
    with pytest.raises(SRExportError, match="no readable sidecar"):
        tb.engine_from_onnx(espcn_onnx[0], engine, other, timing_cache_dir=tmp_path)


def test_parser_errors_are_reported_verbatim(monkeypatch, espcn_onnx, tmp_path):
    errors = ["In node 3 with name: /conv2/Conv and operator: Conv (parseNode): UNSUPPORTED_NODE: oops",
              "Assertion failed: second error"]
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTensorRT("11.4.0.106", parse_errors=errors))
    monkeypatch.setattr(tb, "gpu_info", lambda: dict(FAKE_GPU))
    with pytest.raises(SRExportError) as info:
        tb.engine_from_onnx(espcn_onnx[0], tmp_path / "e.engine", SMALL, timing_cache_dir=tmp_path)
    message = str(info.value)
    assert str(espcn_onnx[0]) in message and "11.4.0.106" in message
    assert all(e in message for e in errors)
    assert not (tmp_path / "e.engine").exists() and not (tmp_path / "e.engine.json").exists()


def test_fake_rejects_names_tensorrt_11_dropped():
    fake = FakeTensorRT("11.4.0.106")
    with pytest.raises(AttributeError, match="FP16"):
        fake.BuilderFlag.FP16
    assert FakeTensorRT("10.16.1.11").BuilderFlag.FP16 == "FP16"


# --- real engines (NVIDIA GPU with TensorRT) ------------------------------------------------------

@pytest.fixture(scope="module")
def trt_gpu():
    trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (pip install 'srexport[tensorrt]'); "
                                                "real engine builds need it and an NVIDIA GPU")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU (torch.cuda.is_available() is False); real engine builds need one")
    return trt


@pytest.fixture(scope="module")
def espcn_fp16_onnx(espcn_onnx, tmp_path_factory):
    from srexport.fp16 import fp16_from_onnx

    fp16 = fp16_from_onnx(load_onnx(espcn_onnx[0]), io="fp32")
    path = tmp_path_factory.mktemp("onnx16") / "espcn_x2_fp16.onnx"
    onnx.save_model(fp16, str(path))
    return path


GPU_OPTIONS = tb.EngineOptions((1, 1), (48, 64), (96, 128), batch=(1, 1, 2), workspace_gib=1)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_real_engine_build_verify_and_reuse(trt_gpu, precision, espcn_onnx, tmp_path, request):
    onnx_path = espcn_onnx[0] if precision == "fp32" else request.getfixturevalue("espcn_fp16_onnx")
    model = espcn_onnx[1]
    engine = tmp_path / f"espcn_x2_{precision}.engine"
    result = tb.engine_from_onnx(onnx_path, engine, GPU_OPTIONS, timing_cache_dir=tmp_path / "timing")
    assert not result.reused and result.graph_precision == precision
    assert engine.stat().st_size > 0 and list((tmp_path / "timing").glob("*.cache"))
    sidecar = json.loads(tb.sidecar_path(engine).read_text())
    assert sidecar["tensorrt_version"] == trt_gpu.__version__
    assert sidecar["gpu"]["name"] == torch.cuda.get_device_name()
    assert sidecar["inputs"] == [{"name": "lr", "dtype": "float32"}]  # FP16 graphs keep FP32 I/O here
    share = sidecar["layer_precisions"]["fp16_share"]
    assert sidecar["layer_precisions"]["detailed"] and sidecar["layer_precisions"]["compute_layers"] > 0
    if precision == "fp16":
        assert share > 0.9, sidecar["layer_precisions"]
    else:
        assert share == 0.0, sidecar["layer_precisions"]

    runner = tb.TensorRTRunner(engine)
    x = np.random.default_rng(0).uniform(0.1, 0.9, (2, 1, 17, 23)).astype(np.float32)
    y = runner(x)
    assert y.shape == (2, 1, 34, 46) and y.dtype == np.float32 and np.isfinite(y).all()
    with pytest.raises(SRExportError, match="outside the engine's profile"):
        runner(np.zeros((1, 1, 97, 8), np.float32))

    verification = tb.verify_engine(engine, model)
    assert verification, str(verification)
    assert [c.input_shape for c in verification.cases] == [[1, 1, 1, 1], [1, 1, 48, 64], [2, 1, 96, 128],
                                                           [1, 1, 37, 49]]
    assert verification.max_abs_limit == (None if precision == "fp16" else 1e-4)
    assert verification.min_psnr_db == (50.0 if precision == "fp16" else None)
    recorded = json.loads(tb.sidecar_path(engine).read_text())["verification"]
    assert recorded["passed"] is True

    again = tb.engine_from_onnx(onnx_path, engine, GPU_OPTIONS, timing_cache_dir=tmp_path / "timing")
    assert again.reused and again.sidecar["verification"]["passed"] is True
    with pytest.raises(SRExportError, match="already exists"):
        tb.engine_from_onnx(onnx_path, engine, tb.EngineOptions((1, 1), (48, 64), (96, 130)),
                            timing_cache_dir=tmp_path / "timing")
