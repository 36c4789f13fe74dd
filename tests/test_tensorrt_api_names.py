"""Every TensorRT name srexport uses must exist in both TensorRT 10.x and 11.x.

The names of each version come from tests/tensorrt_names/trt10.json and trt11.json, extracted
from NVIDIA's bindings wheels by tools/extract_tensorrt_names.py. Two sources of used names:
  * an AST scan of every module in srexport/ for attribute chains on the tensorrt module
    (`trt.BuilderFlag.TF32`, `trt.Runtime(...).deserialize_cuda_engine`), whatever it is called;
  * engine.flavours.TENSORRT_NAMES_USED, the methods and properties called on TensorRT objects,
    which no static scan can attribute to a class.
A name listed in flavours.ONLY_NAMES is checked only against its version's (10, 11) or flavour's
("tensorrt-rtx") names. TensorRT-RTX's names come from its installed bindings (CI installs them).
"""

from __future__ import annotations

import ast
import io
import json
import re
import tokenize
from pathlib import Path
from typing import Iterable

import pytest

import srexport
from srexport.engine import flavours

PACKAGE = Path(srexport.__file__).resolve().parent
NAMES_DIR = Path(__file__).resolve().parent / "tensorrt_names"  # test data, not shipped
MAJORS = (10, 11)
# Calls that return the tensorrt module; a variable assigned from one is an alias of the module.
MODULE_GETTERS = {"_trt"}
ENGINE_DIR = PACKAGE / "engine"
# `trt` is also the name every helper takes the module under (def _engine_io(trt, engine)).
CONVENTIONAL_ALIAS = "trt"
# Module attributes that are plain values: a chain ends there (trt.__version__.split is str.split).
VALUES = {"__version__"}


def load_names(major: int) -> set[str]:
    return set(json.loads((NAMES_DIR / f"trt{major}.json").read_text())["names"])


# --- the checker --------------------------------------------------------------------------------

def _dotted(node: ast.AST) -> list[str] | None:
    """["a", "b", "c"] for the expression a.b.c, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id, *reversed(parts)]
    return None


def _aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> the tensorrt name it stands for ("" for the module itself)."""
    aliases = {CONVENTIONAL_ALIAS: ""}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "tensorrt":
                    aliases[a.asname or "tensorrt"] = ""
        elif isinstance(node, ast.ImportFrom) and node.module == "tensorrt":
            for a in node.names:
                aliases[a.asname or a.name] = a.name
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            func = _dotted(node.value.func)
            if func and func[-1] in MODULE_GETTERS:
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        aliases[target.id] = ""
    return aliases


def _name(parts: list[str]) -> str:
    parts = [p for p in parts if p]
    for i, part in enumerate(parts):
        if part in VALUES:
            return ".".join(parts[:i + 1])
    return ".".join(parts)


def tensorrt_chains(source: str) -> set[str]:
    """The tensorrt names a module's source uses: "BuilderFlag.TF32" for `trt.BuilderFlag.TF32`,
    every prefix of it ("BuilderFlag"), and "Runtime.deserialize_cuda_engine" for
    `trt.Runtime(logger).deserialize_cuda_engine` (a constructor's result has a known class)."""
    tree = ast.parse(source)
    aliases = _aliases(tree)
    found = {name for name in aliases.values() if name}  # from tensorrt import X
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        chain = _dotted(node)
        if chain and chain[0] in aliases:
            found.add(_name([aliases[chain[0]], *chain[1:]]))
            continue
        inner = node.value  # walk down to a call, if the chain starts with one
        attrs = [node.attr]
        while isinstance(inner, ast.Attribute):
            attrs.append(inner.attr)
            inner = inner.value
        if isinstance(inner, ast.Call):
            func = _dotted(inner.func)
            if func and func[0] in aliases and func[-1][:1].isupper():
                cls = _name([aliases[func[0]], *func[1:]])
                found.add(f"{cls}.{attrs[-1]}")  # only the first attribute: its result's type is unknown
    return found


def missing_names(used: Iterable[str], version_only: dict[int, Iterable[str]] | None = None) -> dict[int, list[str]]:
    """For each major version, the used names its bindings lack."""
    version_only = {m: set(ns) for m, ns in (version_only or {}).items()}
    missing = {}
    for major in MAJORS:  # a name only one flavour or version has is checked against that one alone
        names = load_names(major)
        applies = [n for n in set(used)
                   if not any(n in ns for ns in version_only.values()) or n in version_only.get(major, ())]
        missing[major] = sorted(n for n in applies if n not in names)
    return missing


def _code_only(source: str) -> str:
    """The source with comments and string literals blanked, for a plain-text cross-check."""
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        out.append(" " if tok.type in (tokenize.COMMENT, tokenize.STRING) else tok.string)
        out.append(" ")
    return "".join(out)


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


# --- the extracted name files -------------------------------------------------------------------

@pytest.mark.parametrize("major", MAJORS)
def test_name_files_are_well_formed(major):
    path = NAMES_DIR / f"trt{major}.json"
    doc = json.loads(path.read_text())
    assert path.stat().st_size < 1_000_000
    assert doc["tensorrt_version"].split(".")[0] == str(major)
    assert doc["wheel"].endswith(".whl") and re.fullmatch(r"[0-9a-f]{64}", doc["sha256"])
    assert doc["names"] == sorted(set(doc["names"])) and len(doc["names"]) > 1000


def test_name_files_agree_with_the_known_10_vs_11_facts():
    trt10, trt11 = load_names(10), load_names(11)
    for name in ("BuilderFlag.FP16", "BuilderFlag.BF16", "BuilderFlag.INT8", "BuilderFlag.FP8",
                 "NetworkDefinitionCreationFlag.EXPLICIT_BATCH", "Builder.platform_has_fast_fp16",
                 "ILayer.precision", "ILayer.set_output_type"):
        assert name in trt10 and name not in trt11, name
    for name in ("NetworkDefinitionCreationFlag.STRONGLY_TYPED", "IExecutionContext.execute_async_v3",
                 "IExecutionContext.set_tensor_address", "ICudaEngine.create_engine_inspector",
                 "Builder.create_network", "IBuilderConfig.set_memory_pool_limit"):
        assert name in trt10 and name in trt11, name
    # Inherited members are attributed to the subclass too (a strings scan could not do this).
    assert "IConvolutionLayer.precision" in trt10 and "IConvolutionLayer.precision" not in trt11


# --- srexport's use of TensorRT -----------------------------------------------------------------

def test_every_tensorrt_chain_in_srexport_exists_in_10_and_11():
    used = {}
    for path in _modules():
        for name in tensorrt_chains(path.read_text()):
            used.setdefault(name, []).append(path.name)
    assert "BuilderFlag.TF32" in used  # the scan sees the engine package at all
    missing = missing_names(used, flavours.ONLY_NAMES)
    assert missing == {10: [], 11: []}, {m: {n: used[n] for n in ns} for m, ns in missing.items()}


def test_names_used_list_exists_in_10_and_11():
    missing = missing_names(flavours.TENSORRT_NAMES_USED, flavours.ONLY_NAMES)
    assert missing == {10: [], 11: []}


def test_version_only_names_exist_in_their_version():
    for major, names in flavours.ONLY_NAMES.items():
        if major in MAJORS:
            assert set(names) <= load_names(major)
        assert set(names) <= set(flavours.TENSORRT_NAMES_USED)


def _module_names(module) -> set[str]:
    """The names the live bindings have, the way the extraction tool lists them: classes, their
    members (enum values included) and nested classes' members."""
    names = set()
    for attr in dir(module):
        if attr.startswith("_") and attr != "__version__":
            continue
        names.add(attr)
        value = getattr(module, attr)
        if isinstance(value, type):
            for member in dir(value):
                if not member.startswith("_"):
                    names.add(f"{attr}.{member}")
    return names


def test_every_name_used_exists_in_the_real_tensorrt_rtx_bindings():
    """Against the installed TensorRT-RTX bindings: every shared name and every RTX-only one.
    TensorRT 10/11-only names (the STRONGLY_TYPED flag of 10.x's branch) are left out."""
    from srexport.errors import MissingBackend

    try:
        rtx = flavours.load_flavour(flavours.TENSORRT_RTX)
    except MissingBackend:
        pytest.skip("TensorRT-RTX is not installed (pip install 'srexport[tensorrt-rtx]')")
    names = _module_names(rtx.trt)
    used = set(flavours.TENSORRT_NAMES_USED)
    for path in _modules():
        used |= tensorrt_chains(path.read_text())
    not_rtx = {n for m, ns in flavours.ONLY_NAMES.items() if m != flavours.TENSORRT_RTX for n in ns}
    missing = sorted(n for n in used - not_rtx if n not in names)
    assert not missing, missing


def test_the_check_fails_on_a_name_11_dropped():
    source = "import tensorrt as trt\nconfig.set_flag(trt.BuilderFlag.FP16)\n"
    assert tensorrt_chains(source) == {"BuilderFlag", "BuilderFlag.FP16"}
    assert missing_names(tensorrt_chains(source)) == {10: [], 11: ["BuilderFlag.FP16"]}
    # However the module is reached, and for the TensorRT 10 idioms 11 removed.
    source = ("def build():\n    rt = _trt()\n    net = b.create_network(1 << int(rt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))\n"
              "    fast = rt.Builder(logger).platform_has_fast_fp16\n")
    assert missing_names(tensorrt_chains(source)) == {
        10: [], 11: ["Builder.platform_has_fast_fp16", "NetworkDefinitionCreationFlag.EXPLICIT_BATCH"]}
    assert missing_names(["BuilderFlag.FP16"], {10: ["BuilderFlag.FP16"]}) == {10: [], 11: []}


def _engine_source() -> str:
    return "\n".join(p.read_text() for p in sorted(ENGINE_DIR.glob("*.py")))


def test_scan_finds_every_trt_chain_in_the_engine_package():
    source = _engine_source()
    chains = tensorrt_chains(source)
    for name in ("BuilderFlag.TF32", "MemoryPoolType.WORKSPACE", "ProfilingVerbosity.DETAILED",
                 "LayerInformationFormat.JSON", "NetworkDefinitionCreationFlag.STRONGLY_TYPED",
                 "TensorIOMode.INPUT", "DataType.HALF", "ILogger.WARNING", "Runtime", "OnnxParser", "Builder",
                 "ComputeCapability.SM86",
                 "__version__"):
        assert name in chains, name
    # No silent miss: a plain-text scan of the code (comments and strings removed) finds no chain
    # the AST scan did not.
    code = _code_only(source)
    textual = {_name(re.sub(r"\s+", "", t).split("."))
               for t in re.findall(r"\btrt\s*\.\s*([A-Za-z_]\w*(?:\s*\.\s*[A-Za-z_]\w*)*)", code)}
    assert textual and textual <= chains, textual - chains


def test_names_used_list_matches_the_code():
    """Every TensorRT member name the code touches is in TENSORRT_NAMES_USED, and every entry is used.

    A member name is recognised by its spelling: an attribute in srexport/engine/ that is the
    member name of some TensorRT class. Attributes spelt like one but used on non-TensorRT objects
    are listed in NOT_TENSORRT."""
    NOT_TENSORRT = {
        "engine",  # TensorRTRunner.engine (our attribute; IExecutionContext.engine is not used)
        "numpy", "shape",  # torch.Tensor.numpy(), ndarray/tensor .shape
        "pop", "read", "update",  # set.pop, file.read, hashlib update
        "scale",  # ModelRecord.scale
        "type",  # onnx ValueInfoProto.type
        "append", "data", "metadata",  # list.append, Plan.data, importlib.metadata
        "builder", "logger", "major",  # ParsedNetwork.builder / .logger, Flavour.major
    }
    source = _engine_source()
    tree = ast.parse(source)
    attrs = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    members = {n.split(".", 1)[1].split(".")[-1] for m in MAJORS for n in load_names(m) if "." in n}
    listed = set(flavours.TENSORRT_NAMES_USED) | tensorrt_chains(source)
    listed_members = {n.split(".")[-1] for n in listed}
    unlisted = sorted((attrs & members) - listed_members - NOT_TENSORRT)
    assert not unlisted, f"TensorRT-looking attributes missing from TENSORRT_NAMES_USED: {unlisted}"
    stale = sorted(n for n in flavours.TENSORRT_NAMES_USED if "." in n and n.split(".")[-1] not in attrs)
    assert not stale, f"TENSORRT_NAMES_USED entries the code never touches: {stale}"
