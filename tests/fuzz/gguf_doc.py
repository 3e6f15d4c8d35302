"""A GGUF file as plain Python data, serialised by hand so that a mutator can write anything:
wrong value types, array lengths that lie, duplicate keys, odd alignment, tensor infos that
point outside the file. Reading uses the `gguf` package (only on the well-formed base)."""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, List, Optional

import numpy as np

# GGUF value types
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
_SCALAR = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f",
           BOOL: "<?", U64: "<Q", I64: "<q", F64: "<d"}
# ggml tensor types used here: name -> (id, block size, bytes per block)
GGML = {"F32": (0, 1, 4), "F16": (1, 1, 2), "Q4_0": (2, 32, 18), "Q4_1": (3, 32, 20),
        "Q8_0": (8, 32, 34), "BF16": (30, 1, 2), "I8": (24, 1, 1), "I32": (26, 1, 4)}


class Raw(bytes):
    """Bytes written verbatim in place of an encoded value (after its type tag)."""


@dataclass
class KV:
    key: Any            # str or bytes (bytes: written as is, may be invalid UTF-8)
    vtype: int
    value: Any
    sub: Optional[int] = None   # element type of an array


@dataclass
class Tensor:
    name: Any
    dims: List[int]
    ttype: int
    data: bytes
    offset: Optional[int] = None    # None: laid out by the writer


@dataclass
class Doc:
    kvs: List[KV] = field(default_factory=list)
    tensors: List[Tensor] = field(default_factory=list)
    version: int = 3
    n_kv: Optional[int] = None          # header counts; None: the real ones
    n_tensors: Optional[int] = None
    alignment: Optional[int] = None     # layout alignment; None: general.alignment or 32
    truncate: Optional[int] = None      # cut the file at this byte
    flips: List[int] = field(default_factory=list)   # byte positions to xor with 0xff

    def get(self, key):
        for kv in self.kvs:
            if kv.key == key:
                return kv
        return None

    def set(self, key, vtype, value, sub=None):
        kv = self.get(key)
        if kv is None:
            self.kvs.append(KV(key, vtype, value, sub))
        else:
            kv.vtype, kv.value, kv.sub = vtype, value, sub

    def remove(self, key):
        self.kvs = [kv for kv in self.kvs if kv.key != key]

    def copy(self) -> "Doc":
        return Doc([KV(k.key, k.vtype, k.value if not isinstance(k.value, list) else list(k.value),
                       k.sub) for k in self.kvs],
                   [Tensor(t.name, list(t.dims), t.ttype, t.data, t.offset) for t in self.tensors],
                   self.version, self.n_kv, self.n_tensors, self.alignment, self.truncate,
                   list(self.flips))


def _str(s) -> bytes:
    b = s if isinstance(s, bytes) else str(s).encode("utf-8", "surrogatepass")
    return struct.pack("<Q", len(b)) + b


def _value(vtype: int, value, sub=None) -> bytes:
    if isinstance(value, Raw):
        return bytes(value)
    if vtype == STR:
        return _str(value)
    if vtype == ARR:
        sub = STR if sub is None else sub
        if sub == STR:
            body = b"".join(_str(v) for v in value)
        elif sub == ARR:
            body = b"".join(_value(ARR, v, STR) for v in value)
        elif sub in _SCALAR and isinstance(value, np.ndarray):
            body = value.astype(np.dtype(_SCALAR[sub])).tobytes()
        elif sub in _SCALAR:
            body = b"".join(_value(sub, v) for v in value)
        else:           # unknown element type: no body at all
            body = b""
        return struct.pack("<IQ", sub & 0xffffffff, len(value)) + body
    if vtype in _SCALAR:
        fmt = _SCALAR[vtype]
        if fmt in ("<f", "<d"):
            return struct.pack(fmt, float(value))
        if fmt == "<?":
            return struct.pack("<B", int(bool(value)))
        bits = struct.calcsize(fmt) * 8
        v = int(value) & ((1 << bits) - 1)
        return struct.pack(fmt.upper() if fmt[-1].islower() else fmt, v)
    return b""          # unknown value type: nothing follows


def nbytes(ttype: int, dims) -> int:
    for _, (tid, blk, size) in GGML.items():
        if tid == ttype:
            n = 1
            for d in dims:
                n *= int(d)
            return n // blk * size
    return 0


def serialize(doc: Doc) -> bytes:
    align = doc.alignment
    if align is None:
        kv = doc.get("general.alignment")
        align = kv.value if kv is not None and isinstance(kv.value, int) and kv.value > 0 else 32
    align = max(1, int(align))
    out = [b"GGUF", struct.pack("<I", doc.version & 0xffffffff),
           struct.pack("<Q", (len(doc.tensors) if doc.n_tensors is None else doc.n_tensors)
                       & 0xffffffffffffffff),
           struct.pack("<Q", (len(doc.kvs) if doc.n_kv is None else doc.n_kv)
                       & 0xffffffffffffffff)]
    for kv in doc.kvs:
        out.append(_str(kv.key) + struct.pack("<I", kv.vtype & 0xffffffff)
                   + _value(kv.vtype, kv.value, kv.sub))
    # tensor data layout
    offsets, pos = [], 0
    for t in doc.tensors:
        pos = (pos + align - 1) // align * align
        offsets.append(pos)
        pos += len(t.data)
    for t, off in zip(doc.tensors, offsets):
        o = off if t.offset is None else t.offset
        out.append(_str(t.name) + struct.pack("<I", len(t.dims) & 0xffffffff)
                   + b"".join(struct.pack("<Q", d & 0xffffffffffffffff) for d in t.dims)
                   + struct.pack("<IQ", t.ttype & 0xffffffff, o & 0xffffffffffffffff))
    head = b"".join(out)
    head += b"\0" * ((-len(head)) % align)
    data = bytearray()
    for t, off in zip(doc.tensors, offsets):
        data += b"\0" * (off - len(data))
        data += t.data
    blob = bytearray(head + bytes(data))
    for p in doc.flips:
        if 0 <= p < len(blob):
            blob[p] ^= 0xff
    if doc.truncate is not None:
        blob = blob[:doc.truncate]
    return bytes(blob)


def read(path: str) -> Doc:
    """A well-formed GGUF file (tensors included) as a Doc."""
    import gguf
    r = gguf.GGUFReader(path)
    doc = Doc()
    for name, f in r.fields.items():
        if name.startswith("GGUF."):
            continue
        vtype = int(f.types[0])
        if vtype == ARR:
            sub = int(f.types[-1])
            if sub == STR:
                val = [bytes(f.parts[i]) for i in f.data]
            else:
                val = np.concatenate([f.parts[i] for i in f.data]) if f.data else np.zeros(0)
            doc.kvs.append(KV(name, ARR, val, sub))
        elif vtype == STR:
            doc.kvs.append(KV(name, STR, bytes(f.parts[f.data[0]])))
        else:
            doc.kvs.append(KV(name, vtype, f.parts[f.data[0]][0].item()))
    for t in r.tensors:
        doc.tensors.append(Tensor(t.name, [int(d) for d in t.shape], int(t.tensor_type),
                                  bytes(t.data.tobytes())))
    return doc
