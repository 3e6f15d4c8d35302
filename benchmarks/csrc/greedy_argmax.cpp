// The greedy fast path's argmax (pyllamacy/csrc/argmax.h via greedy_biased): checked against
// the exact scan (llama.cpp's semantics) on randomized logits with ties, NaN, +-inf and biases,
// then timed on a random 49k and 128k vocabulary with the maximum early, middle and late.
//
//   L=vendor/llama.cpp; mkdir -p /tmp/ga && for l in llama ggml ggml-base; do
//       ln -sf $PWD/pyllamacy/lib/lib$l.so.0 /tmp/ga/lib$l.so; done
//   g++ -O2 -std=c++17 -Ipyllamacy/csrc -I$L/include -I$L/ggml/include \
//       benchmarks/csrc/greedy_argmax.cpp -L/tmp/ga -lllama -lggml -lggml-base \
//       -Wl,-rpath,$PWD/pyllamacy/lib -o /tmp/ga/greedy_argmax && /tmp/ga/greedy_argmax
#include <chrono>
#include <cstdio>
#include <random>
#include <vector>

#include "pyllamacy_support.h"

using namespace pyllamacy;

static long check(llama_sampler * chain, int cases) {
    std::mt19937 g(7);
    long bad = 0;
    for (int it = 0; it < cases; ++it) {
        const int n = 1 + g() % 300;            // blocks of 64 plus tails
        std::vector<float> l(n);
        const int kind = g() % 4;               // 0: coarse values, many ties
        for (auto & x : l) {
            const int r = g() % 20;
            x = kind == 0 ? (float) (g() % 5)
                          : r == 0 ? NAN : r == 1 ? -INFINITY
                          : r == 2 ? (kind == 3 ? INFINITY : 0.0f) : (float) (g() % 7);
        }
        std::vector<llama_logit_bias> bias;
        for (int t = 0; t < n; t++) {
            if (g() % 10 == 0) {
                const int r = g() % 4;
                bias.push_back({t, r == 0 ? -INFINITY : r == 1 ? NAN : (float) ((int) (g() % 5) - 2)});
            }
        }
        float best;
        const int want = greedy_biased_scan(l.data(), n, bias, &best);
        const int got = greedy_biased(chain, nullptr, 0, l.data(), n, bias);
        const bool none = std::isnan(best) || best == -INFINITY;
        if (none ? got != SAMPLE_NONE_ALLOWED : got != want) {
            if (bad < 5) printf("mismatch: n=%d scan=%d fast=%d\n", n, want, got);
            ++bad;
        }
    }
    return bad;
}

int main() {
    llama_sampler * chain = llama_sampler_chain_init(llama_sampler_chain_default_params());
    llama_sampler_chain_add(chain, llama_sampler_init_greedy());
    const int cases = 200000;
    const long bad = check(chain, cases);
    printf("%d randomized cases, %ld mismatches against the exact scan\n", cases, bad);
    for (int n : {49152, 128256}) {
        std::vector<float> l(n);
        std::mt19937 g(1);
        std::normal_distribution<float> d(0, 3);
        for (auto & x : l) x = d(g);
        const std::vector<llama_logit_bias> bias = {{n - 5, -INFINITY}, {n - 3, -INFINITY}};
        for (int pos : {n / 10, n / 2, n - 10}) {
            l[pos] = 100.f;
            const int reps = 2000;
            long sink = 0;
            const auto t0 = std::chrono::steady_clock::now();
            for (int r = 0; r < reps; r++) sink += greedy_biased(chain, nullptr, 0, l.data(), n, bias);
            const auto t1 = std::chrono::steady_clock::now();
            printf("n_vocab %6d, maximum at %6d: %7.2f us per call (picked %ld)\n", n, pos,
                   std::chrono::duration<double, std::micro>(t1 - t0).count() / reps, sink / reps);
            l[pos] = 0.f;
        }
    }
    llama_sampler_free(chain);
    return bad == 0 ? 0 : 1;
}
