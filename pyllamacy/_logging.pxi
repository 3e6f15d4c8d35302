# llama.cpp / ggml logging. One C callback (no GIL) captures warnings and errors so that
# exceptions can quote them, and prints lines at or above the chosen level to stderr.

_LOG_LEVELS = {"debug": 1, "info": 2, "warn": 3, "warning": 3, "error": 4, "none": 99}


def set_log_level(level):
    """Print llama.cpp messages at or above `level` ("debug", "info", "warn", "error", "none").

    The default is "error". Warnings and errors are always captured for exception messages.
    """
    if isinstance(level, bool):
        level = "info" if level else "error"
    if not isinstance(level, str) or level.lower() not in _LOG_LEVELS:
        raise ValueError(f"log level must be one of {sorted(_LOG_LEVELS)}, got {level!r}")
    S.set_print_level(_LOG_LEVELS[level.lower()])


def get_log_level():
    cdef int lvl = S.get_print_level()
    for name, value in _LOG_LEVELS.items():
        if value == lvl:
            return name
    return str(lvl)


cdef void _install_log_callbacks() noexcept:
    L.llama_log_set(S.log_callback, NULL)
    G.ggml_log_set(S.log_callback, NULL)
    M.mtmd_helper_log_set(S.log_callback, NULL)
