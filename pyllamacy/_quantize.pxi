# quantize(): llama_model_quantize with checked arguments and a progress callback.

QUANT_TYPES = {
    "f32": L.LLAMA_FTYPE_ALL_F32, "f16": L.LLAMA_FTYPE_MOSTLY_F16,
    "bf16": L.LLAMA_FTYPE_MOSTLY_BF16,
    "q4_0": L.LLAMA_FTYPE_MOSTLY_Q4_0, "q4_1": L.LLAMA_FTYPE_MOSTLY_Q4_1,
    "q5_0": L.LLAMA_FTYPE_MOSTLY_Q5_0, "q5_1": L.LLAMA_FTYPE_MOSTLY_Q5_1,
    "q8_0": L.LLAMA_FTYPE_MOSTLY_Q8_0,
    "q2_k": L.LLAMA_FTYPE_MOSTLY_Q2_K, "q2_k_s": L.LLAMA_FTYPE_MOSTLY_Q2_K_S,
    "q3_k_s": L.LLAMA_FTYPE_MOSTLY_Q3_K_S, "q3_k_m": L.LLAMA_FTYPE_MOSTLY_Q3_K_M,
    "q3_k_l": L.LLAMA_FTYPE_MOSTLY_Q3_K_L,
    "q4_k_s": L.LLAMA_FTYPE_MOSTLY_Q4_K_S, "q4_k_m": L.LLAMA_FTYPE_MOSTLY_Q4_K_M,
    "q5_k_s": L.LLAMA_FTYPE_MOSTLY_Q5_K_S, "q5_k_m": L.LLAMA_FTYPE_MOSTLY_Q5_K_M,
    "q6_k": L.LLAMA_FTYPE_MOSTLY_Q6_K,
    "iq4_nl": L.LLAMA_FTYPE_MOSTLY_IQ4_NL, "iq4_xs": L.LLAMA_FTYPE_MOSTLY_IQ4_XS,
    "tq1_0": L.LLAMA_FTYPE_MOSTLY_TQ1_0, "tq2_0": L.LLAMA_FTYPE_MOSTLY_TQ2_0,
}
QUANT_TYPES["q4_k"] = QUANT_TYPES["q4_k_m"]
QUANT_TYPES["q5_k"] = QUANT_TYPES["q5_k_m"]
QUANT_TYPES["q3_k"] = QUANT_TYPES["q3_k_m"]

_quantize_lock = threading.Lock()    # the progress counters are process-wide


cdef uint32_t _quantize_c(const char * src, const char * dst,
                          L.llama_model_quantize_params * p) noexcept nogil:
    return L.llama_model_quantize(src, dst, p)


def quantize(src, dst, qtype="q4_0", *, int nthread=0, bint allow_requantize=False,
             bint quantize_output_tensor=True, bint only_copy=False, bint pure=False,
             progress_callback=None):
    """Quantize GGUF file `src` into `dst` (e.g. qtype="q4_0", "q8_0", "q4_k_m").

    progress_callback(fraction) is called from this thread as tensors are written.
    Returns dst. Raises QuantizeError with llama.cpp's reason on failure.
    """
    check_gguf(src)
    src_s, dst_s = os.fspath(src), os.fspath(dst)
    if isinstance(qtype, str):
        key = qtype.lower()
        if key not in QUANT_TYPES:
            raise ValueError(f"unknown quantization type {qtype!r}; choose one of "
                             f"{sorted(QUANT_TYPES)}")
        ftype = QUANT_TYPES[key]
    elif isinstance(qtype, int) and qtype in QUANT_TYPES.values():
        ftype = qtype
    else:
        raise ValueError(f"unknown quantization type {qtype!r}")
    if os.path.abspath(src_s) == os.path.abspath(dst_s):
        raise ValueError("quantize: src and dst must be different files")
    d = os.path.dirname(os.path.abspath(dst_s))
    if not os.path.isdir(d):
        raise FileNotFoundError(2, "output directory does not exist", d)
    if os.path.isdir(dst_s):
        raise IsADirectoryError(21, "quantize output is a directory", dst_s)
    if nthread < 0:
        raise ValueError(f"nthread must be >= 0, got {nthread}")
    if progress_callback is not None and not callable(progress_callback):
        raise TypeError("progress_callback must be callable")

    cdef L.llama_model_quantize_params p = L.llama_model_quantize_default_params()
    p.nthread = nthread or default_n_threads()
    p.ftype = <L.llama_ftype> ftype
    p.allow_requantize = allow_requantize
    p.quantize_output_tensor = quantize_output_tensor
    p.only_copy = only_copy
    p.pure = pure
    cdef bytes bsrc = os.fsencode(src_s), bdst = os.fsencode(dst_s)
    result = {}

    def work():
        cdef uint32_t rc
        cdef L.llama_model_quantize_params pp = p
        cdef const char * c_src = bsrc
        cdef const char * c_dst = bdst
        with nogil:
            rc = _quantize_c(c_src, c_dst, &pp)
        result["rc"] = rc

    with _quantize_lock:
        mark = S.log_mark()
        S.quant_progress_reset()
        t = threading.Thread(target=work, name="pyllamacy-quantize", daemon=True)
        t.start()
        last = -1.0
        while t.is_alive():
            t.join(0.1)
            if progress_callback is not None:
                total = S.quant_progress_total()
                frac = S.quant_progress_done() / total if total else 0.0
                if frac != last:
                    last = frac
                    progress_callback(frac)
        if result.get("rc", 1) != 0:
            raise QuantizeError(f"quantizing {src_s} to {qtype} failed: "
                                f"{_recent_log(mark, True) or 'llama.cpp gave no reason'}")
        if progress_callback is not None and last != 1.0:
            progress_callback(1.0)
    return dst_s
