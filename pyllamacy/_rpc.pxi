# RPC devices: a model's offloaded layers on llama.cpp rpc-servers of other hosts.
#
# llama.cpp's own programs (common/arg.cpp --rpc) register each server's devices in the global
# device list; pyllamacy does not: it hands the devices to the one model that asked for them
# (llama_model_params.devices), so later models, devices() and the fit stage never reach a
# server nobody asked for (llama.cpp aborts the process when a server it calls is gone).
# The servers are checked first in Python (pyllamacy/rpc.py: syntax, then a handshake), since
# ggml_backend_rpc_add_server aborts on a bad endpoint or a failed connection.

from pyllamacy.includes cimport ggml_rpc as R

cdef GB.ggml_backend_reg_t _rpc_reg = NULL
# endpoint -> open Models whose weights live there. An rpc-server serves one client (one
# connection) at a time and every model of this process shares one connection per endpoint:
# a probe of an endpoint in use would wait on our own connection, so it is skipped then.
_rpc_users = {}


def rpc_protocol_version():
    """The RPC protocol version (major, minor, patch) this build's RPC backend speaks."""
    return (R.RPC_PROTO_MAJOR_VERSION, R.RPC_PROTO_MINOR_VERSION, R.RPC_PROTO_PATCH_VERSION)


cdef GB.ggml_backend_reg_t _rpc_backend() except NULL:
    """The RPC backend's registry entry: loaded from lib/ on first use."""
    global _rpc_reg
    cdef GB.ggml_backend_reg_t reg
    if _rpc_reg == NULL:
        reg = GB.ggml_backend_reg_by_name(b"RPC")
        if reg == NULL:
            path = os.path.join(_LIB_DIR, "libggml-rpc.so")
            if not os.path.exists(path):
                raise BackendError(f"this pyllamacy build has no RPC backend ({path} is "
                                   f"missing): rpc_servers cannot be used")
            reg = _load_module(path)
            _backend_report["RPC"] = {"path": path, "status": "loaded",
                                      "reason": "rpc_servers"}
        _rpc_reg = reg
    return _rpc_reg


cdef int _rpc_server_devices(list endpoints, vector[GB.ggml_backend_dev_t] & out) except -1:
    """Append the devices of each server (checked endpoints, in order) to `out`."""
    from pyllamacy import rpc
    cdef GB.ggml_backend_reg_t reg = _rpc_backend()
    cdef R.ggml_backend_rpc_add_server_t add_server = \
        <R.ggml_backend_rpc_add_server_t> GB.ggml_backend_reg_get_proc_address(
            reg, b"ggml_backend_rpc_add_server")
    if add_server == NULL:
        raise BackendError("the RPC backend has no ggml_backend_rpc_add_server")
    cdef GB.ggml_backend_reg_t sreg
    cdef bytes bep
    cdef const char * c_ep
    cdef size_t i, n
    for ep in endpoints:
        if not _rpc_users.get(ep):
            rpc.probe(ep)
        bep = ep.encode()
        c_ep = bep
        with nogil:
            sreg = add_server(c_ep)
        if sreg == NULL:
            raise rpc.RPCError(f"RPC server {ep} has no devices")
        n = GB.ggml_backend_reg_dev_count(sreg)
        for i in range(n):
            out.push_back(GB.ggml_backend_reg_dev_get(sreg, i))
    return 0


cdef int _local_offload_devices(vector[GB.ggml_backend_dev_t] & out) except -1:
    """Append the local devices llama.cpp's default selection would use (llama.cpp's
    llama_prepare_model_devices): the GPUs, one per device id; the integrated GPUs of one
    backend only when there is no GPU."""
    cdef size_t i, n = GB.ggml_backend_dev_count()
    cdef GB.ggml_backend_dev_t dev
    cdef GB.ggml_backend_dev_props props
    cdef vector[GB.ggml_backend_dev_t] gpus, igpus
    seen_ids = set()
    for i in range(n):
        dev = GB.ggml_backend_dev_get(i)
        t = GB.ggml_backend_dev_get_type(dev)
        if t == GB.GGML_BACKEND_DEVICE_TYPE_GPU:
            if GB.ggml_backend_reg_name(GB.ggml_backend_dev_backend_reg(dev)) == b"RPC":
                continue        # registered by someone else: not asked for here
            GB.ggml_backend_dev_get_props(dev, &props)
            if props.device_id != NULL:
                dev_id = props.device_id
                if dev_id in seen_ids:
                    continue
                seen_ids.add(dev_id)
            gpus.push_back(dev)
        elif t == GB.GGML_BACKEND_DEVICE_TYPE_IGPU:
            if igpus.empty() or (GB.ggml_backend_dev_backend_reg(dev)
                                 == GB.ggml_backend_dev_backend_reg(igpus.back())):
                igpus.push_back(dev)
    if not gpus.empty():
        for i in range(gpus.size()):
            out.push_back(gpus[i])
    else:
        for i in range(igpus.size()):
            out.push_back(igpus[i])
    return 0


def rpc_devices(servers):
    """The devices of RPC servers ("host:port,..." or a list), each probed first: a list of
    dicts (name, description = the endpoint, memory_free, memory_total in bytes) in the order
    a model given these rpc_servers uses them."""
    from pyllamacy import rpc
    endpoints = rpc.parse_servers(servers)
    cdef vector[GB.ggml_backend_dev_t] devs
    _rpc_server_devices(endpoints, devs)
    cdef size_t free_mem = 0, total_mem = 0
    cdef GB.ggml_backend_dev_t dev
    out = []
    for dev in devs:
        with nogil:
            GB.ggml_backend_dev_memory(dev, &free_mem, &total_mem)
        out.append({"name": GB.ggml_backend_dev_name(dev).decode("utf-8", "replace"),
                    "description": GB.ggml_backend_dev_description(dev).decode("utf-8",
                                                                               "replace"),
                    "memory_free": free_mem, "memory_total": total_mem})
    return out
