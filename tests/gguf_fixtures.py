"""Small GGUF files written with the `gguf` package for tests: a tiny random llama-architecture
model in F32 (with the tokenizer of a real model, so prompts tokenize as usual) and LoRA
adapters for it. F32 everywhere, so that tests can compare llama.cpp's result with weights
merged here in numpy."""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

import gguf

TINY = dict(n_embd=64, n_layer=2, n_head=4, n_head_kv=2, n_ff=128)


def _copy_tokenizer(src: str, w: "gguf.GGUFWriter") -> int:
    """Copy the tokenizer.* keys of a real model; returns its vocabulary size."""
    r = gguf.GGUFReader(src)
    for name, field in r.fields.items():
        if not name.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(name, field.contents(), vtype, sub_type=sub)
    return len(r.fields["tokenizer.ggml.tokens"].data)


def tiny_weights(n_vocab: int, seed: int = 0) -> Dict[str, np.ndarray]:
    """Random weights of the TINY shape; numpy shape (out, in) is ggml's ne (in, out)."""
    rng = np.random.default_rng(seed)
    E, F, L = TINY["n_embd"], TINY["n_ff"], TINY["n_layer"]
    n_kv = E // TINY["n_head"] * TINY["n_head_kv"]

    def mat(rows, cols):
        return (rng.standard_normal((rows, cols)) * 0.05).astype(np.float32)

    t = {"token_embd.weight": mat(n_vocab, E), "output.weight": mat(n_vocab, E),
         "output_norm.weight": np.ones(E, dtype=np.float32)}
    for i in range(L):
        p = f"blk.{i}."
        t[p + "attn_norm.weight"] = np.ones(E, dtype=np.float32)
        t[p + "attn_q.weight"] = mat(E, E)
        t[p + "attn_k.weight"] = mat(n_kv, E)
        t[p + "attn_v.weight"] = mat(n_kv, E)
        t[p + "attn_output.weight"] = mat(E, E)
        t[p + "ffn_norm.weight"] = np.ones(E, dtype=np.float32)
        t[p + "ffn_gate.weight"] = mat(F, E)
        t[p + "ffn_up.weight"] = mat(F, E)
        t[p + "ffn_down.weight"] = mat(E, F)
    return t


def write_tiny_model(path: str, tokenizer_src: str, weights: Dict[str, np.ndarray]) -> None:
    w = gguf.GGUFWriter(path, arch="llama")
    n_vocab = _copy_tokenizer(tokenizer_src, w)
    E = TINY["n_embd"]
    w.add_name("tiny random llama")
    w.add_block_count(TINY["n_layer"])
    w.add_context_length(256)
    w.add_embedding_length(E)
    w.add_feed_forward_length(TINY["n_ff"])
    w.add_head_count(TINY["n_head"])
    w.add_head_count_kv(TINY["n_head_kv"])
    w.add_rope_dimension_count(E // TINY["n_head"])
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(n_vocab)
    w.add_file_type(0)                       # all F32
    for name, arr in weights.items():
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def random_lora(weights: Dict[str, np.ndarray], names, rank: int, seed: int = 1,
                std: float = 0.1) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """(A, B) per adapted weight: A numpy (rank, in) = ne (in, rank), B numpy (out, rank)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in names:
        n_out, n_in = weights[name].shape
        a = (rng.standard_normal((rank, n_in)) * std).astype(np.float32)
        b = (rng.standard_normal((n_out, rank)) * std).astype(np.float32)
        out[name] = (a, b)
    return out


def write_lora(path: str, pairs: Dict[str, Tuple[np.ndarray, np.ndarray]], alpha: float,
               arch: str = "llama", general_type: str = "adapter") -> None:
    w = gguf.GGUFWriter(path, arch=arch)
    w.add_string("general.type", general_type)
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", alpha)
    for name, (a, b) in pairs.items():
        w.add_tensor(name + ".lora_a", a)
        w.add_tensor(name + ".lora_b", b)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def merged(weights: Dict[str, np.ndarray], pairs: Dict[str, Tuple[np.ndarray, np.ndarray]],
           scale: float, alpha: float) -> Dict[str, np.ndarray]:
    """The weights with each adapter pair folded in: W + scale * alpha / rank * B @ A (float64
    arithmetic, stored as F32), llama.cpp's formula."""
    out = dict(weights)
    for name, (a, b) in pairs.items():
        rank = a.shape[0]
        f = scale * (alpha / rank if alpha else 1.0)
        out[name] = (weights[name].astype(np.float64)
                     + f * (b.astype(np.float64) @ a.astype(np.float64))).astype(np.float32)
    return out
