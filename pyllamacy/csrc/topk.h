// Sampling fast path for chains shaped [logit_bias..., top_k(k), top_p / min_p / typical /
// temp / temp_ext ..., dist] (llama-cpp-python's defaults: top_k 40, top_p, min_p, temp):
// the k best candidates are found in one pass over the logits, and the whole chain then runs
// on that k-entry array instead of an n_vocab one (filling and partially sorting 49k-256k
// entries costs tens of microseconds per token).
//
// Exact, not approximate: after top_k, llama.cpp's array is the k best tokens sorted by
// biased logit. When those k + 1 best values are all distinct, that set and order are unique,
// so the chain sees the same array either way and draws the same token (and advances its RNG
// the same way). Where they are not (ties, NaN, -inf at the boundary), the caller falls back
// to the full array.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <utility>
#include <vector>

#include "argmax.h"
#include "llama.h"

namespace pyllamacy {

typedef int32_t topk_i32x4 __attribute__((vector_size(16)));

struct TopkScratch {
    std::vector<float> block_max;                   // per block of 64 logits
    std::vector<float> tmp;
    std::vector<std::pair<float, int32_t>> best;   // value, token
};

// The k best candidates of `logits` + `bias` (sorted by token, one entry per token) into
// `cur` with their raw logits (the chain's logit_bias stages add the biases again), or false
// when the selection would not be exact.
//
// Two passes: the maximum of every block of 64 logits (vectorized), then the C-th largest of
// those maxima, T (C = k + 1 + the biased tokens): C blocks reach T, so the C best logits are
// all >= T and lie in blocks whose maximum is >= T -- only those few blocks are read again.
inline bool topk_candidates(const float * logits, int32_t n_vocab, int32_t k,
                            const std::vector<llama_logit_bias> & bias, TopkScratch & s,
                            std::vector<llama_token_data> & cur) {
    const size_t nb = bias.size();
    const size_t cap = (size_t) k + 1 + nb;       // room for the biased tokens' raw values
    if (k <= 0 || cap > (size_t) n_vocab) {
        return false;
    }
    constexpr int32_t B = 64;
    const int32_t n_blocks = (n_vocab + B - 1) / B;
    auto & bmax = s.block_max;
    bmax.resize(n_blocks);
    const argmax_f32x4 ninf = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
    const topk_i32x4 zero = {0, 0, 0, 0};
    topk_i32x4 nan = zero;
    int32_t i = 0, blk = 0;
    for (; i + B <= n_vocab; i += B, ++blk) {
        const float * p = logits + i;
        argmax_f32x4 m0 = ninf, m1 = ninf;
        for (int32_t j = 0; j < B; j += 8) {
            const argmax_f32x4 a = argmax_load4(p + j), b = argmax_load4(p + j + 4);
            nan |= (a != a) | (b != b);
            m0 = argmax_vmax(a, m0);
            m1 = argmax_vmax(b, m1);
        }
        const argmax_f32x4 m = argmax_vmax(m0, m1);
        float bm = m[0];
        for (int j = 1; j < 4; ++j) bm = m[j] > bm ? m[j] : bm;
        bmax[blk] = bm;
    }
    if ((nan[0] | nan[1] | nan[2] | nan[3]) != 0) {
        return false;
    }
    if (i < n_vocab) {                             // the last, partial block
        float bm = -INFINITY;
        for (int32_t j = i; j < n_vocab; ++j) {
            if (std::isnan(logits[j])) return false;
            bm = logits[j] > bm ? logits[j] : bm;
        }
        bmax[blk] = bm;
    }
    float t = -INFINITY;
    if ((size_t) n_blocks > cap) {
        auto & tmp = s.tmp;
        tmp.assign(bmax.begin(), bmax.end());
        std::nth_element(tmp.begin(), tmp.begin() + (cap - 1), tmp.end(), std::greater<float>());
        t = tmp[cap - 1];
    }
    auto & best = s.best;
    best.clear();
    for (int32_t b = 0; b < n_blocks; ++b) {
        if (bmax[b] < t) continue;
        const int32_t end = std::min(n_vocab, (b + 1) * B);
        for (int32_t j = b * B; j < end; ++j) {
            if (logits[j] >= t) best.push_back({logits[j], j});
        }
    }
    auto desc = [](const std::pair<float, int32_t> & x, const std::pair<float, int32_t> & y) {
        return x.first > y.first;
    };
    if (best.size() > cap) {
        std::partial_sort(best.begin(), best.begin() + cap, best.end(), desc);
        best.resize(cap);
    } else {
        std::sort(best.begin(), best.end(), desc);
    }
    if (nb > 0) {
        // biased tokens: out with their raw values, in with their biased ones
        auto biased = [&](int32_t id) {
            auto it = std::lower_bound(bias.begin(), bias.end(), id,
                                       [](const llama_logit_bias & lb, int32_t tok) {
                                           return lb.token < tok;
                                       });
            return it != bias.end() && it->token == id;
        };
        best.erase(std::remove_if(best.begin(), best.end(),
                                  [&](const std::pair<float, int32_t> & e) {
                                      return biased(e.second);
                                  }),
                   best.end());
        for (const auto & lb : bias) {
            const float v = logits[lb.token] + lb.bias;
            if (std::isnan(v)) return false;
            best.push_back({v, lb.token});
        }
        std::sort(best.begin(), best.end(), desc);
    }
    if (best.size() < (size_t) k + 1) {
        return false;
    }
    for (int32_t j = 1; j <= k; ++j) {         // distinct k + 1 best: a unique set and order
        if (!(best[j - 1].first > best[j].first)) return false;
    }
    cur.resize(k);
    for (int32_t j = 0; j < k; ++j) {
        const int32_t id = best[j].second;
        cur[j] = llama_token_data{id, logits[id], 0.0f};
    }
    return true;
}

}  // namespace pyllamacy
