"""Fetch and verify the pinned llama.cpp source (see vendor/README.md).

Used by setup.py; also runnable as ``python -m buildtools.vendor``.
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


def fetch(force: bool = False) -> Path:
    """Make sure vendor/llama.cpp holds the pinned source; return its path."""
    pin = load_pin()
    stamp = VENDOR_DIR / ".pyllamacy-pin"
    if not force and stamp.exists() and stamp.read_text().strip() == pin["sha256"]:
        return VENDOR_DIR
    with tempfile.TemporaryDirectory(prefix="pyllamacy-vendor-") as tmp:
        tmpdir = Path(tmp)
        cached = ROOT / "vendor" / pin["filename"]
        archive = cached if cached.exists() else (_pip_download(pin, tmpdir)
                                                  or _simple_index_download(pin, tmpdir))
        digest = sha256_of(archive)
        if digest != pin["sha256"]:
            raise VendorError(f"{archive.name}: sha256 {digest} does not match the pin "
                              f"{pin['sha256']}; refusing to build from it")
        staging = tmpdir / "llama.cpp"
        staging.mkdir()
        with tarfile.open(archive) as tar:
            members = list(_safe_members(tar, pin["subdir"]))
            if not members:
                raise VendorError(f"{archive.name} has no {pin['subdir']}/")
            tar.extractall(staging, members=members)
        if VENDOR_DIR.exists():
            shutil.rmtree(VENDOR_DIR)
        shutil.move(str(staging), VENDOR_DIR)
        (VENDOR_DIR / ".pyllamacy-pin").write_text(pin["sha256"] + "\n")
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
    return fetch()


if __name__ == "__main__":
    print(fetch(force="--force" in sys.argv))
