"""Backend packages: discovery (CPU-only, fake packages in a temp folder) and the GPU subset
(skipped unless a GPU backend such as pyllamacy-cuda is installed and finds a device).

Discovery runs at `import pyllamacy`, so each discovery case imports pyllamacy in a fresh
interpreter with the fake package on PYTHONPATH.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

import pyllamacy

# the folder holding the pyllamacy this process imported (installed or in-place build)
_PKG_PARENT = str(Path(pyllamacy.__file__).resolve().parent.parent)

ROOT = Path(__file__).resolve().parent.parent
discovery = importlib.import_module("pyllamacy.backends")


# ------------------------------------------------------------------ discovery, CPU only

def _fake_package(site: Path, name: str, body: str, version: str = "0.0.1") -> None:
    """A package `fake_<name>` with an entry point in group pyllamacy.backends."""
    pkg = site / f"fake_{name}"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent(body))
    di = site / f"fake_{name}-{version}.dist-info"
    di.mkdir()
    (di / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fake-{name}\nVersion: {version}\n")
    (di / "entry_points.txt").write_text(
        f"[pyllamacy.backends]\n{name} = fake_{name}:describe\n")


def _import_report(site: Path, env: dict | None = None, code: str = "") -> dict:
    """Import pyllamacy in a fresh interpreter; return backend_report, packages, warnings."""
    script = textwrap.dedent(f"""
        import json, warnings, importlib
        warnings.simplefilter("always")
        with warnings.catch_warnings(record=True) as w:
            import pyllamacy
        d = importlib.import_module("pyllamacy.backends")
        out = {{"report": pyllamacy.backend_report(),
               "packages": [{{k: v for k, v in p.items() if isinstance(v, (str, int, list))}}
                            for p in d.packages()],
               "warnings": [str(x.message) for x in w],
               "cpu": pyllamacy.cpu_variant(),
               "backends_is_function": callable(pyllamacy.backends)}}
    """) + textwrap.dedent(code) + '\nprint("JSON" + json.dumps(out))\n'

    e = dict(os.environ)
    e.pop("PYLLAMACY_BACKEND", None)
    e["PYTHONPATH"] = os.pathsep.join([str(site)] + [p for p in sys.path if p])
    e.update(env or {})
    # cwd: `-c` puts the working directory first on sys.path; a source checkout there would
    # shadow the installed package
    r = subprocess.run([sys.executable, "-c", script], env=e, cwd=_PKG_PARENT, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("JSON")][-1]
    return json.loads(line[4:])


def ONLY(name: str) -> dict:
    """Ask for exactly this backend: where a real GPU backend is installed (the GPU machine),
    "auto" would skip a second GPU backend once the real one drives the GPU."""
    return {"PYLLAMACY_BACKEND": name}


GOOD = """
    import os
    HERE = os.path.dirname(__file__)
    def describe():
        return {{"name": "{name}", "label": "{label}", "kind": "gpu", "version": "0.0.1",
                "core_version": {core!r}, "modules": [os.path.join(HERE, "libggml-{name}.so")],
                "preload": [], "missing": [], "driver": {driver!r}}}
"""


def test_broken_package_is_reported_not_raised(tmp_path):
    _fake_package(tmp_path, "boom", "def describe():\n    raise RuntimeError('kaput')\n")
    out = _import_report(tmp_path)
    r = out["report"]["BOOM"]
    assert r["status"] == "failed" and "kaput" in r["reason"]
    assert out["cpu"] and out["backends_is_function"]


def test_missing_driver_is_skipped_with_reason(tmp_path):
    _fake_package(tmp_path, "fakegpu", GOOD.format(name="fakegpu", label="FakeGPU",
                                                   core=pyllamacy.__version__,
                                                   driver="libpyllamacy-no-such-driver.so.1"))
    (tmp_path / "fake_fakegpu" / "libggml-fakegpu.so").write_bytes(b"not an ELF")
    r = _import_report(tmp_path, env=ONLY("fakegpu"))["report"]["FakeGPU"]
    assert r["status"] == "skipped"
    assert "installed but no driver found" in r["reason"]


def test_version_mismatch_names_the_fix(tmp_path):
    _fake_package(tmp_path, "old", GOOD.format(name="old", label="Old", core="0.0.0-old",
                                               driver=None))
    (tmp_path / "fake_old" / "libggml-old.so").write_bytes(b"")
    r = _import_report(tmp_path, env=ONLY("old"))["report"]["Old"]
    assert r["status"] == "failed"
    assert "pyllamacy 0.0.0-old" in r["reason"] and "pip install" in r["reason"]


def test_unloadable_module_fails_cleanly(tmp_path):
    _fake_package(tmp_path, "junk", GOOD.format(name="junk", label="Junk",
                                                core=pyllamacy.__version__, driver=None))
    (tmp_path / "fake_junk" / "libggml-junk.so").write_bytes(b"not an ELF")
    out = _import_report(tmp_path, env=ONLY("junk"), code=textwrap.dedent("""
        import os
        m = pyllamacy.Model(os.environ["PYLLAMACY_TEST_MODEL"]) if os.environ.get(
            "PYLLAMACY_TEST_MODEL") else None
        out["cpu_ok"] = m is None or m.n_vocab > 0
    """))
    r = out["report"]["Junk"]
    assert r["status"] == "failed" and "could not load" in r["reason"]
    assert out["cpu_ok"]


def test_missing_module_file(tmp_path):
    _fake_package(tmp_path, "gone", GOOD.format(name="gone", label="Gone",
                                                core=pyllamacy.__version__, driver=None))
    r = _import_report(tmp_path, env=ONLY("gone"))["report"]["Gone"]
    assert r["status"] == "failed" and "missing" in r["reason"]


def test_backend_env_cpu_skips_everything(tmp_path):
    _fake_package(tmp_path, "junk", GOOD.format(name="junk", label="Junk",
                                                core=pyllamacy.__version__, driver=None))
    r = _import_report(tmp_path, env={"PYLLAMACY_BACKEND": "cpu"})["report"]["Junk"]
    assert r["status"] == "skipped" and "PYLLAMACY_BACKEND=cpu" in r["reason"]


def test_backend_env_unknown_warns(tmp_path):
    out = _import_report(tmp_path, env={"PYLLAMACY_BACKEND": "nosuch"})
    assert out["report"]["NOSUCH"]["status"] == "failed"
    assert any("not installed" in w for w in out["warnings"])


def test_real_module_through_backend_path(tmp_path):
    """PYLLAMACY_BACKEND_PATH loads a real ggml module (a copy of the CPU variant in use,
    renamed) through the same path as a package, and records it."""
    src = pyllamacy.backend_report()[f"cpu-{pyllamacy.cpu_variant()}"]["path"]
    folder = tmp_path / "mods"
    folder.mkdir()
    (folder / "libggml-extra.so").write_bytes(Path(src).read_bytes())
    out = _import_report(tmp_path / "empty", env={"PYLLAMACY_BACKEND_PATH": str(folder),
                                                  **ONLY("extra")})
    pk = [p for p in out["packages"] if p["name"] == "extra"][0]
    assert pk["status"] == "loaded", pk


def test_built_wheel_is_discovered(tmp_path):
    """A wheel from build_backends.make_wheel, installed with pip --target, is found through
    its entry point; the dummy module then fails to load and says so."""
    try:
        importlib.metadata.distribution("pyllamacy-vulkan")
        pytest.skip("a real pyllamacy-vulkan is installed: it would shadow the dummy wheel")
    except importlib.metadata.PackageNotFoundError:
        pass
    sys.path.insert(0, str(ROOT))
    try:
        import build_backends as bb
    finally:
        sys.path.pop(0)
    spec = dict(bb.BACKENDS["vulkan"], driver=None)
    mod = tmp_path / "libggml-vulkan.so"
    mod.write_bytes(b"dummy")
    wheel = bb.make_wheel("vulkan", spec, [mod], plat_tag="manylinux_2_28_x86_64",
                          out_dir=tmp_path / "dist")
    bb.check_wheel(wheel, spec)
    with zipfile.ZipFile(wheel) as z:
        assert "pyllamacy_vulkan/lib/libggml-vulkan.so" in z.namelist()
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile",
                    "--target", str(site), str(wheel)], check=True)
    out = _import_report(site, env=ONLY("vulkan"))
    r = out["report"]["Vulkan"]
    assert r["status"] == "failed" and "could not load backend module" in r["reason"]
    assert r["path"].endswith("pyllamacy_vulkan/lib/libggml-vulkan.so")


def test_backend_table_is_consistent():
    sys.path.insert(0, str(ROOT))
    try:
        import build_backends as bb
    finally:
        sys.path.pop(0)
    extras = (ROOT / "pyproject.toml").read_text()
    for name, spec in bb.BACKENDS.items():
        assert spec["modules"] and spec["targets"] and spec["platforms"], name
        assert f'"{spec["package"]}==' in extras, f"no extra pins {spec['package']}"


def test_cuda_module_must_need_its_own_runtime(monkeypatch, tmp_path):
    """build_backends refuses a cuda12 wheel whose module needs CUDA 13's runtime (built by the
    wrong nvcc), and accepts the matching one."""
    sys.path.insert(0, str(ROOT))
    try:
        import build_backends as bb
    finally:
        sys.path.pop(0)
    mod = tmp_path / "libggml-cuda.so"
    mod.write_bytes(b"")
    needs = {"x": []}
    monkeypatch.setattr(bb, "_needed", lambda p: needs["x"])
    needs["x"] = ["libggml-base.so.0", "libcudart.so.13", "libcublas.so.13", "libcuda.so.1"]
    with pytest.raises(bb.BuildError, match="libcudart.so.13"):
        bb.check_runtime_abi("cuda12", bb.BACKENDS["cuda12"], [mod])
    bb.check_runtime_abi("cuda13", bb.BACKENDS["cuda13"], [mod])
    needs["x"] = ["libcudart.so.12", "libcublas.so.12", "libcuda.so.1"]
    bb.check_runtime_abi("cuda12", bb.BACKENDS["cuda12"], [mod])
    with pytest.raises(bb.BuildError):
        bb.check_runtime_abi("cuda13", bb.BACKENDS["cuda13"], [mod])
    bb.check_runtime_abi("vulkan", bb.BACKENDS["vulkan"], [mod])          # no CUDA runtime


# ------------------------------------------------------------------ GPU subset

def _gpu_devices():
    return [d for d in pyllamacy.devices() if d["type"] == "gpu"]


_skip_without_gpu = pytest.mark.skipif(not _gpu_devices(), reason="no GPU backend with a device "
                                       "loaded (pip install 'pyllamacy[cuda13]')")


def gpu(test):
    """Marker `gpu` + skip without a GPU (a hardware skip: stays a skip under CI=true)."""
    return pytest.mark.gpu(_skip_without_gpu(test))

PROMPTS = ["The capital of France is", "def fibonacci(n):",
           "Once upon a time, in a small village,"]


def _greedy(model, prompt, n, **ctx_kw):
    with pyllamacy.Context(model, n_ctx=256, **ctx_kw) as ctx, \
            pyllamacy.Sampler(model) as s:
        ctx.eval(model.tokenize(prompt))
        logits = np.array(ctx.logits(-1), dtype=np.float64) if hasattr(ctx, "logits") else None
        s.greedy()
        return ctx.generate(s, max_tokens=n).run(), logits


def _free_gpu_bytes():
    return sum(d["memory_free"] for d in _gpu_devices())


@pytest.fixture(scope="module")
def cpu_model(smollm2_path):
    m = pyllamacy.Model(smollm2_path, n_gpu_layers=0)
    yield m
    m.close()


@gpu
def test_gpu_backend_loaded_and_reported():
    rep = pyllamacy.backend_report()
    loaded = [k for k, v in rep.items() if v["status"] == "loaded" and not k.startswith("cpu")]
    assert loaded, rep
    assert pyllamacy.supports_gpu_offload()


def _forced_logits(model, prompt_toks, toks, **ctx_kw):
    """Logits at every generated position when `toks` are fed after the prompt (teacher
    forcing): row j is what the model predicts for toks[j]."""
    with pyllamacy.Context(model, n_ctx=256, **ctx_kw) as ctx:
        ctx.eval(list(prompt_toks) + list(toks), logits="all")
        start = len(prompt_toks) - 1
        return np.stack([np.asarray(ctx.logits(start + j), dtype=np.float64)
                         for j in range(len(toks))])


# Q4_1 weights: the CPU and GPU kernels quantize activations and accumulate in other orders,
# so the same greedy step can pick another token where the top two are this close (logits);
# seen: 0.36 apart on the CPU, -0.12 on Vulkan, 16/16 vs 5/16 free-running agreement
NEAR_TIE = 1.0


@gpu
@pytest.mark.parametrize("prompt", PROMPTS)
def test_gpu_greedy_matches_cpu(cpu_model, smollm2_path, prompt):
    """Free-running greedy output can part for good at one near-tie, so the check is per
    position with the CPU's tokens fed to both: the GPU's argmax is the CPU's, or the CPU
    ranked it within NEAR_TIE of its own choice."""
    n = 16
    ptoks = cpu_model.tokenize(prompt)
    cpu_toks, cpu_logits = _greedy(cpu_model, prompt, n, offload_kqv=False, op_offload=False)
    lc = _forced_logits(cpu_model, ptoks, cpu_toks, offload_kqv=False, op_offload=False)
    with pyllamacy.Model(smollm2_path, n_gpu_layers=-1) as gm:
        gpu_toks, gpu_logits = _greedy(gm, prompt, n)
        lg = _forced_logits(gm, ptoks, cpu_toks)
    same = 0
    for a, b in zip(cpu_toks, gpu_toks):
        if a != b:
            break
        same += 1
    print(f"{prompt!r}: {same}/{n} free-running greedy tokens agree")
    ties = []
    for j in range(n):
        c, g = int(np.argmax(lc[j])), int(np.argmax(lg[j]))
        if c != g:
            margin = lc[j][c] - lc[j][g]
            ties.append((j, c, g, round(float(margin), 3)))
            assert margin < NEAR_TIE, (j, c, g, margin)
    print(f"  teacher-forced: {n - len(ties)}/{n} positions agree; near-ties {ties}")
    # every disagreement is a near-tie (checked above); code prompts have many of them
    # (seen on an H100 with CUDA: 3 of 16, margins 0.15-0.67)
    assert len(ties) <= n // 4, ties
    if cpu_logits is not None:
        # seen on an H200 and an H100 (CUDA): 5e-2 to 1.7e-1 with all greedy tokens agreeing
        rel = np.linalg.norm(gpu_logits - cpu_logits) / np.linalg.norm(cpu_logits)
        print(f"  last-position logits: ||gpu-cpu||/||cpu|| = {rel:.2e}")
        assert int(np.argmax(gpu_logits)) == int(np.argmax(cpu_logits))
        assert rel < 0.3


@gpu
def test_gpu_embeddings_close_to_cpu(cpu_model, smollm2_path):
    text = "The quick brown fox jumps over the lazy dog."

    def emb(model, **kw):
        with pyllamacy.Context(model, n_ctx=128, embeddings=True, pooling_type="mean",
                               **kw) as ctx:
            ctx.eval(model.tokenize(text))
            return np.asarray(ctx.seq_embeddings(0), dtype=np.float64)

    e_cpu = emb(cpu_model, offload_kqv=False, op_offload=False)
    with pyllamacy.Model(smollm2_path, n_gpu_layers=-1) as gm:
        e_gpu = emb(gm)
    cos = float(e_cpu @ e_gpu / (np.linalg.norm(e_cpu) * np.linalg.norm(e_gpu)))
    print(f"embedding cosine(cpu, gpu) = {cos:.6f}")
    assert cos > 0.99          # seen: 0.9941 (H200, Q4_1)


@gpu
def test_ngl0_keeps_weights_and_kv_off_the_gpu(smollm2_path):
    size = os.path.getsize(smollm2_path)
    base = _free_gpu_bytes()            # CUDA context already made by devices()
    uses = {}
    for label, ngl, kw in [("ngl=0, offload_kqv=False, op_offload=False", 0,
                            dict(offload_kqv=False, op_offload=False)),
                           ("ngl=0, offload_kqv=False (op_offload on)", 0,
                            dict(offload_kqv=False)),
                           ("ngl=-1", -1, {})]:
        with pyllamacy.Model(smollm2_path, n_gpu_layers=ngl) as m, \
                pyllamacy.Context(m, n_ctx=2048, **kw) as ctx:
            ctx.eval(m.tokenize("Hello"))
            uses[label] = base - _free_gpu_bytes()
    for k, v in uses.items():
        print(f"GPU memory used with {k}: {v / 2**20:.1f} MiB (model file {size / 2**20:.1f} MiB)")
    strict = uses["ngl=0, offload_kqv=False, op_offload=False"]
    assert strict < 16 * 2**20          # seen: 0.0 MiB
    # with op_offload (llama.cpp's default) large batches run on the GPU from a compute buffer
    # (seen: 130 MiB at n_ctx 2048), the weights being copied per batch, never kept there
    assert uses["ngl=0, offload_kqv=False (op_offload on)"] < uses["ngl=-1"]
    assert uses["ngl=-1"] > 0.8 * size      # the measurement itself sees offloaded weights


@gpu
def test_info_shows_gpu(smollm2_path):
    r = subprocess.run([sys.executable, "-m", "pyllamacy", "info", "--json"],
                       stdout=subprocess.PIPE, text=True, timeout=120, cwd=_PKG_PARENT)
    d = json.loads(r.stdout)
    assert any(dev["type"] == "gpu" for dev in d["devices"])


def _log_softmax(row):
    row = np.asarray(row, dtype=np.float64)
    m = row.max()
    return row - (m + np.log(np.exp(row - m).sum()))


@gpu
def test_gpu_engine_logprobs(smollm2_path):
    """The Engine's log-probabilities with every layer on the GPU (logits read from the
    device's output buffer, at every prompt position with prompt_logprobs): equal to the
    log-softmax of a GPU Context's logits for the same tokens, decoded the same way."""
    n = 8
    with pyllamacy.Model(smollm2_path, n_gpu_layers=-1) as gm:
        prompt = gm.tokenize(PROMPTS[2])
        with pyllamacy.Context(gm, n_ctx=512, n_seq_max=2) as ctx, \
                pyllamacy.Engine(ctx) as eng:
            rid = eng.submit(prompt, pyllamacy.Sampler(gm).greedy(), max_tokens=n,
                             logprobs=3, prompt_logprobs=True)
            toks, lps, plps, fin = [], [], [], None
            while fin is None:
                for r, tok, f, lp in eng.step(True):
                    if tok >= 0:
                        toks.append(tok)
                        lps.append(lp)
                    fin = f if f is not None else fin
                plps += eng.last_prompt_logprobs()
        assert [p for _, p, _, _ in plps] == list(range(1, len(prompt)))
        with pyllamacy.Context(gm, n_ctx=512) as ref:
            ref.eval(prompt, logits="all")
            for _, pos, tok, (tok_lp, top) in plps:
                ls = _log_softmax(ref.logits(pos - 1))
                assert tok_lp == pytest.approx(ls[tok], abs=2e-2)
                assert abs(top[0][1] - ls.max()) < 2e-2
            for tok, (tok_lp, top) in zip(toks, lps):
                ls = _log_softmax(ref.logits(-1))
                assert top[0][0] == tok                   # greedy
                assert tok_lp == pytest.approx(ls[tok], abs=2e-2)
                assert sum(np.exp(v) for _, v in top) <= 1 + 1e-3
                ref.eval([tok])
