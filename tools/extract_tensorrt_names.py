#!/usr/bin/env python3
"""Record the Python-visible names of TensorRT 10.x and 11.x without installing TensorRT or a GPU.

    python tools/extract_tensorrt_names.py            # newest 10.x and 11.x from the package index
    python tools/extract_tensorrt_names.py --trt10 10.16.1.11 --trt11 11.4.0.106

Writes tests/tensorrt_names/trt10.json and trt11.json:
    {"tensorrt_version", "wheel", "sha256", "package", "python_tag", "method", "names": [...]}
`names` holds "Class", "Class.member", "Class.Nested.MEMBER" and module-level names, sorted.
tests/test_tensorrt_api_names.py checks every TensorRT name srexport uses against both files.

Method, and why not a strings scan alone
----------------------------------------
The bindings wheel (tensorrt-cu12-bindings for 10.x, tensorrt-cu13-bindings for 11.x) holds the
pybind11 module `tensorrt*.so` plus a small `__init__.py`. A strings scan of the .so finds every
name but cannot say which class a name belongs to: pybind11 builds the docstring signatures
("create_network(self: tensorrt.Builder, ...)") at run time from templates such as
"({%}, {str}) -> None", so no class name sits next to a member name in the binary, and the linker
merges and reorders the string pool, so position says nothing either. Inherited members
(`IConvolutionLayer.precision` comes from `ILayer`) cannot be seen in strings at all.

So the script asks the module itself. The .so needs libnvinfer/libnvonnxparser/libnvinfer_plugin
only for a handful of factory functions (createInferBuilder_INTERNAL, getPluginRegistry, ...) that
are called when a Builder/Runtime/parser is made, never at import. A copy of the .so is patched
in pure Python (no compiler, no TensorRT libraries):
  * DT_NEEDED entries naming libnv* are pointed at the libc entry's string (a harmless duplicate);
  * every strong, unversioned, undefined symbol that this Python process cannot resolve (exactly
    those TensorRT factories) is renamed in place to "abort", so a call would stop the process
    instead of running anything else.
The copy and the wheel's own `__init__.py` are put in a temporary `tensorrt` package and imported
in a fresh, isolated interpreter (`python -I -S`), which then lists `dir()` of the module, of every
class and of nested classes (enum members included). Class attribution is therefore exact,
inherited members included. Names starting with "_" are left out, except `__version__`.

As a cross-check, every member name found must also occur as a NUL-terminated string in the .so
(or in `__init__.py`, which adds `volume`, `nptype`, `DataType.itemsize`, ...); the count is
printed and stored, and a name that fails the check is an error. Known facts from
REFERENCE.md §5 are asserted (e.g. BuilderFlag.FP16 present in 10.x, absent in 11.x).

The import needs the interpreter the wheel was built for: CPython 3.11 on x86-64 Linux by default
(`--python` picks another 3.11 interpreter). The wheels are downloaded to a temporary folder and
deleted; only the JSON is kept.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import re
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "tests" / "tensorrt_names"
PYTHON_VERSION = "3.11"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
# (output file, bindings package, TensorRT major version)
TARGETS = (("trt10.json", "tensorrt-cu12-bindings", 10), ("trt11.json", "tensorrt-cu13-bindings", 11))

# Facts from REFERENCE.md §5 and the TensorRT 11 migration notes; the extraction must agree.
PRESENT_IN_BOTH = (
    "NetworkDefinitionCreationFlag.STRONGLY_TYPED", "IExecutionContext.execute_async_v3",
    "IExecutionContext.set_tensor_address", "ICudaEngine.create_engine_inspector", "Builder.create_network",
    "BuilderFlag.TF32", "MemoryPoolType.WORKSPACE", "__version__",
)
ONLY_IN_10 = (
    "BuilderFlag.FP16", "BuilderFlag.BF16", "BuilderFlag.INT8", "BuilderFlag.FP8",
    "NetworkDefinitionCreationFlag.EXPLICIT_BATCH", "Builder.platform_has_fast_fp16",
    "ILayer.precision", "ILayer.set_output_type",
)


# --- finding and downloading the wheels ------------------------------------------------------

def _pip(*args: str) -> str:
    cmd = [sys.executable, "-m", "pip", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed:\n{proc.stderr.strip()}")
    return proc.stdout


def _version_key(text: str):
    try:
        from packaging.version import Version
    except ImportError:  # pip always vendors it
        from pip._vendor.packaging.version import Version
    return Version(text)


def newest_version(package: str, major: int) -> str:
    out = _pip("index", "versions", package)
    match = re.search(r"Available versions:\s*(.+)", out)
    if not match:
        sys.exit(f"error: `pip index versions {package}` listed no versions")
    versions = [v.strip() for v in match.group(1).split(",")]
    candidates = [v for v in versions if _version_key(v).major == major and not _version_key(v).is_prerelease]
    if not candidates:
        sys.exit(f"error: {package} has no {major}.x release (found: {', '.join(versions[:8])} ...)")
    return max(candidates, key=_version_key)


def download_wheel(package: str, version: str, folder: Path) -> Path:
    args = ["download", "--no-deps", "--only-binary=:all:", "--python-version", PYTHON_VERSION,
            "--implementation", "cp", "-d", str(folder), f"{package}=={version}"]
    for platform in PLATFORMS:
        args += ["--platform", platform]
    _pip(*args)
    wheels = sorted(folder.glob("*.whl"))
    if len(wheels) != 1:
        sys.exit(f"error: expected one wheel for {package}=={version} in {folder}, found {wheels}")
    return wheels[0]


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def unpack_module(wheel: Path, folder: Path) -> tuple[bytes, str]:
    """The bindings' compiled module and its package `__init__.py` from the wheel."""
    with zipfile.ZipFile(wheel) as zf:
        sos = [n for n in zf.namelist() if re.fullmatch(r"[^/]+/tensorrt[^/]*\.so", n)]
        if len(sos) != 1:
            sys.exit(f"error: {wheel.name}: expected one top-level tensorrt*.so, found {sos}")
        package = sos[0].split("/")[0]
        return zf.read(sos[0]), zf.read(f"{package}/__init__.py").decode("utf-8")


# --- making a copy of the .so loadable without TensorRT's libraries --------------------------

SHT_DYNAMIC, SHT_DYNSYM, SHT_GNU_VERDEF, SHT_GNU_VERNEED, SHT_GNU_VERSYM = 6, 11, 0x6FFFFFFD, 0x6FFFFFFE, 0x6FFFFFFF
DT_NEEDED, DT_SONAME, DT_RPATH, DT_RUNPATH = 1, 14, 15, 29
STB_GLOBAL = 1
REPLACEMENT = b"abort\0"


def _cstr(data: bytes | bytearray, offset: int) -> bytes:
    return bytes(data[offset:data.index(b"\0", offset)])


def loadable_copy(so: bytes) -> tuple[bytes, list[str], list[str]]:
    """Patch the ELF as described in the module docstring; returns (bytes, dropped libs, renamed symbols)."""
    if so[:4] != b"\x7fELF" or so[4] != 2 or so[5] != 1:
        sys.exit("error: tensorrt module is not a 64-bit little-endian ELF file")
    data = bytearray(so)
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    by_type = {s[1]: s for s in sections}  # one of each of the dynamic-linking sections
    dynsym = by_type[SHT_DYNSYM]
    dynstr_off = sections[dynsym[6]][4]  # sh_link of .dynsym is .dynstr
    versym = by_type.get(SHT_GNU_VERSYM)

    def name_at(offset: int) -> bytes:
        return _cstr(data, dynstr_off + offset)

    referenced: list[int] = []  # every string offset something points at, to avoid clobbering shared tails
    dynamic = by_type[SHT_DYNAMIC]
    entries = [(dynamic[4] + i * 16, *struct.unpack_from("<qQ", data, dynamic[4] + i * 16))
               for i in range(dynamic[5] // 16)]
    needed = {name_at(val): val for _, tag, val in entries if tag == DT_NEEDED}
    libc = next((off for name, off in needed.items() if name.startswith(b"libc.so")), None)
    if libc is None:
        sys.exit("error: tensorrt module does not link libc by name; cannot redirect its TensorRT libraries")
    dropped = []
    for pos, tag, val in entries:
        if tag in (DT_NEEDED, DT_SONAME, DT_RPATH, DT_RUNPATH):
            referenced.append(val)
        if tag == DT_NEEDED and name_at(val).startswith(b"libnv"):
            dropped.append(name_at(val).decode())
            struct.pack_into("<qQ", data, pos, DT_NEEDED, libc)
    for sec_type in (SHT_GNU_VERNEED, SHT_GNU_VERDEF):
        referenced += _version_strings(data, by_type.get(sec_type), sec_type)

    symbols = []
    for i in range(dynsym[5] // 24):
        st_name, st_info, _, st_shndx, _, _ = struct.unpack_from("<IBBHQQ", data, dynsym[4] + i * 24)
        referenced.append(st_name)
        version = struct.unpack_from("<H", data, versym[4] + 2 * i)[0] & 0x7FFF if versym else 1
        if st_shndx == 0 and st_name and st_info >> 4 == STB_GLOBAL and version <= 1:
            symbols.append(st_name)
    process = ctypes.CDLL(None)  # what the interpreter and libc already provide resolves normally
    renamed = []
    for st_name in symbols:
        name = name_at(st_name).decode()
        if hasattr(process, name):
            continue
        if len(name) + 1 < len(REPLACEMENT) or any(st_name < r < st_name + len(REPLACEMENT) for r in referenced):
            sys.exit(f"error: cannot rename {name} in place (too short, or its string is shared)")
        data[dynstr_off + st_name:dynstr_off + st_name + len(REPLACEMENT)] = REPLACEMENT
        renamed.append(name)
    return bytes(data), dropped, renamed


def _version_strings(data: bytearray, section, sec_type: int) -> list[int]:
    """String offsets used by .gnu.version_r (file and version names) or .gnu.version_d."""
    if section is None:
        return []
    offsets, pos, end = [], section[4], section[4] + section[5]
    while pos < end:
        if sec_type == SHT_GNU_VERNEED:
            _, cnt, file_, aux, nxt = struct.unpack_from("<HHIII", data, pos)
            offsets.append(file_)
            a = pos + aux
            for _ in range(cnt):
                _, _, _, name, anext = struct.unpack_from("<IHHII", data, a)
                offsets.append(name)
                a += anext
        else:
            _, _, _, cnt, _, aux, nxt = struct.unpack_from("<HHHHIII", data, pos)
            a = pos + aux
            for _ in range(cnt):
                name, anext = struct.unpack_from("<II", data, a)
                offsets.append(name)
                a += anext
        if not nxt:
            break
        pos += nxt
    return offsets


# --- asking the module for its names ---------------------------------------------------------

INTROSPECT = r"""
import json, sys, types
sys.path.insert(0, sys.argv[1])
import tensorrt

def walk(obj, prefix, depth, out):
    for name in dir(obj):
        if name.startswith("_") and not (depth == 0 and name == "__version__"):
            continue
        try:
            value = getattr(obj, name)
        except Exception:  # a property that needs an instance still is a name
            value = None
        if isinstance(value, types.ModuleType):
            continue  # ctypes, os, sys, warnings and the tensorrt submodule itself
        out.add(prefix + name)
        # Recurse into classes (ILogger.Severity.WARNING), not into enum members or values.
        if isinstance(value, type) and depth < 2:
            walk(value, prefix + name + ".", depth + 1, out)

names = set()
walk(tensorrt, "", 0, names)
print(json.dumps({"version": tensorrt.__version__, "names": sorted(names)}))
"""


def introspect(so_bytes: bytes, init_py: str, python: str, folder: Path) -> tuple[str, list[str]]:
    package = folder / "pkg" / "tensorrt"
    package.mkdir(parents=True)
    (package / "tensorrt.so").write_bytes(so_bytes)  # PyInit_tensorrt: the file must be named tensorrt*.so
    (package / "__init__.py").write_text(init_py, encoding="utf-8")
    proc = subprocess.run([python, "-I", "-S", "-c", INTROSPECT, str(package.parent)],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        sys.exit(f"error: importing the patched tensorrt module failed (rc {proc.returncode}); it needs "
                 f"CPython {PYTHON_VERSION} on x86-64 Linux (see --python):\n{proc.stderr.strip()[-2000:]}")
    result = json.loads(proc.stdout)
    return result["version"], result["names"]


def strings_in(blob: bytes) -> set[str]:
    """Identifier-like NUL-terminated strings, as a `strings` scan would see them, with their
    tails: the linker stores "RELU" as the tail of "LEAKY_RELU" when it merges string pools."""
    runs = re.findall(rb"[A-Za-z0-9_]+(?=\0)", blob)
    return {run[i:].decode() for run in set(runs) for i in range(len(run))}


def check_facts(major: int, names: set[str], out_name: str) -> None:
    problems = [f"{n} missing" for n in PRESENT_IN_BOTH if n not in names]
    for n in ONLY_IN_10:
        if (n in names) != (major == 10):
            problems.append(f"{n} {'missing' if major == 10 else 'present'}")
    if problems:
        sys.exit(f"error: {out_name}: extraction contradicts known TensorRT {major}.x facts: {'; '.join(problems)}")


def extract(out_name: str, package: str, major: int, version: str | None, python: str, out_dir: Path) -> None:
    version = version or newest_version(package, major)
    with tempfile.TemporaryDirectory(prefix="srexport-trt-names-") as tmp:
        tmp = Path(tmp)
        wheel = download_wheel(package, version, tmp / "wheel")
        so, init_py = unpack_module(wheel, tmp)
        patched, dropped, renamed = loadable_copy(so)
        found_version, names = introspect(patched, init_py, python, tmp)
        wheel_name, wheel_sha = wheel.name, sha256_of(wheel)
    if found_version != version:
        sys.exit(f"error: {wheel_name} reports TensorRT {found_version}, expected {version}")
    # Cross-check against a plain strings scan: every member name must occur in the binary.
    known = strings_in(so) | set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", init_py))
    unseen = sorted(n for n in names if n.split(".")[-1] not in known)
    if unseen:
        sys.exit(f"error: {out_name}: names not found as strings in the binary: {', '.join(unseen[:20])}")
    check_facts(major, set(names), out_name)
    doc = {
        "tensorrt_version": version,
        "package": package,
        "wheel": wheel_name,
        "sha256": wheel_sha,
        "python_tag": "cp" + PYTHON_VERSION.replace(".", ""),
        "method": ("dir() of the wheel's own module, imported with its libnv* dependencies dropped and "
                   f"their symbols ({', '.join(renamed)}) renamed to abort; see "
                   "tools/extract_tensorrt_names.py. Every member name also occurs as a string in the .so."),
        "names": names,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / out_name
    path.write_text(json.dumps(doc, indent=0) + "\n", encoding="utf-8")
    print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: TensorRT {version} "
          f"({wheel_name}), {len(names)} names; dropped {', '.join(dropped)}; renamed {len(renamed)} symbols")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trt10", help="TensorRT 10.x version (default: newest on the index)")
    parser.add_argument("--trt11", help="TensorRT 11.x version (default: newest on the index)")
    parser.add_argument("--python", default=sys.executable,
                        help=f"CPython {PYTHON_VERSION} interpreter used to import the module (default: this one)")
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    for (out_name, package, major), version in zip(TARGETS, (args.trt10, args.trt11)):
        extract(out_name, package, major, version, args.python, args.out_dir)


if __name__ == "__main__":
    main()
