"""The `pyllamacy` command (pyllamacy/cli.py, pyllamacy/bench.py), run as a subprocess."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pyllamacy
from serving import run_cli

# the same pyllamacy this test process imported, whatever the working directory
_PKG_PARENT = str(Path(pyllamacy.__file__).resolve().parent.parent)


def _one_line_error(r):
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    return lines[0]


# ---------------------------------------------------------------------------------- info


def test_info_text():
    r = run_cli("info")
    assert r.returncode == 0, r.stderr
    assert "llama.cpp commit" in r.stdout
    assert "CPU variant" in r.stdout
    assert f"pyllamacy         {pyllamacy.__version__}" in r.stdout
    assert "backends:" in r.stdout and "CPU" in r.stdout


def test_info_json():
    r = run_cli("info", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["pyllamacy_version"] == pyllamacy.__version__
    assert d["cpu_variant"] == pyllamacy.cpu_variant()
    assert d["llama_cpp_commit"] == pyllamacy.build_info().get("llama_cpp_commit")
    assert any(b["name"] == "CPU" for b in d["backends"])
    assert any(dev["type"] == "cpu" for dev in d["devices"])
    assert isinstance(d["backend_report"], dict) and d["backend_report"]
    assert d["system_info"]


def test_version_and_help():
    r = run_cli("--version")
    assert r.returncode == 0 and pyllamacy.__version__ in r.stdout
    r = run_cli()
    assert r.returncode == 2 and "usage" in r.stderr


# ------------------------------------------------------------------------------ complete


@pytest.mark.parametrize("engine", ["auto", "core"])
def test_complete_greedy(smollm2_path, engine):
    r = run_cli("complete", "The capital of France is", "--model", smollm2_path, "-n", "8",
                "--temperature", "0", "--threads", "2", "--n-ctx", "256", "--engine", engine)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip(), "no text generated"
    assert "Traceback" not in r.stderr


def test_complete_engines_agree(smollm2_path):
    """Greedy output is the same through pyllamacy.Llama and through the core API."""
    try:
        import pyllamacy.llama  # noqa: F401
    except ImportError:
        pytest.skip("pyllamacy.llama is not there yet")
    args = ("complete", "Once upon a time", "--model", smollm2_path, "-n", "12",
            "--temperature", "0", "--n-ctx", "256")
    a = run_cli(*args, "--engine", "llama")
    b = run_cli(*args, "--engine", "core")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert a.stdout == b.stdout


@pytest.mark.parametrize("engine", ["llama", "core"])
def test_complete_split_options(smollm2_path, engine):
    """--split-mode / --main-gpu / --tensor-split reach the model (one device here: the greedy
    text is the plain one); bad values are a usage error naming the option."""
    base = ("complete", "Once upon a time", "--model", smollm2_path, "-n", "8",
            "--temperature", "0", "--n-ctx", "256", "--engine", engine)
    plain = run_cli(*base)
    split = run_cli(*base, "--split-mode", "row", "--main-gpu", "0", "--tensor-split", "3,1")
    assert plain.returncode == 0 and split.returncode == 0, plain.stderr + split.stderr
    assert split.stdout == plain.stdout
    for bad, opt in ((["--tensor-split", "1,x"], "--tensor-split"),
                     (["--tensor-split", "0,0"], "--tensor-split"),
                     (["--split-mode", "diagonal"], "--split-mode"),
                     (["--ngl", "many"], "--ngl")):
        r = run_cli(*base, *bad)
        assert r.returncode == 2 and opt in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_complete_stdin_no_stream_and_stop(smollm2_path):
    r = run_cli("complete", "--model", smollm2_path, "-n", "16", "--temperature", "0",
                "--no-stream", "--n-ctx", "256", "--stats", input="Count: 1, 2, 3,")
    assert r.returncode == 0, r.stderr
    assert "tokens in" in r.stderr
    full = r.stdout
    # a stop string taken from the middle of the greedy text: the text ends right before it
    i = len(full) // 2
    stop = full[i:i + 3]
    if len(full) < 6 or not stop.strip():
        pytest.skip(f"greedy output unsuitable for picking a stop string: {full!r}")
    r2 = run_cli("complete", "--model", smollm2_path, "-n", "16", "--temperature", "0",
                 "--n-ctx", "256", "--stop", stop, input="Count: 1, 2, 3,")
    assert r2.returncode == 0, r2.stderr
    assert r2.stdout == full[:full.index(stop)]


def test_complete_missing_model(tmp_path):
    missing = tmp_path / "nope.gguf"
    r = run_cli("complete", "hi", "--model", str(missing), "-n", "4")
    assert r.returncode == 2
    line = _one_line_error(r)
    assert str(missing) in line and "no such file" in line
    assert r.stdout == ""


def test_complete_not_a_model(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all, just text" * 4)
    r = run_cli("complete", "hi", "--model", str(bad), "-n", "4")
    assert r.returncode == 2
    assert "not a GGUF file" in _one_line_error(r)
    r = run_cli("complete", "hi", "--model", str(tmp_path), "-n", "4")
    assert r.returncode == 2
    assert "directory" in _one_line_error(r)


def test_complete_bad_settings(smollm2_path):
    r = run_cli("complete", "hi", "--model", smollm2_path, "-n", "0")
    assert r.returncode == 2 and "--max-tokens" in _one_line_error(r)
    r = run_cli("complete", "hi", "--model", smollm2_path, "-n", "4", "--top-p", "7",
                "--engine", "core")
    assert r.returncode == 2 and "top_p" in _one_line_error(r)
    r = run_cli("complete", "hi", "--model", smollm2_path, "-n", "abc")
    assert r.returncode == 2 and "invalid int value" in r.stderr


def test_complete_prompt_too_long(smollm2_path):
    r = run_cli("complete", "word " * 600, "--model", smollm2_path, "-n", "4", "--n-ctx", "64",
                "--engine", "core")
    assert r.returncode == 2
    assert "n_ctx" in _one_line_error(r)


def test_complete_ctrl_c(smollm2_path):
    """SIGINT while generating: exit code 130, no traceback."""
    import signal
    import time

    e = dict(os.environ)
    e["PYTHONPATH"] = _PKG_PARENT + os.pathsep + e.get("PYTHONPATH", "")
    p = subprocess.Popen([sys.executable, "-m", "pyllamacy", "complete", "Tell me a long story",
                          "--model", smollm2_path, "-n", "-1", "--n-ctx", "4096",
                          # seed 3 runs to the end of the context here (4091 tokens; seed 1
                          # stopped after 20, racing the signal against the process's exit)
                          "--temperature", "0.8", "--seed", "3"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e, cwd=_PKG_PARENT)
    try:
        # wait for the first generated bytes, then interrupt
        first = p.stdout.read(1)
        assert first, p.stderr.read().decode()
        time.sleep(0.2)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    if p.returncode == 0:
        pytest.skip("the generation ended before the signal arrived")
    assert p.returncode == 130, err.decode()
    assert b"Traceback" not in err


# ------------------------------------------------------------------------------ quantize


def test_quantize_errors(tmp_path, smollm2_path):
    r = run_cli("quantize", str(tmp_path / "missing.gguf"), str(tmp_path / "o.gguf"), "q4_0")
    assert r.returncode == 2 and "no such file" in _one_line_error(r)
    r = run_cli("quantize", smollm2_path, str(tmp_path / "o.gguf"), "q9_9")
    assert r.returncode == 2 and "unknown quantization type" in _one_line_error(r)
    r = run_cli("quantize", smollm2_path, str(tmp_path / "o.gguf"), "q4_0", "--quiet")
    assert r.returncode == 2 and "--allow-requantize" in _one_line_error(r)


def test_quantize_requantize(tmp_path, smollm2_path):
    dst = tmp_path / "out.q8_0.gguf"
    r = run_cli("quantize", smollm2_path, str(dst), "q8_0", "--allow-requantize", "-t", "2")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(dst)
    assert "100%" in r.stderr
    assert pyllamacy.check_gguf(dst)[0] == 3
    r = run_cli("quantize", smollm2_path, str(dst), "q8_0", "--allow-requantize")
    assert r.returncode == 2 and "--force" in _one_line_error(r)


# --------------------------------------------------------------------------------- bench


def _llama_bench_path():
    d = os.environ.get("PYLLAMACY_LLAMA_BIN") or pyllamacy.build_info().get("build_bin_dir")
    return Path(d) / "llama-bench" if d and (Path(d) / "llama-bench").exists() else None


def _llama_bench_present() -> bool:
    return _llama_bench_path() is not None


def test_bench_smoke(smollm2_path):
    args = ["bench", "--model", smollm2_path, "--reps", "1", "--n-prompt", "32", "--n-gen", "8",
            "--threads", "2", "--no-llama-cpp-python", "--json", "--quiet"]
    if not _llama_bench_present():
        args.append("--no-llama-bench")
    else:
        # given relative to the folder the command runs in (run_cli: the package's parent):
        # the engines run in folders of their own, so the path must be resolved before that
        run_dir = Path(pyllamacy.__file__).resolve().parent.parent
        args += ["--llama-bench", os.path.relpath(_llama_bench_path(), run_dir)]
    r = run_cli(*args, timeout=600)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    ours = rep["engines"]["pyllamacy"]
    assert ours["error"] is None
    for t in ("pp", "tg", "tg_decode"):
        assert len(ours["samples"][t]) == 1 and ours["samples"][t][0] > 0
    assert rep["threads"] == 2 and rep["n_prompt"] == 32 and rep["n_gen"] == 8
    assert rep["skipped"]["llama-cpp-python"] == "--no-llama-cpp-python"
    if _llama_bench_present():
        lb = rep["engines"]["llama-bench"]
        assert lb["error"] is None, lb["error"]
        assert lb["samples"]["pp"][0] > 0 and lb["samples"]["tg"][0] > 0
        assert rep["ratios"]["llama-bench"]["pp"] > 0


def test_bench_markdown_and_bad_model(smollm2_path, tmp_path):
    r = run_cli("bench", "--model", smollm2_path, "--reps", "1", "--n-prompt", "16", "--n-gen",
                "8", "--no-llama-cpp-python", "--no-llama-bench", "--markdown", "--quiet",
                timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("### ")
    assert "| pyllamacy" in r.stdout and "pp16" in r.stdout and "tg8 decode-only" in r.stdout
    r = run_cli("bench", "--model", str(tmp_path / "none.gguf"), "--no-llama-cpp-python")
    assert r.returncode == 2 and "no such file" in _one_line_error(r)
