# cython: language_level=3
#
# Declarations for ggml-rpc.h (the RPC backend: a model's layers on other hosts).
# Declarations only, no code.
#
# IMPORTANT: with GGML_BACKEND_DL=ON the RPC backend (libggml-rpc.so) is a dynamically loaded
# module, NOT linked into libggml. The functions of ggml-rpc.h do not resolve at link time:
# reach them through the module's registry entry, as llama.cpp's common/arg.cpp does:
#     ggml_backend_reg_get_proc_address(reg, "ggml_backend_rpc_add_server")
# and cast to the function pointer types below. Only the types and macros are safe to use
# unconditionally.

from pyllamacy.includes.ggml_backend cimport ggml_backend_reg_t, ggml_backend_dev_t


cdef extern from "ggml-rpc.h" nogil:

    # the protocol version this build speaks (a server must have the same major version and
    # a minor version no newer than ours)
    const int RPC_PROTO_MAJOR_VERSION
    const int RPC_PROTO_MINOR_VERSION
    const int RPC_PROTO_PATCH_VERSION

    const int GGML_RPC_MAX_SERVERS


# function pointer types of what the module hands out by name (header has no typedefs: ours)
# GGML_BACKEND_API ggml_backend_reg_t ggml_backend_rpc_add_server(const char * endpoint);
# Connects to "host:port" (IPv4 or a host name), asks for its device count and returns a
# registry entry holding one device per remote device (cached per endpoint, never freed).
# ABORTS the process when the endpoint does not parse, the connection fails or the
# handshake fails: validate and probe the endpoint first (pyllamacy/rpc.py).
ctypedef ggml_backend_reg_t (*ggml_backend_rpc_add_server_t)(const char * endpoint) noexcept nogil

# GGML_BACKEND_API void ggml_backend_rpc_start_server(const char * endpoint,
#     const char * cache_dir, size_t n_threads, size_t n_devices, ggml_backend_dev_t * devices);
# Serves forever in the calling thread (pyllamacy runs the ggml-rpc-server program instead).
ctypedef void (*ggml_backend_rpc_start_server_t)(const char * endpoint, const char * cache_dir,
                                                 size_t n_threads, size_t n_devices,
                                                 ggml_backend_dev_t * devices) noexcept nogil
