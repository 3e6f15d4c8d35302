# Declarations of llama.cpp's common/log.h (libllama-common): only the verbosity threshold.
cdef extern from "log.h" nogil:
    void common_log_set_verbosity_thold(int verbosity)
