// The top-k sampling fast path (pyllamacy/csrc/topk.h via sample_topk): two identical chains
// [logit_bias, top_k, top_p, min_p, temp, dist] with the same seed, one fed the full candidate
// array (sample_checked), one the fast path; they must draw the same token every time, on
// random logits with ties, NaN, +-inf and biases. Then timed on a 49k and a 128k vocabulary.
//
//   (build as greedy_argmax.cpp, with this file)
#include <chrono>
#include <cstdio>
#include <random>
#include <vector>

#include "pyllamacy_support.h"

using namespace pyllamacy;

static llama_sampler * chain(int k, uint32_t seed, const std::vector<llama_logit_bias> & bias,
                             int n_vocab) {
    llama_sampler * c = llama_sampler_chain_init(llama_sampler_chain_default_params());
    if (!bias.empty()) {
        llama_sampler_chain_add(c, llama_sampler_init_logit_bias(n_vocab, (int32_t) bias.size(),
                                                                 bias.data()));
    }
    llama_sampler_chain_add(c, llama_sampler_init_top_k(k));
    llama_sampler_chain_add(c, llama_sampler_init_top_p(0.95f, 1));
    llama_sampler_chain_add(c, llama_sampler_init_min_p(0.05f, 1));
    llama_sampler_chain_add(c, llama_sampler_init_temp(0.8f));
    llama_sampler_chain_add(c, llama_sampler_init_dist(seed));
    return c;
}

int main() {
    std::mt19937 g(11);
    long bad = 0, total = 0, fast = 0;
    std::vector<llama_token_data> cur;
    TopkScratch scratch;
    for (int it = 0; it < 3000; ++it) {
        const int n = 64 + (int) (g() % 700);
        const int k = 1 + (int) (g() % 60);
        const int kind = (int) (g() % 5);
        std::vector<llama_logit_bias> bias;
        for (int t = 0; t < n; t++) {
            if (g() % 40 == 0) {
                const int r = (int) (g() % 4);
                bias.push_back({t, r == 0 ? -INFINITY : (float) ((int) (g() % 9) - 4) * 0.5f});
            }
        }
        llama_sampler * a = chain(k, 1234 + it, bias, n);
        llama_sampler * b = chain(k, 1234 + it, bias, n);
        std::normal_distribution<float> d(0, 2);
        for (int step = 0; step < 20; ++step) {
            std::vector<float> l(n);
            for (auto & x : l) {
                const int r = (int) (g() % 50);
                x = kind == 0 ? (float) (g() % 6)                       // many ties
                    : kind == 1 && r == 0 ? NAN
                    : kind == 2 && r == 0 ? -INFINITY
                    : kind == 3 && r == 0 ? INFINITY : d(g);
            }
            const int32_t ta = sample_checked(a, nullptr, 0, l.data(), n, cur);
            const int32_t tb = sample_topk(b, nullptr, 0, l.data(), n, k, bias, scratch, cur);
            std::vector<llama_token_data> probe;
            fast += topk_candidates(l.data(), n, k, bias, scratch, probe);
            ++total;
            if (ta != tb) {
                if (bad < 5) printf("mismatch: n=%d k=%d kind=%d full=%d fast=%d\n", n, k, kind,
                                    ta, tb);
                ++bad;
            }
        }
        llama_sampler_free(a);
        llama_sampler_free(b);
    }
    printf("%ld draws (%ld on the k-candidate path), %ld mismatches\n", total, fast, bad);
    for (int n : {49152, 128256}) {
        std::vector<float> l(n);
        std::normal_distribution<float> d(0, 3);
        for (auto & x : l) x = d(g);
        const std::vector<llama_logit_bias> bias = {{n - 5, -INFINITY}};
        llama_sampler * a = chain(40, 1, bias, n);
        llama_sampler * b = chain(40, 1, bias, n);
        const int reps = 1000;
        auto t0 = std::chrono::steady_clock::now();
        for (int r = 0; r < reps; r++) sample_checked(a, nullptr, 0, l.data(), n, cur);
        auto t1 = std::chrono::steady_clock::now();
        for (int r = 0; r < reps; r++) sample_topk(b, nullptr, 0, l.data(), n, 40, bias, scratch, cur);
        auto t2 = std::chrono::steady_clock::now();
        printf("n_vocab %6d, top_k 40 chain: full array %7.2f us, fast path %7.2f us\n", n,
               std::chrono::duration<double, std::micro>(t1 - t0).count() / reps,
               std::chrono::duration<double, std::micro>(t2 - t1).count() / reps);
        llama_sampler_free(a);
        llama_sampler_free(b);
    }
    return bad == 0 ? 0 : 1;
}
