"""llama.cpp's tokenizer test vectors: our tokenization must equal the expected ids exactly."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import pyllamacy
from conftest import missing_prerequisite

# llama.cpp's ggml-vocab-*.gguf files and their .inp/.out vectors (its source tree)
pytestmark = pytest.mark.llama_templates

SEP = b"\n__ggml_vocab_test__\n"


ROOT = Path(__file__).resolve().parent.parent


def _vocab_files():
    src = os.environ.get("PYLLAMACY_LLAMA_CPP_DIR") or pyllamacy.build_info().get("llama_cpp_source")
    d = Path(src or ROOT / "vendor" / "llama.cpp") / "models"
    return sorted(p for p in d.glob("ggml-vocab-*.gguf")
                  if p.with_suffix(".gguf.inp").exists() and p.with_suffix(".gguf.out").exists())


def _cases(path: Path):
    raw = path.with_suffix(".gguf.inp").read_bytes()
    inputs = raw.split(SEP)
    outputs = path.with_suffix(".gguf.out").read_text(encoding="utf-8").split("\n")
    if outputs and outputs[-1] == "":
        outputs.pop()
    if len(inputs) == len(outputs) + 1 and inputs[-1] in (b"", b"\n"):
        inputs.pop()
    assert len(inputs) == len(outputs), f"{path.name}: {len(inputs)} inputs, {len(outputs)} outputs"
    return [(i, [int(t) for t in o.split()]) for i, o in zip(inputs, outputs)]


VOCABS = _vocab_files()


def test_vocab_vectors_present():
    if not VOCABS:
        missing_prerequisite("llama_templates", "no ggml-vocab-*.gguf test vectors in llama.cpp's "
                             "models folder (pyllamacy.build_info()['llama_cpp_source'])")
    assert len(VOCABS) >= 10, "expected llama.cpp's tokenizer vectors in the vendored models/"


@pytest.mark.parametrize("vocab", VOCABS, ids=[p.name[len("ggml-vocab-"):-5] for p in VOCABS])
def test_tokenizer_matches_vectors(vocab):
    with pyllamacy.Model(vocab, vocab_only=True) as m:
        failures = []
        for text, expected in _cases(vocab):
            got = m.tokenize(text, add_special=False, parse_special=False)
            if got != expected:
                failures.append((text[:60], expected[:20], got[:20]))
        assert not failures, f"{len(failures)} mismatches, first: {failures[:3]}"
