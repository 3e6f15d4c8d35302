"""Fetch and verify the pinned llama.cpp source (see vendor/README.md).

From the one checked sdist archive of llama-cpp-python it extracts two trees:
vendor/llama.cpp (the source pyllamacy builds) and vendor/llama_cpp_python/llama_cpp/*.py
(llama-cpp-python's own modules, read by tests/test_compat_surface.py to measure how much of
its public surface pyllamacy.llama_cpp covers). Each tree carries a stamp with the archive's
sha256; a tree that is missing or stamped for another pin is extracted again (from the cached
archive vendor/<filename> when present, else a fresh download).

Used by setup.py; also runnable as ``python -m buildtools.vendor [--force] [--archive PATH]``
(--archive: extract from that local copy of the pinned archive; its sha256 is still checked).
"""
from __future__ import annotations

import hashlib
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIN_FILE = ROOT / "vendor" / "llama.cpp.json"
VENDOR_DIR = ROOT / "vendor" / "llama.cpp"
PY_SOURCE_DIR = ROOT / "vendor" / "llama_cpp_python"
STAMP = ".pyllamacy-pin"
ENV_DIR = "PYLLAMACY_LLAMA_CPP_DIR"


class VendorError(RuntimeError):
    pass


def load_pin() -> dict:
    return json.loads(PIN_FILE.read_text())


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _pip_download(pin: dict, dest: Path) -> Path | None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "--no-build-isolation", "-d", str(dest), f"{pin['package']}=={pin['version']}"]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    archive = dest / pin["filename"]
    if archive.exists():
        return archive
    print(f"[pyllamacy] pip download did not produce {pin['filename']}:\n{r.stdout[-2000:]}",
          file=sys.stderr)
    return None


def _simple_index_download(pin: dict, dest: Path) -> Path:
    """PEP 503 simple index (what pip itself reads); the sha256 is checked by the caller."""
    base = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    with urllib.request.urlopen(f"{base}/{pin['package']}/", timeout=60) as resp:
        page = resp.read().decode("utf-8", "replace")
    for href in re.findall(r'href="([^"]+)"', page):
        url = urllib.parse.urljoin(f"{base}/{pin['package']}/", html.unescape(href))
        if url.split("#")[0].endswith("/" + pin["filename"]):
            archive = dest / pin["filename"]
            with urllib.request.urlopen(url, timeout=600) as r, open(archive, "wb") as out:
                shutil.copyfileobj(r, out)
            return archive
    raise VendorError(f"{pin['filename']} is not listed on {base}/{pin['package']}/")


def _safe_members(tar: tarfile.TarFile, prefix: str):
    for m in tar.getmembers():
        name = m.name
        if not (name == prefix or name.startswith(prefix + "/")):
            continue
        if name.startswith("/") or ".." in Path(name).parts:
            raise VendorError(f"unsafe path in archive: {name}")
        if m.issym() or m.islnk():
            continue  # the llama.cpp tree needs no links
        m.name = name[len(prefix):].lstrip("/") or "."
        yield m


def _stamped(tree: Path, pin: dict) -> bool:
    stamp = tree / STAMP
    return stamp.exists() and stamp.read_text().strip() == pin["sha256"]


def _checked_archive(pin: dict, tmpdir: Path, archive: Path | None = None) -> Path:
    """The pinned sdist: `archive` if given, else the cached vendor/<filename>, else a
    download; refused unless its sha256 matches the pin."""
    if archive is None:
        cached = ROOT / "vendor" / pin["filename"]
        archive = cached if cached.exists() else (_pip_download(pin, tmpdir)
                                                  or _simple_index_download(pin, tmpdir))
    digest = sha256_of(archive)
    if digest != pin["sha256"]:
        raise VendorError(f"{archive.name}: sha256 {digest} does not match the pin "
                          f"{pin['sha256']}; refusing to build from it")
    return archive


def _install_tree(staging: Path, dest: Path, pin: dict) -> None:
    if dest.is_symlink():
        dest.unlink()
    elif dest.exists():
        shutil.rmtree(dest)
    shutil.move(str(staging), dest)
    (dest / STAMP).write_text(pin["sha256"] + "\n")


def _extract_llama_cpp(tar: tarfile.TarFile, pin: dict, tmpdir: Path) -> None:
    staging = tmpdir / "llama.cpp"
    staging.mkdir()
    members = list(_safe_members(tar, pin["subdir"]))
    if not members:
        raise VendorError(f"{pin['filename']} has no {pin['subdir']}/")
    tar.extractall(staging, members=members)
    _install_tree(staging, VENDOR_DIR, pin)


def _extract_python_sources(tar: tarfile.TarFile, pin: dict, tmpdir: Path) -> None:
    """llama-cpp-python's own modules (llama_cpp/*.py, not its subpackages), for reading."""
    top = pin["subdir"].split("/")[0]              # llama_cpp_python-<version>
    staging = tmpdir / "llama_cpp_python"
    (staging / "llama_cpp").mkdir(parents=True)
    members = [m for m in _safe_members(tar, f"{top}/llama_cpp")
               if m.isfile() and "/" not in m.name and m.name.endswith(".py")]
    if not members:
        raise VendorError(f"{pin['filename']} has no {top}/llama_cpp/*.py")
    tar.extractall(staging / "llama_cpp", members=members)
    _install_tree(staging, PY_SOURCE_DIR, pin)


def fetch(force: bool = False, archive: Path | None = None,
          python_sources: bool = True) -> Path:
    """Make sure vendor/llama.cpp holds the pinned source (and vendor/llama_cpp_python the
    pinned llama-cpp-python modules, which only the tests read); return the llama.cpp path.
    python_sources=False (a build): the Python modules are extracted when the archive is
    fetched for llama.cpp anyway, never fetched for their own sake (offline builds of an
    existing tree stay offline)."""
    pin = load_pin()
    need_cpp = force or not _stamped(VENDOR_DIR, pin)
    need_py = force or not _stamped(PY_SOURCE_DIR, pin)
    if not need_cpp and not python_sources and archive is None:
        need_py = False
    if not (need_cpp or need_py):
        return VENDOR_DIR
    with tempfile.TemporaryDirectory(prefix="pyllamacy-vendor-") as tmp:
        tmpdir = Path(tmp)
        checked = _checked_archive(pin, tmpdir, archive)
        with tarfile.open(checked) as tar:
            if need_cpp:
                _extract_llama_cpp(tar, pin, tmpdir)
            if need_py:
                _extract_python_sources(tar, pin, tmpdir)
    return VENDOR_DIR


def source_dir() -> Path:
    """The llama.cpp tree to build: $PYLLAMACY_LLAMA_CPP_DIR, else the pinned vendor copy."""
    env = os.environ.get(ENV_DIR)
    if env:
        p = Path(env).expanduser().resolve()
        if not (p / "include" / "llama.h").exists():
            raise VendorError(f"{ENV_DIR}={env} does not look like a llama.cpp checkout "
                              "(no include/llama.h)")
        return p
    return fetch(python_sources=False)


def _main(argv) -> None:
    archive = None
    if "--archive" in argv:
        i = argv.index("--archive")
        if i + 1 >= len(argv):
            raise SystemExit("--archive needs a path to the pinned sdist")
        archive = Path(argv[i + 1])
    print(fetch(force="--force" in argv, archive=archive))


if __name__ == "__main__":
    _main(sys.argv[1:])
