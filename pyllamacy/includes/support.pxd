# Declarations of pyllamacy/csrc/pyllamacy_support.h (our own C++ helpers, callable without the GIL).
from libc.stdint cimport uint64_t
from libcpp.string cimport string
from libc.stdbool cimport bool as cbool
from libc.stdint cimport int32_t, int64_t
from libcpp.vector cimport vector
from pyllamacy.includes.ggml cimport ggml_log_level
from pyllamacy.includes.llama cimport (llama_context, llama_logit_bias, llama_sampler,
                                       llama_token, llama_token_data)

cdef extern from "pyllamacy_support.h" namespace "pyllamacy" nogil:
    # log capture
    void log_callback(ggml_log_level level, const char * text, void * user) noexcept
    void set_print_level(int level)
    int get_print_level()
    uint64_t log_mark()
    string log_since(uint64_t mark, size_t max_chars, int min_level)

    void quant_progress_reset()
    int quant_progress_done()
    int quant_progress_total()

    # cancellation
    cppclass AbortFlag:
        pass
    cbool abort_callback(void * data) noexcept
    bint abort_requested(AbortFlag * f)
    AbortFlag * abort_flag_new()
    void abort_flag_free(AbortFlag * f)
    void abort_flag_set(AbortFlag * f, bint v)
    bint abort_flag_get(AbortFlag * f)
    bint sigint_seen(AbortFlag * f)
    bint sigint_watch_begin(AbortFlag * f)
    void sigint_watch_end(AbortFlag * f)

    # sampling without aborts
    int SAMPLE_NONE_ALLOWED
    int SAMPLE_THREW
    int SAMPLE_NO_LOGITS
    int SAMPLE_TOO_SLOW
    llama_token sample_checked(llama_sampler * chain, llama_context * ctx, int32_t idx,
                               const float * logits, int32_t n_vocab,
                               vector[llama_token_data] & cur)
    llama_token sample_backend_checked(llama_sampler * chain, llama_context * ctx, int32_t idx,
                                       int32_t n_vocab, vector[llama_token_data] & cur)
    cppclass TopkScratch:
        pass
    llama_token sample_topk(llama_sampler * chain, llama_context * ctx, int32_t idx,
                            const float * logits, int32_t n_vocab, int32_t k,
                            const vector[llama_logit_bias] & bias, TopkScratch & scratch,
                            vector[llama_token_data] & cur)
    llama_token greedy_biased(llama_sampler * chain, llama_context * ctx, int32_t idx,
                              const float * logits, int32_t n_vocab,
                              const vector[llama_logit_bias] & bias)
    int32_t token_logprobs(const float * logits, int32_t n_vocab, llama_token tok,
                           int32_t n_top, vector[llama_token] & top_tok, vector[float] & top_lp,
                           float * tok_lp)
    void detach_free_sampler(llama_context * ctx, int32_t seq, llama_sampler * chain,
                             bint attached)
    bint grammar_allows(llama_sampler * g, llama_token token)
    llama_token greedy_grammar(llama_sampler * chain, const vector[llama_sampler *] & grammars,
                               llama_context * ctx, int32_t idx, const float * logits,
                               int32_t n_vocab, const vector[llama_logit_bias] & bias,
                               vector[llama_token_data] & cur)
    double grammar_apply_seconds(llama_sampler * g, int32_t n_vocab, int32_t max_tokens)
    int64_t thread_cpu_ns()
    int sampler_accept_checked(llama_sampler * s, llama_token token)

    # CPU backend variants
    int backend_score(const char * path, string * err)
