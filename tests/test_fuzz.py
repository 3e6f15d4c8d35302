"""A bounded fuzz run (tests/fuzz): mutated GGUF files, kv_overrides, chat templates, GBNF
grammars and JSON schemas, each case in a worker process. A case fails only when its process
dies (abort, signal) or hangs: bad input must raise a Python exception. Longer runs and the
AddressSanitizer build: docs/FUZZING.md.

Environment: PYLLAMACY_FUZZ_SEED / PYLLAMACY_FUZZ_CASES change the run (default seed 12, 300
cases, ~1 min on 2 cores); PYLLAMACY_FUZZ_KINDS, PYLLAMACY_FUZZ_GGUF_CLASSES and
PYLLAMACY_FUZZ_SKIP_GGUF_CLASSES select what is generated (comma-separated; see
`python -m tests.fuzz --list-classes`)."""
from __future__ import annotations

import os

import pytest

from fuzz import gguf_doc as G
from fuzz import mutators as M
from fuzz import runner

pytestmark = pytest.mark.fuzz


@pytest.fixture(scope="module")
def base(smollm2_path):
    return M.build_base(smollm2_path)


def test_base_model_is_a_working_gguf(base, tmp_path):
    """The unmutated tiny model loads and decodes, so mutations start from a valid file."""
    import pyllamacy
    path = tmp_path / "base.gguf"
    path.write_bytes(G.serialize(base))
    with pyllamacy.Model(str(path), vocab_only=True) as m:
        toks = m.tokenize("Hello world", add_special=False)
        assert toks and max(toks) < M.BASE_VOCAB
        assert m.detokenize(toks) == b"Hello world"
    with pyllamacy.Model(str(path)) as m, pyllamacy.Context(m, n_ctx=64, n_threads=1) as ctx:
        ctx.eval(m.tokenize("Hello"))
        assert len(ctx.generate(pyllamacy.Sampler(m).greedy(), max_tokens=3).run()) == 3


def test_cases_are_reproducible():
    for i in range(50):
        assert M.make_case(5, i) == M.make_case(5, i)
    assert {M.make_case(5, i)["kind"] for i in range(200)} == set(M.KINDS)


def test_harness_reports_the_case_that_killed_its_worker(smollm2_path, tmp_path):
    cases = [{"kind": "selftest", "action": a, "seed": 0, "index": i}
             for i, a in enumerate(["raise", "abort", "raise", "segv", "hang", "exit", "raise"])]
    s = runner.run_cases(cases, jobs=1, timeout=5, smollm2=smollm2_path, workdir=str(tmp_path),
                         quiet=True)
    got = {f["index"]: f["outcome"] for f in s["failures"]}
    assert got == {1: "SIGABRT", 3: "SIGSEGV", 4: "hang>5s", 5: "exit 3"}, got
    assert s["counts"]["selftest:exception"] == 3


def test_bounded_fuzz_run_has_no_aborts(smollm2_path, tmp_path):
    seed = int(os.environ.get("PYLLAMACY_FUZZ_SEED", "12"))
    n = int(os.environ.get("PYLLAMACY_FUZZ_CASES", "400"))
    s = runner.run(n, seed, jobs=min(2, os.cpu_count() or 1), timeout=20, smollm2=smollm2_path,
                   workdir=str(tmp_path), quiet=True)
    report = runner.format_report(s)
    if s["failures"]:
        pytest.fail("native aborts/hangs (each with its reproducing command):\n" + report,
                    pytrace=False)
