#!/usr/bin/env python3
"""Random-weight GGUF models of real shapes, for GPU tests and benchmarks where the real
weights cannot travel.

    make_models.py template REAL.gguf OUT.gguf           # metadata only (tokenizer, chat template)
    make_models.py random TEMPLATE.gguf OUT.gguf --shape 1b|135m|8b [--layers N] [--pool]

Weights: normal(0, 0.02) as F16, norms 1.0; quantize afterwards with llama-quantize. The tokenizer
and every other key come from the template, so tokenization matches the real model.
--pool draws every tensor from one 16M-value normal pool (a random offset per tensor, tiled)
instead of fresh numbers: the 8B shape (~14 GB of F16) is written without drawing 7 billion
random numbers, and a benchmark's speed does not depend on which numbers the weights hold.
Needs the `gguf` package (pure Python).
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import gguf

# llama-architecture shapes: SmolLM2-135M, Llama-3.2-1B and Llama-3.1-8B (with the 49k SmolLM2
# vocabulary)
SHAPES = {
    "135m": dict(n_embd=576, n_layer=30, n_head=9, n_head_kv=3, n_ff=1536, rope_base=100000.0),
    "1b": dict(n_embd=2048, n_layer=16, n_head=32, n_head_kv=8, n_ff=8192, rope_base=500000.0),
    "8b": dict(n_embd=4096, n_layer=32, n_head=32, n_head_kv=8, n_ff=14336, rope_base=500000.0),
}
_SKIP = {"GGUF.version", "GGUF.tensor_count", "GGUF.kv_count", "general.file_type",
         "general.quantization_version"}


def _copy_fields(reader: gguf.GGUFReader, writer: gguf.GGUFWriter, override: dict) -> None:
    for name, field in reader.fields.items():
        if name in _SKIP or name in override or name == "general.architecture":
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), vtype, sub_type=sub)
    for name, (value, vtype) in override.items():
        writer.add_key_value(name, value, vtype)


def template(src: str, out: str) -> None:
    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(out, arch=r.fields["general.architecture"].contents())
    _copy_fields(r, w, {})
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def random_model(tmpl: str, out: str, shape: str, layers: int | None, seed: int,
                 pool: bool = False) -> None:
    s = dict(SHAPES[shape])
    if layers:
        s["n_layer"] = layers
    r = gguf.GGUFReader(tmpl)
    n_vocab = len(r.fields["tokenizer.ggml.tokens"].data)
    U32, F32 = gguf.GGUFValueType.UINT32, gguf.GGUFValueType.FLOAT32
    head_dim = s["n_embd"] // s["n_head"]
    override = {
        "general.name": (f"random {shape} ({s['n_layer']} layers)", gguf.GGUFValueType.STRING),
        "llama.block_count": (s["n_layer"], U32),
        "llama.embedding_length": (s["n_embd"], U32),
        "llama.feed_forward_length": (s["n_ff"], U32),
        "llama.attention.head_count": (s["n_head"], U32),
        "llama.attention.head_count_kv": (s["n_head_kv"], U32),
        "llama.rope.freq_base": (s["rope_base"], F32),
        "llama.rope.dimension_count": (head_dim, U32),
        "llama.vocab_size": (n_vocab, U32),
        "general.file_type": (1, U32),                       # mostly F16
    }
    w = gguf.GGUFWriter(out, arch="llama")
    _copy_fields(r, w, override)
    rng = np.random.default_rng(seed)
    n_kv = head_dim * s["n_head_kv"]

    values = ((rng.standard_normal(1 << 24, dtype=np.float32) * 0.02).astype(np.float16)
              if pool else None)

    def mat(rows, cols):        # numpy (rows, cols) = ggml ne (cols, rows)
        if values is not None:
            start = int(rng.integers(values.size))
            return np.resize(np.roll(values, -start), (rows, cols))
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float16)

    E, F = s["n_embd"], s["n_ff"]
    w.add_tensor("token_embd.weight", mat(n_vocab, E))
    w.add_tensor("output_norm.weight", np.ones(E, dtype=np.float32))
    for i in range(s["n_layer"]):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(E, dtype=np.float32))
        w.add_tensor(p + "attn_q.weight", mat(E, E))
        w.add_tensor(p + "attn_k.weight", mat(n_kv, E))
        w.add_tensor(p + "attn_v.weight", mat(n_kv, E))
        w.add_tensor(p + "attn_output.weight", mat(E, E))
        w.add_tensor(p + "ffn_norm.weight", np.ones(E, dtype=np.float32))
        w.add_tensor(p + "ffn_gate.weight", mat(F, E))
        w.add_tensor(p + "ffn_up.weight", mat(F, E))
        w.add_tensor(p + "ffn_down.weight", mat(E, F))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("template")
    t.add_argument("src")
    t.add_argument("out")
    rnd = sub.add_parser("random")
    rnd.add_argument("template")
    rnd.add_argument("out")
    rnd.add_argument("--shape", choices=sorted(SHAPES), default="1b")
    rnd.add_argument("--layers", type=int)
    rnd.add_argument("--seed", type=int, default=0)
    rnd.add_argument("--pool", action="store_true",
                     help="tile one random pool instead of fresh numbers per tensor (fast)")
    a = ap.parse_args(argv)
    if a.cmd == "template":
        template(a.src, a.out)
    else:
        random_model(a.template, a.out, a.shape, a.layers, a.seed, a.pool)
    return 0


if __name__ == "__main__":
    sys.exit(main())
