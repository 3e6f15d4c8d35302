"""Configure and build llama.cpp with CMake + Ninja for pyllamacy.

One persistent build folder (``build/llama.cpp`` or ``$PYLLAMACY_BUILD_DIR``) and ccache when it is
on PATH, so a rebuild after a Python-only change costs seconds.

Environment knobs (all optional):
  PYLLAMACY_BUILD_DIR      where the CMake build lives
  PYLLAMACY_CMAKE_ARGS     extra CMake arguments (shell-split), appended last
  PYLLAMACY_CPU_VARIANTS   comma list of CPU backend variants to build (default: every variant of
                           this architecture that is safe, i.e. no AMX: see AMX_VARIANTS)
  PYLLAMACY_TOOLS          comma list of llama.cpp programs to build beside the libraries
                           (default: llama-simple,llama-bench,llama-quantize,llama-mtmd-cli,llama-server; "" for none)
  PYLLAMACY_JOBS           parallel build jobs (default: all cores)
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# CPU variants that use AMX tiles. llama.cpp's runtime scoring prefers them on any CPU that
# advertises AMX, and on some clouds the AMX kernels crash (SIGSEGV in ldtilecfg / SIGILL):
# we never build or load them unless PYLLAMACY_ALLOW_AMX=1 is set at build *and* run time.
AMX_VARIANTS = {"sapphirerapids"}

DEFAULT_TOOLS = ["llama-simple", "llama-bench", "llama-quantize", "llama-mtmd-cli", "llama-server"]

# Flags that define the build. Changing them re-configures the persistent build folder.
BASE_CMAKE_ARGS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=ON",
    "-DGGML_BACKEND_DL=ON",          # CPU backend as loadable modules; GPU backends drop in beside
    "-DGGML_CPU_ALL_VARIANTS=ON",    # one CPU module per ISA level, chosen at run time
    "-DGGML_NATIVE=OFF",             # never -march=native: wheels run on other CPUs
    "-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF",
    "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=ON", "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_APP=OFF", "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_BUILD_COMMON=ON", "-DLLAMA_BUILD_IS_DEV=OFF",
    "-DCMAKE_POSITION_INDEPENDENT_CODE=ON",
    # libmtmd's video input runs ffprobe/ffmpeg as subprocesses, also on any buffer that is no
    # image or audio file: no programs launched on a user's bad input
    "-DMTMD_VIDEO=OFF",
    # every library and program lands in bin/ and finds its siblings through $ORIGIN
    "-DCMAKE_BUILD_RPATH_USE_ORIGIN=ON",
    # the RPC backend (a small CPU-only module, libggml-rpc.so) and its server program: a model
    # split across hosts (docs/SCALE.md); no RDMA (it would link libibverbs into the wheel)
    "-DGGML_RPC=ON", "-DGGML_RPC_RDMA=OFF",
]

# built and packaged whatever PYLLAMACY_TOOLS says: `pyllamacy rpc-server` runs the program
RPC_SERVER = "ggml-rpc-server"


class BuildError(RuntimeError):
    pass


def build_dir() -> Path:
    return Path(os.environ.get("PYLLAMACY_BUILD_DIR", ROOT / "build" / "llama.cpp")).resolve()


def _run(cmd: list[str], **kw) -> None:
    print("[pyllamacy] $ " + " ".join(shlex.quote(str(c)) for c in cmd), flush=True)
    r = subprocess.run([str(c) for c in cmd], **kw)
    if r.returncode != 0:
        raise BuildError(f"command failed with exit code {r.returncode}: {cmd[0]} {cmd[1]} ...")


def _tool(name: str) -> str:
    """The real cmake / ninja binary: the PyPI packages (build requirements) first, then PATH.

    The PyPI packages' console scripts are wrappers that exec whichever package is importable,
    so we resolve the binary inside the package: that path is what CMake records in the build
    folder, and it is what the configure stamp must compare.
    """
    try:
        mod = __import__(name)
        bin_dir = getattr(mod, "CMAKE_BIN_DIR", None) or getattr(mod, "BIN_DIR", None)
        if bin_dir and (Path(bin_dir) / name).exists():
            return str(Path(bin_dir) / name)
    except Exception:
        pass
    found = shutil.which(name)
    if found:
        return found
    raise BuildError(f"{name} not found: pip install {name}")


def cmake_args(extra: list[str] | None = None) -> list[str]:
    args = list(BASE_CMAKE_ARGS)
    if shutil.which("ccache"):
        args += ["-DCMAKE_C_COMPILER_LAUNCHER=ccache", "-DCMAKE_CXX_COMPILER_LAUNCHER=ccache"]
    args += list(extra or [])
    args += shlex.split(os.environ.get("PYLLAMACY_CMAKE_ARGS", ""))
    return args


def _variant_targets(bdir: Path, ninja: str) -> list[str]:
    out = subprocess.run([ninja, "-C", str(bdir), "-t", "targets", "all"], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    names = sorted(set(re.findall(r"^bin/libggml-cpu-([A-Za-z0-9_.]+)\.so:", out, re.M)))
    wanted = os.environ.get("PYLLAMACY_CPU_VARIANTS")
    if wanted:
        keep = {w.strip() for w in wanted.split(",") if w.strip()}
        unknown = keep - set(names)
        if unknown:
            raise BuildError(f"PYLLAMACY_CPU_VARIANTS names unknown variants {sorted(unknown)}; "
                             f"this architecture has {names}")
        names = [n for n in names if n in keep]
    if os.environ.get("PYLLAMACY_ALLOW_AMX") != "1":
        names = [n for n in names if n not in AMX_VARIANTS]
    return [f"ggml-cpu-{n}" for n in names]


def build(src: Path, extra_cmake_args: list[str] | None = None,
          tools: list[str] | None = None) -> Path:
    """Configure (if needed) and build; return the folder holding the libraries (bin/)."""
    bdir = build_dir()
    bdir.mkdir(parents=True, exist_ok=True)
    cmake, ninja = _tool("cmake"), _tool("ninja")
    args = cmake_args(extra_cmake_args)
    stamp = bdir / ".pyllamacy-cmake-args"
    # the cmake binary is part of the stamp: with pip's build isolation it lives in a temporary
    # environment, and build.ninja's self-regeneration rule points at it
    wanted = "\n".join([str(src), cmake] + args)
    if (not (bdir / "build.ninja").exists() or not stamp.exists() or stamp.read_text() != wanted
            or not _recorded_cmake_exists(bdir)):
        _run([cmake, "-S", src, "-B", bdir, "-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}", *args])
        stamp.write_text(wanted)
    if tools is None:
        env_tools = os.environ.get("PYLLAMACY_TOOLS")
        tools = DEFAULT_TOOLS if env_tools is None else [t for t in env_tools.split(",") if t]
    # note: `ggml` depends on every CPU variant, so all are built; _variant_targets matters
    # when ggml is already up to date and for PYLLAMACY_CPU_VARIANTS
    targets = ["llama", "llama-common", "mtmd", "ggml", "ggml-base", *_variant_targets(bdir, ninja),
               "ggml-rpc", RPC_SERVER, *tools]
    jobs = os.environ.get("PYLLAMACY_JOBS") or str(os.cpu_count() or 2)
    env = dict(os.environ)
    # let ccache share objects between checkouts in different folders (CI clones, worktrees)
    env.setdefault("CCACHE_BASEDIR", os.path.commonpath([str(src), str(bdir)]))
    env.setdefault("CCACHE_NOHASHDIR", "1")
    _run([ninja, "-C", bdir, "-j", jobs, *targets], env=env)
    _drop_unsafe_variants(bdir / "bin")
    return bdir / "bin"


def _drop_unsafe_variants(bin_dir: Path) -> None:
    """ggml's `ggml` target depends on every CPU variant, so the AMX one gets built anyway.
    Remove it from bin/ so that neither our package nor llama.cpp's own programs (which pick
    the best-scoring module in their folder) can load it."""
    if os.environ.get("PYLLAMACY_ALLOW_AMX") == "1":
        return
    for name in AMX_VARIANTS:
        p = bin_dir / f"libggml-cpu-{name}.so"
        if p.exists():
            p.unlink()


def _recorded_cmake_exists(bdir: Path) -> bool:
    cache = bdir / "CMakeCache.txt"
    if not cache.exists():
        return False
    m = re.search(r"^CMAKE_COMMAND:INTERNAL=(.*)$", cache.read_text(errors="replace"), re.M)
    return bool(m) and Path(m.group(1).strip()).exists()


def libraries(bin_dir: Path) -> list[Path]:
    """The shared libraries an installed pyllamacy needs, under their run-time names."""
    libs = []
    for stem in ("libllama", "libllama-common", "libmtmd", "libggml", "libggml-base"):
        p = bin_dir / f"{stem}.so.0"
        if not p.exists():
            raise BuildError(f"{p} was not built")
        libs.append(p)
    variants = sorted(bin_dir.glob("libggml-cpu-*.so"))
    if os.environ.get("PYLLAMACY_ALLOW_AMX") != "1":
        variants = [v for v in variants if v.stem[len("libggml-cpu-"):] not in AMX_VARIANTS]
    wanted = os.environ.get("PYLLAMACY_CPU_VARIANTS")
    if wanted:
        keep = {w.strip() for w in wanted.split(",")}
        variants = [v for v in variants if v.stem[len("libggml-cpu-"):] in keep]
    if not variants:
        raise BuildError(f"no CPU backend variant in {bin_dir}")
    rpc = [bin_dir / "libggml-rpc.so", bin_dir / RPC_SERVER]
    for p in rpc:
        if not p.exists():
            raise BuildError(f"{p} was not built")
    return libs + variants + rpc
