# cython: language_level=3
#
# Complete declarations for llama.h (pinned llama.cpp commit), in header order.
# Declarations only, no code.  Functions marked DEPRECATED(...) in the header
# are intentionally omitted.
#
# Gotchas:
#   * C name clashes (enum tag vs. function of the same name; Cython has a single
#     namespace), functions are renamed on the Cython side:
#         llama_vocab_type(vocab)   -> llama_vocab_get_type
#         llama_pooling_type(ctx)   -> llama_get_pooling_type
#   * llama_model_kv_override has an anonymous union: its members val_i64,
#     val_f64, val_bool, val_str are declared directly on the struct (C11
#     anonymous-union member access `ov.val_i64` is what Cython emits).
#   * bool: plain fields / params / returns use `bint` (value conversion is
#     ABI-safe).  Function pointer types (callback typedefs and the
#     llama_sampler_i vtable) use `bool` from libc.stdbool (C name `bool`), so
#     that a Cython callback declared as `cdef bool cb(...) noexcept ...` has
#     exactly the C type; a callback returning `bint` (= C int) would be an
#     incompatible pointer type for the C compiler.
#   * All callback types are `noexcept`; the callbacks can be invoked from
#     threads without the GIL, so implement them as `noexcept nogil` or
#     `noexcept with gil`.

from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdio cimport FILE
from libc.stdbool cimport bool

from pyllamacy.includes.ggml cimport (
    ggml_type,
    ggml_tensor,
    ggml_context,
    ggml_cgraph,
    ggml_abort_callback,
    ggml_log_callback,
    ggml_threadpool_t,
    ggml_opt_dataset_t,
    ggml_opt_result_t,
    ggml_opt_get_optimizer_params,
    ggml_opt_optimizer_type,
    ggml_opt_epoch_callback,
)
from pyllamacy.includes.ggml_cpu cimport ggml_numa_strategy
from pyllamacy.includes.ggml_backend cimport (
    ggml_backend_dev_t,
    ggml_backend_buffer_type_t,
    ggml_backend_sched_eval_callback,
)
from pyllamacy.includes.gguf cimport gguf_context


cdef extern from "llama.h" nogil:

    #
    # C interface
    #

    cdef struct llama_vocab
    cdef struct llama_model
    cdef struct llama_context
    cdef struct llama_sampler

    cdef struct llama_memory_i
    ctypedef llama_memory_i * llama_memory_t

    ctypedef int32_t llama_pos
    ctypedef int32_t llama_token
    ctypedef int32_t llama_seq_id

    # ---- constants (macros) ----
    const uint32_t    LLAMA_DEFAULT_SEED       # 0xFFFFFFFF
    const llama_token LLAMA_TOKEN_NULL         # -1

    const uint32_t LLAMA_FILE_MAGIC_GGLA
    const uint32_t LLAMA_FILE_MAGIC_GGSN
    const uint32_t LLAMA_FILE_MAGIC_GGSQ

    const uint32_t LLAMA_SESSION_MAGIC
    const int      LLAMA_SESSION_VERSION

    const uint32_t LLAMA_STATE_SEQ_MAGIC
    const int      LLAMA_STATE_SEQ_VERSION

    cdef enum llama_vocab_type:
        LLAMA_VOCAB_TYPE_NONE     # For models without vocab
        LLAMA_VOCAB_TYPE_SPM      # LLaMA tokenizer based on byte-level BPE with byte fallback
        LLAMA_VOCAB_TYPE_BPE      # GPT-2 tokenizer based on byte-level BPE
        LLAMA_VOCAB_TYPE_WPM      # BERT tokenizer based on WordPiece
        LLAMA_VOCAB_TYPE_UGM      # T5 tokenizer based on Unigram
        LLAMA_VOCAB_TYPE_RWKV     # RWKV tokenizer based on greedy tokenization
        LLAMA_VOCAB_TYPE_PLAMO2   # PLaMo-2 tokenizer based on Aho-Corasick with dynamic programming
        LLAMA_VOCAB_TYPE_TEST     # Dummy tokenizer for testing

    cdef enum llama_rope_type:
        LLAMA_ROPE_TYPE_NONE
        LLAMA_ROPE_TYPE_NORM
        LLAMA_ROPE_TYPE_NEOX
        LLAMA_ROPE_TYPE_MROPE
        LLAMA_ROPE_TYPE_IMROPE
        LLAMA_ROPE_TYPE_VISION

    cdef enum llama_token_type:
        LLAMA_TOKEN_TYPE_UNDEFINED
        LLAMA_TOKEN_TYPE_NORMAL
        LLAMA_TOKEN_TYPE_UNKNOWN
        LLAMA_TOKEN_TYPE_CONTROL
        LLAMA_TOKEN_TYPE_USER_DEFINED
        LLAMA_TOKEN_TYPE_UNUSED
        LLAMA_TOKEN_TYPE_BYTE

    cdef enum llama_token_attr:
        LLAMA_TOKEN_ATTR_UNDEFINED
        LLAMA_TOKEN_ATTR_UNKNOWN
        LLAMA_TOKEN_ATTR_UNUSED
        LLAMA_TOKEN_ATTR_NORMAL
        LLAMA_TOKEN_ATTR_CONTROL
        LLAMA_TOKEN_ATTR_USER_DEFINED
        LLAMA_TOKEN_ATTR_BYTE
        LLAMA_TOKEN_ATTR_NORMALIZED
        LLAMA_TOKEN_ATTR_LSTRIP
        LLAMA_TOKEN_ATTR_RSTRIP
        LLAMA_TOKEN_ATTR_SINGLE_WORD

    # model file types
    cdef enum llama_ftype:
        LLAMA_FTYPE_ALL_F32
        LLAMA_FTYPE_MOSTLY_F16
        LLAMA_FTYPE_MOSTLY_Q4_0
        LLAMA_FTYPE_MOSTLY_Q4_1
        # 4, 5, 6: removed
        LLAMA_FTYPE_MOSTLY_Q8_0
        LLAMA_FTYPE_MOSTLY_Q5_0
        LLAMA_FTYPE_MOSTLY_Q5_1
        LLAMA_FTYPE_MOSTLY_Q2_K
        LLAMA_FTYPE_MOSTLY_Q3_K_S
        LLAMA_FTYPE_MOSTLY_Q3_K_M
        LLAMA_FTYPE_MOSTLY_Q3_K_L
        LLAMA_FTYPE_MOSTLY_Q4_K_S
        LLAMA_FTYPE_MOSTLY_Q4_K_M
        LLAMA_FTYPE_MOSTLY_Q5_K_S
        LLAMA_FTYPE_MOSTLY_Q5_K_M
        LLAMA_FTYPE_MOSTLY_Q6_K
        LLAMA_FTYPE_MOSTLY_IQ2_XXS
        LLAMA_FTYPE_MOSTLY_IQ2_XS
        LLAMA_FTYPE_MOSTLY_Q2_K_S
        LLAMA_FTYPE_MOSTLY_IQ3_XS
        LLAMA_FTYPE_MOSTLY_IQ3_XXS
        LLAMA_FTYPE_MOSTLY_IQ1_S
        LLAMA_FTYPE_MOSTLY_IQ4_NL
        LLAMA_FTYPE_MOSTLY_IQ3_S
        LLAMA_FTYPE_MOSTLY_IQ3_M
        LLAMA_FTYPE_MOSTLY_IQ2_S
        LLAMA_FTYPE_MOSTLY_IQ2_M
        LLAMA_FTYPE_MOSTLY_IQ4_XS
        LLAMA_FTYPE_MOSTLY_IQ1_M
        LLAMA_FTYPE_MOSTLY_BF16
        # 33, 34, 35: removed (Q4_0_4_4 etc.)
        LLAMA_FTYPE_MOSTLY_TQ1_0
        LLAMA_FTYPE_MOSTLY_TQ2_0
        LLAMA_FTYPE_MOSTLY_MXFP4_MOE
        LLAMA_FTYPE_MOSTLY_NVFP4
        LLAMA_FTYPE_MOSTLY_Q1_0
        LLAMA_FTYPE_MOSTLY_Q2_0

        LLAMA_FTYPE_GUESSED   # not specified in the model file

    # Get the model file type (quantization) as a string, e.g. "Q8_0" or "Q4_K - Medium"
    const char * llama_ftype_name(llama_ftype ftype)

    cdef enum llama_rope_scaling_type:
        LLAMA_ROPE_SCALING_TYPE_UNSPECIFIED
        LLAMA_ROPE_SCALING_TYPE_NONE
        LLAMA_ROPE_SCALING_TYPE_LINEAR
        LLAMA_ROPE_SCALING_TYPE_YARN
        LLAMA_ROPE_SCALING_TYPE_LONGROPE
        LLAMA_ROPE_SCALING_TYPE_MAX_VALUE

    cdef enum llama_pooling_type:
        LLAMA_POOLING_TYPE_UNSPECIFIED
        LLAMA_POOLING_TYPE_NONE
        LLAMA_POOLING_TYPE_MEAN
        LLAMA_POOLING_TYPE_CLS
        LLAMA_POOLING_TYPE_LAST
        LLAMA_POOLING_TYPE_RANK   # used by reranking models

    cdef enum llama_attention_type:
        LLAMA_ATTENTION_TYPE_UNSPECIFIED
        LLAMA_ATTENTION_TYPE_CAUSAL
        LLAMA_ATTENTION_TYPE_NON_CAUSAL

    cdef enum llama_flash_attn_type:
        LLAMA_FLASH_ATTN_TYPE_AUTO
        LLAMA_FLASH_ATTN_TYPE_DISABLED
        LLAMA_FLASH_ATTN_TYPE_ENABLED

    const char * llama_flash_attn_type_name(llama_flash_attn_type flash_attn_type)

    cdef enum llama_split_mode:
        LLAMA_SPLIT_MODE_NONE     # single GPU
        LLAMA_SPLIT_MODE_LAYER    # split layers and KV across GPUs
        LLAMA_SPLIT_MODE_ROW      # split layers and KV across GPUs, use tensor parallelism if supported
        LLAMA_SPLIT_MODE_TENSOR

    cdef enum llama_load_mode:
        LLAMA_LOAD_MODE_AUTO         # auto-detect based on device capabilities
        LLAMA_LOAD_MODE_NONE         # no special loading mode
        LLAMA_LOAD_MODE_MMAP         # memory map the model
        LLAMA_LOAD_MODE_MLOCK        # force system to keep model in RAM
        LLAMA_LOAD_MODE_MMAP_MLOCK   # mmap + mlock
        LLAMA_LOAD_MODE_DIRECT_IO    # use direct I/O if available

    const char *    llama_load_mode_name(llama_load_mode load_mode)
    llama_load_mode llama_load_mode_from_str(const char * str)

    cdef enum llama_lazy_mode:
        LLAMA_LAZY_MODE_OFF    # always read the whole tensor up front
        LLAMA_LAZY_MODE_AUTO   # lazy only for marked tensors larger than 4 GiB (requires mmap)
        LLAMA_LAZY_MODE_ON     # read the rows of tensors marked by the arch on demand (requires mmap)

    cdef enum llama_context_type:
        LLAMA_CONTEXT_TYPE_DEFAULT
        LLAMA_CONTEXT_TYPE_MTP

    ctypedef struct llama_token_data:
        llama_token id   # token id
        float logit      # log-odds of the token
        float p          # probability of the token

    ctypedef struct llama_token_data_array:
        # NOTE: this pointer can be modified by the samplers
        llama_token_data * data
        size_t size
        int64_t selected   # this is the index in the data array (i.e. not the token id)
        bint sorted        # note: do not assume the data is sorted - always check this flag

    ctypedef bool (*llama_progress_callback)(float progress, void * user_data) noexcept

    # Input data for llama_encode/llama_decode
    ctypedef struct llama_batch:
        int32_t n_tokens

        llama_token  *  token
        float        *  embd
        llama_pos    *  pos
        int32_t      *  n_seq_id
        llama_seq_id ** seq_id
        int8_t       *  logits   # TODO: rename this to "output"

    cdef enum llama_model_kv_override_type:
        LLAMA_KV_OVERRIDE_TYPE_INT
        LLAMA_KV_OVERRIDE_TYPE_FLOAT
        LLAMA_KV_OVERRIDE_TYPE_BOOL
        LLAMA_KV_OVERRIDE_TYPE_STR

    cdef enum llama_model_meta_key:
        LLAMA_MODEL_META_KEY_SAMPLING_SEQUENCE
        LLAMA_MODEL_META_KEY_SAMPLING_TOP_K
        LLAMA_MODEL_META_KEY_SAMPLING_TOP_P
        LLAMA_MODEL_META_KEY_SAMPLING_MIN_P
        LLAMA_MODEL_META_KEY_SAMPLING_XTC_PROBABILITY
        LLAMA_MODEL_META_KEY_SAMPLING_XTC_THRESHOLD
        LLAMA_MODEL_META_KEY_SAMPLING_TEMP
        LLAMA_MODEL_META_KEY_SAMPLING_PENALTY_LAST_N
        LLAMA_MODEL_META_KEY_SAMPLING_PENALTY_REPEAT
        LLAMA_MODEL_META_KEY_SAMPLING_MIROSTAT
        LLAMA_MODEL_META_KEY_SAMPLING_MIROSTAT_TAU
        LLAMA_MODEL_META_KEY_SAMPLING_MIROSTAT_ETA

    cdef enum llama_process_type:
        LLAMA_PROCESS_TYPE_ENCODE
        LLAMA_PROCESS_TYPE_DECODE

    cdef struct llama_model_kv_override:
        llama_model_kv_override_type tag

        char key[128]

        # anonymous union { val_i64; val_f64; val_bool; val_str[128]; }
        int64_t val_i64
        double  val_f64
        bint    val_bool
        char    val_str[128]

    cdef struct llama_model_tensor_buft_override:
        const char * pattern
        ggml_backend_buffer_type_t buft

    cdef struct llama_model_params:
        # NULL-terminated list of devices to use for offloading (if NULL, all available devices are used)
        ggml_backend_dev_t * devices

        # NULL-terminated list of buffer types to use for tensors that match a pattern
        const llama_model_tensor_buft_override * tensor_buft_overrides

        int32_t n_gpu_layers          # number of layers to store in VRAM, a negative value means all layers
        llama_split_mode split_mode   # how to split the model across multiple GPUs
        llama_load_mode  load_mode    # how to load the model

        llama_lazy_mode lazy_mode     # on-demand reading of tensors marked by the arch

        # the GPU that is used for the entire model when split_mode is LLAMA_SPLIT_MODE_NONE
        int32_t main_gpu

        # proportion of the model (layers or rows) to offload to each GPU, size: llama_max_devices()
        const float * tensor_split

        # Called with a progress value between 0.0 and 1.0. Pass NULL to disable.
        # If the provided progress_callback returns true, model loading continues.
        # If it returns false, model loading is immediately aborted.
        llama_progress_callback progress_callback

        # context pointer passed to the progress callback
        void * progress_callback_user_data

        # override key-value pairs of the model meta data
        const llama_model_kv_override * kv_overrides

        # Keep the booleans together to avoid misalignment during copy-by-value.
        bint vocab_only        # only load the vocabulary, no weights
        bint check_tensors     # validate model tensor data
        bint use_extra_bufts   # use extra buffer types (used for weight repacking)
        bint no_host           # bypass host buffer allowing extra buffers to be used
        bint no_alloc          # only load metadata and simulate memory allocations
        bint load_mtp          # whether to load MTP layers

    cdef struct llama_sampler_seq_config:
        llama_seq_id    seq_id
        llama_sampler * sampler

    # NOTE: changing the default values of parameters marked as [EXPERIMENTAL] may cause crashes or incorrect results in certain configurations
    cdef struct llama_context_params:
        uint32_t n_ctx                   # text context, 0 = from model
        uint32_t n_batch                 # logical maximum batch size that can be submitted to llama_decode
        uint32_t n_ubatch                # physical maximum batch size
        uint32_t n_seq_max               # max number of sequences (i.e. distinct states for recurrent models)
        uint32_t n_rs_seq                # number of recurrent-state snapshots per seq for rollback [EXPERIMENTAL]
        uint32_t n_outputs_max           # max outputs in a ubatch (0 = n_batch)
        uint32_t n_outputs_max_per_seq   # max outputs per sequence (0 = n_outputs_max)
        int32_t  n_threads               # number of threads to use for generation
        int32_t  n_threads_batch         # number of threads to use for batch processing

        llama_context_type      ctx_type            # set the context type (e.g. MTP)
        llama_rope_scaling_type rope_scaling_type   # RoPE scaling type
        llama_pooling_type      pooling_type        # whether to pool (sum) embedding results by sequence id
        llama_attention_type    attention_type      # attention type to use for embeddings
        llama_flash_attn_type   flash_attn_type     # when to enable Flash Attention

        float    rope_freq_base     # RoPE base frequency, 0 = from model
        float    rope_freq_scale    # RoPE frequency scaling factor, 0 = from model
        float    yarn_ext_factor    # YaRN extrapolation mix factor, negative = from model
        float    yarn_attn_factor   # YaRN magnitude scaling factor
        float    yarn_beta_fast     # YaRN low correction dim
        float    yarn_beta_slow     # YaRN high correction dim
        uint32_t yarn_orig_ctx      # YaRN original context size
        float    defrag_thold       # [DEPRECATED] defragment the KV cache if holes/size > thold

        ggml_backend_sched_eval_callback cb_eval
        void * cb_eval_user_data

        ggml_type type_k   # data type for K cache [EXPERIMENTAL]
        ggml_type type_v   # data type for V cache [EXPERIMENTAL]

        # Abort callback
        # if it returns true, execution of llama_decode() will be aborted
        # currently works only with CPU execution
        ggml_abort_callback abort_callback
        void *              abort_callback_data

        # Keep the booleans together and at the end of the struct to avoid misalignment during copy-by-value.
        bint embeddings    # if true, extract embeddings (together with logits)
        bint offload_kqv   # offload the KQV ops (including the KV cache) to GPU
        bint no_perf       # measure performance timings
        bint op_offload    # offload host tensor operations to device
        bint swa_full      # use full-size SWA cache
        bint kv_unified    # use a unified buffer across the input sequences when computing the attention

        # [EXPERIMENTAL]
        # backend sampler chain configuration (make sure the caller keeps the sampler chains alive)
        # note: the samplers must be sampler chains (i.e. use llama_sampler_chain_init)
        llama_sampler_seq_config * samplers
        size_t                     n_samplers

        # a source/target/parent context
        llama_context * ctx_other

    cdef struct llama_model_tensor_override:
        const char * pattern
        ggml_type type

    cdef struct llama_model_imatrix_data:
        const char * name
        const float * data
        size_t size

    # model quantization parameters
    ctypedef struct llama_model_quantize_params:
        int32_t nthread                                   # number of threads to use for quantizing, if <=0 will use std::thread::hardware_concurrency()
        llama_ftype ftype                                 # quantize to this llama_ftype
        ggml_type output_tensor_type                      # output tensor type
        ggml_type token_embedding_type                    # token embeddings tensor type
        bint allow_requantize                             # allow quantizing non-f32/f16 tensors
        bint quantize_output_tensor                       # quantize output.weight
        bint only_copy                                    # only copy tensors
        bint pure                                         # quantize all tensors to the default type
        bint keep_split                                   # quantize to the same number of shards
        bint dry_run                                      # calculate and show the final quantization size without performing quantization
        const llama_model_imatrix_data * imatrix          # pointer to importance matrix data
        const llama_model_kv_override * kv_overrides      # pointer to kv overrides
        const llama_model_tensor_override * tt_overrides  # pointer to tensor overrides
        const int32_t * prune_layers                      # pointer to layer indices to prune
        size_t max_buf_size                               # max bytes of tensor rows kept in memory at once, 0 = default (8 GiB)

    ctypedef struct llama_logit_bias:
        llama_token token
        float bias

    ctypedef struct llama_sampler_chain_params:
        bint no_perf   # whether to measure performance timings

    # used in chat template
    ctypedef struct llama_chat_message:
        const char * role
        const char * content

    # lora adapter
    cdef struct llama_adapter_lora

    const char * llama_version()

    # Helpers for getting default parameters
    llama_model_params          llama_model_default_params()
    llama_context_params        llama_context_default_params()
    llama_sampler_chain_params  llama_sampler_chain_default_params()
    llama_model_quantize_params llama_model_quantize_default_params()

    # Initialize the llama + ggml backend
    # Call once at the start of the program
    void llama_backend_init()

    # Call once at the end of the program - currently only used for MPI
    void llama_backend_free()

    # Optional: enable numa optimizations
    void llama_numa_init(ggml_numa_strategy numa)

    # Optional: an auto threadpool gets created in ggml if not passed explicitly
    void llama_attach_threadpool(
            llama_context * ctx,
            ggml_threadpool_t threadpool,
            ggml_threadpool_t threadpool_batch)

    void llama_detach_threadpool(llama_context * ctx)

    ctypedef void (*llama_model_set_tensor_data_t)(ggml_tensor * tensor, void * userdata) noexcept

    # Create a new model from GGUF metadata as well as a function to set the tensor data
    llama_model * llama_model_init_from_user(
            gguf_context * metadata,
            llama_model_set_tensor_data_t set_tensor_data,
            void * set_tensor_data_ud,
            llama_model_params params)

    # Load a model from a file
    # If the file is split into multiple parts, the file name must follow this pattern: <name>-%05d-of-%05d.gguf
    # If the split file name does not follow this pattern, use llama_model_load_from_splits
    llama_model * llama_model_load_from_file(
            const char * path_model,
            llama_model_params params)

    # Load a model from an open FILE pointer
    # The GGUF is read from the current position, so it can be embedded in a larger file
    llama_model * llama_model_load_from_file_ptr(
            FILE * file,
            llama_model_params params)

    # Load a model from multiple splits (support custom naming scheme)
    # The paths must be in the correct order
    llama_model * llama_model_load_from_splits(
            const char ** paths,
            size_t n_paths,
            llama_model_params params)

    void llama_model_save_to_file(
            const llama_model * model,
            const char * path_model)

    void llama_model_free(llama_model * model)

    llama_context * llama_init_from_model(
            llama_model * model,
            llama_context_params params)

    # Frees all allocated memory
    void llama_free(llama_context * ctx)

    int64_t llama_time_us()

    size_t llama_max_devices()
    size_t llama_max_parallel_sequences()
    size_t llama_max_tensor_buft_overrides()

    bint llama_supports_mmap       ()
    bint llama_supports_mlock      ()
    bint llama_supports_gpu_offload()
    bint llama_supports_rpc        ()

    # NOTE: After creating a llama_context, it is recommended to query the actual values using these functions
    uint32_t llama_n_ctx      (const llama_context * ctx)
    uint32_t llama_n_ctx_seq  (const llama_context * ctx)
    uint32_t llama_n_batch    (const llama_context * ctx)
    uint32_t llama_n_ubatch   (const llama_context * ctx)
    uint32_t llama_n_seq_max  (const llama_context * ctx)
    uint32_t llama_n_rs_seq   (const llama_context * ctx)

    const llama_model * llama_get_model  (const llama_context * ctx)
    llama_memory_t      llama_get_memory (const llama_context * ctx)
    # C name is `llama_pooling_type` (clashes with the enum of the same name)
    llama_pooling_type  llama_get_pooling_type "llama_pooling_type"(const llama_context * ctx)

    const llama_vocab * llama_model_get_vocab(const llama_model * model)
    llama_rope_type     llama_model_rope_type(const llama_model * model)

    int32_t llama_model_n_ctx_train  (const llama_model * model)
    int32_t llama_model_n_embd       (const llama_model * model)
    int32_t llama_model_n_embd_inp   (const llama_model * model)
    int32_t llama_model_n_embd_out   (const llama_model * model)
    int32_t llama_model_n_layer      (const llama_model * model)
    int32_t llama_model_n_layer_nextn(const llama_model * model)
    int32_t llama_model_n_head       (const llama_model * model)
    int32_t llama_model_n_head_kv    (const llama_model * model)
    int32_t llama_model_n_swa        (const llama_model * model)

    # Get the model's RoPE frequency scaling factor
    float llama_model_rope_freq_scale_train(const llama_model * model)

    # Returns the number of classifier outputs (only valid for classifier models)
    uint32_t llama_model_n_cls_out(const llama_model * model)

    # Returns label of classifier output by index (<n_cls_out). Returns nullptr if no label provided
    const char * llama_model_cls_label(const llama_model * model, uint32_t i)

    # C name is `llama_vocab_type` (clashes with the enum of the same name)
    llama_vocab_type llama_vocab_get_type "llama_vocab_type"(const llama_vocab * vocab)

    int32_t llama_vocab_n_tokens(const llama_vocab * vocab)

    # Functions to access the model's GGUF metadata scalar values
    # - The functions return the length of the string on success, or -1 on failure
    # - The output string is always null-terminated and cleared on failure
    # - When retrieving a string, an extra byte must be allocated to account for the null terminator
    # - GGUF array values are not supported by these functions

    # Get metadata value as a string by key name
    int32_t llama_model_meta_val_str(const llama_model * model, const char * key, char * buf, size_t buf_size)

    # Get the number of metadata key/value pairs
    int32_t llama_model_meta_count(const llama_model * model)

    # Get sampling metadata key name. Returns nullptr if the key is invalid
    const char * llama_model_meta_key_str(llama_model_meta_key key)

    # Get metadata key name by index
    int32_t llama_model_meta_key_by_index(const llama_model * model, int32_t i, char * buf, size_t buf_size)

    # Get metadata value as a string by index
    int32_t llama_model_meta_val_str_by_index(const llama_model * model, int32_t i, char * buf, size_t buf_size)

    # Get a string describing the model type
    int32_t llama_model_desc(const llama_model * model, char * buf, size_t buf_size)

    # Get the model file type (quantization), e.g. LLAMA_FTYPE_MOSTLY_Q8_0
    llama_ftype llama_model_ftype(const llama_model * model)

    # Returns the total size of all the tensors in the model in bytes
    uint64_t llama_model_size(const llama_model * model)

    # Get the default chat template. Returns nullptr if not available
    # If name is NULL, returns the default chat template
    const char * llama_model_chat_template(const llama_model * model, const char * name)

    # Returns the total number of parameters in the model
    uint64_t llama_model_n_params(const llama_model * model)

    # Returns true if the model contains an encoder that requires llama_encode() call
    bint llama_model_has_encoder(const llama_model * model)

    # Returns true if the model contains a decoder that requires llama_decode() call
    bint llama_model_has_decoder(const llama_model * model)

    # For encoder-decoder models, this function returns id of the token that must be provided
    # to the decoder to start generating output sequence. For other models, it returns -1.
    llama_token llama_model_decoder_start_token(const llama_model * model)

    # Returns true if the model is recurrent (like Mamba, RWKV, etc.)
    bint llama_model_is_recurrent(const llama_model * model)

    # Returns true if the model is hybrid (like Jamba, Granite, etc.)
    bint llama_model_is_hybrid(const llama_model * model)

    # Returns true if the model is diffusion-based (like LLaDA, Dream, etc.)
    bint llama_model_is_diffusion(const llama_model * model)

    # Returns 0 on success
    uint32_t llama_model_quantize(
            const char * fname_inp,
            const char * fname_out,
            const llama_model_quantize_params * params)

    #
    # Adapters
    #

    # Load a LoRA adapter from file
    # The adapter is valid as long as the associated model is not freed
    llama_adapter_lora * llama_adapter_lora_init(
            llama_model * model,
            const char * path_lora)

    # Load a LoRA adapter from an open FILE pointer, reading from its current position
    llama_adapter_lora * llama_adapter_lora_init_from_file_ptr(
            llama_model * model,
            FILE * file)

    # Functions to access the adapter's GGUF metadata scalar values (same conventions as llama_model_meta_*)

    # Get metadata value as a string by key name
    int32_t llama_adapter_meta_val_str(const llama_adapter_lora * adapter, const char * key, char * buf, size_t buf_size)

    # Get the number of metadata key/value pairs
    int32_t llama_adapter_meta_count(const llama_adapter_lora * adapter)

    # Get metadata key name by index
    int32_t llama_adapter_meta_key_by_index(const llama_adapter_lora * adapter, int32_t i, char * buf, size_t buf_size)

    # Get metadata value as a string by index
    int32_t llama_adapter_meta_val_str_by_index(const llama_adapter_lora * adapter, int32_t i, char * buf, size_t buf_size)

    # Manually free a LoRA adapter
    # NOTE: loaded adapters that are not manually freed will be freed when the associated model is deleted
    void llama_adapter_lora_free(llama_adapter_lora * adapter)

    # Get the invocation tokens if the current lora is an alora
    uint64_t            llama_adapter_get_alora_n_invocation_tokens(const llama_adapter_lora * adapter)
    const llama_token * llama_adapter_get_alora_invocation_tokens  (const llama_adapter_lora * adapter)

    # The following functions operate on a llama_context, hence the naming: llama_verb_...

    # Set LoRa adapters on the context. Will only modify if the adapters currently in context are different.
    int32_t llama_set_adapters_lora(
            llama_context * ctx,
            llama_adapter_lora ** adapters,
            size_t n_adapters,
            float * scales)

    # Apply a loaded control vector to a llama_context, or if data is NULL, clear
    # the currently loaded vector.
    # n_embd should be the size of a single layer's control, and data should point
    # to an n_embd x n_layers buffer starting from layer 1.
    # il_start and il_end are the layer range the vector should apply to (both inclusive)
    int32_t llama_set_adapter_cvec(
            llama_context * ctx,
            const float * data,
            size_t len,
            int32_t n_embd,
            int32_t il_start,
            int32_t il_end)

    #
    # Memory
    #

    # Clear the memory contents
    # If data == true, the data buffers will also be cleared together with the metadata
    void llama_memory_clear(
            llama_memory_t mem,
            bint data)

    # Removes all tokens that belong to the specified sequence and have positions in [p0, p1)
    # Returns false if a partial sequence cannot be removed. Removing a whole sequence never fails
    # seq_id < 0 : match any sequence
    # p0 < 0     : [0,  p1]
    # p1 < 0     : [p0, inf)
    bint llama_memory_seq_rm(
            llama_memory_t mem,
            llama_seq_id seq_id,
            llama_pos p0,
            llama_pos p1)

    # Copy all tokens that belong to the specified sequence to another sequence
    void llama_memory_seq_cp(
            llama_memory_t mem,
            llama_seq_id seq_id_src,
            llama_seq_id seq_id_dst,
            llama_pos p0,
            llama_pos p1)

    # Removes all tokens that do not belong to the specified sequence
    void llama_memory_seq_keep(
            llama_memory_t mem,
            llama_seq_id seq_id)

    # Adds relative position "delta" to all tokens that belong to the specified sequence and have positions in [p0, p1)
    void llama_memory_seq_add(
            llama_memory_t mem,
            llama_seq_id seq_id,
            llama_pos p0,
            llama_pos p1,
            llama_pos delta)

    # Integer division of the positions by factor of `d > 1`
    void llama_memory_seq_div(
            llama_memory_t mem,
            llama_seq_id seq_id,
            llama_pos p0,
            llama_pos p1,
            int d)

    # Returns the smallest position present in the memory for the specified sequence
    # Return -1 if the sequence is empty
    llama_pos llama_memory_seq_pos_min(
            llama_memory_t mem,
            llama_seq_id seq_id)

    # Returns the largest position present in the memory for the specified sequence
    # Return -1 if the sequence is empty
    llama_pos llama_memory_seq_pos_max(
            llama_memory_t mem,
            llama_seq_id seq_id)

    # Check if the memory supports shifting
    bint llama_memory_can_shift(llama_memory_t mem)

    #
    # State / sessions
    #

    # Returns the *actual* size in bytes of the state
    # (logits, embedding and memory)
    # Only use when saving the state, not when restoring it, otherwise the size may be too small.
    size_t llama_state_get_size(llama_context * ctx)

    # Copies the state to the specified destination address.
    # Destination needs to have allocated enough memory.
    # Returns the number of bytes copied
    size_t llama_state_get_data(
            llama_context * ctx,
            uint8_t * dst,
            size_t size)

    # Set the state reading from the specified address
    # Returns the number of bytes read
    size_t llama_state_set_data(
            llama_context * ctx,
            const uint8_t * src,
            size_t size)

    # Save/load session file
    bint llama_state_load_file(
            llama_context * ctx,
            const char * path_session,
            llama_token * tokens_out,
            size_t n_token_capacity,
            size_t * n_token_count_out)

    bint llama_state_save_file(
            llama_context * ctx,
            const char * path_session,
            const llama_token * tokens,
            size_t n_token_count)

    # Get the exact size needed to copy the state of a single sequence
    size_t llama_state_seq_get_size(
            llama_context * ctx,
            llama_seq_id seq_id)

    # Copy the state of a single sequence into the specified buffer
    size_t llama_state_seq_get_data(
            llama_context * ctx,
            uint8_t * dst,
            size_t size,
            llama_seq_id seq_id)

    # Copy the sequence data (originally copied with `llama_state_seq_get_data`) into the specified sequence
    # Returns:
    #  - Positive: Ok
    #  - Zero: Failed to load
    size_t llama_state_seq_set_data(
            llama_context * ctx,
            const uint8_t * src,
            size_t size,
            llama_seq_id dest_seq_id)

    size_t llama_state_seq_save_file(
            llama_context * ctx,
            const char * filepath,
            llama_seq_id seq_id,
            const llama_token * tokens,
            size_t n_token_count)

    # If tokens_out is NULL, only the token count is reported through n_token_count_out and no state is loaded
    size_t llama_state_seq_load_file(
            llama_context * ctx,
            const char * filepath,
            llama_seq_id dest_seq_id,
            llama_token * tokens_out,
            size_t n_token_capacity,
            size_t * n_token_count_out)

    ctypedef uint32_t llama_state_seq_flags

    const llama_state_seq_flags LLAMA_STATE_SEQ_FLAGS_NONE
    # for backwards-compat
    const llama_state_seq_flags LLAMA_STATE_SEQ_FLAGS_SWA_ONLY
    # work only with partial states, such as SWA KV cache or recurrent cache (e.g. Mamba)
    const llama_state_seq_flags LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY
    # Keeps the tensor data on device buffers (not accessible in host memory, but faster save/load).
    const llama_state_seq_flags LLAMA_STATE_SEQ_FLAGS_ON_DEVICE

    size_t llama_state_seq_get_size_ext(
            llama_context * ctx,
            llama_seq_id seq_id,
            llama_state_seq_flags flags)

    size_t llama_state_seq_get_data_ext(
            llama_context * ctx,
            uint8_t * dst,
            size_t size,
            llama_seq_id seq_id,
            llama_state_seq_flags flags)

    size_t llama_state_seq_set_data_ext(
            llama_context * ctx,
            const uint8_t * src,
            size_t size,
            llama_seq_id dest_seq_id,
            llama_state_seq_flags flags)

    #
    # Decoding
    #

    # Return batch for single sequence of tokens
    # The sequence ID will be fixed to 0
    # The position of the tokens will be tracked automatically by llama_decode
    llama_batch llama_batch_get_one(
            llama_token * tokens,
            int32_t n_tokens)

    # Allocates a batch of tokens on the heap that can hold a maximum of n_tokens
    # Each token can be assigned up to n_seq_max sequence ids
    # The batch has to be freed with llama_batch_free()
    # If embd != 0, llama_batch.embd will be allocated with size of n_tokens * embd * sizeof(float)
    # Otherwise, llama_batch.token will be allocated to store n_tokens llama_token
    # The rest of the llama_batch members are allocated with size n_tokens
    # All members are left uninitialized
    llama_batch llama_batch_init(
            int32_t n_tokens,
            int32_t embd,
            int32_t n_seq_max)

    # Frees a batch of tokens allocated with llama_batch_init()
    void llama_batch_free(llama_batch batch)

    # Process a batch of tokens (no KV cache; encoder for encoder-decoder contexts).
    #   0 - success
    # < 0 - error. the memory state is restored to the state before this call
    int32_t llama_encode(
            llama_context * ctx,
            llama_batch batch)

    # Process a batch of tokens.
    #    0 - success
    #    1 - could not find a KV slot for the batch (try reducing the size of the batch or increase the context)
    #    2 - aborted     (processed ubatches will remain in the context's memory)
    #   -1 - invalid input batch
    # < -1 - fatal error (processed ubatches will remain in the context's memory)
    int32_t llama_decode(
            llama_context * ctx,
            llama_batch batch)

    #
    # Extended batch API
    #

    cdef struct llama_batch_ext

    cdef struct llama_embd:
        const float * data
        size_t n_rows   # number of embedding rows in data
        size_t n_embd   # size of one row

    llama_batch_ext * llama_batch_ext_init (llama_context * ctx)
    void              llama_batch_ext_free (llama_batch_ext * batch)
    void              llama_batch_ext_clear(llama_batch_ext * batch)

    # Add an input token to the batch, with default values
    # Returns the batch index (>= 0)
    # On error:
    #     -1: batch is full
    #     -2: token is invalid (id == LLAMA_TOKEN_NULL or invalid embd)
    #     -3: invalid sequence id
    int32_t llama_batch_ext_add      (llama_batch_ext * batch, llama_seq_id seq_id)

    # Add an input token to the batch, with a specified token ID or token embedding
    int32_t llama_batch_ext_add_token(llama_batch_ext * batch, llama_seq_id seq_id, llama_token id)
    int32_t llama_batch_ext_add_embd (llama_batch_ext * batch, llama_seq_id seq_id, llama_embd embd)

    # Add the token at index idx in the batch to another sequence id. The position will stays the same.
    # Note: this should be called before other _set() functions
    bint llama_batch_ext_add_seq(
            llama_batch_ext * batch,
            int32_t idx,
            llama_seq_id seq_id)

    # Set the token embedding for the token at index idx in the batch
    bint llama_batch_ext_set_embd_token(
            llama_batch_ext * batch,
            int32_t idx,
            llama_embd embd)

    # Set the "state" embedding for the token at index idx in the batch
    bint llama_batch_ext_set_embd_state(
            llama_batch_ext * batch,
            int32_t idx,
            llama_embd embd)

    # Set if output embeddings should be available for the token at index idx in the batch
    bint llama_batch_ext_set_output_embd(
            llama_batch_ext * batch,
            int32_t idx,
            bint value)

    # Set output logits for the token at index idx in the batch
    bint llama_batch_ext_set_output_logits(
            llama_batch_ext * batch,
            int32_t idx,
            bint value)

    # Set custom position for the token at index idx in the batch
    bint llama_batch_ext_set_pos(
            llama_batch_ext * batch,
            int32_t idx,
            const llama_pos * pos)

    # Return values are the same as llama_decode()
    int32_t llama_process(
            llama_context * ctx,
            llama_process_type type,
            llama_batch_ext * batch)

    # Set the number of threads used for decoding
    # n_threads is the number of threads used for generation (single token)
    # n_threads_batch is the number of threads used for prompt and batch processing (multiple tokens)
    void llama_set_n_threads(llama_context * ctx, int32_t n_threads, int32_t n_threads_batch)

    # Get the number of threads used for generation of a single token.
    int32_t llama_n_threads(llama_context * ctx)

    # Get the number of threads used for prompt and batch processing (multiple token).
    int32_t llama_n_threads_batch(llama_context * ctx)

    # Set whether the context outputs embeddings or not
    void llama_set_embeddings(llama_context * ctx, bint embeddings)

    # Set whether to use causal attention or not
    # If set to true, the model will only attend to the past tokens
    void llama_set_causal_attn(llama_context * ctx, bint causal_attn)

    # Returns whether the context is currently using causal attention
    bint llama_get_causal_attn(const llama_context * ctx)

    # NOTE: llama_set_warmup() is DEPRECATED in this header -> not declared.

    # Set abort callback
    void llama_set_abort_callback(llama_context * ctx, ggml_abort_callback abort_callback, void * abort_callback_data)

    # Wait until all computations are finished
    void llama_synchronize(llama_context * ctx)

    # Token logits obtained from the last call to llama_decode()
    # Rows: number of tokens for which llama_batch.logits[i] != 0
    # Cols: n_vocab
    float * llama_get_logits(llama_context * ctx)

    # Logits for the ith token. Negative indices can be used to access logits in reverse order, -1 is the last logit.
    # returns NULL for invalid ids.
    float * llama_get_logits_ith(llama_context * ctx, int32_t i)

    # Get all output token embeddings. shape: [n_outputs*n_embd]
    float * llama_get_embeddings(llama_context * ctx)

    # Get the embeddings for the ith token. shape: [n_embd]; returns NULL for invalid ids.
    float * llama_get_embeddings_ith(llama_context * ctx, int32_t i)

    # Get the embeddings for a sequence id
    # Returns NULL if pooling_type is LLAMA_POOLING_TYPE_NONE
    # when pooling_type == LLAMA_POOLING_TYPE_RANK, returns float[n_cls_out] with the rank(s) of the sequence
    # otherwise: float[n_embd] (1-dimensional)
    float * llama_get_embeddings_seq(llama_context * ctx, llama_seq_id seq_id)

    #
    # backend sampling API [EXPERIMENTAL]
    # note: use only if the llama_context was created with at least one llama_sampler_seq_config
    #

    # Get the backend sampled token for the ith token.
    # Returns LLAMA_TOKEN_NULL if no token was sampled.
    llama_token llama_get_sampled_token_ith(llama_context * ctx, int32_t i)

    # Get the backend sampled probabilities for the ith token
    # Returns NULL if no probabilities were generated.
    float *  llama_get_sampled_probs_ith      (llama_context * ctx, int32_t i)
    uint32_t llama_get_sampled_probs_count_ith(llama_context * ctx, int32_t i)

    # Get the backend sampled logits for the ith token
    # Returns NULL if no logits were sampled.
    float *  llama_get_sampled_logits_ith      (llama_context * ctx, int32_t i)
    uint32_t llama_get_sampled_logits_count_ith(llama_context * ctx, int32_t i)

    # Get the backend sampled candidates (token ids) for the ith token
    # Returns NULL if no candidates were sampled.
    llama_token * llama_get_sampled_candidates_ith      (llama_context * ctx, int32_t i)
    uint32_t      llama_get_sampled_candidates_count_ith(llama_context * ctx, int32_t i)

    #
    # Vocab
    #

    const char * llama_vocab_get_text(const llama_vocab * vocab, llama_token token)

    float llama_vocab_get_score(const llama_vocab * vocab, llama_token token)

    llama_token_attr llama_vocab_get_attr(const llama_vocab * vocab, llama_token token)

    # Check if the token is supposed to end generation (end-of-generation, eg. EOS, EOT, etc.)
    bint llama_vocab_is_eog(const llama_vocab * vocab, llama_token token)

    # Identify if Token Id is a control token or a render-able token
    bint llama_vocab_is_control(const llama_vocab * vocab, llama_token token)

    # Special tokens
    llama_token llama_vocab_bos (const llama_vocab * vocab)   # beginning-of-sentence
    llama_token llama_vocab_eos (const llama_vocab * vocab)   # end-of-sentence
    llama_token llama_vocab_eot (const llama_vocab * vocab)   # end-of-turn
    llama_token llama_vocab_sep (const llama_vocab * vocab)   # sentence separator
    llama_token llama_vocab_nl  (const llama_vocab * vocab)   # next-line
    llama_token llama_vocab_pad (const llama_vocab * vocab)   # padding
    llama_token llama_vocab_mask(const llama_vocab * vocab)   # mask

    bint llama_vocab_get_add_bos(const llama_vocab * vocab)
    bint llama_vocab_get_add_eos(const llama_vocab * vocab)
    bint llama_vocab_get_add_sep(const llama_vocab * vocab)

    # model-specific suppress tokens (gguf key: tokenizer.ggml.suppress_tokens)
    const llama_token * llama_vocab_get_suppress_tokens(const llama_vocab * vocab, int32_t * n_suppress_tokens)

    llama_token llama_vocab_fim_pre(const llama_vocab * vocab)
    llama_token llama_vocab_fim_suf(const llama_vocab * vocab)
    llama_token llama_vocab_fim_mid(const llama_vocab * vocab)
    llama_token llama_vocab_fim_pad(const llama_vocab * vocab)
    llama_token llama_vocab_fim_rep(const llama_vocab * vocab)
    llama_token llama_vocab_fim_sep(const llama_vocab * vocab)

    # (llama_token_* and llama_vocab_cls are DEPRECATED -> not declared)

    #
    # Tokenization
    #
    # The API is thread-safe.
    #

    # Convert the provided text into tokens.
    # Returns the number of tokens on success, no more than n_tokens_max
    # Returns a negative number on failure - the number of tokens that would have been returned
    # Returns INT32_MIN on overflow
    int32_t llama_tokenize(
            const llama_vocab * vocab,
            const char * text,
            int32_t text_len,
            llama_token * tokens,
            int32_t n_tokens_max,
            bint add_special,
            bint parse_special) except +   # a C++ exception from a broken vocabulary

    # Token Id -> Piece.
    # Does not write null terminator to the buffer.
    # User can skip up to 'lstrip' leading spaces before copying
    # special: If true, special tokens are rendered in the output.
    int32_t llama_token_to_piece(
            const llama_vocab * vocab,
            llama_token token,
            char * buf,
            int32_t length,
            int32_t lstrip,
            bint special)

    # Convert the provided tokens into text (inverse of llama_tokenize()).
    # Returns the number of chars/bytes on success, no more than text_len_max.
    # Returns a negative number on failure - the number of chars/bytes that would have been returned.
    int32_t llama_detokenize(
            const llama_vocab * vocab,
            const llama_token * tokens,
            int32_t n_tokens,
            char * text,
            int32_t text_len_max,
            bint remove_special,
            bint unparse_special) except +

    #
    # Chat templates
    #

    # Apply chat template. Inspired by hf apply_chat_template() on python.
    # NOTE: This function does not use a jinja parser. It only support a pre-defined list of template.
    # Returns the total number of bytes of the formatted prompt. If it is larger than the buffer, re-alloc and re-apply.
    int32_t llama_chat_apply_template(
            const char * tmpl,
            const llama_chat_message * chat,
            size_t n_msg,
            bint add_ass,
            char * buf,
            int32_t length)

    # Get list of built-in chat templates
    int32_t llama_chat_builtin_templates(const char ** output, size_t len)

    #
    # Sampling API
    #

    ctypedef void * llama_sampler_context_t

    cdef struct llama_sampler_data:
        ggml_tensor * logits
        ggml_tensor * probs
        ggml_tensor * sampled
        ggml_tensor * candidates

    # user code can implement the interface below in order to create custom llama_sampler
    cdef struct llama_sampler_i:
        const char *    (*name)  (const llama_sampler * smpl) noexcept                                  # can be NULL
        void            (*accept)(      llama_sampler * smpl, llama_token token) noexcept               # can be NULL
        void            (*apply) (      llama_sampler * smpl, llama_token_data_array * cur_p) noexcept  # required
        void            (*reset) (      llama_sampler * smpl) noexcept                                  # can be NULL
        llama_sampler * (*clone) (const llama_sampler * smpl) noexcept                                  # can be NULL if ctx is NULL
        void            (*free)  (      llama_sampler * smpl) noexcept                                  # can be NULL if ctx is NULL

        # [EXPERIMENTAL]
        # backend sampling interface:

        # return true if the backend supports all ops needed by the sampler and can handle up to n_outputs_max_per_seq outputs per sequence
        bool (*backend_init)(
                llama_sampler * smpl,
                ggml_backend_buffer_type_t buft,
                uint32_t n_outputs_max_per_seq) noexcept

        # call after .backend_apply()
        void (*backend_accept)(
                llama_sampler * smpl,
                ggml_context * ctx,
                ggml_cgraph * gf,
                ggml_tensor * selected_token) noexcept

        # call after .backend_init()
        void (*backend_apply)(
                llama_sampler * smpl,
                ggml_context * ctx,
                ggml_cgraph * gf,
                llama_sampler_data * data) noexcept

        # called before graph execution to set inputs for the current ubatch
        void (*backend_set_input)(llama_sampler * smpl) noexcept

        # called before rebuilding a sampling graph to clear any internal sampler state
        void (*backend_reset)(llama_sampler * smpl) noexcept

        # copy mutable state from src into dst while keeping dst's references to the current sampling graph
        void (*copy_state)(const llama_sampler * src, llama_sampler * dst) noexcept

    cdef struct llama_sampler:
        llama_sampler_i * iface

        llama_sampler_context_t ctx

    # [EXPERIMENTAL]
    # attach a sampler to the context
    # note: prefer initializing the context with llama_context_params.samplers when possible
    bint llama_set_sampler(llama_context * ctx, llama_seq_id seq_id, llama_sampler * smpl)

    # mirror of llama_sampler_i:
    llama_sampler * llama_sampler_init  (      llama_sampler_i * iface, llama_sampler_context_t ctx)
    const char *    llama_sampler_name  (const llama_sampler * smpl)
    void            llama_sampler_accept(      llama_sampler * smpl, llama_token token)
    void            llama_sampler_apply (      llama_sampler * smpl, llama_token_data_array * cur_p)
    void            llama_sampler_reset (      llama_sampler * smpl)
    llama_sampler * llama_sampler_clone (const llama_sampler * smpl)
    void            llama_sampler_copy  (const llama_sampler * src, llama_sampler * dst)
    # important: do not free if the sampler has been added to a llama_sampler_chain (via llama_sampler_chain_add)
    void            llama_sampler_free  (      llama_sampler * smpl)

    # llama_sampler_chain
    # a type of llama_sampler that can chain multiple samplers one after another

    llama_sampler * llama_sampler_chain_init(llama_sampler_chain_params params)

    # important: takes ownership of the sampler object and will free it when llama_sampler_free is called
    void            llama_sampler_chain_add(llama_sampler * chain, llama_sampler * smpl)

    # return NULL if the sampler is NULL / not a chain / index out of bounds (unless i == -1: returns the chain itself)
    llama_sampler * llama_sampler_chain_get(llama_sampler * chain, int32_t i)

    # the total number of samplers in the chain
    int32_t         llama_sampler_chain_n  (const llama_sampler * chain)

    # after removing a sampler, the chain will no longer own it, and it will not be freed when the chain is freed
    llama_sampler * llama_sampler_chain_remove(llama_sampler * chain, int32_t i)

    # available samplers:

    llama_sampler * llama_sampler_init_greedy()

    # seed == LLAMA_DEFAULT_SEED to use a random seed.
    llama_sampler * llama_sampler_init_dist(uint32_t seed)

    # Top-K sampling. Setting k <= 0 makes this a noop
    llama_sampler * llama_sampler_init_top_k      (int32_t k)

    # Nucleus sampling
    llama_sampler * llama_sampler_init_top_p      (float p, size_t min_keep)

    # Minimum P sampling
    llama_sampler * llama_sampler_init_min_p      (float p, size_t min_keep)

    # Locally Typical Sampling
    llama_sampler * llama_sampler_init_typical    (float p, size_t min_keep)

    # Updates the logits l_i` = l_i/t. When t <= 0.0f, the maximum logit is kept at it's original value, the rest are set to -inf
    llama_sampler * llama_sampler_init_temp       (float t)

    # Dynamic temperature implementation (a.k.a. entropy)
    llama_sampler * llama_sampler_init_temp_ext   (float t, float delta, float exponent)

    # XTC sampler
    llama_sampler * llama_sampler_init_xtc        (float p, float t, size_t min_keep, uint32_t seed)

    # Top n sigma sampling
    llama_sampler * llama_sampler_init_top_n_sigma(float n)

    # Mirostat 1.0 algorithm. Uses tokens instead of words.
    llama_sampler * llama_sampler_init_mirostat(
            int32_t n_vocab,
            uint32_t seed,
            float tau,
            float eta,
            int32_t m)

    # Mirostat 2.0 algorithm. Uses tokens instead of words.
    llama_sampler * llama_sampler_init_mirostat_v2(
            uint32_t seed,
            float tau,
            float eta)

    # Initializes a GBNF grammar, see grammars/README.md for details.
    # Returns an empty grammar if grammar_str is empty. Returns NULL if parsing of grammar_str fails.
    llama_sampler * llama_sampler_init_grammar(
            const llama_vocab * vocab,
            const char * grammar_str,
            const char * grammar_root)

    # (llama_sampler_init_grammar_lazy is DEPRECATED -> not declared)

    # Lazy grammar sampler
    # trigger_patterns: patterns matched from the start of the generation output; grammar is fed from the first match group
    # trigger_tokens: tokens that trigger the grammar sampler (included)
    llama_sampler * llama_sampler_init_grammar_lazy_patterns(
            const llama_vocab * vocab,
            const char * grammar_str,
            const char * grammar_root,
            const char ** trigger_patterns,
            size_t num_trigger_patterns,
            const llama_token * trigger_tokens,
            size_t num_trigger_tokens)

    # NOTE: Avoid using on the full vocabulary as searching for repeated tokens can become slow.
    llama_sampler * llama_sampler_init_penalties(
            int32_t n_vocab,
            int32_t penalty_last_n,    # last n tokens to penalize (0 = disable penalty)
            float   penalty_repeat,    # must be > 0.0, 1.0 = disabled
            float   penalty_freq,      # must be finite, 0.0 = disabled
            float   penalty_present)   # must be finite, 0.0 = disabled

    # DRY sampler
    llama_sampler * llama_sampler_init_dry(
            const llama_vocab * vocab,
            float dry_multiplier,
            float dry_base,
            int32_t dry_allowed_length,
            int32_t dry_penalty_last_n,   # last n tokens to penalize (0 = disable penalty)
            const char ** seq_breakers,
            size_t num_breakers)

    # adaptive-p: select tokens near a configurable target probability over time.
    # must be last in the sampler chain (like mirostat, dist, greedy).
    # target: valid range 0.0 to 1.0; negative = disabled
    # decay:  EMA decay for adaptation (valid range 0.0 - 0.99)
    llama_sampler * llama_sampler_init_adaptive_p(
            float target,
            float decay,
            uint32_t seed)

    llama_sampler * llama_sampler_init_logit_bias(
            int32_t n_vocab,
            int32_t n_logit_bias,
            const llama_logit_bias * logit_bias)

    # this sampler is meant to be used for fill-in-the-middle infilling
    # it's supposed to be used after top_k + top_p sampling
    llama_sampler * llama_sampler_init_infill(const llama_vocab * vocab)

    # Returns the seed used by the sampler if applicable, LLAMA_DEFAULT_SEED otherwise
    uint32_t llama_sampler_get_seed(const llama_sampler * smpl)

    # Sample and accept a token from the idx-th output of the last evaluation
    # Returns the sampled token
    llama_token llama_sampler_sample(llama_sampler * smpl, llama_context * ctx, int32_t idx)

    #
    # Model split
    #

    # Build a split GGUF final path for this chunk. Returns the split_path length.
    int32_t llama_split_path(char * split_path, size_t maxlen, const char * path_prefix, int32_t split_no, int32_t split_count)

    # Extract the path prefix from the split_path if and only if the split_no and split_count match.
    # Returns the split_prefix length.
    int32_t llama_split_prefix(char * split_prefix, size_t maxlen, const char * split_path, int32_t split_no, int32_t split_count)

    # Print system information
    const char * llama_print_system_info()

    # Set callback for all future logging events.
    # If this is not called, or NULL is supplied, everything is output on stderr.
    # The logger state is global so these functions are NOT thread safe.
    void llama_log_get(ggml_log_callback * log_callback, void ** user_data)
    void llama_log_set(ggml_log_callback   log_callback, void *  user_data)

    #
    # Performance utils
    #
    # NOTE: Used by llama.cpp examples/tools, avoid using in third-party apps.
    #

    cdef struct llama_perf_context_data:
        # ms == milliseconds
        double t_start_ms    # absolute start time
        double t_load_ms     # time needed for loading the model
        double t_p_eval_ms   # time needed for processing the prompt
        double t_eval_ms     # time needed for generating tokens

        int32_t n_p_eval     # number of prompt tokens
        int32_t n_eval       # number of generated tokens
        int32_t n_reused     # number of times a ggml compute graph had been reused

    cdef struct llama_perf_sampler_data:
        double t_sample_ms   # time needed for sampling in ms

        int32_t n_sample     # number of sampled tokens

    llama_perf_context_data llama_perf_context      (const llama_context * ctx)
    void                    llama_perf_context_print(const llama_context * ctx)
    void                    llama_perf_context_reset(      llama_context * ctx)

    # NOTE: the following work only with samplers constructed via llama_sampler_chain_init
    llama_perf_sampler_data llama_perf_sampler      (const llama_sampler * chain)
    void                    llama_perf_sampler_print(const llama_sampler * chain)
    void                    llama_perf_sampler_reset(      llama_sampler * chain)

    #
    # training
    #

    # function that returns whether or not a given tensor contains trainable parameters
    ctypedef bool (*llama_opt_param_filter)(const ggml_tensor * tensor, void * userdata) noexcept

    # always returns true
    bint llama_opt_param_filter_all(const ggml_tensor * tensor, void * userdata)

    cdef struct llama_opt_params:
        uint32_t n_ctx_train   # assumed context size post training, use context size specified in llama_context if 0

        llama_opt_param_filter param_filter   # callback for determining which tensors contain trainable parameters
        void * param_filter_ud                # userdata for determining which tensors contain trainable parameters

        ggml_opt_get_optimizer_params get_opt_pars   # callback for calculating optimizer parameters
        void * get_opt_pars_ud                       # userdata for calculating optimizer parameters

        ggml_opt_optimizer_type optimizer_type

    void llama_opt_init(llama_context * lctx, llama_model * model, llama_opt_params lopt_params)

    void llama_opt_epoch(
            llama_context * lctx,
            ggml_opt_dataset_t dataset,
            ggml_opt_result_t result_train,
            ggml_opt_result_t result_eval,
            int64_t idata_split,
            ggml_opt_epoch_callback callback_train,
            ggml_opt_epoch_callback callback_eval)
