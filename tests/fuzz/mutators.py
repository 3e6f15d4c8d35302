"""Seeded case generators. A case is a plain dict (JSON-able) built from (seed, index) alone,
so `python -m tests.fuzz --seed S --case I` rebuilds exactly the case a run reported.

Kinds: gguf (a mutated tiny model with SmolLM2's tokenizer, loaded vocab-only then fully),
kv (kv_overrides on the real SmolLM2 model), template (render_chat with hostile Jinja),
grammar (GBNF through the grammar sampler), schema (from_json_schema, then its grammar)."""
from __future__ import annotations

import json
import random
import struct
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np

from . import gguf_doc as G

KINDS = ("gguf", "kv", "template", "grammar", "schema")
WEIGHTS = {"gguf": 5, "kv": 2, "template": 3, "grammar": 3, "schema": 3}

TINY = dict(n_embd=32, n_ff=64, n_layer=2, n_head=4, n_head_kv=2)
BASE_VOCAB = 4096


def case_rng(seed: int, index: int) -> random.Random:
    return random.Random(f"pyllamacy-fuzz:{seed}:{index}")


def pick_kind(rng: random.Random, kinds) -> str:
    kinds = list(kinds)
    return rng.choices(kinds, weights=[WEIGHTS[k] for k in kinds])[0]


# ============================================================== GGUF: the base tiny model

def build_base(smollm2_path: str, n_vocab: int = BASE_VOCAB) -> G.Doc:
    """SmolLM2's metadata and tokenizer (its first n_vocab tokens, the merges among them)
    with tiny random F32 weights: ~0.6 MB, loads and decodes in milliseconds."""
    import gguf
    r = gguf.GGUFReader(smollm2_path)
    doc = G.Doc()
    tokens = None
    for name, f in r.fields.items():
        if name.startswith("GGUF."):
            continue
        vtype = int(f.types[0])
        if vtype == G.ARR:
            sub = int(f.types[-1])
            if sub == G.STR:
                val = [bytes(f.parts[i]) for i in f.data]
            else:
                val = np.concatenate([f.parts[i] for i in f.data])
            doc.kvs.append(G.KV(name, G.ARR, val, sub))
            if name == "tokenizer.ggml.tokens":
                tokens = val
        elif vtype == G.STR:
            doc.kvs.append(G.KV(name, G.STR, bytes(f.parts[f.data[0]])))
        else:
            doc.kvs.append(G.KV(name, vtype, f.parts[f.data[0]][0].item()))
    n_vocab = min(n_vocab, len(tokens))
    keep = set(tokens[:n_vocab])
    for kv in doc.kvs:
        if kv.key in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.scores"):
            kv.value = kv.value[:n_vocab]
        elif kv.key == "tokenizer.ggml.merges":
            merged = []
            for m in kv.value:
                a, _, b = m.partition(b" ")
                if a in keep and b in keep and a + b in keep:
                    merged.append(m)
            kv.value = merged
    E, F, L, H, HKV = (TINY[k] for k in ("n_embd", "n_ff", "n_layer", "n_head", "n_head_kv"))
    for key, val in [("llama.block_count", L), ("llama.context_length", 256),
                     ("llama.embedding_length", E), ("llama.feed_forward_length", F),
                     ("llama.attention.head_count", H), ("llama.attention.head_count_kv", HKV),
                     ("llama.rope.dimension_count", E // H), ("llama.vocab_size", n_vocab),
                     ("general.file_type", 0)]:
        doc.set(key, G.U32, val)
    rng = np.random.default_rng(0)

    def t(name, *dims, ones=False):
        n = int(np.prod(dims))
        a = np.ones(n, np.float32) if ones else (rng.standard_normal(n) * 0.05).astype(np.float32)
        doc.tensors.append(G.Tensor(name, list(dims), 0, a.tobytes()))

    n_kv = E // H * HKV
    t("token_embd.weight", E, n_vocab)
    t("output_norm.weight", E, ones=True)
    for i in range(L):
        p = f"blk.{i}."
        t(p + "attn_norm.weight", E, ones=True)
        t(p + "attn_q.weight", E, E)
        t(p + "attn_k.weight", E, n_kv)
        t(p + "attn_v.weight", E, n_kv)
        t(p + "attn_output.weight", E, E)
        t(p + "ffn_norm.weight", E, ones=True)
        t(p + "ffn_gate.weight", E, F)
        t(p + "ffn_up.weight", E, F)
        t(p + "ffn_down.weight", F, E)
    return doc


# ============================================================== GGUF mutators
# each: (doc, rng) -> short description; the class of a case is its mutators' names

INTS = [0, 1, 2, 3, 7, 255, 256, 65535, 65536, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32,
        2 ** 63 - 1, 2 ** 64 - 1, -1, -2 ** 31]
FLOATS = [0.0, -0.0, -1.0, 1e-30, 1e30, 3.4e38, float("nan"), float("inf"), float("-inf"),
          -1e-5, 1e-5, 0.5]
ARCHS = ["llama", "gpt2", "bert", "mamba", "qwen2", "qwen3moe", "t5", "rwkv6", "gemma3",
         "phi3", "deepseek2", "falcon", "clip", "", "none", "llama\0x", "ΩΩ", "a" * 300]
TOK_MODELS = ["none", "no_vocab", "llama", "gpt2", "bert", "t5", "rwkv", "ugm", "plamo2", "",
              "GPT2", "spm", "bpe", "wpm", "x" * 200]
TOK_PRES = ["default", "llama3", "smollm", "qwen2", "gpt-2", "deepseek-llm", "", "unknown-pre",
            "tekken", "chatglm-bpe", "\xff"]
HPARAMS = ["llama.block_count", "llama.context_length", "llama.embedding_length",
           "llama.feed_forward_length", "llama.attention.head_count",
           "llama.attention.head_count_kv", "llama.rope.dimension_count", "llama.vocab_size",
           "llama.expert_count", "llama.expert_used_count", "llama.attention.key_length",
           "llama.attention.value_length", "llama.rope.scaling.original_context_length",
           "llama.attention.sliding_window", "general.file_type", "general.quantization_version",
           "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
           "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id",
           "tokenizer.ggml.eot_token_id", "tokenizer.ggml.sep_token_id",
           "tokenizer.ggml.fim_pre_token_id"]
FLOAT_HPARAMS = ["llama.attention.layer_norm_rms_epsilon", "llama.rope.freq_base",
                 "llama.rope.freq_scale", "llama.attention.layer_norm_epsilon",
                 "llama.rope.scaling.factor", "llama.logit_scale", "llama.attn_logit_softcapping",
                 "llama.expert_weights_scale"]


def _rand_value(rng, vtype=None):
    vtype = rng.choice([G.U8, G.I8, G.U16, G.I16, G.U32, G.I32, G.F32, G.BOOL, G.STR, G.ARR,
                        G.U64, G.I64, G.F64, 13, 99]) if vtype is None else vtype
    if vtype in (G.F32, G.F64):
        return vtype, rng.choice(FLOATS), None
    if vtype == G.BOOL:
        return vtype, rng.random() < 0.5, None
    if vtype == G.STR:
        return vtype, rng.choice([b"", b"llama", b"\xff\xfe", b"a" * 1000]), None
    if vtype == G.ARR:
        sub = rng.choice([G.U32, G.I32, G.F32, G.STR, G.ARR, G.BOOL, 13])
        n = rng.choice([0, 1, 3, 100])
        if sub == G.STR:
            return vtype, [b"x"] * n, sub
        if sub == G.ARR:
            return vtype, [[b"y"]] * n, sub
        return vtype, [1] * n, sub
    return vtype, rng.choice(INTS), None


def m_hparam_int(doc, rng):
    key = rng.choice(HPARAMS)
    val = rng.choice(INTS + [rng.randrange(0, 70000)])
    doc.set(key, rng.choice([G.U32, G.U32, G.I32, G.U64, G.I64, G.U16]), val)
    return f"{key}={val}"


def m_hparam_float(doc, rng):
    key = rng.choice(FLOAT_HPARAMS)
    val = rng.choice(FLOATS)
    doc.set(key, rng.choice([G.F32, G.F32, G.F64]), val)
    return f"{key}={val}"


def m_block_count(doc, rng):
    val = rng.choice([0, 1, 3, 64, 512, 2 ** 16, 2 ** 31 - 1, 2 ** 32 - 1])
    doc.set("llama.block_count", G.U32, val)
    return f"block_count={val}"


def m_experts(doc, rng):
    n = rng.choice([0, 1, 2, 8, 64, 256, 2 ** 31, 2 ** 32 - 1])
    u = rng.choice([0, 1, 2, 9, n, n + 1, 2 ** 32 - 1])
    doc.set("llama.expert_count", G.U32, n)
    doc.set("llama.expert_used_count", G.U32, u)
    return f"expert_count={n} expert_used_count={u}"


def m_epsilon(doc, rng):
    val = rng.choice([float("nan"), -1.0, -1e-5, 0.0, float("inf"), float("-inf"), 1e30])
    doc.set("llama.attention.layer_norm_rms_epsilon", G.F32, val)
    return f"rms_eps={val}"


def m_alignment(doc, rng):
    val = rng.choice([0, 1, 2, 3, 8, 16, 64, 4096, 2 ** 31, 2 ** 32 - 1])
    doc.set("general.alignment", G.U32, val)
    if val and val < 2 ** 20:
        doc.alignment = val
    return f"alignment={val}"


def m_architecture(doc, rng):
    a = rng.choice(ARCHS)
    doc.set("general.architecture", G.STR, a.encode())
    return f"architecture={a[:20]!r}"


def m_tok_model(doc, rng):
    a = rng.choice(TOK_MODELS)
    doc.set("tokenizer.ggml.model", G.STR, a.encode())
    return f"tokenizer.model={a[:20]!r}"


def m_tok_pre(doc, rng):
    a = rng.choice(TOK_PRES)
    doc.set("tokenizer.ggml.pre", G.STR, a.encode("utf-8", "surrogatepass"))
    return f"tokenizer.pre={a!r}"


def m_dup_tokens(doc, rng):
    toks = doc.get("tokenizer.ggml.tokens").value
    n = rng.choice([1, 2, 50])
    for _ in range(n):
        i, j = rng.randrange(len(toks)), rng.randrange(len(toks))
        toks[i] = toks[j]
    return f"{n} duplicate tokens"


def m_token_strings(doc, rng):
    toks = doc.get("tokenizer.ggml.tokens").value
    what = rng.choice(["empty", "invalid-utf8", "long", "nul", "special-ids"])
    for _ in range(rng.choice([1, 5, 100])):
        i = rng.choice([0, 1, 2, rng.randrange(len(toks))]) if what == "special-ids" else rng.randrange(len(toks))
        toks[i] = {"empty": b"", "invalid-utf8": b"\xff\xc3", "long": b"a" * 5000,
                   "nul": b"a\0b", "special-ids": rng.choice([b"", b"\xff", b"<|im_start|>"])}[what]
    return f"token strings: {what}"


def m_token_lists(doc, rng):
    key = rng.choice(["tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.scores",
                      "tokenizer.ggml.merges"])
    kv = doc.get(key)
    what = rng.choice(["truncate", "extend", "empty", "remove", "retype"])
    if key == "tokenizer.ggml.scores" and kv is None:
        n = len(doc.get("tokenizer.ggml.tokens").value)
        doc.set(key, G.ARR, np.zeros(rng.choice([n, n - 1, 1, 0]), np.float32), G.F32)
        return f"{key} added"
    if what == "remove":
        doc.remove(key)
    elif what == "retype":
        kv.sub = rng.choice([G.U8, G.F32, G.STR, G.I64, G.ARR])
        if kv.sub in (G.STR, G.ARR):
            kv.value = [b"1"] * len(kv.value) if kv.sub == G.STR else [[b"1"]] * 3
        else:
            kv.value = np.zeros(len(kv.value), np.int64)
    elif what == "truncate":
        kv.value = kv.value[:rng.choice([0, 1, 3, len(kv.value) // 2, len(kv.value) - 1])]
    elif what == "extend":
        extra = [kv.value[-1]] * rng.choice([1, 100]) if isinstance(kv.value, list) else None
        kv.value = kv.value + extra if extra is not None else np.concatenate(
            [kv.value, np.full(rng.choice([1, 100]), kv.value[-1])])
    else:
        kv.value = [] if isinstance(kv.value, list) else kv.value[:0]
    return f"{key} {what}"


def m_token_types(doc, rng):
    kv = doc.get("tokenizer.ggml.token_type")
    v = np.array(kv.value, dtype=np.int64)
    for _ in range(rng.choice([1, 10, 1000])):
        v[rng.randrange(len(v))] = rng.choice([-5, 0, 2, 3, 4, 5, 6, 7, 100, 2 ** 31 - 1])
    kv.value = v
    return "token_type values"


def m_merges(doc, rng):
    kv = doc.get("tokenizer.ggml.merges")
    bad = [b"", b" ", b"abc", b"a  b", b"\xff \xfe", b"a b c", b" x", b"x "]
    for _ in range(rng.choice([1, 10])):
        kv.value[rng.randrange(len(kv.value))] = rng.choice(bad)
    return "garbage merges"


def m_special_ids(doc, rng):
    n = len(doc.get("tokenizer.ggml.tokens").value)
    key = rng.choice(["tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                      "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id",
                      "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id",
                      "tokenizer.ggml.mask_token_id", "tokenizer.ggml.fim_mid_token_id"])
    val = rng.choice([n, n + 1, 2 ** 31 - 1, 2 ** 32 - 1, 2 ** 31, 0])
    doc.set(key, G.U32, val)
    if rng.random() < 0.3:
        doc.set("tokenizer.ggml.add_bos_token", G.BOOL, True)
        doc.set("tokenizer.ggml.add_eos_token", G.BOOL, True)
    return f"{key}={val}"


def m_llama_vocab_gpt2_tokens(doc, rng):
    """SentencePiece ("llama") tokenizer over GPT-2 byte-level tokens without scores."""
    doc.set("tokenizer.ggml.model", G.STR, b"llama")
    if rng.random() < 0.5:
        doc.remove("tokenizer.ggml.scores")
    return "llama tokenizer on gpt2 vocab"


def m_retype_key(doc, rng):
    kv = rng.choice(doc.kvs)
    vtype, val, sub = _rand_value(rng)
    kv.vtype, kv.value, kv.sub = vtype, val, sub
    return f"{kv.key!r} -> type {vtype}"


def m_array_length_lie(doc, rng):
    key = rng.choice(["tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges",
                      "general.languages"])
    kv = doc.get(key)
    if kv is None:
        return "no-op"
    body = G._value(kv.vtype, kv.value, kv.sub)
    sub, n = struct.unpack_from("<IQ", body)
    lie = rng.choice([n + 1, n * 2, 2 ** 32, 2 ** 62, 2 ** 64 - 1, max(0, n - 1)])
    kv.value = G.Raw(struct.pack("<IQ", sub, lie) + body[12:])
    return f"{key} declares {lie} elements, holds {n}"


def m_string_length_lie(doc, rng):
    kv = rng.choice([k for k in doc.kvs if k.vtype == G.STR])
    s = G._str(kv.value)[8:]
    lie = rng.choice([len(s) + 1, 2 ** 40, 2 ** 64 - 1, 2 ** 32])
    kv.value = G.Raw(struct.pack("<Q", lie) + s)
    return f"{kv.key} string length {lie}"


def m_duplicate_key(doc, rng):
    kv = rng.choice(doc.kvs)
    vtype, val, sub = _rand_value(rng) if rng.random() < 0.5 else (kv.vtype, kv.value, kv.sub)
    doc.kvs.insert(rng.randrange(len(doc.kvs) + 1), G.KV(kv.key, vtype, val, sub))
    return f"duplicate key {kv.key}"


def m_key_name(doc, rng):
    kv = rng.choice(doc.kvs)
    kv.key = rng.choice([b"", b"\xff\xfe", b"a" * 70000, kv.key.encode() + b"\0"])
    return "odd key name"


def m_header(doc, rng):
    what = rng.choice(["version", "n_kv", "n_tensors", "truncate", "flips"])
    if what == "version":
        doc.version = rng.choice([0, 1, 2, 4, 2 ** 32 - 1])
    elif what == "n_kv":
        doc.n_kv = rng.choice([0, len(doc.kvs) + 1, 2 ** 63, 2 ** 64 - 1])
    elif what == "n_tensors":
        doc.n_tensors = rng.choice([0, len(doc.tensors) + 1, 2 ** 63, 2 ** 64 - 1])
    elif what == "truncate":
        doc.truncate = rng.choice([0, 3, 4, 8, 23, 24, 100, 10000, 200000, 400000, 600000])
    else:
        doc.flips = [rng.randrange(0, 700000) for _ in range(rng.choice([1, 4, 32]))]
    return f"header {what}"


def m_tensor_type(doc, rng):
    t = rng.choice(doc.tensors)
    t.ttype = rng.choice([1, 2, 3, 8, 30, 24, 26, 39, 40, 1000, 2 ** 31])
    return f"{t.name} type {t.ttype} (data unchanged)"


def m_tensor_retype_valid(doc, rng):
    """A tensor converted for real: F16/BF16 norms and embeddings (valid files)."""
    name = rng.choice(["output_norm.weight", "blk.0.attn_norm.weight", "blk.1.ffn_norm.weight",
                       "token_embd.weight", "blk.0.attn_q.weight"])
    t = next(t for t in doc.tensors if t.name == name)
    a = np.frombuffer(t.data, np.float32)
    if rng.random() < 0.5:
        t.ttype, t.data = 1, a.astype(np.float16).tobytes()
        return f"{name} F16"
    t.ttype, t.data = 30, (a.view(np.uint32) >> 16).astype(np.uint16).tobytes()
    return f"{name} BF16"


def m_tensor_shape(doc, rng):
    t = rng.choice(doc.tensors)
    what = rng.choice(["swap", "zero", "huge", "ndims", "extra"])
    if what == "swap":
        t.dims = t.dims[::-1]
    elif what == "zero":
        t.dims[rng.randrange(len(t.dims))] = 0
    elif what == "huge":
        t.dims[rng.randrange(len(t.dims))] = rng.choice([2 ** 31, 2 ** 40, 2 ** 63 - 1, 2 ** 64 - 1])
    elif what == "ndims":
        t.dims = rng.choice([[], [1, 1, 1, 1, 1], [1] * 9, t.dims + [2]])
    else:
        t.dims = [t.dims[0] * 2] + t.dims[1:]
    return f"{t.name} dims {what} {t.dims}"


def m_tensor_offset(doc, rng):
    t = rng.choice(doc.tensors)
    t.offset = rng.choice([1, 3, 31, 2 ** 32, 2 ** 63, 2 ** 64 - 1, 10 ** 6, 0])
    return f"{t.name} offset {t.offset}"


def m_tensor_set(doc, rng):
    what = rng.choice(["drop", "dup", "rename", "extra"])
    t = rng.choice(doc.tensors)
    if what == "drop":
        doc.tensors.remove(t)
    elif what == "dup":
        doc.tensors.append(G.Tensor(t.name, list(t.dims), t.ttype, t.data))
    elif what == "rename":
        t.name = rng.choice(["", "x" * 100, "blk.99.attn_q.weight", b"\xff", "output.weight"])
    else:
        doc.tensors.append(G.Tensor(rng.choice(["output.weight", "blk.0.ffn_gate_inp.weight",
                                                "rope_freqs.weight"]), [32, 7], 0, bytes(32 * 7 * 4)))
    return f"tensor {what} {t.name!r}"


GGUF_MUTATORS: Dict[str, Callable] = {
    "hparam_int": m_hparam_int, "hparam_float": m_hparam_float, "block_count": m_block_count,
    "experts": m_experts, "epsilon": m_epsilon, "alignment": m_alignment,
    "architecture": m_architecture, "tok_model": m_tok_model, "tok_pre": m_tok_pre,
    "dup_tokens": m_dup_tokens, "token_strings": m_token_strings, "token_lists": m_token_lists,
    "token_types": m_token_types, "merges": m_merges, "special_ids": m_special_ids,
    "llama_vocab_gpt2": m_llama_vocab_gpt2_tokens, "retype_key": m_retype_key,
    "array_length_lie": m_array_length_lie, "string_length_lie": m_string_length_lie,
    "duplicate_key": m_duplicate_key, "key_name": m_key_name, "header": m_header,
    "tensor_type": m_tensor_type, "tensor_retype_valid": m_tensor_retype_valid,
    "tensor_shape": m_tensor_shape, "tensor_offset": m_tensor_offset, "tensor_set": m_tensor_set,
}


def gguf_case(rng: random.Random, classes=None) -> dict:
    names = sorted(classes) if classes else sorted(GGUF_MUTATORS)
    n = rng.choice([1, 1, 1, 2, 3])
    muts = [rng.choice(names) for _ in range(n)]
    return {"kind": "gguf", "mutators": muts, "mseed": rng.randrange(2 ** 32),
            "use_mmap": rng.random() < 0.7, "full": rng.random() < 0.8}


def apply_gguf(base: G.Doc, case: dict) -> Tuple[G.Doc, List[str]]:
    doc = base.copy()
    rng = random.Random(case["mseed"])
    notes = [f"{m}: {GGUF_MUTATORS[m](doc, rng)}" for m in case["mutators"]]
    return doc, notes


# ============================================================== kv_overrides

KV_KEYS = ["llama.block_count", "llama.context_length", "llama.embedding_length",
           "llama.feed_forward_length", "llama.attention.head_count",
           "llama.attention.head_count_kv", "llama.rope.dimension_count", "llama.vocab_size",
           "llama.expert_count", "llama.expert_used_count", "llama.rope.freq_base",
           "llama.attention.layer_norm_rms_epsilon", "general.architecture",
           "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.bos_token_id",
           "tokenizer.ggml.eos_token_id", "tokenizer.ggml.add_bos_token",
           "tokenizer.ggml.add_eos_token", "tokenizer.ggml.add_space_prefix",
           "general.alignment", "llama.attention.sliding_window", "llama.rope.scaling.type",
           "general.name", "not.a.key", "tokenizer.chat_template"]


def kv_case(rng: random.Random) -> dict:
    ov = {}
    for _ in range(rng.choice([1, 1, 2, 3])):
        key = rng.choice(KV_KEYS)
        t = rng.choice(["int", "float", "bool", "str"])
        if t == "int":
            v = rng.choice([0, 1, -1, 2, 7, 64, 2 ** 31 - 1, 2 ** 32, 2 ** 63 - 1, -2 ** 63, 49152, 49153])
        elif t == "float":
            v = rng.choice(["nan", "inf", "-inf", 0.0, -1.0, 1e-30, 1e30])
        elif t == "bool":
            v = rng.random() < 0.5
        else:
            v = rng.choice(["", "none", "llama", "gpt2", "bert", "qwen2", "t5", "x" * 127, "\u00e9"])
        ov[key] = v
    return {"kind": "kv", "overrides": ov, "vocab_only": rng.random() < 0.4}


def kv_decode(ov: dict) -> dict:
    return {k: (float(v) if v in ("nan", "inf", "-inf") else v) for k, v in ov.items()}


# ============================================================== chat templates

JINJA_SNIPPETS = [
    "{{ messages[0]['content'] }}", "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}",
    "{{ bos_token }}", "{{ eos_token * 100000 }}", "{{ 'a' * 999999999 }}", "{{ range(10**9)|list|length }}",
    "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
    "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "{{ 1 / 0 }}", "{{ 1 // 0 }}", "{{ 1 % 0 }}",
    "{{ messages[99999] }}", "{{ messages[-99999].content }}", "{{ none.x.y }}", "{{ raise_exception('boom') }}",
    "{{ messages|tojson }}", "{{ tools|tojson(indent=4) }}", "{{ messages[0].content[::0] }}",
    "{{ messages[0].content[::-1] }}", "{{ 99999999999999999999999999 * 99999999999999999 }}",
    "{% set ns = namespace(x=0) %}{% for m in messages %}{% set ns.x = ns.x + 1 %}{% endfor %}{{ ns.x }}",
    "{{ (messages|map(attribute='content')|join(','))|upper }}", "{{ loop.index }}",
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}", "{{ strftime_now('%Y-%m-%d') }}",
    "{{ strftime_now('%' * 1000) }}", "{{ 'x'|replace('', 'yy') }}", "{{ {'a': 1}|items|list }}",
    "{{ messages|selectattr('role', 'equalto', 'user')|list }}", "{% for k, v in messages[0]|items %}{{k}}{% endfor %}",
    "{{ '%s %s'|format(1) }}", "{{ '{}'.format(1, 2) }}", "{{ [1,2,3]|batch(0)|list }}",
    "{{ 'abc'.split('') }}", "{{ 'abc'|center(2**31) }}", "{{ 'abc'|indent(2**31) }}",
    "{% raw %}{{ x }}", "{% endfor %}", "{{", "{%", "{#", "{{ }}", "{{ messages[ }}",
    "{% for %}", "{% set x %}{% endset %}{{ x }}", "{% generation %}x{% endgeneration %}",
    "{{ x is defined }}", "{{ tool_calls[0].function.arguments|tojson }}",
    "{% for m in messages %}{% for t in m.tool_calls %}{{ t.function.name }}{% endfor %}{% endfor %}",
    "{{ messages[0].content|list|reverse|join }}", "{{ '\\u0000' }}", "{{ '\udcff' }}",
    "{{ ((((((((((((((((((((1)))))))))))))))))))) }}", "{{ " + "[" * 5000 + " }}",
    "{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}", "{% if " + "not " * 5000 + "true %}x{% endif %}",
    "{{ messages[0].content|int + messages[0].content|float }}", "{{ 10 ** 10 ** 10 }}",
    "{{ -9223372036854775808 // -1 }}", "{{ range(0, 10, 0)|list }}", "{{ [1]*(2**62) }}",
]


def _templates_dir():
    try:
        import pyllamacy
        src = pyllamacy.build_info().get("llama_cpp_source")
    except Exception:
        src = None
    for d in ([Path(src)] if src else []) + [Path(__file__).resolve().parents[2] / "vendor" / "llama.cpp"]:
        if (d / "models" / "templates").is_dir():
            return d / "models" / "templates"
    return None


def _mutate_text(text: str, rng: random.Random, pieces) -> str:
    s = list(text)
    for _ in range(rng.choice([1, 2, 4, 8])):
        op = rng.choice(["del", "ins", "dup", "swap", "piece"])
        if not s:
            s = list(rng.choice(pieces))
            continue
        i = rng.randrange(len(s))
        j = min(len(s), i + rng.choice([1, 2, 5, 20, 200]))
        if op == "del":
            del s[i:j]
        elif op == "ins":
            s[i:i] = list(rng.choice(["{", "}", "%", "{{", "}}", "{%", "%}", "(", ")", "[", "]",
                                      "'", '"', "|", ".", "\\", "\0", "\udcff", " endfor ", " endif "]))
        elif op == "dup":
            s[i:i] = s[i:j] * rng.choice([2, 10, 100])
        elif op == "swap":
            k = rng.randrange(len(s))
            s[i], s[k] = s[k], s[i]
        else:
            s[i:i] = list(rng.choice(pieces))
    return "".join(s)


def _messages(rng):
    msgs = [{"role": "system", "content": "sys"}, {"role": "user", "content": "Hi"}]
    extra = rng.choice(["none", "tool", "weird", "parts", "many"])
    if extra == "tool":
        msgs += [{"role": "assistant", "content": None, "tool_calls": [
            {"type": "function", "id": "c1", "function": {"name": "f", "arguments": rng.choice(['{"a": 1}', "{", "[]", ""])}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "42"}]
    elif extra == "weird":
        msgs.append(rng.choice([{"role": "", "content": ""}, {"role": "user", "content": 5},
                                {"role": "user"}, {"content": "x"}, {"role": "user", "content": ["a", 1]},
                                {"role": "x" * 10000, "content": "\0"}]))
    elif extra == "parts":
        msgs.append({"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url"}]})
    elif extra == "many":
        msgs += [{"role": "user", "content": "m"}] * 500
    return msgs


def template_case(rng: random.Random) -> dict:
    tdir = _templates_dir()
    files = sorted(tdir.glob("*.jinja")) if tdir else []
    if files and rng.random() < 0.6:
        src = rng.choice(files)
        tmpl = _mutate_text(src.read_text(encoding="utf-8", errors="replace"), rng, JINJA_SNIPPETS)
        origin = f"mutated {src.name}"
    else:
        tmpl = "".join(rng.choice(JINJA_SNIPPETS) for _ in range(rng.choice([1, 2, 3, 6])))
        origin = "snippets"
    tools = None
    if rng.random() < 0.3:
        tools = [{"type": "function", "function": {"name": rng.choice(["f", "", "a b", "x" * 500]),
                  "parameters": rng.choice([{"type": "object", "properties": {"a": {"type": "integer"}}},
                                            {}, {"type": "nope"}, {"$ref": "#/x"}])}}]
    return {"kind": "template", "origin": origin, "template": tmpl, "messages": _messages(rng),
            "tools": tools, "add_generation_prompt": rng.random() < 0.8,
            "bos_token": rng.choice(["", "<s>", "<|im_start|>"]), "eos_token": rng.choice(["", "</s>"])}


# ============================================================== GBNF grammars

GBNF_PIECES = ['root ::= "a"', 'root ::= [a-z]+', 'root ::= x\nx ::= "b" x | "c"', 'root ::= root "a"',
               'root ::= ("a"*)*', 'root ::= ("a"?)+', 'root ::= (("a"*)*)*', 'root ::= [^\\x00-\\x7f]*',
               'root ::= "\\u0000"', 'root ::= [\\uFFFF-\\u0000]', 'root ::= "a"{0,999999999}',
               'root ::= "a"{5,2}', 'root ::= "a"{2147483647}', 'root ::= x{1000}{1000}\nx ::= "a"',
               'root ::= ""', 'root ::= ("" | "")*', 'root ::= a\na ::= b\nb ::= a', 'root ::= undefined',
               'root ::= [', 'root ::= "', 'root ::= (', 'root ::= )', 'root ::= [z-a]', 'root ::= .*',
               'root ::= "\\x"', 'root ::= "\\xZZ"', 'root ::= "\\U0010FFFF"', 'root ::= <[1]>',
               'root ::= <[99999999]>', 'root ::= !<[1]>', 'root ::= "a" | | "b"', '::= "a"',
               'root ::= "a"\nroot ::= "b"', 'root::="a"', 'root ::= [^]', 'root ::= [\\]', "root ::= ( " * 50,
               'root ::= "' + "a" * 10000 + '"', 'root ::= ' + " | ".join(f'"{i}"' for i in range(3000)),
               'root ::= (' * 1500 + '"a"' + ')' * 1500, 'root ::= "a"*' + "*" * 20, 'root ::= "a"{,}',
               'root ::= "a"{0,0}', 'root ::= "\\n"+ ws\nws ::= [ \\t\\n]*']


def _grammar_files():
    tdir = _templates_dir()
    if tdir is None:
        return []
    g = tdir.parent.parent / "grammars"
    return sorted(g.glob("*.gbnf")) if g.is_dir() else []


def grammar_case(rng: random.Random) -> dict:
    files = _grammar_files()
    if files and rng.random() < 0.5:
        src = rng.choice(files)
        g = _mutate_text(src.read_text(encoding="utf-8", errors="replace"), rng, GBNF_PIECES)
        origin = f"mutated {src.name}"
    else:
        g = rng.choice(GBNF_PIECES)
        if rng.random() < 0.5:
            g = _mutate_text(g, rng, GBNF_PIECES)
        origin = "pieces"
    return {"kind": "grammar", "origin": origin, "grammar": g, "lazy": rng.random() < 0.2,
            "n_tokens": rng.choice([1, 4, 16])}


# ============================================================== JSON schemas

def _schema(rng, depth=0):
    if depth > rng.choice([1, 2, 4, 8]):
        return rng.choice([{"type": "string"}, {"type": "integer"}, True, False, {}])
    c = rng.choice(["object", "array", "string", "number", "integer", "enum", "const", "anyOf",
                    "allOf", "oneOf", "ref", "garbage", "not", "pattern", "format", "bool"])
    if c == "object":
        s = {"type": "object", "properties": {rng.choice(["a", "", "b c", "\0", "\"", "x" * 300, f"p{i}"]):
                                              _schema(rng, depth + 1) for i in range(rng.choice([0, 1, 3]))}}
        if rng.random() < 0.5:
            s["required"] = rng.choice([list(s["properties"]), ["missing"], [], [1]])
        if rng.random() < 0.3:
            s["additionalProperties"] = rng.choice([False, True, _schema(rng, depth + 1)])
        if rng.random() < 0.2:
            s["minProperties"], s["maxProperties"] = rng.choice([(3, 1), (0, 0), (10 ** 9, 10 ** 9)])
        return s
    if c == "array":
        s = {"type": "array", "items": _schema(rng, depth + 1)}
        if rng.random() < 0.5:
            s["minItems"] = rng.choice([0, 1, 5, 1000, 10 ** 9, -1, 2 ** 63, 1.5])
            s["maxItems"] = rng.choice([0, 1, 3, 10 ** 9, -1])
        if rng.random() < 0.2:
            s["prefixItems"] = [_schema(rng, depth + 1) for _ in range(rng.choice([1, 3]))]
        return s
    if c == "string":
        s = {"type": "string"}
        if rng.random() < 0.6:
            s["minLength"] = rng.choice([0, 5, 100000, -1, 2 ** 62])
            s["maxLength"] = rng.choice([0, 2, 10 ** 7, -5])
        return s
    if c in ("number", "integer"):
        s = {"type": c}
        for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"):
            if rng.random() < 0.3:
                s[k] = rng.choice([0, -1, 10 ** 30, -10 ** 30, 0.5, 1e308, 2 ** 63, -2 ** 63])
        return s
    if c == "enum":
        return {"enum": rng.choice([[], [None], ["a", 1, None, [1], {"a": 1}], ["\0", "\"", "\\"], ["x" * 5000]])}
    if c == "const":
        return {"const": rng.choice([None, 1, "a\"b", [1, {"a": None}], 1e308])}
    if c in ("anyOf", "allOf", "oneOf"):
        return {c: [_schema(rng, depth + 1) for _ in range(rng.choice([0, 1, 2, 5]))]}
    if c == "ref":
        return rng.choice([{"$ref": "#"}, {"$ref": "#/definitions/x", "definitions": {"x": {"$ref": "#/definitions/x"}}},
                           {"$ref": "#/$defs/a", "$defs": {"a": {"type": "object", "properties": {"n": {"$ref": "#/$defs/a"}}}}},
                           {"$ref": "http://example.com/x"}, {"$ref": "#/nope"}, {"$ref": ""}, {"$ref": 5},
                           {"$ref": "#/$defs/a", "$defs": {"a": {"allOf": [{"$ref": "#/$defs/a"}]}}}])
    if c == "pattern":
        return {"type": "string", "pattern": rng.choice(["^a+$", "(", "[", "a{5,2}", "a{999999999}", "\\", "^(a|b)*c?$",
                                                         "((((((((((a))))))))))", "[^]", "a**", "(?=x)", "\\p{L}", "^$", ".*" * 200])}
    if c == "format":
        return {"type": "string", "format": rng.choice(["date", "date-time", "uuid", "time", "email", "nope"])}
    if c == "not":
        return {"not": _schema(rng, depth + 1)}
    if c == "bool":
        return rng.choice([True, False])
    return rng.choice([{"type": 5}, {"type": ["string", "null", "integer"]}, {"type": []}, {"type": "nope"},
                       {"properties": 5}, {"items": [1, 2]}, {"required": "a"}, [], 5, None, "x"])


def schema_case(rng: random.Random) -> dict:
    s = _schema(rng)
    text = json.dumps(s)
    if rng.random() < 0.15:
        text = _mutate_text(text, rng, ["{", "}", "[", "]", '"', ":", ",", "\\u0000", "1e999"])
    return {"kind": "schema", "schema": text, "n_tokens": rng.choice([1, 4, 16])}


def make_case(seed: int, index: int, kinds=KINDS, gguf_classes=None) -> dict:
    rng = case_rng(seed, index)
    kind = pick_kind(rng, kinds)
    case = {"gguf": lambda: gguf_case(rng, gguf_classes), "kv": lambda: kv_case(rng),
            "template": lambda: template_case(rng), "grammar": lambda: grammar_case(rng),
            "schema": lambda: schema_case(rng)}[kind]()
    case["seed"], case["index"] = seed, index
    return case


def case_class(case: dict) -> str:
    if case["kind"] == "selftest":
        return "selftest:" + case["action"]
    if case["kind"] == "gguf":
        return "gguf:" + "+".join(sorted(set(case["mutators"])))
    if case["kind"] == "kv":
        return "kv:" + "+".join(sorted(case["overrides"]))
    return case["kind"] + ":" + case.get("origin", "")
