"""Fitting the model to the machine (issue 15): pyllamacy.estimate (a no-alloc dry run),
n_gpu_layers="auto" / n_ctx=0 through llama.cpp's common_fit_params, MemoryError before a load
that cannot fit, Context/Llama.memory_breakdown, `pyllamacy fit` / `info --model`.

Oracles: the GGUF's own tensor sizes (gguf.GGUFReader) for the weights and the KV-cache formula
n_ctx * n_layer * (n_embd_k_gqa + n_embd_v_gqa) * 2 bytes (f16) from the GGUF's metadata."""

import pytest

import pyllamacy as pc
from pyllamacy import loading, memory
from pyllamacy.memory import MiB
from serving import run_cli


def _has_gpu():
    return any(d["type"] == "gpu" for d in pc.devices())


@pytest.fixture(scope="module")
def gguf_facts(smollm2_path):
    gguf = pytest.importorskip("gguf")
    r = gguf.GGUFReader(smollm2_path)

    def val(key):
        f = r.fields[key]
        return f.contents()

    arch = val("general.architecture")
    n_embd = val(f"{arch}.embedding_length")
    n_head = val(f"{arch}.attention.head_count")
    n_head_kv = val(f"{arch}.attention.head_count_kv")
    return {
        "tensor_bytes": sum(int(t.n_bytes) for t in r.tensors),
        "n_layer": val(f"{arch}.block_count"),
        "n_ctx_train": val(f"{arch}.context_length"),
        "n_embd_gqa": (n_embd // n_head) * n_head_kv,
    }


def _kv_f16(n_ctx, facts):
    return n_ctx * facts["n_layer"] * 2 * facts["n_embd_gqa"] * 2


def test_estimate_host_weights_and_kv_cache(smollm2_path, gguf_facts):
    est = pc.estimate(smollm2_path, n_ctx=4096)
    assert isinstance(est, memory.MemoryBreakdown)
    if not _has_gpu():
        assert est.devices == ()
    h = est.host
    assert h.total > 0 and 0 <= h.free <= h.total
    assert est.n_layer == gguf_facts["n_layer"] and est.n_ctx_train == gguf_facts["n_ctx_train"]
    # n_gpu_layers=0: every weight on the host, within a few % of the file's tensor bytes
    assert abs(h.model - gguf_facts["tensor_bytes"]) <= 0.03 * gguf_facts["tensor_bytes"]
    assert h.context == _kv_f16(4096, gguf_facts)
    assert h.compute > 0
    # twice the context, twice the cache; n_parallel sequences of n_ctx each
    assert pc.estimate(smollm2_path, n_ctx=8192).context == _kv_f16(8192, gguf_facts)
    assert pc.estimate(smollm2_path, n_ctx=1024, n_parallel=4).context == \
        _kv_f16(4096, gguf_facts)
    # n_ctx=0: the training context
    assert pc.estimate(smollm2_path).context == _kv_f16(gguf_facts["n_ctx_train"], gguf_facts)
    table = est.table()
    assert "Host" in table and str(h.context // MiB) in table


def test_estimate_validates_arguments(smollm2_path, tmp_path):
    with pytest.raises(TypeError):
        pc.estimate(smollm2_path, n_gpu_layers="most")
    with pytest.raises(ValueError):
        pc.estimate(smollm2_path, n_ctx=-1)
    with pytest.raises(ValueError):
        pc.estimate(smollm2_path, n_ctx=4)
    with pytest.raises(ValueError):
        pc.estimate(smollm2_path, n_parallel=0)
    with pytest.raises(ValueError):
        pc.estimate(smollm2_path, type_k="q9_9")
    with pytest.raises(TypeError):
        pc.estimate(smollm2_path, n_threads=2)
    with pytest.raises(ValueError):
        memory.fit(smollm2_path, fit_margin_mib=-1)
    with pytest.raises(FileNotFoundError):
        pc.estimate(tmp_path / "missing.gguf")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all")
    with pytest.raises(Exception) as ei:
        pc.estimate(bad)
    assert not isinstance(ei.value, SystemExit)


@pytest.mark.skipif(_has_gpu(), reason="checks the CPU-only answer")
def test_auto_is_zero_layers_without_gpu_and_generates(smollm2_path, caplog):
    caplog.set_level("INFO", logger="pyllamacy")
    llm = pc.Llama(smollm2_path, n_gpu_layers="auto", n_ctx=512, verbose=False)
    try:
        assert llm.n_gpu_layers == 0
        assert llm.n_ctx() == 512
        out = llm("The capital of France is", max_tokens=8, temperature=0)
        assert out["choices"][0]["text"]
        assert sum("fitted" in r.getMessage() for r in caplog.records) == 1
    finally:
        llm.close()


def test_n_ctx_zero_is_the_training_context_fitted(smollm2_path, gguf_facts):
    with loading.load(smollm2_path, n_gpu_layers="auto", n_ctx=0) as lm:
        # 24 GiB hold SmolLM2's training context: nothing to shrink
        assert lm.n_ctx == gguf_facts["n_ctx_train"]
        assert lm.fit is not None and lm.fit.n_ctx == gguf_facts["n_ctx_train"]


def test_memory_error_before_loading(smollm2_path, monkeypatch):
    class NoLoad(pc.Model):
        def __init__(self, *a, **k):
            raise AssertionError("the model was loaded")
    monkeypatch.setattr(loading, "Model", NoLoad)
    # 2**24 tokens of SmolLM2's cache: ~360 GiB, more than the host has
    with pytest.raises(MemoryError) as ei:
        loading.load(smollm2_path, n_gpu_layers="auto", n_ctx=1 << 24)
    msg = str(ei.value)
    assert "host memory" in msg and "KV cache" in msg and "MiB" in msg
    est = pc.estimate(smollm2_path, n_ctx=1 << 24)
    assert f"{est.host.used // MiB} MiB" in msg
    assert f"{est.host.total // MiB} MiB" in msg
    # or many sequences of a moderate context
    with pytest.raises(MemoryError):
        loading.load(smollm2_path, n_gpu_layers="auto", n_ctx=1 << 16, n_seq_max=256)


def test_auto_needs_fit(smollm2_path):
    with pytest.raises(ValueError):
        loading.load(smollm2_path, n_gpu_layers="auto", fit=False)


def test_context_memory_breakdown_matches_estimate(smollm2_path, gguf_facts):
    est = pc.estimate(smollm2_path, n_ctx=2048, n_gpu_layers=0)
    llm = pc.Llama(smollm2_path, n_ctx=2048, n_gpu_layers=0, verbose=False)
    try:
        got = llm.memory_breakdown()
        assert got.model == est.model
        assert got.context == est.context == _kv_f16(2048, gguf_facts)
        # the compute buffers are reserved at creation; the dry run reserves the same graphs
        assert abs(got.compute - est.compute) <= 0.05 * est.compute
        assert got.n_ctx == 2048
        assert "Host" in got.table()
    finally:
        llm.close()
    ctx_bd = None
    with loading.load(smollm2_path, n_ctx=1024) as lm:
        ctx_bd = lm.ctx.memory_breakdown()
    assert ctx_bd.context == _kv_f16(1024, gguf_facts)


def test_cli_fit_and_info(smollm2_path):
    r = run_cli("fit", smollm2_path, "-c", "4096")
    assert r.returncode == 0, r.stderr
    est = pc.estimate(smollm2_path, n_ctx=4096, n_gpu_layers="auto")
    assert "memory breakdown [MiB], n_ctx=4096" in r.stdout
    host_line = [ln for ln in r.stdout.splitlines() if ln.startswith("Host")][0]
    assert host_line.split()[1:] == [str(v // MiB) for v in (
        est.host.total, est.host.free, est.host.used, est.host.model, est.host.context,
        est.host.compute)]
    r = run_cli("fit", smollm2_path, "-c", "100000000")
    assert r.returncode == 1 and "does not fit" in r.stdout
    r = run_cli("fit", smollm2_path, "--ngl", "x")
    assert r.returncode == 2
    r = run_cli("info", "--model", smollm2_path)
    assert r.returncode == 0, r.stderr
    assert "memory breakdown" in r.stdout and "Host" in r.stdout


@pytest.mark.gpu
@pytest.mark.skipif(not _has_gpu(), reason="no GPU backend with a device loaded")
def test_gpu_auto_offloads_and_estimate_on_device(smollm2_path):
    est = pc.estimate(smollm2_path, n_ctx=2048, n_gpu_layers=-1)
    assert est.devices and est.devices[0].model > 0
    llm = pc.Llama(smollm2_path, n_gpu_layers="auto", n_ctx=2048, verbose=False)
    try:
        assert llm.n_gpu_layers == est.n_layer + 1
        got = llm.memory_breakdown()
        assert got.devices[0].model == est.devices[0].model
        assert llm("Hello", max_tokens=4, temperature=0)["choices"][0]["text"] is not None
    finally:
        llm.close()


def test_fits_in_several_threads_at_once(smollm2_path):
    """llama.cpp's fitting swaps the process's log callback for one pointing into its own stack
    frame while it runs: fits in several threads at once (a server loading two models on
    demand) left a dangling callback, and the next log line crashed the process."""
    import concurrent.futures as cf

    def work(i):
        if i % 2:
            return memory.fit(smollm2_path, n_ctx=512, n_ctx_min=256).n_ctx
        return pc.estimate(smollm2_path, n_ctx=512).n_ctx

    with cf.ThreadPoolExecutor(4) as ex:
        got = list(ex.map(work, range(24)))
    assert got == [512] * 24
    # llama.cpp logs while loading: each line goes through a live callback
    with pc.Model(smollm2_path, vocab_only=True) as m:
        assert m.n_vocab > 0


# -- the server: --fit on|off, --fit_target ------------------------------------------------------

def test_server_fit_settings(smollm2_path):
    from pyllamacy.server.__main__ import settings_from_args

    def offload(*argv):
        _, models = settings_from_args(["-m", smollm2_path, *argv])
        return models[0].offload(), models[0].fit_target

    assert offload() == (("auto", True), None)          # llama-server's default: fit on
    assert offload("--fit", "off") == ((0, False), None)
    assert offload("-ngl", "12") == ((12, False), None)  # a number of layers: kept, no fit
    assert offload("-ngl", "-1", "--fit", "on") == ((-1, True), None)
    assert offload("-ngl", "auto") == (("auto", True), None)
    assert offload("--fit-target", "512,2048") == (("auto", True), [512, 2048])
    assert offload("--fit_target", "256") == (("auto", True), 256)
    for bad in (["-ngl", "auto", "--fit", "off"], ["--fit_target", "lots"],
                ["--fit_target", "-5"], ["-ngl", "-3"], ["--fit", "maybe"]):
        with pytest.raises((SystemExit, ValueError)):
            settings_from_args(["-m", smollm2_path, *bad])


def test_server_reports_the_fitted_placement(smollm2_path, gguf_facts):
    """/v1/models says where each loaded model went: fitted by default (0 layers without a
    GPU), as given with --fit off; n_ctx 0 with fit on is the training context here (it fits
    the host)."""
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    from pyllamacy.server import ModelSettings
    from serving import LocalServer
    common = dict(n_threads=2, n_parallel=2, warmup=False, verbose=False)
    s = LocalServer([ModelSettings(model=smollm2_path, model_alias="fitted", n_ctx=0, **common),
                     ModelSettings(model=smollm2_path, model_alias="fixed", n_ctx=512,
                                   fit=False, **common)])
    try:
        meta = {m["id"]: m["meta"] for m in httpx.get(s.url + "/v1/models").json()["data"]}
    finally:
        s.stop()
    gpu = _has_gpu()
    n_train = gguf_facts["n_ctx_train"]
    assert meta["fitted"]["fit"] is True and meta["fixed"]["fit"] is False
    assert meta["fixed"]["n_gpu_layers"] == 0 and meta["fixed"]["n_ctx"] == 512
    if not gpu:
        assert meta["fitted"]["n_gpu_layers"] == 0
    assert meta["fitted"]["n_ctx"] == n_train
    assert meta["fitted"]["n_ctx_train"] == n_train and meta["fitted"]["n_parallel"] == 2
    assert meta["fitted"]["size"] <= gguf_facts["tensor_bytes"] <= 1.02 * meta["fitted"]["size"]


def test_server_refuses_a_model_too_large_for_the_host(smollm2_path):
    """Fit on (the default): a context far beyond host memory stops the server at start with
    the figures, before llama.cpp allocates anything; no abort."""
    r = run_cli("serve", "-m", smollm2_path, "--n_ctx", str(1 << 24), "-np", "1",
                "--port", "0", timeout=120)
    assert r.returncode not in (0, -6, -11), r.returncode
    err = r.stderr
    assert "host memory" in err and "MiB" in err, err[-2000:]
    assert "Traceback" not in err, err[-3000:]
