// qemu_proof: load ggml CPU backend modules explicitly, print llama_print_system_info(), load a
// GGUF model and decode greedily, printing the token ids and the top logits of every step, and
// optionally dumping the full logits for comparison between two builds (x86-64 native vs aarch64
// under qemu-user: packaging/arm/run_qemu_proof.sh).
//
//   qemu_proof -b MODULE.so|DIR [-b ...] -m MODEL.gguf [-n N] [-t THREADS] [-p PROMPT]
//              [-f FORCE_TOKENS] [-o LOGITS.bin] [-k TOPK] [-s 1]
//
//   -b  a backend module (ggml_backend_load; its ggml_backend_score is printed first) or a folder
//       (ggml_backend_load_all_from_path: the best CPU variant there plus any GPU module)
//   -n  tokens to generate (default 16)
//   -f  teacher forcing: a file of whitespace-separated token ids fed as the generated tokens
//       (the program still reports its own argmax at every step), so that the logits of every
//       step are comparable with the run that produced the ids even if the argmaxes differ
//   -o  raw logits: int32 n_vocab, int32 n_steps, then n_steps * n_vocab float32
//   -s 1  only print each module's ggml_backend_score on this CPU and exit (no model needed)
//
// Output lines (stdout) are "key: value" so that a script can parse them.
#include "llama.h"
#include "ggml-backend.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define MAX_BACKENDS 8

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void log_cb(enum ggml_log_level level, const char * text, void * user) {
    (void) user;
    // backend loading lines are informative here; the rest of llama.cpp's INFO chatter is not
    static int show = 0;
    if (level != GGML_LOG_LEVEL_CONT) {
        show = level >= GGML_LOG_LEVEL_WARN || strstr(text, "load_backend") != NULL;
    }
    if (show) fputs(text, stderr);
}

static int is_dir(const char * p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static void usage(const char * argv0) {
    fprintf(stderr, "usage: %s -b MODULE.so|DIR [-b ...] -m MODEL.gguf [-n N] [-t THREADS] "
                    "[-p PROMPT] [-f FORCE_TOKENS] [-o LOGITS.bin] [-k TOPK] [-s 1]\n", argv0);
    exit(2);
}

int main(int argc, char ** argv) {
    const char * backends[MAX_BACKENDS];
    int n_backends = 0;
    const char * model_path = NULL;
    const char * prompt = "The capital of France is";
    const char * force_path = NULL;
    const char * logits_path = NULL;
    int n_predict = 16, n_threads = 1, top_k = 5, score_only = 0;

    for (int i = 1; i < argc; i++) {
        const char * a = argv[i];
        if (i + 1 >= argc) usage(argv[0]);
        const char * v = argv[++i];
        if      (!strcmp(a, "-b") && n_backends < MAX_BACKENDS) backends[n_backends++] = v;
        else if (!strcmp(a, "-m")) model_path = v;
        else if (!strcmp(a, "-p")) prompt = v;
        else if (!strcmp(a, "-n")) n_predict = atoi(v);
        else if (!strcmp(a, "-t")) n_threads = atoi(v);
        else if (!strcmp(a, "-k")) top_k = atoi(v);
        else if (!strcmp(a, "-f")) force_path = v;
        else if (!strcmp(a, "-o")) logits_path = v;
        else if (!strcmp(a, "-s")) score_only = atoi(v);
        else usage(argv[0]);
    }
    if ((!model_path && !score_only) || n_backends == 0 || n_predict < 1) usage(argv[0]);

    llama_log_set(log_cb, NULL);

    // 1. backends, before anything enumerates devices
    for (int i = 0; i < n_backends; i++) {
        if (is_dir(backends[i])) {
            ggml_backend_load_all_from_path(backends[i]);
            printf("backend_dir: %s\n", backends[i]);
            continue;
        }
        // the module's own score (what ggml_backend_load_best and pyllamacy's picker compare);
        // 0 means this CPU lacks a feature the module was compiled for
        void * h = dlopen(backends[i], RTLD_NOW | RTLD_LOCAL);
        if (!h) { fprintf(stderr, "dlopen %s: %s\n", backends[i], dlerror()); return 1; }
        int (*score_fn)(void) = (int (*)(void)) dlsym(h, "ggml_backend_score");
        printf("backend_score: %s %d\n", backends[i], score_fn ? score_fn() : -1);
        dlclose(h);
        if (score_only) continue;
        ggml_backend_reg_t reg = ggml_backend_load(backends[i]);
        if (!reg) { fprintf(stderr, "ggml_backend_load failed for %s\n", backends[i]); return 1; }
        printf("backend_loaded: %s %s\n", ggml_backend_reg_name(reg), backends[i]);
    }
    if (score_only) return 0;
    if (ggml_backend_dev_count() == 0) { fprintf(stderr, "no backend device\n"); return 1; }
    llama_backend_init();
    printf("system_info: %s\n", llama_print_system_info());
    fflush(stdout);

    // 2. model and context
    double t0 = now_s();
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    struct llama_model * model = llama_model_load_from_file(model_path, mp);
    if (!model) { fprintf(stderr, "cannot load %s\n", model_path); return 1; }
    const struct llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);

    llama_token prompt_tokens[512];
    int n_prompt = llama_tokenize(vocab, prompt, (int) strlen(prompt), prompt_tokens, 512, true, true);
    if (n_prompt <= 0) { fprintf(stderr, "tokenize failed\n"); return 1; }

    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n_prompt + n_predict + 8;
    cp.n_batch = cp.n_ctx;
    cp.n_ubatch = cp.n_ctx;
    cp.n_threads = n_threads;
    cp.n_threads_batch = n_threads;
    struct llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) { fprintf(stderr, "cannot create context\n"); return 1; }
    double t_load = now_s() - t0;

    llama_token * forced = NULL;
    int n_forced = 0;
    if (force_path) {
        FILE * f = fopen(force_path, "r");
        if (!f) { perror(force_path); return 1; }
        forced = malloc(sizeof(llama_token) * (size_t) n_predict);
        while (n_forced < n_predict && fscanf(f, "%d", &forced[n_forced]) == 1) n_forced++;
        fclose(f);
    }

    printf("n_vocab: %d\nn_threads: %d\nprompt: %s\nprompt_tokens:", n_vocab, n_threads, prompt);
    for (int i = 0; i < n_prompt; i++) printf(" %d", prompt_tokens[i]);
    printf("\n");
    fflush(stdout);

    FILE * lf = NULL;
    if (logits_path) {
        lf = fopen(logits_path, "wb");
        if (!lf) { perror(logits_path); return 1; }
        int32_t hdr[2] = { n_vocab, n_predict };
        fwrite(hdr, sizeof hdr, 1, lf);
    }

    // 3. prompt, then one token per decode
    llama_token * argmax_ids = malloc(sizeof(llama_token) * (size_t) n_predict);
    int * idx = malloc(sizeof(int) * (size_t) (top_k > 0 ? top_k : 1));
    double t_prompt = 0, t_gen = 0;
    t0 = now_s();
    if (llama_decode(ctx, llama_batch_get_one(prompt_tokens, n_prompt)) != 0) {
        fprintf(stderr, "prompt decode failed\n");
        return 1;
    }
    t_prompt = now_s() - t0;
    int n_steps = 0;
    for (int step = 0; step < n_predict; step++) {
        const float * logits = llama_get_logits_ith(ctx, -1);
        // top-k by repeated scan (k is tiny); ties go to the lower id, as in the greedy sampler
        for (int j = 0; j < top_k; j++) {
            int best = -1;
            for (int v = 0; v < n_vocab; v++) {
                int taken = 0;
                for (int q = 0; q < j; q++) if (idx[q] == v) { taken = 1; break; }
                if (!taken && (best < 0 || logits[v] > logits[best])) best = v;
            }
            idx[j] = best;
        }
        llama_token am = idx[0];
        argmax_ids[step] = am;
        if (lf) fwrite(logits, sizeof(float), (size_t) n_vocab, lf);
        char piece[64];
        int np = llama_token_to_piece(vocab, am, piece, sizeof piece - 1, 0, true);
        piece[np > 0 ? np : 0] = 0;
        for (char * c = piece; *c; c++) if (*c == '\n') *c = ' ';
        printf("step: %d argmax %d logit %.6f piece \"%s\" top", step, am, logits[am], piece);
        for (int j = 0; j < top_k; j++) printf(" %d:%.6f", idx[j], logits[idx[j]]);
        printf("\n");
        fflush(stdout);
        n_steps++;
        if (step + 1 == n_predict) break;
        llama_token next = (forced && step < n_forced) ? forced[step] : am;
        if (!forced && llama_vocab_is_eog(vocab, next)) break;
        t0 = now_s();
        if (llama_decode(ctx, llama_batch_get_one(&next, 1)) != 0) {
            fprintf(stderr, "decode failed at step %d\n", step);
            return 1;
        }
        t_gen += now_s() - t0;
    }
    if (lf) {
        if (n_steps != n_predict) {             // rewrite the header with the real count
            fseek(lf, sizeof(int32_t), SEEK_SET);
            int32_t ns = n_steps;
            fwrite(&ns, sizeof ns, 1, lf);
        }
        fclose(lf);
    }
    printf("tokens:");
    for (int i = 0; i < n_steps; i++) printf(" %d", argmax_ids[i]);
    printf("\nforced: %s\n", forced ? "yes" : "no");
    printf("time_load_s: %.3f\ntime_prompt_s: %.3f\ntime_gen_s: %.3f\n", t_load, t_prompt, t_gen);

    free(idx); free(argmax_ids); free(forced);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
