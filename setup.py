"""Build pyllamacy: llama.cpp through CMake + Ninja, then the Cython extension linked to it.

The installed package is self-contained: pyllamacy/lib/ holds libllama, libggml, libggml-base and
the CPU backend variants; the extension finds them through an $ORIGIN rpath.
See buildtools/llama_build.py for the environment knobs.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from buildtools import llama_build, vendor  # noqa: E402


class BuildLlama(build_ext):
    """Builds llama.cpp first, then cythonizes and links the extension against it."""

    def run(self):
        src = vendor.source_dir()
        bin_dir = llama_build.build(src)
        self._configure_extensions(src, bin_dir)
        super().run()
        self._install_libraries(src, bin_dir)

    def _configure_extensions(self, src: Path, bin_dir: Path):
        from Cython.Build import cythonize

        include_dirs = [str(ROOT / "pyllamacy" / "csrc"), str(src / "include"),
                        str(src / "ggml" / "include"), str(src / "tools" / "mtmd")]
        for ext in self.extensions:
            ext.include_dirs[:0] = include_dirs
            if ext.name == "pyllamacy._llama":
                # common/fit.h (libllama-common) and src/llama-ext.h (memory breakdown)
                ext.include_dirs += [str(src / "common"), str(src / "src")]
            if ext.name == "pyllamacy._chat":
                # llama.cpp's common chat layer (libllama-common) and its vendored headers
                ext.include_dirs += [str(src / "common"), str(src / "vendor")]
            ext.library_dirs.append(str(bin_dir))
        # cythonize() returns Cython's own Extension objects; keep setuptools' and take only the
        # generated C++ sources from them
        generated = cythonize(
            self.extensions,
            compiler_directives={"language_level": "3", "embedsignature": True,
                                 "binding": False,
                                 "cdivision": True},
            include_path=[str(ROOT)],
            quiet=True,
        )
        for ext, gen in zip(self.extensions, generated):
            ext.sources = list(gen.sources)

    def _package_dir(self) -> Path:
        return Path(self.get_ext_fullpath("pyllamacy._llama")).parent

    def _install_libraries(self, src: Path, bin_dir: Path):
        pkg = self._package_dir()
        lib_dir = pkg / "lib"
        if lib_dir.exists():
            shutil.rmtree(lib_dir)
        lib_dir.mkdir(parents=True)
        for lib in llama_build.libraries(bin_dir):
            shutil.copy2(lib.resolve(), lib_dir / lib.name)
        pin = json.loads(vendor.PIN_FILE.read_text())
        info = {
            "llama_cpp_commit": pin["llama_cpp_commit"] if not os.environ.get(vendor.ENV_DIR) else None,
            "llama_cpp_source": str(src),
            "build_bin_dir": str(bin_dir),
            "cmake_args": llama_build.cmake_args(),
        }
        (pkg / "_build_info.json").write_text(json.dumps(info, indent=2) + "\n")


# the Engine samples its slots in parallel with OpenMP where the compiler has it (GCC on Linux;
# llama.cpp's CPU backend links the same libgomp); elsewhere the loop runs in one thread
_OPENMP = ["-fopenmp"] if sys.platform.startswith("linux") else []

ext = Extension(
    "pyllamacy._llama",
    sources=["pyllamacy/_llama.pyx"],
    language="c++",
    libraries=["mtmd", "llama-common", "llama", "ggml", "ggml-base"],
    extra_compile_args=["-O2", "-std=c++17", "-Wno-unused-function", "-Wno-unreachable-code"]
    + _OPENMP,
    extra_link_args=["-Wl,-rpath,$ORIGIN/lib"] + _OPENMP,
)

# llama.cpp's common chat layer: templates, tool-call parsers, JSON schema -> grammar
chat_ext = Extension(
    "pyllamacy._chat",
    sources=["pyllamacy/_chat.pyx"],
    language="c++",
    libraries=["llama-common", "llama", "ggml", "ggml-base"],
    extra_compile_args=["-O2", "-std=c++17", "-Wno-unused-function", "-Wno-unreachable-code"],
    extra_link_args=["-Wl,-rpath,$ORIGIN/lib"],
)

setup(ext_modules=[ext, chat_ext], cmdclass={"build_ext": BuildLlama})
