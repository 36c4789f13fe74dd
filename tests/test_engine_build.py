"""srexport.engine.build: the sidecar identity and cache key, and the TensorRT 10/11 branch of the shared
build path against a fake `tensorrt` that answers only to names the real bindings of that version have.
The same path runs for real through TensorRT-RTX in test_engine_rtx.py; the fake stays for what only
TensorRT 10/11 do (the strongly typed flag by name on 10, the timing cache, the GPU as the target)."""

from __future__ import annotations

import hashlib
import json
import sys
import types
from pathlib import Path

import pytest

from srexport.checkpoint import ModelRecord, resolve_network
from srexport.engine import build as eb
from srexport.engine import flavours
from srexport.engine.profiles import EngineOptions
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


# --- identity and cache key -----------------------------------------------------------------------

def _record(**changes) -> ModelRecord:
    base = ModelRecord(network="espcn", scale=2, hparams={"n1": 64, "n2": 32}, param_count=22_000,
                       upsampling="sub-pixel convolution")
    return base.replace(**changes)


IO32 = {"inputs": [{"name": "lr", "dtype": "float32"}], "outputs": [{"name": "sr", "dtype": "float32"}]}


def _identity(**changes) -> dict:
    kwargs = dict(record=_record(), onnx_sha256="a" * 64, io={**IO32, "precision": "fp16"},
                  options=EngineOptions((1, 1), (270, 480), (540, 960)), flavour="tensorrt",
                  tensorrt_version="10.16.1.11", target={"gpu": dict(FAKE_GPU)}, cuda="cu12",
                  srexport_version="0.1.0")
    kwargs.update(changes)
    return eb.engine_identity(**kwargs)


def test_cache_key_is_stable_and_order_independent():
    a, b = _identity(), _identity()
    assert eb.cache_key(a) == eb.cache_key(b)
    assert eb.cache_key(dict(reversed(list(a.items())))) == eb.cache_key(a)
    assert len(eb.cache_key(a)) == 64
    assert "verification" not in a and "layer_precisions" not in a


def test_cache_key_changes_with_every_field():
    o = EngineOptions
    variants = {
        "onnx": _identity(onnx_sha256="b" * 64),
        "input dtype": _identity(io={**IO32, "inputs": [{"name": "lr", "dtype": "float16"}], "precision": "fp16"}),
        "output dtype": _identity(io={**IO32, "outputs": [{"name": "sr", "dtype": "float16"}], "precision": "fp16"}),
        "precision": _identity(io={**IO32, "precision": "fp32"}),
        "min": _identity(options=o((2, 2), (270, 480), (540, 960))),
        "opt": _identity(options=o((1, 1), (271, 480), (540, 960))),
        "max": _identity(options=o((1, 1), (270, 480), (540, 961))),
        "batch": _identity(options=o((1, 1), (270, 480), (540, 960), batch=(1, 1, 2))),
        "workspace": _identity(options=o((1, 1), (270, 480), (540, 960), workspace_gib=2)),
        "level": _identity(options=o((1, 1), (270, 480), (540, 960), optimization_level=5)),
        "hardware compatible": _identity(options=o((1, 1), (270, 480), (540, 960), hardware_compatible=True)),
        "version compatible": _identity(options=o((1, 1), (270, 480), (540, 960), version_compatible=True)),
        "flavour": _identity(flavour="tensorrt-rtx"),
        "tensorrt": _identity(tensorrt_version="11.4.0.106"),
        "bindings cuda": _identity(cuda="cu13"),
        "gpu name": _identity(target={"gpu": {**FAKE_GPU, "name": "NVIDIA Other"}}),
        "compute capability": _identity(target={"gpu": {**FAKE_GPU, "compute_capability": "8.9"}}),
        "rtx targets": _identity(target={"gpu": None, "compute_capabilities": ["8.6"]}),
        "srexport": _identity(srexport_version="0.2.0"),
        "scale": _identity(record=_record(scale=3)),
        "colour space": _identity(record=_record(colour_space="RGB")),
        "value range": _identity(record=_record(value_range=(0.0, 255.0))),
        "hparams": _identity(record=_record(hparams={"n1": 32, "n2": 32})),
        "record training": _identity(record=_record(training={"epochs": 3})),
    }
    keys = {name: eb.cache_key(identity) for name, identity in variants.items()}
    base = eb.cache_key(_identity())
    assert base not in keys.values(), [n for n, k in keys.items() if k == base]
    assert len(set(keys.values())) == len(keys)


def test_identity_carries_what_the_sidecar_must_say():
    identity = _identity()
    assert identity["layout"] == "NCHW" and identity["scale"] == 2
    assert identity["colour_space"] == _record().colour_space and identity["value_range"] == [0.0, 1.0]
    assert identity["profile"]["max"] == [1, 1, 540, 960]
    assert identity["gpu"] == FAKE_GPU and identity["tensorrt_version"] == "10.16.1.11"
    assert identity["flavour"] == "tensorrt" and identity["bindings_cuda"] == "cu12"
    assert identity["compute_capabilities"] is None
    assert identity["record"] == _record().to_dict()
    assert identity["build_options"]["tf32"] is False and identity["build_options"]["strongly_typed"] is True
    rtx = _identity(flavour="tensorrt-rtx", target={"gpu": None, "compute_capabilities": ["8.6", "8.9"]})
    assert rtx["gpu"] is None and rtx["compute_capabilities"] == ["8.6", "8.9"]
    assert eb.target_label(rtx) == "compute capabilities 8.6, 8.9"
    assert eb.target_label(identity) == "NVIDIA Fake GPU 80GB (9.0)"
    json.dumps(identity)  # serialisable as is


def test_onnx_io_reads_precision_from_the_graph(espcn_onnx):
    from onnxconverter_common import float16

    proto = load_onnx(espcn_onnx[0])
    assert eb.onnx_io(proto) == {**IO32, "precision": "fp32"}
    fp16 = eb.onnx_io(float16.convert_float_to_float16(proto, keep_io_types=True))
    assert fp16["precision"] == "fp16" and fp16["inputs"][0]["dtype"] == "float32"  # FP32 I/O around FP16


# --- the TensorRT 10/11 branch against a fake tensorrt ----------------------------------------------

class FakeTensorRT(types.ModuleType):
    """A stand-in for `tensorrt` that answers only to names the real bindings of `version` have
    (from tests/tensorrt_names/trt<major>.json) and records every "Class.member" touched. Its
    builder reports activation memory as the real one does, in proportion to the profile's pixels."""

    BYTES_PER_PIXEL, FLOOR = 192, 8_192_000

    def __init__(self, version: str, parse_errors=(), layer_dtype="FLOAT"):
        super().__init__("tensorrt")
        self.version = version
        self.names = set(json.loads((NAMES_DIR / f"trt{version.split('.')[0]}.json").read_text())["names"])
        self.used: set[str] = set()
        self.calls: dict[str, object] = {"builds": 0}
        self.parse_errors, self.layer_dtype = list(parse_errors), layer_dtype
        enum = self.obj
        logger_class = type("ILogger", (), {"INTERNAL_ERROR": 0, "ERROR": 1, "WARNING": 2, "INFO": 3, "VERBOSE": 4,
                                            "__init__": lambda self: None})
        self._members = {
            "__version__": version,
            "ILogger": logger_class,
            "Builder": self.obj("Builder", _call=self._builder),
            "OnnxParser": self.obj("OnnxParser", _call=self._parser),
            "NetworkDefinitionCreationFlag": enum("NetworkDefinitionCreationFlag",
                                                  STRONGLY_TYPED=1 if version.startswith("10.") else 0),
            "MemoryPoolType": enum("MemoryPoolType", WORKSPACE="WORKSPACE"),
            "ProfilingVerbosity": enum("ProfilingVerbosity", DETAILED="DETAILED"),
            "BuilderFlag": enum("BuilderFlag", TF32="TF32", FP16="FP16", VERSION_COMPATIBLE="VERSION_COMPATIBLE"),
            "HardwareCompatibilityLevel": enum("HardwareCompatibilityLevel", AMPERE_PLUS="AMPERE_PLUS"),
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

    def _builder(self, logger):
        def create_network(*flags):
            self.calls["create_network"] = flags
            layer = self.obj("ILayer", name="conv", type=types.SimpleNamespace(name="CONVOLUTION"), num_outputs=1,
                             get_output_type=lambda j: types.SimpleNamespace(name=self.layer_dtype))
            return self.obj("INetworkDefinition", num_inputs=1, get_input=lambda i: self.obj("ITensor", name="lr"),
                            num_layers=3, get_layer=lambda i: layer)

        def build(network, config):
            self.calls["builds"] += 1
            self.calls["config"] = dict(config._attrs["_state"])
            (n, _, h, w) = self.calls["profile"][3]
            logger.log(logger_class.INFO,
                       f"Total Activation Memory: {self.FLOOR + self.BYTES_PER_PIXEL * n * h * w} bytes")
            return b"fake-plan for " + self.calls["onnx"].encode()

        logger_class = self._members["ILogger"]
        return self.obj("Builder", create_network=create_network, build_serialized_network=build,
                        create_builder_config=self._config, create_optimization_profile=lambda: self.obj(
                            "IOptimizationProfile", set_shape=lambda *a: self.calls.__setitem__("profile", a)))

    def _config(self):
        state = {"flags_cleared": [], "flags_set": [], "profiles": 0}
        cache = self.obj("ITimingCache", serialize=lambda: memoryview(b"timing-cache-v1"))

        def create_timing_cache(data):
            state["timing_cache_loaded"] = bytes(data)
            return cache

        return self.obj(
            "IBuilderConfig", _state=state,
            set_memory_pool_limit=lambda pool, size: state.__setitem__(pool, size),
            clear_flag=lambda flag: state["flags_cleared"].append(flag),
            set_flag=lambda flag: state["flags_set"].append(flag),
            add_optimization_profile=lambda p: state.__setitem__("profiles", state["profiles"] + 1),
            create_timing_cache=create_timing_cache, set_timing_cache=lambda c, ignore: True,
            get_timing_cache=lambda: cache)

    def _parser(self, network, logger):
        def parse_from_file(path):
            self.calls["onnx"] = path
            return not self.parse_errors

        def error(i):
            node, name, op, desc = self.parse_errors[i]
            return self.obj("ParserError", desc=lambda: desc, node=lambda: node, node_name=lambda: name,
                            node_operator=lambda: op)

        return self.obj("OnnxParser", parse_from_file=parse_from_file, num_errors=len(self.parse_errors),
                        get_error=error)


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


def _use(monkeypatch, fake):
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(flavours, "gpu_info", lambda: dict(FAKE_GPU))
    monkeypatch.setattr(flavours, "require_cuda", lambda: None)
    return fake


@pytest.fixture(params=["10.16.1.11", "11.4.0.106"])
def fake_trt(request, monkeypatch):
    return _use(monkeypatch, FakeTensorRT(request.param))


SMALL = EngineOptions((1, 1), (32, 48), (64, 96), batch=(1, 1, 2), workspace_gib=1, optimization_level=2)


def test_build_configures_tensorrt_by_name_only(fake_trt, espcn_onnx, tmp_path):
    onnx_path = espcn_onnx[0]
    result = eb.engine_from_onnx(onnx_path, tmp_path / "e.engine", SMALL, flavour="tensorrt",
                                 cache_dir=tmp_path / "timing")
    major = int(fake_trt.version.split(".")[0])
    # Strongly typed by name on 10.x; plain create_network() on 11.x, which never touches the flag.
    assert fake_trt.calls["create_network"] == ((1 << 1,) if major == 10 else ())
    assert ("NetworkDefinitionCreationFlag.STRONGLY_TYPED" in fake_trt.used) == (major == 10)
    config = fake_trt.calls["config"]
    assert config["WORKSPACE"] == 1 << 30 and config["builder_optimization_level"] == 2
    assert config["profiling_verbosity"] == "DETAILED" and config["flags_cleared"] == ["TF32"]
    assert config["flags_set"] == [] and "hardware_compatibility_level" not in config
    assert config["profiles"] == 1 and config["timing_cache_loaded"] == b"timing-cache-v1"  # saved by the probes
    assert fake_trt.calls["profile"] == ("lr", (1, 1, 1, 1), (1, 1, 32, 48), (2, 1, 64, 96))
    assert fake_trt.calls["builds"] == 3  # two probes for the memory model, then the engine
    # Every name touched is declared, and exists in this version (FakeTensorRT.touch enforces that).
    declared = {".".join(n.split(".")[:i]) for n in flavours.TENSORRT_NAMES_USED for i in range(1, n.count(".") + 2)}
    assert fake_trt.used <= declared, fake_trt.used - declared
    assert "BuilderFlag.FP16" not in fake_trt.used

    assert not result.reused and result.graph_precision == "fp32" and result.fp16_share == 0.0
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
    assert sidecar["flavour"] == "tensorrt" and sidecar["tensorrt_version"] == fake_trt.version
    assert sidecar["gpu"] == FAKE_GPU and sidecar["compute_capabilities"] is None
    assert sidecar["onnx_sha256"] == hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    assert sidecar["engine_sha256"] == hashlib.sha256(plan).hexdigest()
    assert sidecar["build_options"]["workspace_gib"] == 1 and sidecar["srexport_version"]
    assert sidecar["network_precisions"]["compute_by_precision"] == {"FP32": 3}
    assert sidecar["layer_precisions"] is None and sidecar["verification"] is None
    memory = sidecar["memory"]  # the fake builder's figures, fitted and predicted exactly
    assert memory["builder_reported_bytes"] == memory["predicted_bytes"] == FakeTensorRT.FLOOR + 192 * 2 * 64 * 96
    identity = {k: sidecar[k] for k in _identity()}
    assert eb.cache_key(identity) == sidecar["cache_key"]
    cache_files = list((tmp_path / "timing").iterdir())
    assert [f.read_bytes() for f in cache_files] == [b"timing-cache-v1"] and fake_trt.version in cache_files[0].name
    assert "sm90" in cache_files[0].name and "nvidia-fake-gpu-80gb" in cache_files[0].name


def test_compatibility_options_set_their_flags(fake_trt, espcn_onnx, tmp_path):
    portable = EngineOptions((1, 1), (32, 48), (64, 96), hardware_compatible=True, version_compatible=True)
    result = eb.engine_from_onnx(espcn_onnx[0], tmp_path / "e.engine", portable, flavour="tensorrt",
                                 cache_dir=tmp_path)
    config = fake_trt.calls["config"]
    assert config["hardware_compatibility_level"] == "AMPERE_PLUS" and config["flags_set"] == ["VERSION_COMPATIBLE"]
    assert result.sidecar["build_options"]["hardware_compatible"] is True
    with pytest.raises(SRExportError, match="applies to TensorRT-RTX only"):
        eb.engine_from_onnx(espcn_onnx[0], tmp_path / "f.engine", SMALL, flavour="tensorrt",
                            compute_capabilities="8.6")


def test_build_is_reused_only_for_the_same_inputs(fake_trt, espcn_onnx, tmp_path):
    engine = tmp_path / "e.engine"
    first = eb.engine_from_onnx(espcn_onnx[0], engine, SMALL, flavour="tensorrt", cache_dir=tmp_path)
    sidecar = json.loads(eb.sidecar_path(engine).read_text())
    sidecar["verification"] = {"passed": True}  # a recorded verification does not change the key
    eb.sidecar_path(engine).write_text(json.dumps(sidecar))
    builds = fake_trt.calls["builds"]
    again = eb.engine_from_onnx(espcn_onnx[0], engine, SMALL, flavour="tensorrt", cache_dir=tmp_path)
    assert again.reused and again.sidecar["cache_key"] == first.sidecar["cache_key"]
    assert fake_trt.calls["builds"] == builds + 2  # the probes only: no engine build

    other = EngineOptions((1, 1), (32, 48), (64, 97))
    with pytest.raises(SRExportError, match="other inputs or options"):
        eb.engine_from_onnx(espcn_onnx[0], engine, other, flavour="tensorrt", cache_dir=tmp_path)
    rebuilt = eb.engine_from_onnx(espcn_onnx[0], engine, other, force=True, flavour="tensorrt", cache_dir=tmp_path)
    assert not rebuilt.reused and rebuilt.sidecar["profile"]["max"] == [1, 1, 64, 97]

    engine.write_bytes(b"damaged")  # the sidecar no longer describes the file
    with pytest.raises(SRExportError, match="differs from the engine its sidecar describes"):
        eb.engine_from_onnx(espcn_onnx[0], engine, other, flavour="tensorrt", cache_dir=tmp_path)
    eb.sidecar_path(engine).unlink()
    with pytest.raises(SRExportError, match="no readable sidecar"):
        eb.engine_from_onnx(espcn_onnx[0], engine, other, flavour="tensorrt", cache_dir=tmp_path)


def test_a_graph_with_fp32_layers_is_not_built_as_fp16(monkeypatch, espcn_onnx, tmp_path):
    from onnxconverter_common import float16
    import onnx

    path16 = tmp_path / "fp16.onnx"
    onnx.save(float16.convert_float_to_float16(load_onnx(espcn_onnx[0]), keep_io_types=True), str(path16))
    _use(monkeypatch, FakeTensorRT("11.4.0.106", layer_dtype="FLOAT"))  # a parser that kept FP32 layers
    with pytest.raises(SRExportError, match=r"FP16 graph parses to compute layers \{'FP32': 3\}") as info:
        eb.engine_from_onnx(path16, tmp_path / "e.engine", SMALL, flavour="tensorrt", cache_dir=tmp_path)
    assert info.value.exit_code == 3 and not (tmp_path / "e.engine").exists()


def test_parser_errors_name_the_node(monkeypatch, espcn_onnx, tmp_path):
    errors = [(3, "/conv2/Conv", "Conv", "UNSUPPORTED_NODE: oops"), (-1, "", "", "Assertion failed: second error")]
    _use(monkeypatch, FakeTensorRT("11.4.0.106", parse_errors=errors))
    with pytest.raises(SRExportError) as info:
        eb.engine_from_onnx(espcn_onnx[0], tmp_path / "e.engine", SMALL, flavour="tensorrt", cache_dir=tmp_path)
    message = str(info.value)
    assert str(espcn_onnx[0]) in message and "TensorRT 11.4.0.106" in message
    assert "node 3 '/conv2/Conv' (Conv): UNSUPPORTED_NODE: oops | Assertion failed: second error" in message
    assert not (tmp_path / "e.engine").exists() and not (tmp_path / "e.engine.json").exists()


def test_fake_rejects_names_tensorrt_11_dropped():
    fake = FakeTensorRT("11.4.0.106")
    with pytest.raises(AttributeError, match="FP16"):
        fake.BuilderFlag.FP16
    assert FakeTensorRT("10.16.1.11").BuilderFlag.FP16 == "FP16"


# --- missing backends -----------------------------------------------------------------------------

def test_missing_tensorrt_raises_missing_backend_with_install_hint(monkeypatch, tmp_path, espcn_onnx):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` raise ImportError
    with pytest.raises(MissingBackend, match=r"pip install 'srexport\[tensorrt\]'") as info:
        flavours.load_flavour("tensorrt")
    assert info.value.exit_code == EXIT_MISSING_BACKEND == 4
    with pytest.raises(MissingBackend):
        eb.engine_from_onnx(espcn_onnx[0], tmp_path / "e.engine", flavour="tensorrt")
    assert not (tmp_path / "e.engine").exists()


def test_user_errors_come_before_the_backend_check(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(SRExportError, match="no such file") as info:
        eb.engine_from_onnx(tmp_path / "missing.onnx", tmp_path / "e.engine", flavour="tensorrt")
    assert not isinstance(info.value, MissingBackend)
