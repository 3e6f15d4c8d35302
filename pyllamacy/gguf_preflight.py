"""Pre-flight checks of a GGUF model file, and of kv_overrides, before llama.cpp reads them.

llama.cpp stops the whole process (GGML_ASSERT, an uncaught C++ exception) on some files it
accepts at load time: two tokens with the same text, a SentencePiece tokenizer over a
byte-level vocabulary, no vocabulary at all, a layer or expert count out of range, an epsilon
that is NaN or negative, an alignment mmap cannot use, a norm weight in a type the CPU ops do
not take. `check_model_file()` finds these in the file's header (metadata and tensor records;
no tensor data is read) and raises ModelLoadError naming the problem; a kv_overrides value
that would cause one raises ValueError.

The reader is a struct-based parser, linear in the size of the metadata, that refuses
anything but a regular file (a FIFO or a device would block or never end).

    read_header(path)       -> GGUFHeader: version, kv, tensors, alignment, data_offset, ...
    check_header(path)      -> (version, n_tensors, n_kv): the cheap 24-byte header check
    check_model_file(path, vocab_only=, use_mmap=, kv_overrides=) -> GGUFHeader
"""
from __future__ import annotations

import math
import os
import stat
import struct
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Tuple

from ._llama import ModelLoadError

__all__ = ["GGUFHeader", "GGUFArray", "TensorInfo", "read_header", "check_header",
           "check_model_file", "check_kv_overrides", "MAX_LAYERS", "MAX_EXPERTS"]

# llama.cpp's limits (src/llama-hparams.h, ggml/src/ggml-impl.h, ggml/src/gguf.cpp)
MAX_LAYERS = 512                # LLAMA_MAX_LAYERS
MAX_EXPERTS = 1024              # LLAMA_MAX_EXPERTS
TENSOR_ALIGNMENT = 32           # what ggml's CPU buffer from a host pointer (mmap) needs
DEFAULT_ALIGNMENT = 32          # GGUF_DEFAULT_ALIGNMENT
MAX_DIMS = 4                    # GGML_MAX_DIMS

GGUF_MAGIC = b"GGUF"
MIN_VERSION, MAX_VERSION = 2, 3

# GGUF value types
T_UINT8, T_INT8, T_UINT16, T_INT16, T_UINT32, T_INT32, T_FLOAT32, T_BOOL, T_STRING, \
    T_ARRAY, T_UINT64, T_INT64, T_FLOAT64 = range(13)
_SCALAR = {T_UINT8: "<B", T_INT8: "<b", T_UINT16: "<H", T_INT16: "<h", T_UINT32: "<I",
           T_INT32: "<i", T_FLOAT32: "<f", T_BOOL: "<?", T_UINT64: "<Q", T_INT64: "<q",
           T_FLOAT64: "<d"}
_SCALAR_SIZE = {t: struct.calcsize(f) for t, f in _SCALAR.items()}
_INT_TYPES = {T_UINT8, T_INT8, T_UINT16, T_INT16, T_UINT32, T_INT32, T_UINT64, T_INT64}
_FLOAT_TYPES = {T_FLOAT32, T_FLOAT64}
_ARRAY_VALUES_KEPT = 4096        # numeric arrays longer than this keep only their length

# ggml type id -> (name, elements per block, bytes per block) (ggml/src/ggml.c type_traits)
GGML_TYPES = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
    26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17), 40: ("NVFP4", 64, 36), 41: ("Q1_0", 128, 18),
    42: ("Q2_0", 64, 18),
}
GGML_TYPE_F32 = 0
# types the CPU backend cannot multiply a matrix by (no vec_dot in ggml-cpu's type_traits_cpu):
# a weight stored in one of them crashes or aborts the first decode
NO_MATMUL_TYPES = {9: "Q8_1", 15: "Q8_K", 24: "I8", 25: "I16", 26: "I32", 27: "I64",
                   28: "F64"}

# llama_rope_scaling_type_from_string (src/llama-model.cpp); anything else asserts
ROPE_SCALING_TYPES = ("none", "linear", "yarn", "longrope")


class GGUFArray(NamedTuple):
    """An array value: element type, length and the elements (strings as bytes); `values` is
    None for a numeric array longer than _ARRAY_VALUES_KEPT (only its length is kept)."""
    type: int
    n: int
    values: Optional[list]


class TensorInfo(NamedTuple):
    name: str
    dims: Tuple[int, ...]
    type: int
    offset: int          # relative to the data section


class GGUFHeader(NamedTuple):
    path: str
    version: int
    kv: Dict[str, Tuple[int, Any]]     # key -> (GGUF type, value); arrays as GGUFArray
    tensors: List[TensorInfo]
    alignment: int
    data_offset: int                    # absolute file offset of the data section
    file_size: int

    @property
    def arch(self) -> str:
        v = self.kv.get("general.architecture")
        return v[1] if v is not None and v[0] == T_STRING else ""

    def scalar_keys(self) -> List[str]:
        """The keys whose value is not an array, in file order (the keys llama.cpp lists
        as the model's metadata)."""
        return [k for k, (t, _) in self.kv.items() if t != T_ARRAY]


# -- reading ---------------------------------------------------------------------------------

def _open_regular(path, what: str):
    """Open `path` for reading if it is a regular file; never blocks on a FIFO or device."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"{what} path must be str or os.PathLike, not {type(path).__name__}")
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if "\0" in path:
        raise ValueError(f"{what} path contains a NUL byte")
    if not os.path.exists(path):
        raise FileNotFoundError(2, f"{what} file not found", path)
    if os.path.isdir(path):
        raise IsADirectoryError(21, f"{what} path is a directory, not a GGUF file", path)
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise ModelLoadError(f"{path}: not a regular file (a FIFO, socket or device); a GGUF "
                             f"{what} must be a regular file")
    # O_NONBLOCK: should the path have become a FIFO since the stat, open() still returns
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ModelLoadError(f"{path}: not a regular file; a GGUF {what} must be a "
                                 f"regular file")
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    return path, f, st.st_size


class _Reader:
    """Sequential little-endian reads over a file, in chunks of at least 1 MiB (and at least
    what is buffered, so that re-buffering stays linear), never past its size."""

    CHUNK = 1 << 20

    def __init__(self, f, size: int, path: str) -> None:
        self.f, self.size, self.path = f, size, path
        self.buf = b""
        self.base = 0            # file offset of buf[0]
        self.pos = 0             # position in buf

    def tell(self) -> int:
        return self.base + self.pos

    def _need(self, n: int, what: str) -> None:
        if self.pos + n <= len(self.buf):
            return
        if self.tell() + n > self.size:
            raise ModelLoadError(f"{self.path}: truncated or corrupt GGUF file: {what} at "
                                 f"offset {self.tell()} needs {n} bytes, the file has "
                                 f"{self.size}")
        # keep what is not consumed yet and read at least what is needed (the buffer is
        # bytes, so that slices of it are the strings themselves)
        parts = [self.buf[self.pos:]]
        have = len(parts[0])
        self.base += self.pos
        self.pos = 0
        while have < n:
            got = self.f.read(max(n - have, self.CHUNK, have))
            if not got:
                raise ModelLoadError(f"{self.path}: the file ended while reading {what}")
            parts.append(got)
            have += len(got)
        self.buf = b"".join(parts)

    def unpack(self, fmt: str, size: int, what: str):
        self._need(size, what)
        v = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += size
        return v

    def u32(self, what: str) -> int:
        return self.unpack("<I", 4, what)

    def u64(self, what: str) -> int:
        return self.unpack("<Q", 8, what)

    def string(self, what: str) -> bytes:
        n = self.u64(what)
        self._need(n, what)
        s = self.buf[self.pos:self.pos + n]
        self.pos += n
        return s

    def strings(self, count: int, what: str) -> List[bytes]:
        out = []
        append = out.append
        unpack_from = struct.unpack_from
        buf, pos, end = self.buf, self.pos, len(self.buf)
        for _ in range(count):
            if pos + 8 <= end:
                n = unpack_from("<Q", buf, pos)[0]
                if pos + 8 + n <= end:
                    pos += 8
                    append(buf[pos:pos + n])
                    pos += n
                    continue
            self.pos = pos              # past what is buffered: read on
            append(self.string(what))
            buf, pos, end = self.buf, self.pos, len(self.buf)
        self.pos = pos
        return out

    def array(self, etype: int, count: int, what: str) -> list:
        size = _SCALAR_SIZE[etype]
        self._need(size * count, what)
        vals = list(struct.unpack_from(f"<{count}{_SCALAR[etype][1]}", self.buf, self.pos))
        self.pos += size * count
        return vals

    def skip(self, n: int, what: str) -> None:
        if self.tell() + n > self.size:
            raise ModelLoadError(f"{self.path}: truncated or corrupt GGUF file: {what} runs "
                                 f"past the end of the file")
        if self.pos + n <= len(self.buf):
            self.pos += n
            return
        n -= len(self.buf) - self.pos
        self.base += len(self.buf) + n
        self.buf = b""
        self.pos = 0
        self.f.seek(self.base)


def _header_fields(head: bytes, size: int, path: str, what: str) -> Tuple[int, int, int]:
    if size == 0:
        raise ModelLoadError(f"{path}: the file is empty (0 bytes), not a GGUF {what}")
    if head[:4] != GGUF_MAGIC:
        raise ModelLoadError(f"{path}: not a GGUF file (magic bytes {head[:4]!r}, "
                             f"expected b'GGUF')")
    if len(head) < 24:
        raise ModelLoadError(f"{path}: truncated GGUF header ({size} bytes)")
    version, n_tensors, n_kv = struct.unpack_from("<IQQ", head, 4)
    if not (MIN_VERSION <= version <= MAX_VERSION):
        raise ModelLoadError(f"{path}: unsupported GGUF version {version} "
                             f"(this build reads versions {MIN_VERSION}..{MAX_VERSION})")
    # every key/value needs >= 12 bytes and every tensor record >= 24: cheap sanity bound
    if n_kv * 12 + n_tensors * 24 > size:
        raise ModelLoadError(f"{path}: truncated or corrupt GGUF file: header announces {n_kv} "
                             f"metadata keys and {n_tensors} tensors but the file has {size} "
                             f"bytes")
    return version, n_tensors, n_kv


def check_header(path, what: str = "model") -> Tuple[int, int, int]:
    """Validate a GGUF file's 24-byte header without loading it.

    Raises FileNotFoundError / IsADirectoryError / PermissionError for path problems and
    ModelLoadError (a ValueError) naming the reason for a non-regular, empty, truncated,
    non-GGUF or wrong-version file. `what` names the file in messages ("model", "LoRA
    adapter"). Returns (version, n_tensors, n_kv)."""
    path, f, size = _open_regular(path, what)
    with f:
        head = f.read(24)
    return _header_fields(head, size, path, what)


def _value(r: _Reader, vtype: int, key: str):
    if vtype == T_STRING:
        return r.string(key).decode("utf-8", "replace")
    if vtype in _SCALAR:
        return r.unpack(_SCALAR[vtype], _SCALAR_SIZE[vtype], key)
    if vtype == T_ARRAY:
        etype = r.u32(key)
        n = r.u64(key)
        if etype == T_STRING:
            if n * 8 > r.size - r.tell():
                raise ModelLoadError(f"{r.path}: corrupt GGUF metadata: array {key!r} announces "
                                     f"{n} strings, more than the file holds")
            return GGUFArray(etype, n, r.strings(n, key))
        if etype in _SCALAR:
            nbytes = n * _SCALAR_SIZE[etype]
            if n <= _ARRAY_VALUES_KEPT:
                return GGUFArray(etype, n, r.array(etype, n, key))
            r.skip(nbytes, key)
            return GGUFArray(etype, n, None)
        raise ModelLoadError(f"{r.path}: corrupt GGUF metadata: array {key!r} has element type "
                             f"{etype}, which GGUF does not define (nested arrays included)")
    raise ModelLoadError(f"{r.path}: corrupt GGUF metadata: key {key!r} has value type "
                         f"{vtype}, which GGUF does not define")


def read_header(path, what: str = "model") -> GGUFHeader:
    """Parse the metadata and tensor records of a GGUF file (no tensor data is read)."""
    path, f, size = _open_regular(path, what)
    with f:
        version, n_tensors, n_kv = _header_fields(f.read(24), size, path, what)
        r = _Reader(f, size, path)
        r.base = 24
        kv: Dict[str, Tuple[int, Any]] = {}
        for i in range(n_kv):
            key = r.string(f"metadata key #{i}").decode("utf-8", "replace")
            if key in kv:
                raise ModelLoadError(f"{path}: corrupt GGUF metadata: duplicate key {key!r}")
            vtype = r.u32(key)
            kv[key] = (vtype, _value(r, vtype, key))
        alignment = DEFAULT_ALIGNMENT
        if "general.alignment" in kv:
            atype, alignment = kv["general.alignment"]
            if atype != T_UINT32:
                raise ModelLoadError(f"{path}: general.alignment must be a uint32, not GGUF "
                                     f"type {atype}")
            if alignment <= 0 or alignment & (alignment - 1):
                raise ModelLoadError(f"{path}: general.alignment {alignment} is not a power "
                                     f"of two")
        tensors: List[TensorInfo] = []
        names = set()
        for i in range(n_tensors):
            name = r.string(f"tensor record #{i}").decode("utf-8", "replace")
            n_dims = r.u32(name)
            if n_dims > MAX_DIMS:
                raise ModelLoadError(f"{path}: tensor {name!r} has {n_dims} dimensions "
                                     f"(at most {MAX_DIMS})")
            dims = tuple(r.u64(name) for _ in range(n_dims))
            ttype = r.u32(name)
            offset = r.u64(name)
            if name in names:
                raise ModelLoadError(f"{path}: duplicate tensor name {name!r}")
            names.add(name)
            tensors.append(TensorInfo(name, dims, ttype, offset))
        end = r.tell()
        data_offset = end + (-end % alignment) if n_tensors else end
    return GGUFHeader(path, version, kv, tensors, alignment, data_offset, size)


# -- checks -------------------------------------------------------------------------------------

def _fail(path: str, msg: str):
    raise ModelLoadError(f"{path}: {msg}")


def _check_tensors(h: GGUFHeader, full_load: bool, use_mmap: bool) -> None:
    """Types known, data inside the file, offsets aligned; for a load of the weights also
    norm weights in F32 and, with mmap, every tensor where ggml can use it in place."""
    for t in h.tensors:
        info = GGML_TYPES.get(t.type)
        if info is None:
            _fail(h.path, f"tensor {t.name!r} has ggml type {t.type}, which this build does "
                          f"not know")
        tname, blck, tsize = info
        ne0 = t.dims[0] if t.dims else 1
        if ne0 % blck:
            _fail(h.path, f"tensor {t.name!r} of type {tname}: its first dimension {ne0} is "
                          f"not a multiple of the block size {blck}")
        n = 1
        for d in t.dims:
            n *= d
        nbytes = n // blck * tsize
        if t.offset % h.alignment:
            _fail(h.path, f"tensor {t.name!r}: data offset {t.offset} is not a multiple of the "
                          f"file's alignment {h.alignment}")
        if h.data_offset + t.offset + nbytes > h.file_size:
            _fail(h.path, f"tensor {t.name!r}: its data ({nbytes} bytes at offset "
                          f"{h.data_offset + t.offset}) runs past the end of the file "
                          f"({h.file_size} bytes); the file is truncated or corrupt")
        if full_load and t.type in NO_MATMUL_TYPES:
            _fail(h.path, f"tensor {t.name!r} is stored as {tname}; a model's tensors must be "
                          f"float (F32, F16, BF16) or quantized types the CPU backend can "
                          f"multiply, never {'/'.join(NO_MATMUL_TYPES.values())}")
        # the norm weights and biases are multiplied into / added to F32 activations; ggml's
        # CPU binary ops take only an F32 right-hand side with an F32 left-hand side
        if full_load and len(t.dims) == 1 and t.type != GGML_TYPE_F32 and (
                t.name.endswith(("norm.weight", "norm.bias", ".bias"))):
            _fail(h.path, f"tensor {t.name!r} is stored as {tname}; norm weights and biases "
                          f"must be F32 (the CPU ops abort on any other type)")
        if full_load and use_mmap and (h.data_offset + t.offset) % TENSOR_ALIGNMENT:
            _fail(h.path, f"tensor {t.name!r} starts at file offset {h.data_offset + t.offset}, "
                          f"not a multiple of {TENSOR_ALIGNMENT} bytes as a memory-mapped load "
                          f"needs (general.alignment is {h.alignment}); load it with "
                          f"use_mmap=False or rewrite the file with an alignment of 32")


def _check_vocab(h: GGUFHeader, overrides: Optional[Mapping[str, Any]] = None) -> None:
    kv, path = h.kv, h.path
    mkey = "tokenizer.ggml.model"
    ov = (overrides or {}).get(mkey)
    if isinstance(ov, str):
        # llama.cpp takes a str override of the tokenizer model (one of another type is
        # ignored; the file's value stands), up to its first NUL byte
        model = ov.split("\0", 1)[0]

        def model_fail(msg: str):
            raise ValueError(f"kv_overrides[{mkey!r}]: {msg}")
    else:
        model = kv.get(mkey)
        if model is None:
            return      # llama.cpp reports a missing tokenizer itself
        if model[0] != T_STRING:
            _fail(path, "tokenizer.ggml.model must be a string")
        model = model[1].split("\0", 1)[0]

        def model_fail(msg: str):
            _fail(path, msg)
    if model in ("none", "no_vocab"):
        model_fail(f"tokenizer.ggml.model is {model!r}: the model has no vocabulary, and "
                   f"pyllamacy needs one to tokenize text")
    tok = kv.get("tokenizer.ggml.tokens")
    if tok is None:
        return      # llama.cpp: "cannot find tokenizer vocab in model file"
    if tok[0] != T_ARRAY or tok[1].type != T_STRING:
        _fail(path, "tokenizer.ggml.tokens must be an array of strings")
    tokens = tok[1].values
    n = len(tokens)
    if n == 0:
        _fail(path, "tokenizer.ggml.tokens is empty")
    if n >= 2 ** 31:
        _fail(path, f"tokenizer.ggml.tokens has {n} entries, more than a token id can hold")
    for key, types in (("tokenizer.ggml.scores", _FLOAT_TYPES | _INT_TYPES),
                       ("tokenizer.ggml.token_type", {T_INT32})):
        v = kv.get(key)
        if v is None:
            continue
        if v[0] != T_ARRAY or v[1].type not in types:
            _fail(path, f"{key} must be an array of numbers")
        if v[1].n < n:
            _fail(path, f"{key} has {v[1].n} entries but tokenizer.ggml.tokens has {n}; "
                        f"it needs one per token")
    # llama.cpp maps each token's text to its id and asserts the map has one entry per token.
    # It reads the text as a C string (gguf_get_arr_str), so a NUL byte ends it, and stores
    # an empty text as "[EMPTY_<id>]"
    seen: Dict[bytes, int] = {}
    texts = []
    for i, t in enumerate(tokens):
        if b"\0" in t:
            t = t[:t.index(b"\0")]
        if not t:
            t = b"[EMPTY_%d]" % i
        texts.append(t)
        j = seen.setdefault(t, i)
        if j != i:
            same = "the same text" if tokens[i] == tokens[j] else \
                "the same text as llama.cpp reads it (up to the first NUL byte)"
            _fail(path, f"tokens {j} and {i} have {same} "
                        f"{t.decode('utf-8', 'replace')!r}: every token of the vocabulary "
                        f"must be distinct")
    if model == "rwkv":
        # the RWKV tokenizer matches the longest token at each position and makes no progress
        # (loops forever) when the first byte starts a token but is none itself; an RWKV
        # vocabulary has every single byte as a token (some escaped: \\xHH, \\n, ...)
        single = set()
        for t in texts:
            if len(t) == 1 and t != b"\\":
                single.add(t)
            elif b"\\" in t:
                u = _unescape_rwkv(t)
                if len(u) == 1:
                    single.add(u)
        if len(single) < 256:
            model_fail(f"tokenizer.ggml.model is 'rwkv' but the vocabulary has no token for "
                       f"{256 - len(single)} of the 256 bytes, as every RWKV vocabulary "
                       f"does (the RWKV tokenizer never ends on such text); the vocabulary "
                       f"is not an RWKV one, or the tokenizer model is wrong")
    if model == "llama":
        # SentencePiece falls back to byte tokens <0xXX> (or the one-byte text) for text it
        # has no piece for; a GPT-2 style byte-level vocabulary has neither
        missing = [b for b in range(256)
                   if b"<0x%02X>" % b not in seen and bytes([b]) not in seen]
        if missing and any(t.startswith("Ġ".encode()) for t in tokens):
            model_fail(f"tokenizer.ggml.model is 'llama' (SentencePiece) but the vocabulary "
                       f"is byte-level (GPT-2 style, 'Ġ' tokens) and lacks {len(missing)} "
                       f"of the 256 byte tokens <0xXX> SentencePiece needs; the tokenizer "
                       f"model is probably 'gpt2'")


def _unescape_rwkv(t: bytes) -> bytes:
    """llama_unescape_rwkv_token (src/llama-vocab.cpp), byte for byte."""
    out = bytearray()
    escaping = False
    hex_remaining = hex_acc = 0
    for c in t:
        if hex_remaining:
            value = c - 87 if 97 <= c < 128 else c - 48      # `char` is signed
            hex_acc = ((hex_acc << 4) + value) & 0xFF
            hex_remaining -= 1
            if not hex_remaining:
                out.append(hex_acc)
                hex_acc = 0
            continue
        if escaping:
            if c == 0x74:
                out.append(9)
            elif c == 0x6E:
                out.append(10)
            elif c == 0x72:
                out.append(13)
            elif c == 0x78:
                hex_remaining = 2
            else:
                out.append(c)
            escaping = False
            continue
        if c == 0x5C:
            escaping = True
            continue
        out.append(c)
    return bytes(out)


def _int_values(v) -> Optional[List[int]]:
    """The integers of a scalar or array value; None when it holds no integers (llama.cpp
    reports a value of the wrong type itself)."""
    t, val = v
    if t == T_ARRAY:
        vals = val.values if val.type in _INT_TYPES else None
        return None if vals is None else list(vals)
    return [val] if t in _INT_TYPES else None


class _Source:
    """The effective value of each key: kv_overrides first, then the file. A problem with a
    value from an override is the caller's (ValueError); from the file, the file's."""

    def __init__(self, h: GGUFHeader, overrides: Mapping[str, Any]) -> None:
        self.h, self.ov = h, overrides

    def get(self, key: str):
        if key in self.ov:
            v = self.ov[key]
            if isinstance(v, bool):
                return T_BOOL, v
            if isinstance(v, int):
                return T_INT64, v
            if isinstance(v, float):
                return T_FLOAT64, v
            return T_STRING, v
        return self.h.kv.get(key)

    def overridden(self, key: str) -> bool:
        return key in self.ov

    def keys(self, prefix: str) -> set:
        return {k for k in self.h.kv if k.startswith(prefix)} | \
            {k for k in self.ov if k.startswith(prefix)}

    def fail(self, key: str, msg: str):
        if key in self.ov:
            raise ValueError(f"kv_overrides[{key!r}] {msg}")
        _fail(self.h.path, f"{key} {msg}")


def _check_hparams(h: GGUFHeader, overrides: Mapping[str, Any]) -> None:
    """The hyperparameters llama.cpp asserts on (load_hparams, the norm ops)."""
    arch = h.arch
    if not arch or arch == "clip":
        return          # llama.cpp reads no hyperparameters of a CLIP file
    src = _Source(h, overrides)
    _check_layers(src, arch)
    _check_heads(src, arch)
    _check_experts(src, arch)
    _check_epsilons(src, arch)
    _check_rope_scaling(src, arch)


def _ints(src: "_Source", key: str) -> Optional[List[int]]:
    v = src.get(key)
    return None if v is None else _int_values(v)


def _check_layers(src: "_Source", arch: str) -> None:
    key = f"{arch}.block_count"
    bc = _ints(src, key)
    if bc is None:
        return          # missing: llama.cpp reports it
    if len(bc) != 1 or not 0 < bc[0] <= MAX_LAYERS:
        src.fail(key, f"is {bc[0] if len(bc) == 1 else bc}; llama.cpp needs 1..{MAX_LAYERS} "
                      f"layers")
    nk = f"{arch}.nextn_predict_layers"
    nextn = _ints(src, nk)
    if nextn and not 0 <= nextn[0] <= bc[0]:
        src.fail(nk, f"is {nextn[0]}; it must be 0..block_count ({bc[0]})")


def _check_heads(src: "_Source", arch: str) -> None:
    """Grouped-query attention: each layer's query heads must be a multiple of its key/value
    heads (ggml asserts at the first decode otherwise). Scalars or per-layer arrays."""
    hk, kk = f"{arch}.attention.head_count", f"{arch}.attention.head_count_kv"
    heads = _ints(src, hk)
    kv_heads = _ints(src, kk)
    if not heads or not kv_heads:
        return
    n = max(len(heads), len(kv_heads))
    if len(heads) not in (1, n) or len(kv_heads) not in (1, n):
        return          # arrays of other lengths: llama.cpp reports them
    for il in range(n):
        h = heads[il if len(heads) > 1 else 0]
        k = kv_heads[il if len(kv_heads) > 1 else 0]
        if h > 0 and k > 0 and h % k:
            where = f" (layer {il})" if n > 1 else ""
            src.fail(kk if src.overridden(kk) or not src.overridden(hk) else hk,
                     f"does not fit: {h} attention heads are not a multiple of {k} key/value "
                     f"heads{where}")


def _check_experts(src: "_Source", arch: str) -> None:
    ek, uk = f"{arch}.expert_count", f"{arch}.expert_used_count"
    gk, guk = f"{arch}.expert_group_count", f"{arch}.expert_group_used_count"
    n_expert = (_ints(src, ek) or [0])[0]
    if arch in ("hunyuan-dense", "hunyuan_vl") and n_expert <= 1:
        return          # llama.cpp sets these models' expert counts to 0
    used = _ints(src, uk) or [0]
    used_max = max(used, default=0)
    groups = (_ints(src, gk) or [0])[0]
    group_used = (_ints(src, guk) or [0])[0]
    if not 0 <= n_expert <= MAX_EXPERTS:
        src.fail(ek, f"is {n_expert}; llama.cpp supports 0..{MAX_EXPERTS} experts")
    if min(used, default=0) < 0 or used_max > n_expert:
        blame = ek if src.overridden(ek) and not src.overridden(uk) else uk
        src.fail(blame, f"is {n_expert if blame == ek else used_max}: the experts used per "
                        f"token ({used_max}) must be 0..expert_count ({n_expert})")
    if n_expert > 0:
        if used_max == 0:
            src.fail(uk, f"is 0 or missing but the model has {n_expert} experts; at least "
                         f"one must be used per token")
        if not 0 <= groups < n_expert:
            src.fail(gk, f"is {groups}; it must be less than expert_count ({n_expert})")
        if groups > 1:
            if n_expert % groups:
                src.fail(gk, f"is {groups}, which does not divide expert_count ({n_expert})")
            if not 0 < group_used < groups:
                src.fail(guk, f"is {group_used}; it must be 1..{groups - 1}")
    elif groups != 0:
        src.fail(gk, f"is {groups} but the model has no experts")


def _check_epsilons(src: "_Source", arch: str) -> None:
    """ggml's norm ops assert eps >= 0 (a NaN fails it too), at the first decode."""
    for key in sorted(src.keys(arch + ".")):
        last = key.rsplit(".", 1)[-1]
        if not (last.endswith("epsilon") or last.endswith("_eps") or last == "eps"):
            continue
        t, val = src.get(key)
        vals = (val.values or []) if t == T_ARRAY else [val]
        for x in vals:
            if t != T_BOOL and isinstance(x, (int, float)) and \
                    not (math.isfinite(x) and x >= 0):
                src.fail(key, f"is {x}; an epsilon must be finite and >= 0 (the norm ops "
                              f"abort otherwise)")


def _check_rope_scaling(src: "_Source", arch: str) -> None:
    """load_hparams asserts the rope scaling type is one llama.cpp knows. An override of
    another type than str is ignored by llama.cpp (the file's value stands); a string value
    ends at its first NUL byte (llama.cpp reads a C string)."""
    key = f"{arch}.rope.scaling.type"
    ov = src.ov.get(key) if src.overridden(key) else None
    if isinstance(ov, str):
        val, blame_override = ov, True
    else:
        v = src.h.kv.get(key)
        if v is None or v[0] != T_STRING:
            return      # missing: "linear"; another type: llama.cpp reports it
        val, blame_override = v[1], False
    name = val.split("\0", 1)[0]
    if name not in ROPE_SCALING_TYPES:
        msg = (f"is {val!r}, not a rope scaling type llama.cpp knows "
               f"({', '.join(ROPE_SCALING_TYPES)})")
        if blame_override:
            raise ValueError(f"kv_overrides[{key!r}] {msg}")
        _fail(src.h.path, f"{key} {msg}")


def check_kv_overrides(overrides: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """kv_overrides as a dict of str keys (as Model passes them to llama.cpp: str(key))."""
    if not overrides:
        return {}
    if not isinstance(overrides, Mapping):
        raise TypeError(f"kv_overrides must be a mapping, not {type(overrides).__name__}")
    return {str(k): v for k, v in overrides.items()}


def check_model_file(path, *, vocab_only: bool = False, use_mmap: bool = True,
                     kv_overrides: Optional[Mapping[str, Any]] = None) -> GGUFHeader:
    """Everything above, for a model about to be loaded with these settings; returns the
    parsed header. Raises ModelLoadError for the file, ValueError for kv_overrides."""
    overrides = check_kv_overrides(kv_overrides)
    h = read_header(path)
    _check_vocab(h, overrides)
    _check_hparams(h, overrides)
    _check_tensors(h, full_load=not vocab_only, use_mmap=use_mmap)
    return h
