// Small C++ helpers that the Cython wrappers call without the GIL.
//
//  - log capture: llama.cpp/ggml log lines go to one callback that keeps the recent warnings and
//    errors (so a failed load can say *why* in its Python exception) and prints what is at or
//    above the chosen level to stderr. It never takes the GIL.
//  - cancellation: each Context owns an AbortFlag; llama.cpp polls it between graph nodes through
//    the abort callback. While the main thread is inside a long C call, a chained SIGINT handler
//    bumps a global epoch so Ctrl-C stops the computation within one node.
//  - CPU backend variant scoring: dlopen a libggml-cpu-<variant>.so and ask its
//    ggml_backend_score() without registering it.
#pragma once

#include <atomic>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <deque>
#include <mutex>
#include <string>
#include <chrono>
#include <vector>

#include <dlfcn.h>

#include "ggml.h"
#include "llama.h"

#include "argmax.h"
#include "logprobs.h"
#include "topk.h"

namespace pyllamacy {

// ---------------------------------------------------------------- log capture

struct LogLine {
    uint64_t seq;
    int level;
    std::string text;
};

struct LogState {
    std::mutex mu;
    std::deque<LogLine> lines;  // WARN and ERROR lines
    uint64_t seq = 0;
    int last_level = GGML_LOG_LEVEL_INFO;
};

static LogState g_log;
static std::atomic<int> g_print_level{GGML_LOG_LEVEL_ERROR};  // print to stderr at/above this

// Set when an abort was requested: llama.cpp then logs "failed to compute graph" and the like
// at error level, which is expected noise after Ctrl-C / cancel(). Still captured, not printed.
static std::atomic<bool> g_aborting{false};

// llama_model_quantize has no progress callback; it logs "[  12/ 272] name ..." per tensor.
static std::atomic<int> g_quant_done{0};
static std::atomic<int> g_quant_total{0};

inline void quant_progress_reset() { g_quant_done.store(0); g_quant_total.store(0); }
inline int quant_progress_done() { return g_quant_done.load(); }
inline int quant_progress_total() { return g_quant_total.load(); }

static void log_callback(enum ggml_log_level level, const char * text, void * /*user*/) noexcept {
    int lvl = (int) level;
    if (lvl == GGML_LOG_LEVEL_CONT) {
        lvl = g_log.last_level;
    }
    if (text == nullptr) {
        return;
    }
    if (text[0] == '[') {
        int done = 0, total = 0;
        if (sscanf(text, "[%d/%d]", &done, &total) == 2 && total > 0) {
            g_quant_done.store(done);
            g_quant_total.store(total);
        }
    }
    if (lvl >= g_print_level.load(std::memory_order_relaxed) && lvl != GGML_LOG_LEVEL_NONE &&
        !g_aborting.load(std::memory_order_relaxed)) {
        fputs(text, stderr);
        fflush(stderr);
    }
    std::lock_guard<std::mutex> lock(g_log.mu);
    g_log.last_level = lvl;
    if (lvl >= GGML_LOG_LEVEL_WARN) {
        g_log.lines.push_back(LogLine{++g_log.seq, lvl, std::string(text)});
        while (g_log.lines.size() > 64) {
            g_log.lines.pop_front();
        }
    }
}

inline void set_print_level(int level) { g_print_level.store(level); }
inline int get_print_level() { return g_print_level.load(); }

inline uint64_t log_mark() {
    std::lock_guard<std::mutex> lock(g_log.mu);
    return g_log.seq;
}

// Lines at or above `min_level` (WARN by default) logged after `mark`, joined (trimmed to
// the last `max_chars`).
inline std::string log_since(uint64_t mark, size_t max_chars, int min_level = GGML_LOG_LEVEL_WARN) {
    std::lock_guard<std::mutex> lock(g_log.mu);
    std::string out;
    for (const auto & p : g_log.lines) {
        if (p.seq > mark && p.level >= min_level) {
            out += p.text;
        }
    }
    if (out.size() > max_chars) {
        out = out.substr(out.size() - max_chars);
    }
    return out;
}

// ---------------------------------------------------------------- cancellation

static std::atomic<uint64_t> g_sigint_epoch{0};

struct AbortFlag {
    std::atomic<bool> cancel{false};   // set by Context.cancel() from any thread
    bool watch_sigint = false;         // only while the main thread is inside a C call
    uint64_t sigint_epoch = 0;         // epoch when the watch began
};

inline bool abort_requested(AbortFlag * f) {
    bool r = f->cancel.load(std::memory_order_relaxed) ||
             (f->watch_sigint && g_sigint_epoch.load(std::memory_order_relaxed) != f->sigint_epoch);
    if (r) {
        g_aborting.store(true, std::memory_order_relaxed);
    }
    return r;
}

static bool abort_callback(void * data) noexcept {
    return abort_requested(static_cast<AbortFlag *>(data));
}

inline AbortFlag * abort_flag_new() { return new AbortFlag(); }
inline void abort_flag_free(AbortFlag * f) { delete f; }
inline void abort_flag_set(AbortFlag * f, bool v) {
    f->cancel.store(v);
    if (!v) {
        g_aborting.store(false);   // a new call starts: its errors are real again
    }
}
inline bool abort_flag_get(AbortFlag * f) { return f->cancel.load(); }
inline bool sigint_seen(AbortFlag * f) {
    return f->watch_sigint && g_sigint_epoch.load() != f->sigint_epoch;
}

static std::mutex g_sig_mu;
static int g_sig_refs = 0;
static struct sigaction g_prev_sigint;

static void on_sigint(int sig, siginfo_t * info, void * uctx) {
    g_sigint_epoch.fetch_add(1);
    // chain to whatever was there before (normally Python's handler, which trips the flag that
    // makes the interpreter raise KeyboardInterrupt once we hand control back)
    if (g_prev_sigint.sa_flags & SA_SIGINFO) {
        if (g_prev_sigint.sa_sigaction) {
            g_prev_sigint.sa_sigaction(sig, info, uctx);
        }
    } else if (g_prev_sigint.sa_handler != SIG_DFL && g_prev_sigint.sa_handler != SIG_IGN) {
        g_prev_sigint.sa_handler(sig);
    }
}

// Returns false (and watches nothing) when SIGINT is ignored by the process.
inline bool sigint_watch_begin(AbortFlag * f) {
    std::lock_guard<std::mutex> lock(g_sig_mu);
    if (g_sig_refs == 0) {
        struct sigaction cur;
        sigaction(SIGINT, nullptr, &cur);
        if (!(cur.sa_flags & SA_SIGINFO) && cur.sa_handler == SIG_IGN) {
            return false;
        }
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_sigaction = on_sigint;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, &g_prev_sigint);
    }
    g_sig_refs++;
    f->sigint_epoch = g_sigint_epoch.load();
    f->watch_sigint = true;
    return true;
}

inline void sigint_watch_end(AbortFlag * f) {
    std::lock_guard<std::mutex> lock(g_sig_mu);
    if (!f->watch_sigint) {
        return;
    }
    f->watch_sigint = false;
    if (--g_sig_refs == 0) {
        sigaction(SIGINT, &g_prev_sigint, nullptr);
    }
}

// ---------------------------------------------------------------- sampling without aborts
//
// llama_sampler_sample() asserts (abort) when no token can be selected, and a grammar sampler
// aborts when asked to accept an end-of-generation token it does not allow (e.g. every token
// the grammar permits was banned by a logit bias). These do the same work with checks instead.

enum { SAMPLE_NONE_ALLOWED = -1, SAMPLE_THREW = -2, SAMPLE_NO_LOGITS = -3, SAMPLE_TOO_SLOW = -4 };

// Run `chain` over the candidates in `cur` and accept its choice; SAMPLE_NONE_ALLOWED when it
// selects nothing or a token every stage ruled out (-inf / NaN). May throw (callers catch).
inline llama_token apply_and_accept(llama_sampler * chain, std::vector<llama_token_data> & cur) {
    llama_token_data_array arr = {cur.data(), cur.size(), -1, false};
    llama_sampler_apply(chain, &arr);
    if (arr.selected < 0 || arr.selected >= (int64_t) arr.size) {
        return SAMPLE_NONE_ALLOWED;
    }
    const llama_token_data & d = arr.data[arr.selected];
    if (std::isnan(d.logit) || d.logit == -INFINITY) {
        return SAMPLE_NONE_ALLOWED;
    }
    llama_sampler_accept(chain, d.id);
    return d.id;
}

// A sampler chain attached to sequence `seq` (llama_set_sampler) leaves the graph and is
// freed: the one way both Context (one chain per generation) and Engine (one per slot) let go.
inline void detach_free_sampler(llama_context * ctx, int32_t seq, llama_sampler * chain,
                                bool attached) noexcept {
    if (chain == nullptr) {
        return;
    }
    if (attached && ctx != nullptr) {
        llama_set_sampler(ctx, seq, nullptr);
    }
    llama_sampler_free(chain);
}

inline void fill_candidates(const float * logits, int32_t n_vocab,
                            std::vector<llama_token_data> & cur) {
    cur.resize(n_vocab);
    for (llama_token i = 0; i < n_vocab; i++) {
        cur[i] = llama_token_data{i, logits[i], 0.0f};
    }
}

// Sample from `logits` (or, when NULL, output `idx` of ctx's last decode) and accept the token.
inline llama_token sample_checked(llama_sampler * chain, llama_context * ctx, int32_t idx,
                                  const float * logits, int32_t n_vocab,
                                  std::vector<llama_token_data> & cur) noexcept {
    try {
        if (logits == nullptr) {
            logits = llama_get_logits_ith(ctx, idx);
            if (logits == nullptr) {
                return SAMPLE_NO_LOGITS;
            }
        }
        fill_candidates(logits, n_vocab, cur);
        return apply_and_accept(chain, cur);
    } catch (...) {
        return SAMPLE_THREW;
    }
}

// sample_checked for chains [logit_bias..., top_k(k), ..., dist] (Sampler._topk_fast): the
// chain runs on the k best candidates when they are distinct (topk.h), else on all of them;
// the same token either way.
inline llama_token sample_topk(llama_sampler * chain, llama_context * ctx, int32_t idx,
                               const float * logits, int32_t n_vocab, int32_t k,
                               const std::vector<llama_logit_bias> & bias, TopkScratch & scratch,
                               std::vector<llama_token_data> & cur) noexcept {
    try {
        if (logits == nullptr) {
            logits = llama_get_logits_ith(ctx, idx);
            if (logits == nullptr) {
                return SAMPLE_NO_LOGITS;
            }
        }
        if (!topk_candidates(logits, n_vocab, k, bias, scratch, cur)) {
            fill_candidates(logits, n_vocab, cur);
        }
        return apply_and_accept(chain, cur);
    } catch (...) {
        return SAMPLE_THREW;
    }
}

// Greedy over raw logits plus sparse biases (`bias` sorted by token, one entry per token,
// tokens in range): the token llama.cpp's chain [logit_bias..., greedy] selects (first maximum,
// NaN semantics of its `>` scan), without filling and scanning an n_vocab candidate array.
// Then accepts it into `chain` (a no-op for these stages, kept for symmetry).
inline int32_t greedy_biased_scan(const float * logits, int32_t n_vocab,
                                  const std::vector<llama_logit_bias> & bias, float * best_out) {
    // the exact scan: llama.cpp's greedy over the biased values, in index order
    size_t b = 0;
    const size_t nb = bias.size();
    float best = logits[0];
    if (nb > 0 && bias[0].token == 0) {
        best += bias[0].bias;
        b = 1;
    }
    int32_t sel = 0;
    int32_t i = 1;
    while (i < n_vocab) {
        const int32_t end = b < nb ? bias[b].token : n_vocab;
        for (; i < end; ++i) {
            if (logits[i] > best) {
                best = logits[i];
                sel = i;
            }
        }
        if (i < n_vocab && b < nb) {
            const float v = logits[i] + bias[b].bias;
            if (v > best) {
                best = v;
                sel = i;
            }
            ++b;
            ++i;
        }
    }
    *best_out = best;
    return sel;
}

inline llama_token greedy_biased(llama_sampler * chain, llama_context * ctx, int32_t idx,
                                 const float * logits, int32_t n_vocab,
                                 const std::vector<llama_logit_bias> & bias) noexcept {
    try {
        if (logits == nullptr) {
            logits = llama_get_logits_ith(ctx, idx);
            if (logits == nullptr) {
                return SAMPLE_NO_LOGITS;
            }
        }
        if (n_vocab <= 0) {
            return SAMPLE_NONE_ALLOWED;
        }
        // 1. the first raw maximum (vectorized; a NaN never wins a `>`, as in the scan)
        float raw;
        const int32_t raw_sel = first_argmax(logits, n_vocab, &raw);
        // 2. the biased tokens against it; where a biased token holds the raw maximum, the
        //    unbiased maximum is unknown: take the exact scan. Otherwise raw_sel is unbiased and
        //    the first unbiased maximum, and the biased view's first maximum is the best of it
        //    and the biased values, the lower index winning ties.
        float best = raw;
        int32_t sel = raw_sel;
        bool exact = std::isnan(logits[0]) ||
                     (!bias.empty() && bias[0].token == 0 && std::isnan(logits[0] + bias[0].bias));
        for (const auto & lb : bias) {
            if (logits[lb.token] == raw) {
                exact = true;
                break;
            }
            const float v = logits[lb.token] + lb.bias;
            if (v > best || (v == best && lb.token < sel)) {
                best = v;
                sel = lb.token;
            }
        }
        if (exact) {
            sel = greedy_biased_scan(logits, n_vocab, bias, &best);
        }
        if (std::isnan(best) || best == -INFINITY) {
            return SAMPLE_NONE_ALLOWED;
        }
        llama_sampler_accept(chain, sel);
        return sel;
    } catch (...) {
        return SAMPLE_THREW;
    }
}

// Sample output `idx` of a decode that ran `chain` in the compute graph (llama_set_sampler):
// the backend either chose the token itself, or left candidates (probabilities / logits) for
// the chain's remaining CPU stages; with neither, fall back to the raw logits.
inline llama_token sample_backend_checked(llama_sampler * chain, llama_context * ctx, int32_t idx,
                                          int32_t n_vocab,
                                          std::vector<llama_token_data> & cur) noexcept {
    try {
        const llama_token tok = llama_get_sampled_token_ith(ctx, idx);
        if (tok != LLAMA_TOKEN_NULL) {
            if (tok < 0 || tok >= n_vocab) {
                return SAMPLE_THREW;
            }
            llama_sampler_accept(chain, tok);
            return tok;
        }
        const float * probs = llama_get_sampled_probs_ith(ctx, idx);
        const float * logits = llama_get_sampled_logits_ith(ctx, idx);
        const llama_token * ids = llama_get_sampled_candidates_ith(ctx, idx);
        uint32_t n = 0;
        if (probs != nullptr) {
            n = llama_get_sampled_probs_count_ith(ctx, idx);
        } else if (logits != nullptr) {
            n = llama_get_sampled_logits_count_ith(ctx, idx);
        } else {
            return sample_checked(chain, ctx, idx, nullptr, n_vocab, cur);
        }
        if (ids == nullptr || n == 0 || n > (uint32_t) n_vocab) {
            return SAMPLE_NONE_ALLOWED;
        }
        cur.resize(n);
        for (uint32_t i = 0; i < n; i++) {
            const float p = probs ? probs[i] : 0.0f;
            const float l = logits ? logits[i] : (p > 0.0f ? std::log(p) : -INFINITY);
            cur[i] = llama_token_data{ids[i], l, p};
        }
        return apply_and_accept(chain, cur);
    } catch (...) {
        return SAMPLE_THREW;
    }
}

// Does grammar sampler `g` allow `token` next? (apply() marks disallowed tokens -inf and does
// not change the grammar's state)
inline bool grammar_allows(llama_sampler * g, llama_token token) noexcept {
    try {
        llama_token_data d = {token, 0.0f, 0.0f};
        llama_token_data_array arr = {&d, 1, -1, false};
        llama_sampler_apply(g, &arr);
        return arr.size == 1 && d.logit != -INFINITY;
    } catch (...) {
        return false;
    }
}

// CPU time of the calling thread, in ns: what a piece of work costs, whatever else the
// machine is doing (wall time grows with the load; a cost limit must not)
inline int64_t thread_cpu_ns() noexcept {
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) {
        return 0;
    }
    return (int64_t) ts.tv_sec * 1000000000LL + (int64_t) ts.tv_nsec;
}

// CPU seconds one apply() of grammar sampler `g` takes over the whole vocabulary (equal logits)
// in its current state: what constraining one token costs at worst from there. At most
// `max_tokens` tokens (spread evenly over the vocabulary) are tried and the time scaled up,
// so that measuring a grammar costs less than using it. The grammar's state does not change.
// -1 when it threw.
inline double grammar_apply_seconds(llama_sampler * g, int32_t n_vocab,
                                    int32_t max_tokens) noexcept {
    try {
        int32_t stride = 1;
        if (max_tokens > 0 && n_vocab > max_tokens) {
            stride = (n_vocab + max_tokens - 1) / max_tokens;
        }
        std::vector<llama_token_data> cur;
        cur.reserve((size_t) (n_vocab / stride + 1));
        for (int32_t i = 0; i < n_vocab; i += stride) {
            cur.push_back({i, 0.0f, 0.0f});
        }
        llama_token_data_array arr = {cur.data(), cur.size(), -1, false};
        size_t n = cur.size();
        int64_t t0 = thread_cpu_ns();
        llama_sampler_apply(g, &arr);
        double t = (double) (thread_cpu_ns() - t0) * 1e-9;
        return n > 0 ? t * ((double) n_vocab / (double) n) : 0.0;
    } catch (...) {
        return -1.0;
    }
}

// Chains [logit_bias..., grammar..., greedy] (in any order before greedy): the argmax of the
// biased logits is checked against the grammars alone; when they all allow it, it is the
// chain's answer (the first maximum of the biased logits is also the first maximum of those
// the grammars leave), and the whole vocabulary is never constrained. Otherwise the full chain
// runs. Exact; a grammar's cost per token drops from n_vocab checks to one when the model
// follows it.
inline llama_token greedy_grammar(llama_sampler * chain, const std::vector<llama_sampler *> & grammars,
                                  llama_context * ctx, int32_t idx, const float * logits,
                                  int32_t n_vocab, const std::vector<llama_logit_bias> & bias,
                                  std::vector<llama_token_data> & cur) noexcept {
    try {
        if (logits == nullptr) {
            logits = llama_get_logits_ith(ctx, idx);
            if (logits == nullptr) {
                return SAMPLE_NO_LOGITS;
            }
        }
        if (n_vocab <= 0) {
            return SAMPLE_NONE_ALLOWED;
        }
        float best;
        const int32_t sel = greedy_biased_scan(logits, n_vocab, bias, &best);
        if (!std::isnan(best) && best != -INFINITY) {
            bool ok = true;
            for (llama_sampler * g : grammars) {
                if (!grammar_allows(g, sel)) {
                    ok = false;
                    break;
                }
            }
            if (ok) {
                llama_sampler_accept(chain, sel);
                return sel;
            }
        }
        fill_candidates(logits, n_vocab, cur);
        return apply_and_accept(chain, cur);
    } catch (...) {
        return SAMPLE_THREW;
    }
}

inline int sampler_accept_checked(llama_sampler * s, llama_token token) noexcept {
    try {
        llama_sampler_accept(s, token);
        return 0;
    } catch (...) {
        return -1;
    }
}

// ---------------------------------------------------------------- CPU variant scoring

// >0: usable with that score; 0: not supported on this CPU; -1: could not load; -2: no score fn
inline int backend_score(const char * path, std::string * err) {
    void * h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char * e = dlerror();
        if (err) *err = e ? e : "dlopen failed";
        return -1;
    }
    typedef int (*score_fn_t)(void);
    score_fn_t fn = (score_fn_t) dlsym(h, "ggml_backend_score");
    int s = fn ? fn() : -2;
    dlclose(h);
    return s;
}

}  // namespace pyllamacy
