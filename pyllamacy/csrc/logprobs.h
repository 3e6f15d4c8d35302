// Log-probabilities of one row of logits (log-softmax over the raw model output, as
// llama-cpp-python reports them): the chosen token's, and the n_top most likely tokens.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "llama.h"

namespace pyllamacy {

// Writes the chosen token's log-probability to *tok_lp and up to n_top (token, log-probability)
// pairs to top_tok / top_lp, most likely first (ties: lower token id first). Returns how many
// pairs were written. NaN logits count as -inf. Needs 0 <= tok < n_vocab.
inline int32_t token_logprobs(const float * logits, int32_t n_vocab, llama_token tok,
                              int32_t n_top, std::vector<llama_token> & top_tok,
                              std::vector<float> & top_lp, float * tok_lp) {
    float mx = -INFINITY;
    for (int32_t i = 0; i < n_vocab; ++i) {
        if (logits[i] > mx) mx = logits[i];
    }
    double sum = 0.0;
    if (mx > -INFINITY) {
        for (int32_t i = 0; i < n_vocab; ++i) {
            const float v = logits[i];
            if (v > -INFINITY) sum += std::exp((double) (v - mx));   // NaN fails the test
        }
    }
    const float lse = sum > 0.0 ? mx + (float) std::log(sum) : INFINITY;
    auto lp_of = [&](int32_t i) {
        const float v = logits[i];
        return (std::isnan(v) || v == -INFINITY) ? -INFINITY : v - lse;
    };
    *tok_lp = lp_of(tok);
    top_tok.clear();
    top_lp.clear();
    if (n_top <= 0) {
        return 0;
    }
    if (n_top > n_vocab) n_top = n_vocab;
    auto better = [](const std::pair<float, llama_token> & a,
                     const std::pair<float, llama_token> & b) {
        return a.first > b.first || (a.first == b.first && a.second < b.second);
    };
    std::vector<std::pair<float, llama_token>> best;
    if (n_top > 32) {
        // many: a partial sort of the whole row
        best.resize(n_vocab);
        for (int32_t i = 0; i < n_vocab; ++i) best[i] = {lp_of(i), i};
        std::partial_sort(best.begin(), best.begin() + n_top, best.end(), better);
        best.resize(n_top);
    } else {
        // few: insertion into a sorted list of n_top, a compare or two per token
        best.reserve(n_top + 1);
        for (int32_t i = 0; i < n_vocab; ++i) {
            const std::pair<float, llama_token> c{lp_of(i), i};
            if ((int32_t) best.size() == n_top && !better(c, best.back())) {
                continue;
            }
            size_t k = best.size();
            best.push_back(c);
            while (k > 0 && better(c, best[k - 1])) {
                best[k] = best[k - 1];
                --k;
            }
            best[k] = c;
            if ((int32_t) best.size() > n_top) best.pop_back();
        }
    }
    for (const auto & b : best) {
        top_tok.push_back(b.second);
        top_lp.push_back(b.first);
    }
    return (int32_t) best.size();
}

}  // namespace pyllamacy
