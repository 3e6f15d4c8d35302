# Declarations of llama.cpp's multimodal library (tools/mtmd): mtmd.h, then the parts of
# mtmd-helper.h that pyllamacy uses. Only the struct fields pyllamacy reads or sets are listed.

from libc.stdint cimport int32_t, uint32_t
from pyllamacy.includes.ggml cimport ggml_log_callback
from pyllamacy.includes.llama cimport (llama_model, llama_context, llama_token, llama_pos,
                                       llama_seq_id, llama_flash_attn_type)


cdef extern from "mtmd.h" nogil:
    cdef struct mtmd_context
    cdef struct mtmd_bitmap
    cdef struct mtmd_image_tokens
    cdef struct mtmd_input_chunk
    cdef struct mtmd_input_chunks

    cdef enum mtmd_input_chunk_type:
        MTMD_INPUT_CHUNK_TYPE_TEXT
        MTMD_INPUT_CHUNK_TYPE_IMAGE
        MTMD_INPUT_CHUNK_TYPE_AUDIO

    cdef struct mtmd_input_text:
        const char * text
        size_t text_len
        bint add_special
        bint parse_special

    cdef struct mtmd_context_params:
        bint use_gpu
        bint print_timings
        int n_threads
        const char * media_marker
        llama_flash_attn_type flash_attn_type
        bint warmup
        int image_min_tokens
        int image_max_tokens

    const char * mtmd_default_marker()
    mtmd_context_params mtmd_context_params_default()

    # returns nullptr on failure
    mtmd_context * mtmd_init_from_file(const char * mmproj_fname, const llama_model * text_model,
                                       const mtmd_context_params ctx_params)
    void mtmd_free(mtmd_context * ctx)

    bint mtmd_decode_use_non_causal(const mtmd_context * ctx, const mtmd_input_chunk * chunk)
    bint mtmd_decode_use_mrope(const mtmd_context * ctx)
    bint mtmd_support_vision(const mtmd_context * ctx)
    bint mtmd_support_audio(const mtmd_context * ctx)
    int mtmd_get_audio_sample_rate(const mtmd_context * ctx)
    const char * mtmd_get_marker(const mtmd_context * ctx)

    # image: nx * ny * 3 bytes, RGBRGB...
    mtmd_bitmap * mtmd_bitmap_init(uint32_t nx, uint32_t ny, const unsigned char * data)
    uint32_t mtmd_bitmap_get_nx(const mtmd_bitmap * bitmap)
    uint32_t mtmd_bitmap_get_ny(const mtmd_bitmap * bitmap)
    bint mtmd_bitmap_is_audio(const mtmd_bitmap * bitmap)
    void mtmd_bitmap_free(mtmd_bitmap * bitmap)

    mtmd_input_chunks * mtmd_input_chunks_init()
    size_t mtmd_input_chunks_size(const mtmd_input_chunks * chunks)
    const mtmd_input_chunk * mtmd_input_chunks_get(const mtmd_input_chunks * chunks, size_t idx)
    void mtmd_input_chunks_free(mtmd_input_chunks * chunks)

    mtmd_input_chunk_type mtmd_input_chunk_get_type(const mtmd_input_chunk * chunk)
    const llama_token * mtmd_input_chunk_get_tokens_text(const mtmd_input_chunk * chunk,
                                                         size_t * n_tokens_output)
    size_t mtmd_input_chunk_get_n_tokens(const mtmd_input_chunk * chunk)
    const char * mtmd_input_chunk_get_id(const mtmd_input_chunk * chunk)
    llama_pos mtmd_input_chunk_get_n_pos(const mtmd_input_chunk * chunk)

    # 0 on success, 1 when the bitmaps do not match the markers, 2 on a preprocessing error
    int32_t mtmd_tokenize(const mtmd_context * ctx, mtmd_input_chunks * output,
                          const mtmd_input_text * text, const mtmd_bitmap * const * bitmaps,
                          size_t n_bitmaps)


cdef extern from "mtmd-helper.h" nogil:
    cdef struct mtmd_helper_video
    cdef struct mtmd_helper_init_opt:
        pass
    cdef struct mtmd_helper_bitmap_wrapper:
        mtmd_bitmap * bitmap
        mtmd_helper_video * video_ctx

    # routes mtmd's and clip's log lines (they do not use llama_log_set's callback)
    void mtmd_helper_log_set(ggml_log_callback log_callback, void * user_data)

    mtmd_helper_init_opt mtmd_helper_init_opt_default()
    # image (stb_image: jpg, png, bmp, gif, ...) or audio (wav, mp3, flac) file contents;
    # bitmap is nullptr on failure
    mtmd_helper_bitmap_wrapper mtmd_helper_bitmap_init_from_buf(
            const mtmd_context * ctx, const unsigned char * buf, size_t len, bint placeholder,
            mtmd_helper_init_opt opt)
    void mtmd_helper_video_free(mtmd_helper_video * ctx)

    size_t mtmd_helper_get_n_tokens(const mtmd_input_chunks * chunks)
    llama_pos mtmd_helper_get_n_pos(const mtmd_input_chunks * chunks)

    # decodes text chunks, encodes + decodes media chunks; 0 on success, else the first error
    int32_t mtmd_helper_eval_chunks(mtmd_context * ctx, llama_context * lctx,
                                    const mtmd_input_chunks * chunks, llama_pos n_past,
                                    llama_seq_id seq_id, int32_t n_batch, bint logits_last,
                                    llama_pos * new_n_past)
    # the same for one chunk (the Engine evaluates a slot's media chunks one at a time)
    int32_t mtmd_helper_eval_chunk_single(mtmd_context * ctx, llama_context * lctx,
                                          const mtmd_input_chunk * chunk, llama_pos n_past,
                                          llama_seq_id seq_id, int32_t n_batch,
                                          bint logits_last, llama_pos * new_n_past)
