# cython: language_level=3
#
# Declarations for the subset of ggml-backend.h that pyllamacy needs.
# Declarations only, no code.
#
# Gotchas:
#   * `enum ggml_backend_dev_type` and the function `ggml_backend_dev_type()`
#     share a name in C (tag vs. ordinary namespace); Cython has one namespace,
#     so the function is exposed as `ggml_backend_dev_get_type`.
#   * `ggml_backend_dev_caps.async` is a Python keyword -> exposed as `async_`.
#   * bool: `bint` for plain values, libc.stdbool `bool` inside function
#     pointer types (see ggml.pxd).

from libc.stdbool cimport bool

from pyllamacy.includes.ggml cimport (
    ggml_tensor, ggml_abort_callback,
    ggml_backend_buffer,   # declared in ggml.pxd (used by ggml_tensor.buffer)
)


cdef extern from "ggml-backend.h" nogil:

    cdef struct ggml_backend_buffer_type
    cdef struct ggml_backend_event
    cdef struct ggml_backend
    cdef struct ggml_backend_reg
    cdef struct ggml_backend_device

    ctypedef ggml_backend_buffer_type * ggml_backend_buffer_type_t
    ctypedef ggml_backend_buffer      * ggml_backend_buffer_t
    ctypedef ggml_backend_event       * ggml_backend_event_t
    ctypedef ggml_backend             * ggml_backend_t
    ctypedef void                     * ggml_backend_graph_plan_t
    ctypedef ggml_backend_reg         * ggml_backend_reg_t
    ctypedef ggml_backend_device      * ggml_backend_dev_t

    #
    # Backend buffer type
    #

    const char *          ggml_backend_buft_name          (ggml_backend_buffer_type_t buft)
    ggml_backend_buffer_t ggml_backend_buft_alloc_buffer  (ggml_backend_buffer_type_t buft, size_t size)
    size_t                ggml_backend_buft_get_alignment (ggml_backend_buffer_type_t buft)
    size_t                ggml_backend_buft_get_max_size  (ggml_backend_buffer_type_t buft)
    bint                  ggml_backend_buft_is_host       (ggml_backend_buffer_type_t buft)
    ggml_backend_dev_t    ggml_backend_buft_get_device    (ggml_backend_buffer_type_t buft)

    #
    # Backend buffer
    #

    cdef enum ggml_backend_buffer_usage:
        GGML_BACKEND_BUFFER_USAGE_ANY
        GGML_BACKEND_BUFFER_USAGE_WEIGHTS
        GGML_BACKEND_BUFFER_USAGE_COMPUTE

    const char *               ggml_backend_buffer_name    (ggml_backend_buffer_t buffer)
    void                       ggml_backend_buffer_free    (ggml_backend_buffer_t buffer)
    void *                     ggml_backend_buffer_get_base(ggml_backend_buffer_t buffer)
    size_t                     ggml_backend_buffer_get_size(ggml_backend_buffer_t buffer)
    bint                       ggml_backend_buffer_is_host (ggml_backend_buffer_t buffer)
    ggml_backend_buffer_type_t ggml_backend_buffer_get_type(ggml_backend_buffer_t buffer)

    #
    # Backend (stream)
    #

    const char * ggml_backend_name(ggml_backend_t backend)
    void         ggml_backend_free(ggml_backend_t backend)

    ggml_backend_buffer_type_t ggml_backend_get_default_buffer_type(ggml_backend_t backend)
    void                       ggml_backend_synchronize(ggml_backend_t backend)
    ggml_backend_dev_t         ggml_backend_get_device(ggml_backend_t backend)

    # "offset" refers to the offset in tensor->data for setting/getting data
    void ggml_backend_tensor_set(      ggml_tensor * tensor, const void * data, size_t offset, size_t size)
    void ggml_backend_tensor_get(const ggml_tensor * tensor,       void * data, size_t offset, size_t size)

    #
    # Backend device
    #

    cdef enum ggml_backend_dev_type:
        # CPU device using system memory
        GGML_BACKEND_DEVICE_TYPE_CPU
        # GPU device using dedicated memory
        GGML_BACKEND_DEVICE_TYPE_GPU
        # integrated GPU device using host memory
        GGML_BACKEND_DEVICE_TYPE_IGPU
        # accelerator devices intended to be used together with the CPU backend (e.g. BLAS or AMX)
        GGML_BACKEND_DEVICE_TYPE_ACCEL
        # "meta" device wrapping multiple other devices for tensor parallelism
        GGML_BACKEND_DEVICE_TYPE_META

    # functionality supported by the device
    cdef struct ggml_backend_dev_caps:
        bint async_ "async"          # asynchronous operations (`async` is a Python keyword)
        bint host_buffer             # pinned host buffer
        bint buffer_from_host_ptr    # creating buffers from host ptr
        bint events                  # event synchronization
        bint mmap_support            # mmap is supported for loading

    # all the device properties
    cdef struct ggml_backend_dev_props:
        const char * name
        const char * description
        size_t memory_free
        size_t memory_total
        ggml_backend_dev_type type
        const char * device_id       # lower-case PCI bus id, or NULL
        ggml_backend_dev_caps caps

    const char *               ggml_backend_dev_name(ggml_backend_dev_t device)
    const char *               ggml_backend_dev_description(ggml_backend_dev_t device)
    void                       ggml_backend_dev_memory(ggml_backend_dev_t device, size_t * free, size_t * total)
    # C name `ggml_backend_dev_type` clashes with the enum of the same name
    ggml_backend_dev_type      ggml_backend_dev_get_type "ggml_backend_dev_type"(ggml_backend_dev_t device)
    void                       ggml_backend_dev_get_props(ggml_backend_dev_t device, ggml_backend_dev_props * props)
    ggml_backend_reg_t         ggml_backend_dev_backend_reg(ggml_backend_dev_t device)
    ggml_backend_t             ggml_backend_dev_init(ggml_backend_dev_t device, const char * params)
    ggml_backend_buffer_type_t ggml_backend_dev_buffer_type(ggml_backend_dev_t device)
    ggml_backend_buffer_type_t ggml_backend_dev_host_buffer_type(ggml_backend_dev_t device)

    bint                       ggml_backend_dev_supports_op(ggml_backend_dev_t device, const ggml_tensor * op)
    bint                       ggml_backend_dev_supports_buft(ggml_backend_dev_t device, ggml_backend_buffer_type_t buft)
    bint                       ggml_backend_dev_offload_op(ggml_backend_dev_t device, const ggml_tensor * op)

    #
    # Backend (reg)
    #

    const char *       ggml_backend_reg_name(ggml_backend_reg_t reg)
    size_t             ggml_backend_reg_dev_count(ggml_backend_reg_t reg)
    ggml_backend_dev_t ggml_backend_reg_dev_get(ggml_backend_reg_t reg, size_t index)
    void *             ggml_backend_reg_get_proc_address(ggml_backend_reg_t reg, const char * name)

    # Common functions that may be obtained using ggml_backend_reg_get_proc_address

    # Split buffer type for tensor parallelism (old)
    ctypedef ggml_backend_buffer_type_t   (*ggml_backend_split_buffer_type_t)(int main_device, const float * tensor_split) noexcept
    # Set the number of threads for the backend
    ctypedef void                         (*ggml_backend_set_n_threads_t)(ggml_backend_t backend, int n_threads) noexcept
    # Get additional buffer types provided by the device (returns a NULL-terminated array)
    ctypedef ggml_backend_buffer_type_t * (*ggml_backend_dev_get_extra_bufts_t)(ggml_backend_dev_t device) noexcept
    # Set the abort callback for the backend
    ctypedef void                         (*ggml_backend_set_abort_callback_t)(ggml_backend_t backend, ggml_abort_callback abort_callback, void * abort_callback_data) noexcept
    # Get a list of feature flags supported by the backend (returns a NULL-terminated array)
    cdef struct ggml_backend_feature:
        const char * name
        const char * value
    ctypedef ggml_backend_feature * (*ggml_backend_get_features_t)(ggml_backend_reg_t reg) noexcept

    #
    # Backend registry
    #

    void ggml_backend_register(ggml_backend_reg_t reg)
    void ggml_backend_device_register(ggml_backend_dev_t device)

    # Backend (reg) enumeration
    size_t             ggml_backend_reg_count()
    ggml_backend_reg_t ggml_backend_reg_get(size_t index)
    ggml_backend_reg_t ggml_backend_reg_by_name(const char * name)

    # Device enumeration
    size_t             ggml_backend_dev_count()
    ggml_backend_dev_t ggml_backend_dev_get(size_t index)
    ggml_backend_dev_t ggml_backend_dev_by_name(const char * name)
    ggml_backend_dev_t ggml_backend_dev_by_type(ggml_backend_dev_type type)

    # Direct backend (stream) initialization
    ggml_backend_t ggml_backend_init_by_name(const char * name, const char * params)
    ggml_backend_t ggml_backend_init_by_type(ggml_backend_dev_type type, const char * params)
    ggml_backend_t ggml_backend_init_best()

    # Load a backend from a dynamic library and register it
    ggml_backend_reg_t ggml_backend_load(const char * path)
    # Unload a backend if loaded dynamically and unregister it
    void               ggml_backend_unload(ggml_backend_reg_t reg)
    # Load all known backends from dynamic libraries
    void               ggml_backend_load_all()
    void               ggml_backend_load_all_from_path(const char * dir_path)

    #
    # Backend scheduler
    #

    cdef struct ggml_backend_sched
    ctypedef ggml_backend_sched * ggml_backend_sched_t

    # Evaluation callback for each node in the graph (set with ggml_backend_sched_set_eval_callback)
    # when ask == true, the scheduler wants to know if the user wants to observe this node
    # when ask == false, the scheduler is passing the node tensor to the user for observation
    # if the user returns false, the scheduler will cancel the graph compute
    ctypedef bool (*ggml_backend_sched_eval_callback)(ggml_tensor * t, bool ask, void * user_data) noexcept

    #
    # Utils
    #

    # CPU buffer types are always available
    ggml_backend_buffer_t      ggml_backend_cpu_buffer_from_ptr(void * ptr, size_t size)
    ggml_backend_buffer_type_t ggml_backend_cpu_buffer_type()
