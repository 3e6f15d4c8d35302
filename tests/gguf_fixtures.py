"""Small GGUF files written with the `gguf` package for tests: a tiny random llama-architecture
model in F32 (with the tokenizer of a real model, so prompts tokenize as usual) and LoRA
adapters for it. F32 everywhere, so that tests can compare llama.cpp's result with weights
merged here in numpy."""
from __future__ import annotations

from typing import Dict, Optional, Tuple

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


def _write_tiny(path: str, arch: str, name: str, tokenizer_src: str,
                weights: Dict[str, np.ndarray], *, context_length: int, rms_eps: float,
                extra=None) -> None:
    """A GGUF of the TINY shape: the tokenizer of `tokenizer_src`, the hyperparameters, what
    `extra(writer, n_vocab)` adds, then `weights` (all F32)."""
    w = gguf.GGUFWriter(path, arch=arch)
    n_vocab = _copy_tokenizer(tokenizer_src, w)
    E = TINY["n_embd"]
    w.add_name(name)
    w.add_block_count(TINY["n_layer"])
    w.add_context_length(context_length)
    w.add_embedding_length(E)
    w.add_feed_forward_length(TINY["n_ff"])
    w.add_head_count(TINY["n_head"])
    w.add_head_count_kv(TINY["n_head_kv"])
    w.add_rope_dimension_count(E // TINY["n_head"])
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(rms_eps)
    w.add_vocab_size(n_vocab)
    if extra is not None:
        extra(w, n_vocab)
    w.add_file_type(0)                       # all F32
    for tname, arr in weights.items():
        w.add_tensor(tname, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_tiny_model(path: str, tokenizer_src: str, weights: Dict[str, np.ndarray],
                     token_ids: Optional[Dict[str, int]] = None) -> None:
    """token_ids: extra tokenizer.ggml.<name> ids to set (e.g. {"fim_rep_token_id": 5}), for a
    vocabulary whose special tokens llama.cpp does not find by their text."""
    def extra(w, n_vocab):
        for key, tid in (token_ids or {}).items():
            w.add_uint32(f"tokenizer.ggml.{key}", tid)
    _write_tiny(path, "llama", "tiny random llama", tokenizer_src, weights,
                context_length=256, rms_eps=1e-5, extra=extra)


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


# -- a tiny random vision projector (LLaVA-1.5 layout: CLIP ViT + 2-layer MLP) ------------------

VISION = dict(image_size=32, patch_size=16, n_embd=64, n_ff=128, n_layer=2, n_head=4,
              proj_hidden=96)


def write_tiny_mmproj(path: str, text_n_embd: int, seed: int = 5) -> None:
    """An mmproj GGUF of projector type "mlp" for a text model of width `text_n_embd`:
    (32/16)^2 = 4 patches + a class token, so each image is 4 embeddings in the prompt."""
    v = VISION
    rng = np.random.default_rng(seed)
    E, F, H = v["n_embd"], v["n_ff"], v["proj_hidden"]
    n_patches = (v["image_size"] // v["patch_size"]) ** 2

    def mat(*shape, std=0.1):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    w = gguf.GGUFWriter(path, arch="clip")
    w.add_string("general.name", "tiny random llava projector")
    w.add_uint32("general.file_type", 1)
    w.add_bool("clip.has_vision_encoder", True)
    w.add_bool("clip.has_text_encoder", False)
    w.add_bool("clip.use_gelu", True)
    w.add_string("clip.projector_type", "mlp")
    w.add_uint32("clip.vision.image_size", v["image_size"])
    w.add_uint32("clip.vision.patch_size", v["patch_size"])
    w.add_uint32("clip.vision.embedding_length", E)
    w.add_uint32("clip.vision.feed_forward_length", F)
    w.add_uint32("clip.vision.projection_dim", text_n_embd)
    w.add_uint32("clip.vision.block_count", v["n_layer"])
    w.add_uint32("clip.vision.attention.head_count", v["n_head"])
    w.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-5)
    w.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    w.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])
    p = v["patch_size"]
    w.add_tensor("v.patch_embd.weight", mat(E, 3, p, p, std=0.05).astype(np.float16))
    w.add_tensor("v.class_embd", mat(E))
    w.add_tensor("v.position_embd.weight", mat(n_patches + 1, E))
    w.add_tensor("v.pre_ln.weight", np.ones(E, np.float32))
    w.add_tensor("v.pre_ln.bias", np.zeros(E, np.float32))
    for i in range(v["n_layer"]):
        b = f"v.blk.{i}."
        for n in ("attn_q", "attn_k", "attn_v", "attn_out"):
            w.add_tensor(b + n + ".weight", mat(E, E))
            w.add_tensor(b + n + ".bias", mat(E, std=0.01))
        for n in ("ln1", "ln2"):
            w.add_tensor(b + n + ".weight", np.ones(E, np.float32))
            w.add_tensor(b + n + ".bias", np.zeros(E, np.float32))
        w.add_tensor(b + "ffn_up.weight", mat(F, E))
        w.add_tensor(b + "ffn_up.bias", mat(F, std=0.01))
        w.add_tensor(b + "ffn_down.weight", mat(E, F))
        w.add_tensor(b + "ffn_down.bias", mat(E, std=0.01))
    w.add_tensor("mm.0.weight", mat(H, E))
    w.add_tensor("mm.0.bias", mat(H, std=0.01))
    w.add_tensor("mm.2.weight", mat(text_n_embd, H, std=0.3))
    w.add_tensor("mm.2.bias", mat(text_n_embd, std=0.01))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def png_bytes(rgb: np.ndarray) -> bytes:
    """A PNG file of an (h, w, 3) uint8 image (stored, 8-bit RGB)."""
    import struct
    import zlib
    h, wd, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].astype(np.uint8).tobytes() for y in range(h))

    def chunk(tag, data):
        return (struct.pack(">I", len(data)) + tag + data +
                struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", wd, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


RERANK_TEMPLATE = "<|im_start|>query: {query}\ndocument: {document}<|im_end|>"


def write_tiny_reranker(path: str, tokenizer_src: str, seed: int = 7,
                        template: bool = True) -> None:
    """A tiny random Qwen3-reranker-shaped model: qwen3 architecture, rank pooling, a 2-label
    classifier head (cls.output, "yes"/"no", soft-maxed by llama.cpp) and, with `template`, a
    `tokenizer.chat_template.rerank` prompt as converted Qwen3 rerankers carry."""
    rng = np.random.default_rng(seed)
    weights = tiny_weights(len(gguf.GGUFReader(tokenizer_src).fields["tokenizer.ggml.tokens"]
                               .data), seed=seed)
    E = TINY["n_embd"]
    head = E // TINY["n_head"]
    for i in range(TINY["n_layer"]):
        weights[f"blk.{i}.attn_q_norm.weight"] = np.ones(head, dtype=np.float32)
        weights[f"blk.{i}.attn_k_norm.weight"] = np.ones(head, dtype=np.float32)
    weights["cls.output.weight"] = (rng.standard_normal((2, E)) * 0.5).astype(np.float32)

    def extra(w, n_vocab):
        w.add_key_length(head)
        w.add_value_length(head)
        w.add_pooling_type(gguf.PoolingType.RANK)
        w.add_array("qwen3.classifier.output_labels", ["yes", "no"])
        if template:
            w.add_string("tokenizer.chat_template.rerank", RERANK_TEMPLATE)
    _write_tiny(path, "qwen3", "tiny random qwen3 reranker", tokenizer_src, weights,
                context_length=512, rms_eps=1e-6, extra=extra)
