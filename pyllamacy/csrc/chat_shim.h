// pyllamacy/csrc/chat_shim.h — a small C++ layer over llama.cpp's common chat code
// (common/chat.h, common/json-schema-to-grammar.h) for pyllamacy._chat.
//
// Everything crosses the Cython boundary as JSON text, so that the .pxd needs no common_json or
// nlohmann types.
//
// Sandbox. A chat template comes from a downloaded model file and is a program: llama.cpp's
// Jinja engine runs no Python (so the lipsum.__globals__ escapes of Python Jinja do nothing),
// but it has no step, memory or recursion limit: `range(10**12)`, nested loops or a macro that
// calls itself would hang the process, exhaust its memory or overflow the stack. JSON-schema
// conversion recurses without a depth limit as well. So the work that runs untrusted input
// (template analysis + rendering, schema -> grammar) runs in a forked worker process with a
// wall-clock budget per job, an address-space budget, no core dumps and a cap on the size of
// its answer. The parent waits without the GIL, kills the worker when the budget runs out, and
// reports what happened as a status code. A worker only runs C++ (never Python) and leaves with
// _exit(), so fork() in a multi-threaded process is safe here. Workers are kept and reused
// (sandbox_pool below): a fork per call cost more than the render itself.
#pragma once

#include "chat.h"
#include "json-schema-to-grammar.h"
#include "json.h"
#include "log.h"

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <condition_variable>
#include <functional>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

namespace pyl_chat {

// status codes of a sandboxed call
enum {
    ST_OK = 0,
    ST_ERROR = 1,       // the work threw: text holds the message
    ST_TIMEOUT = 2,     // killed after the time budget
    ST_CRASHED = 3,     // the child died from a signal (stack overflow, abort): text names it
    ST_MEMORY = 4,      // the address-space budget ran out
    ST_TOO_LARGE = 5,   // the answer was larger than max_output
    ST_SYSTEM = 6,      // fork/pipe failed: text holds errno's message
};

struct result {
    int status = ST_OK;
    std::string text;
};

inline void quiet_common_log() {
    // LOG_WRN/LOG_ERR of libllama-common would start a logging thread; keep the parent free of
    // it (a fork while that thread holds its mutex could block a child). Errors reach us as
    // exceptions anyway.
    common_log_set_verbosity_thold(-1);
}

static inline size_t current_vm_bytes() {
    FILE * f = std::fopen("/proc/self/statm", "r");
    if (!f) return 0;
    unsigned long pages = 0;
    if (std::fscanf(f, "%lu", &pages) != 1) pages = 0;
    std::fclose(f);
    return (size_t) pages * (size_t) sysconf(_SC_PAGESIZE);
}

// ---- template rendering --------------------------------------------------------------------

// request: {"template": str, "bos_token": str, "eos_token": str, "messages": [...],
//           "tools": [...]|null, "tool_choice": "auto"|"none"|"required",
//           "json_schema": {...}|null, "grammar": str, "add_generation_prompt": bool,
//           "parallel_tool_calls": bool, "reasoning_format": str, "enable_thinking": bool,
//           "chat_template_kwargs": {...}, "now": unix seconds (optional)}
// answer: {"prompt", "format", "format_name", "grammar", "grammar_lazy", "grammar_triggers":
//          [{"type", "value", "token"}], "preserved_tokens", "additional_stops", "parser",
//          "generation_prompt", "supports_thinking", "thinking_start_tag", "thinking_end_tags",
//          "caps": {...}}
inline std::string apply_template(const std::string & request_text) {
    common_json req = common_json::parse(request_text);
    std::string tmpl = req.value("template", std::string());
    if (tmpl.empty()) {
        throw std::invalid_argument("empty chat template");
    }
    auto tmpls = common_chat_templates_init(nullptr, tmpl, req.value("bos_token", std::string()),
                                            req.value("eos_token", std::string()));
    common_chat_templates_inputs in;
    in.messages = common_chat_msgs_parse_oaicompat(req.value("messages", common_json::array()));
    common_json tools = req.value("tools", common_json());
    if (tools.is_array() && !tools.empty()) {
        in.tools = common_chat_tools_parse_oaicompat(tools);
    }
    in.tool_choice = common_chat_tool_choice_parse_oaicompat(req.value("tool_choice", std::string("auto")));
    common_json schema = req.value("json_schema", common_json());
    if (!schema.is_null()) {
        in.json_schema = schema.dump();
    }
    in.grammar = req.value("grammar", std::string());
    in.use_jinja = true;
    in.add_generation_prompt = req.value("add_generation_prompt", true);
    in.parallel_tool_calls = req.value("parallel_tool_calls", false);
    in.reasoning_format = common_reasoning_format_from_name(req.value("reasoning_format", std::string("none")));
    in.enable_thinking = req.value("enable_thinking", true);
    common_json kw = req.value("chat_template_kwargs", common_json::object());
    for (const auto & item : kw.items()) {
        in.chat_template_kwargs[item.key()] = item.value().dump();
    }
    if (req.contains("now") && req.at("now").is_number()) {
        in.now = std::chrono::system_clock::time_point(
            std::chrono::seconds((long long) req.at("now").get<double>()));
    }
    common_chat_params p = common_chat_templates_apply(tmpls.get(), in);

    common_json out = common_json::object();
    out["prompt"] = p.prompt;
    out["format"] = (int) p.format;
    out["format_name"] = std::string(common_chat_format_name(p.format));
    out["grammar"] = p.grammar;
    out["grammar_lazy"] = p.grammar_lazy;
    common_json triggers = common_json::array();
    for (const auto & t : p.grammar_triggers) {
        common_json jt = common_json::object();
        const char * type = "word";
        switch (t.type) {
            case COMMON_GRAMMAR_TRIGGER_TYPE_TOKEN: type = "token"; break;
            case COMMON_GRAMMAR_TRIGGER_TYPE_WORD: type = "word"; break;
            case COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN: type = "pattern"; break;
            case COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN_FULL: type = "pattern_full"; break;
        }
        jt["type"] = std::string(type);
        jt["value"] = t.value;
        jt["token"] = (int64_t) t.token;
        triggers.push_back(jt);
    }
    out["grammar_triggers"] = triggers;
    common_json preserved = common_json::array();
    for (const auto & s : p.preserved_tokens) preserved.push_back(s);
    out["preserved_tokens"] = preserved;
    common_json stops = common_json::array();
    for (const auto & s : p.additional_stops) stops.push_back(s);
    out["additional_stops"] = stops;
    out["parser"] = p.parser;
    out["generation_prompt"] = p.generation_prompt;
    out["supports_thinking"] = p.supports_thinking;
    out["thinking_start_tag"] = p.thinking_start_tag;
    common_json ends = common_json::array();
    for (const auto & s : p.thinking_end_tags) ends.push_back(s);
    out["thinking_end_tags"] = ends;
    common_json caps = common_json::object();
    for (const auto & kv : common_chat_templates_get_caps(tmpls.get())) {
        caps[kv.first] = kv.second;
    }
    out["caps"] = caps;
    return out.dump();
}

// ---- JSON schema -> GBNF ----------------------------------------------------------------------

inline std::string schema_to_grammar(const std::string & schema_text, bool force_gbnf) {
    return json_schema_to_grammar(common_json::parse(schema_text), force_gbnf);
}

// ---- the sandbox: a small pool of persistent forked workers --------------------------------
//
// A worker is forked once and then serves jobs over a socket, one at a time: forking per call
// copied the parent's page tables every time (~5 ms for a small process, ~65 ms with 3 GB
// resident: the cost of every chat request in a server holding a model). The limits stay per
// job: the parent waits for the answer up to the time budget and kills the worker when it runs
// out; the worker arms RLIMIT_CPU before each job as a backstop should the parent die; the
// address-space budget (bytes over what the worker inherited) is set once at the fork; a job
// that hit the memory budget, crashed or was killed takes its worker with it, and the next job
// gets a fresh one. A worker holds no descriptor of the parent other than its socket: it ends
// when the parent's end closes (the parent exited).

enum : char { JOB_TEMPLATE = 'T', JOB_SCHEMA_GBNF = 'G', JOB_SCHEMA = 'g' };

inline std::string run_job(char kind, const std::string & payload);   // below the pool

static inline bool read_all(int fd, void * dst, size_t n) {
    char * p = (char *) dst;
    while (n > 0) {
        ssize_t r = ::read(fd, p, n);
        if (r < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        if (r == 0) return false;
        p += r;
        n -= (size_t) r;
    }
    return true;
}

static inline bool send_all(int fd, const char * p, size_t n) {
    while (n > 0) {
        ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        p += w;
        n -= (size_t) w;
    }
    return true;
}

// a job: kind, timeout (s), max_output, payload length, payload
struct job_head {
    char kind;
    double timeout_s;
    uint64_t max_output;
    uint64_t size;
};
// an answer: tag ('O' ok, 'E' error text, 'M' memory, 'L' too large: the size), length, text
struct answer_head {
    char tag;
    uint64_t size;
};

static inline void close_other_fds(int keep) {
    // everything but stdio and the socket (which is moved to fd 3)
    if (keep != 3) {
        ::dup2(keep, 3);
    }
#ifdef SYS_close_range
    if (::syscall(SYS_close_range, 4u, ~0u, 0u) == 0) return;
#endif
    long max_fd = ::sysconf(_SC_OPEN_MAX);
    if (max_fd < 0 || max_fd > 65536) max_fd = 65536;
    for (int fd = 4; fd < max_fd; ++fd) ::close(fd);
}

[[noreturn]] static inline void worker_main(int sock, size_t mem_budget) {
    ::prctl(PR_SET_NAME, "pyllamacy-sbx", 0, 0, 0);
    close_other_fds(sock);
    sock = 3;
    // the parent's handlers (Python's faulthandler, our SIGINT hook) must not run here: a
    // crash of the worker is an answer, not something to report from inside it
    for (int sig : { SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL, SIGINT, SIGTERM, SIGXCPU }) {
        ::signal(sig, SIG_DFL);
    }
    ::signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    rl.rlim_cur = rl.rlim_max = 0;
    ::setrlimit(RLIMIT_CORE, &rl);
    if (mem_budget > 0) {
        size_t vm = current_vm_bytes();
        if (vm > 0) {
            rl.rlim_cur = rl.rlim_max = (rlim_t) (vm + mem_budget);
            ::setrlimit(RLIMIT_AS, &rl);
        }
    }
    for (;;) {
        job_head h;
        if (!read_all(sock, &h, sizeof(h))) ::_exit(0);     // the parent is gone
        std::string payload;
        try {
            payload.resize(h.size);
        } catch (...) {
            ::_exit(3);
        }
        if (h.size > 0 && !read_all(sock, &payload[0], h.size)) ::_exit(0);
        if (h.timeout_s > 0) {
            // CPU backstop for this job: what the worker used so far plus the budget
            struct rusage ru;
            ::getrusage(RUSAGE_SELF, &ru);
            rlim_t used = (rlim_t) (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + 1);
            if (::getrlimit(RLIMIT_CPU, &rl) == 0) {
                rl.rlim_cur = used + (rlim_t) h.timeout_s + 2;
                if (rl.rlim_max != RLIM_INFINITY && rl.rlim_cur > rl.rlim_max) {
                    rl.rlim_cur = rl.rlim_max;
                }
                ::setrlimit(RLIMIT_CPU, &rl);
            }
        }
        answer_head a = { 'E', 0 };
        std::string out;
        try {
            out = run_job(h.kind, payload);
            a.tag = 'O';
            if (out.size() > h.max_output) {
                a.tag = 'L';
                out = std::to_string(out.size());
            }
        } catch (const std::bad_alloc &) {
            a.tag = 'M';
            out.clear();
        } catch (const std::length_error &) {
            a.tag = 'M';
            out.clear();
        } catch (const std::exception & e) {
            a.tag = 'E';
            try { out = e.what(); } catch (...) { out = "error"; }
        } catch (...) {
            a.tag = 'E';
            out = "unknown C++ exception";
        }
        payload = std::string();
        a.size = out.size();
        if (!send_all(sock, (const char *) &a, sizeof(a)) ||
            !send_all(sock, out.data(), out.size())) {
            ::_exit(0);
        }
        if (a.tag == 'M' || a.tag == 'L') ::_exit(0);   // leave with the memory it took
    }
}

class sandbox_pool {
  public:
    struct worker {
        pid_t pid = -1;
        int sock = -1;
        size_t mem_budget = 0;
    };

    static sandbox_pool & get() {
        static sandbox_pool * pool = new sandbox_pool();   // never destroyed: workers end on EOF
        return *pool;
    }

    // Fork up to n idle workers now (cheap while the process is small: before loading models).
    int prestart(int n, size_t mem_budget, std::string & err) {
        std::unique_lock<std::mutex> lk(mu_);
        int made = 0;
        while ((int) idle_.size() < n && n_live_ < max_workers_) {
            worker w;
            if (!spawn(mem_budget, w, err)) break;
            ++n_live_;
            idle_.push_back(w);
            ++made;
        }
        return made;
    }

    std::vector<int> pids() {
        std::lock_guard<std::mutex> lk(mu_);
        std::vector<int> out;
        for (const auto & w : idle_) out.push_back((int) w.pid);
        for (int p : busy_pids_) out.push_back(p);
        return out;
    }

    int max_workers() const { return max_workers_; }

    result call(char kind, const std::string & payload, double timeout_s, size_t mem_budget,
                size_t max_output) {
        result res;
        for (int attempt = 0; attempt < 2; ++attempt) {
            worker w;
            bool fresh = false;
            if (!checkout(mem_budget, w, fresh, res)) return res;
            job_head h = { kind, timeout_s, (uint64_t) max_output, (uint64_t) payload.size() };
            auto t0 = std::chrono::steady_clock::now();
            if (!send_all(w.sock, (const char *) &h, sizeof(h)) ||
                !send_all(w.sock, payload.data(), payload.size())) {
                // an idle worker that died in between (killed from outside): once more, fresh
                int st = 0;
                discard(w, true, st);
                if (fresh) {
                    res.status = ST_SYSTEM;
                    res.text = "the sandboxed worker did not take the job";
                    return res;
                }
                continue;
            }
            return wait_answer(w, t0, timeout_s, max_output);
        }
        res.status = ST_SYSTEM;
        res.text = "no sandboxed worker could take the job";
        return res;
    }

  private:
    sandbox_pool() {
        unsigned hc = std::thread::hardware_concurrency();
        max_workers_ = (int) std::max(1u, std::min(4u, hc ? hc : 1u));
    }

    bool spawn(size_t mem_budget, worker & w, std::string & err) {
        int sv[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
            err = std::string("socketpair: ") + std::strerror(errno);
            return false;
        }
        pid_t pid = ::fork();
        if (pid < 0) {
            err = std::string("fork: ") + std::strerror(errno);
            ::close(sv[0]);
            ::close(sv[1]);
            return false;
        }
        if (pid == 0) {
            worker_main(sv[1], mem_budget);
        }
        ::close(sv[1]);
        w.pid = pid;
        w.sock = sv[0];
        w.mem_budget = mem_budget;
        return true;
    }

    // an idle worker with this memory budget (others are retired), else a new one, else wait
    bool checkout(size_t mem_budget, worker & w, bool & fresh, result & res) {
        std::unique_lock<std::mutex> lk(mu_);
        for (;;) {
            while (!idle_.empty()) {
                worker c = idle_.back();
                idle_.pop_back();
                int st = 0;
                bool dead = ::waitpid(c.pid, &st, WNOHANG) == c.pid;
                if (dead || c.mem_budget != mem_budget) {
                    if (!dead) ::kill(c.pid, SIGKILL);
                    ::close(c.sock);
                    if (!dead) {
                        while (::waitpid(c.pid, &st, 0) < 0 && errno == EINTR) {
                        }
                    }
                    --n_live_;
                    continue;
                }
                w = c;
                busy_pids_.push_back((int) w.pid);
                fresh = false;
                return true;
            }
            if (n_live_ < max_workers_) {
                std::string err;
                if (!spawn(mem_budget, w, err)) {
                    res.status = ST_SYSTEM;
                    res.text = err;
                    return false;
                }
                ++n_live_;
                busy_pids_.push_back((int) w.pid);
                fresh = true;
                return true;
            }
            cv_.wait(lk);
        }
    }

    void checkin(const worker & w) {
        std::lock_guard<std::mutex> lk(mu_);
        unbusy(w.pid);
        idle_.push_back(w);
        cv_.notify_one();
    }

    // kill (when asked) and reap a worker that will not serve again; its exit status in st
    void discard(const worker & w, bool kill_it, int & st) {
        if (kill_it) ::kill(w.pid, SIGKILL);
        ::close(w.sock);
        st = 0;
        while (::waitpid(w.pid, &st, 0) < 0 && errno == EINTR) {
        }
        std::lock_guard<std::mutex> lk(mu_);
        unbusy(w.pid);
        --n_live_;
        cv_.notify_one();
    }

    void unbusy(pid_t pid) {
        for (size_t i = 0; i < busy_pids_.size(); ++i) {
            if (busy_pids_[i] == (int) pid) {
                busy_pids_.erase(busy_pids_.begin() + (long) i);
                return;
            }
        }
    }

    // read exactly n bytes before the deadline: 1 done, 0 EOF/error, -1 deadline passed
    static int read_until(int fd, char * p, size_t n, std::chrono::steady_clock::time_point deadline,
                          bool timed) {
        while (n > 0) {
            int wait_ms = -1;
            if (timed) {
                auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now()).count();
                if (left <= 0) return -1;
                wait_ms = (int) std::min<long long>(left, 1000 * 1000);
            }
            struct pollfd pfd = { fd, POLLIN, 0 };
            int pr = ::poll(&pfd, 1, wait_ms);
            if (pr < 0) {
                if (errno == EINTR) continue;
                return 0;
            }
            if (pr == 0) continue;   // re-check the deadline
            ssize_t r = ::read(fd, p, n);
            if (r < 0) {
                if (errno == EINTR || errno == EAGAIN) continue;
                return 0;
            }
            if (r == 0) return 0;
            p += r;
            n -= (size_t) r;
        }
        return 1;
    }

    result wait_answer(worker & w, std::chrono::steady_clock::time_point t0, double timeout_s,
                       size_t max_output) {
        result res;
        bool timed = timeout_s > 0;
        auto deadline = t0 + std::chrono::milliseconds((long long) (timeout_s * 1000.0));
        answer_head a;
        int rc = read_until(w.sock, (char *) &a, sizeof(a), deadline, timed);
        std::string text;
        if (rc == 1) {
            if (a.size > max_output + 64) {
                int st;
                discard(w, true, st);
                res.status = ST_TOO_LARGE;
                return res;
            }
            try {
                text.resize(a.size);
            } catch (...) {
                int st;
                discard(w, true, st);
                res.status = ST_MEMORY;
                return res;
            }
            if (a.size > 0) rc = read_until(w.sock, &text[0], a.size, deadline, timed);
        }
        if (rc == -1) {
            int st;
            discard(w, true, st);
            res.status = ST_TIMEOUT;
            return res;
        }
        if (rc == 0) {
            int st;
            discard(w, true, st);
            if (WIFSIGNALED(st)) {
                int sig = WTERMSIG(st);
                if (sig == SIGXCPU || sig == SIGKILL) {
                    res.status = ST_TIMEOUT;
                    return res;
                }
                res.status = ST_CRASHED;
                const char * name = strsignal(sig);
                res.text = name ? name : ("signal " + std::to_string(sig));
                return res;
            }
            res.status = ST_CRASHED;
            res.text = "the worker exited without an answer";
            return res;
        }
        if (a.tag == 'M' || a.tag == 'L') {
            int st;
            discard(w, false, st);      // it leaves by itself
        } else {
            checkin(w);
        }
        res.text = std::move(text);
        switch (a.tag) {
            case 'O': res.status = ST_OK; break;
            case 'M': res.status = ST_MEMORY; break;
            case 'L': res.status = ST_TOO_LARGE; break;
            default:  res.status = ST_ERROR; break;
        }
        return res;
    }

    std::mutex mu_;
    std::condition_variable cv_;
    std::vector<worker> idle_;
    std::vector<int> busy_pids_;
    int n_live_ = 0;
    int max_workers_ = 1;
};

inline int sandbox_prestart(int n, size_t mem_budget) {
    std::string err;
    return sandbox_pool::get().prestart(n, mem_budget, err);
}

inline std::vector<int> sandbox_pids() { return sandbox_pool::get().pids(); }

inline int sandbox_max_workers() { return sandbox_pool::get().max_workers(); }

inline std::string run_job(char kind, const std::string & payload) {
    switch (kind) {
        case JOB_TEMPLATE: return apply_template(payload);
        case JOB_SCHEMA_GBNF: return schema_to_grammar(payload, true);
        case JOB_SCHEMA: return schema_to_grammar(payload, false);
    }
    throw std::invalid_argument("unknown sandbox job");
}

inline result apply_template_sandboxed(const std::string & request_text, double timeout_s,
                                       size_t mem_budget, size_t max_output) {
    return sandbox_pool::get().call(JOB_TEMPLATE, request_text, timeout_s, mem_budget,
                                    max_output);
}

inline result schema_to_grammar_sandboxed(const std::string & schema_text, bool force_gbnf,
                                          double timeout_s, size_t mem_budget,
                                          size_t max_output) {
    return sandbox_pool::get().call(force_gbnf ? JOB_SCHEMA_GBNF : JOB_SCHEMA, schema_text,
                                    timeout_s, mem_budget, max_output);
}

// ---- output parsing -----------------------------------------------------------------------------

// One reply's parser: llama.cpp's per-model PEG parser (serialized by apply_template) with
// the generation prompt the output continues.
struct parser {
    common_chat_parser_params params;
};

// config: {"format": int, "parser": str, "generation_prompt": str, "reasoning_format": str,
//          "parse_tool_calls": bool}
inline parser * parser_new(const std::string & config_text) {
    common_json cfg = common_json::parse(config_text);
    std::unique_ptr<parser> p(new parser());
    p->params.format = (common_chat_format) cfg.value("format", (int64_t) 0);
    if (p->params.format < 0 || p->params.format >= COMMON_CHAT_FORMAT_COUNT) {
        throw std::invalid_argument("unknown chat format");
    }
    p->params.generation_prompt = cfg.value("generation_prompt", std::string());
    p->params.reasoning_format =
        common_reasoning_format_from_name(cfg.value("reasoning_format", std::string("none")));
    p->params.parse_tool_calls = cfg.value("parse_tool_calls", true);
    std::string ser = cfg.value("parser", std::string());
    if (!ser.empty()) {
        p->params.parser.load(ser);
    }
    return p.release();
}

inline void parser_free(parser * p) { delete p; }

// -> {"role", "content", "reasoning_content"?, "tool_calls"?: [{"type","function":{name,arguments},"id"}]}
inline std::string parser_parse(const parser * p, const std::string & text, bool partial) {
    common_chat_msg msg = common_chat_parse(text, partial, p->params);
    common_json out = common_json::object();
    out["role"] = msg.role.empty() ? std::string("assistant") : msg.role;
    out["content"] = msg.content;
    out["reasoning_content"] = msg.reasoning_content;
    common_json calls = common_json::array();
    for (const auto & tc : msg.tool_calls) {
        common_json c = common_json::object();
        c["name"] = tc.name;
        c["arguments"] = tc.arguments;
        c["id"] = tc.id;
        calls.push_back(c);
    }
    out["tool_calls"] = calls;
    return out.dump_safe();
}

}  // namespace pyl_chat
