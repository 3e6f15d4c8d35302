# Backends. pyllamacy loads ggml backend modules itself instead of ggml_backend_load_all(), so
# that it decides where they come from (the package's lib/ folder and installed backend
# packages, never the current directory) and which CPU variant runs: the highest-scoring one
# that is not an AMX build, unless PYLLAMACY_ALLOW_AMX=1 (AMX kernels crash on some clouds that
# advertise AMX).

_LIB_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib")
_AMX_VARIANTS = frozenset({"sapphirerapids"})

# name -> {"path", "status", "reason"}; status is "loaded", "skipped" or "failed"
_backend_report = {}
_cpu_variant_info = {}


def cpu_variant_scores(lib_dir=None):
    """Score each CPU backend variant in `lib_dir` on this CPU (0 = unsupported).

    Returns a list of dicts (variant, path, score, error), best first. Nothing is registered.
    """
    cdef string err
    cdef int score
    lib_dir = lib_dir or _LIB_DIR
    out = []
    try:
        names = sorted(os.listdir(lib_dir))
    except OSError:
        names = []
    for fn in names:
        if not (fn.startswith("libggml-cpu-") and fn.endswith(".so")):
            continue
        variant = fn[len("libggml-cpu-"):len(fn) - len(".so")]
        path = os.path.join(lib_dir, fn)
        bpath = os.fsencode(path)
        err.clear()
        score = S.backend_score(bpath, &err)
        out.append({"variant": variant, "path": path, "score": score,
                    "error": err.decode("utf-8", "replace") if score < 0 else None})
    out.sort(key=lambda d: d["score"], reverse=True)
    return out


cdef GB.ggml_backend_reg_t _load_module(str path) except? NULL:
    cdef bytes bpath = os.fsencode(path)
    cdef const char * c_path = bpath
    cdef GB.ggml_backend_reg_t reg
    cdef uint64_t mark = S.log_mark()
    with nogil:
        reg = GB.ggml_backend_load(c_path)
    if reg == NULL:
        raise BackendError(f"could not load backend module {path}: "
                           f"{_recent_log(mark) or 'no reason given by ggml'}")
    return reg


def _load_cpu_backend():
    allow_amx = os.environ.get("PYLLAMACY_ALLOW_AMX") == "1"
    forced = os.environ.get("PYLLAMACY_CPU_VARIANT")
    scores = cpu_variant_scores()
    if not scores:
        raise BackendError(f"no CPU backend (libggml-cpu-*.so) in {_LIB_DIR}: broken install")
    candidates = []
    for d in scores:
        if forced:
            if d["variant"] == forced:
                candidates.append(d)
            continue
        if d["score"] <= 0:
            continue
        if d["variant"] in _AMX_VARIANTS and not allow_amx:
            _backend_report["cpu-" + d["variant"]] = {
                "path": d["path"], "status": "skipped",
                "reason": "AMX variant; set PYLLAMACY_ALLOW_AMX=1 to allow it"}
            continue
        candidates.append(d)
    if forced and not candidates:
        raise BackendError(f"PYLLAMACY_CPU_VARIANT={forced!r} names no CPU variant; "
                           f"available: {[d['variant'] for d in scores]}")
    errors = []
    for d in candidates:
        try:
            _load_module(d["path"])
        except BackendError as e:
            errors.append(str(e))
            _backend_report["cpu-" + d["variant"]] = {"path": d["path"], "status": "failed",
                                                     "reason": str(e)}
            continue
        _backend_report["cpu-" + d["variant"]] = {"path": d["path"], "status": "loaded",
                                                 "reason": f"score {d['score']}"}
        _cpu_variant_info.update(d)
        return d["variant"]
    raise BackendError("no CPU backend variant could be loaded on this CPU: " + "; ".join(errors))


def load_backend(path):
    """Load and register a ggml backend module (e.g. libggml-cuda.so). Returns its name."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    cdef GB.ggml_backend_reg_t reg = _load_module(path)
    name = GB.ggml_backend_reg_name(reg).decode()
    _backend_report[name] = {"path": path, "status": "loaded", "reason": ""}
    return name


def _note_backend(name, path, status, reason):
    """Record why a backend was or was not loaded (used by pyllamacy.backends discovery)."""
    _backend_report[name] = {"path": path, "status": status, "reason": reason}


def backend_report():
    """What pyllamacy tried to load, and why each one did or did not load."""
    return {k: dict(v) for k, v in _backend_report.items()}


def cpu_variant():
    """The CPU backend variant in use (e.g. 'haswell', 'zen4')."""
    return _cpu_variant_info.get("variant")


_DEV_TYPES = {GB.GGML_BACKEND_DEVICE_TYPE_CPU: "cpu", GB.GGML_BACKEND_DEVICE_TYPE_GPU: "gpu",
              GB.GGML_BACKEND_DEVICE_TYPE_ACCEL: "accel"}


def devices():
    """The devices of every registered backend: name, description, type, memory (bytes)."""
    cdef size_t i, n = GB.ggml_backend_dev_count()
    cdef GB.ggml_backend_dev_t dev
    cdef size_t free_mem = 0, total_mem = 0
    out = []
    for i in range(n):
        dev = GB.ggml_backend_dev_get(i)
        GB.ggml_backend_dev_memory(dev, &free_mem, &total_mem)
        out.append({
            "name": GB.ggml_backend_dev_name(dev).decode("utf-8", "replace"),
            "description": GB.ggml_backend_dev_description(dev).decode("utf-8", "replace"),
            "type": _DEV_TYPES.get(GB.ggml_backend_dev_get_type(dev), "other"),
            "backend": GB.ggml_backend_reg_name(GB.ggml_backend_dev_backend_reg(dev)).decode(),
            "memory_free": free_mem,
            "memory_total": total_mem,
        })
    return out


def backends():
    """Registered backends with their features (e.g. CPU: AVX2, FMA, FP16_VA ...) and devices."""
    cdef size_t i, n = GB.ggml_backend_reg_count()
    cdef GB.ggml_backend_reg_t reg
    cdef GB.ggml_backend_get_features_t get_features
    cdef GB.ggml_backend_feature * feats
    out = []
    devs = devices()
    for i in range(n):
        reg = GB.ggml_backend_reg_get(i)
        name = GB.ggml_backend_reg_name(reg).decode("utf-8", "replace")
        features = {}
        get_features = <GB.ggml_backend_get_features_t> GB.ggml_backend_reg_get_proc_address(
            reg, b"ggml_backend_get_features")
        if get_features != NULL:
            feats = get_features(reg)
            while feats != NULL and feats[0].name != NULL:
                features[feats[0].name.decode("utf-8", "replace")] = \
                    feats[0].value.decode("utf-8", "replace")
                feats += 1
        out.append({"name": name, "features": features,
                    "devices": [d for d in devs if d["backend"] == name]})
    return out


def system_info():
    """llama.cpp's system info line (CPU features of the loaded backends)."""
    return L.llama_print_system_info().decode("utf-8", "replace")


def supports_gpu_offload():
    return bool(L.llama_supports_gpu_offload())


def supports_mmap():
    return bool(L.llama_supports_mmap())


def supports_mlock():
    return bool(L.llama_supports_mlock())


def max_devices():
    return L.llama_max_devices()


def llama_cpp_version():
    return L.llama_version().decode()


def time_us():
    return L.llama_time_us()


cdef bint _initialized = False


def _init_library():
    """Called once at import: log capture, CPU backend, llama_backend_init."""
    global _initialized
    if _initialized:
        return
    _install_log_callbacks()
    _load_cpu_backend()     # before llama_backend_init, which would otherwise load_all() from cwd
    with nogil:
        L.llama_backend_init()
    _initialized = True
