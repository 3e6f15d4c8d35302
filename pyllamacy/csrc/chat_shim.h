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
// (template analysis + rendering, schema -> grammar) runs in a forked child process with a
// wall-clock budget, an address-space budget, no core dumps and a cap on the size of its
// answer. The parent waits without the GIL, kills the child when the budget runs out, and
// reports what happened as a status code. A child only runs C++ (never Python) and leaves with
// _exit(), so fork() in a multi-threaded process is safe here.
#pragma once

#include "chat.h"
#include "json-schema-to-grammar.h"
#include "json.h"
#include "log.h"

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>

#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
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

static inline bool write_all(int fd, const char * p, size_t n) {
    while (n > 0) {
        ssize_t w = ::write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        p += w;
        n -= (size_t) w;
    }
    return true;
}

static inline size_t current_vm_bytes() {
    FILE * f = std::fopen("/proc/self/statm", "r");
    if (!f) return 0;
    unsigned long pages = 0;
    if (std::fscanf(f, "%lu", &pages) != 1) pages = 0;
    std::fclose(f);
    return (size_t) pages * (size_t) sysconf(_SC_PAGESIZE);
}

// Run fn() in a forked child. timeout_s: wall clock; mem_budget: bytes the child may add to
// the address space it inherits; max_output: the largest answer accepted.
inline result sandboxed(const std::function<std::string()> & fn, double timeout_s,
                        size_t mem_budget, size_t max_output) {
    result res;
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
        res.status = ST_SYSTEM;
        res.text = std::string("pipe: ") + std::strerror(errno);
        return res;
    }
    pid_t pid = ::fork();
    if (pid < 0) {
        res.status = ST_SYSTEM;
        res.text = std::string("fork: ") + std::strerror(errno);
        ::close(fds[0]);
        ::close(fds[1]);
        return res;
    }
    if (pid == 0) {
        // ---- child: C++ only, leave with _exit ----
        ::close(fds[0]);
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        // the parent's handlers (Python's faulthandler, our SIGINT hook) must not run here: a
        // crash of the worker is an answer, not something to report from inside it
        for (int sig : { SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL, SIGINT, SIGTERM }) {
            ::signal(sig, SIG_DFL);
        }
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
        if (timeout_s > 0) {
            rl.rlim_cur = rl.rlim_max = (rlim_t) timeout_s + 2;   // backstop for the parent's kill
            ::setrlimit(RLIMIT_CPU, &rl);
        }
        char tag = 'E';
        std::string out;
        try {
            out = fn();
            tag = 'O';
            if (out.size() > max_output) {
                tag = 'L';
                out = std::to_string(out.size());
            }
        } catch (const std::bad_alloc &) {
            tag = 'M';
            out.clear();
        } catch (const std::length_error &) {
            tag = 'M';
            out.clear();
        } catch (const std::exception & e) {
            tag = 'E';
            try { out = e.what(); } catch (...) { out = "error"; }
        } catch (...) {
            tag = 'E';
            out = "unknown C++ exception";
        }
        write_all(fds[1], &tag, 1);
        write_all(fds[1], out.data(), out.size());
        ::_exit(0);
    }
    // ---- parent ----
    ::close(fds[1]);
    std::string buf;
    bool timed_out = false, too_large = false;
    auto deadline = std::chrono::steady_clock::now() +
                    std::chrono::milliseconds((long long) (timeout_s * 1000.0));
    char chunk[65536];
    for (;;) {
        int wait_ms = -1;
        if (timeout_s > 0) {
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                deadline - std::chrono::steady_clock::now()).count();
            if (left <= 0) {
                timed_out = true;
                break;
            }
            wait_ms = (int) std::min<long long>(left, 1000 * 1000);
        }
        struct pollfd pfd = { fds[0], POLLIN, 0 };
        int pr = ::poll(&pfd, 1, wait_ms);
        if (pr < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (pr == 0) continue;   // re-check the deadline
        ssize_t n = ::read(fds[0], chunk, sizeof(chunk));
        if (n < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (n == 0) break;      // EOF: the child is done (or dead)
        buf.append(chunk, (size_t) n);
        if (buf.size() > max_output + 64) {
            too_large = true;
            break;
        }
    }
    ::close(fds[0]);
    if (timed_out || too_large) {
        ::kill(pid, SIGKILL);
    }
    int wstatus = 0;
    while (::waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
    }
    if (timed_out) {
        res.status = ST_TIMEOUT;
        return res;
    }
    if (too_large) {
        res.status = ST_TOO_LARGE;
        return res;
    }
    if (buf.empty()) {
        if (WIFSIGNALED(wstatus)) {
            int sig = WTERMSIG(wstatus);
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
    char tag = buf[0];
    res.text = buf.substr(1);
    switch (tag) {
        case 'O': res.status = ST_OK; break;
        case 'M': res.status = ST_MEMORY; break;
        case 'L': res.status = ST_TOO_LARGE; break;
        default:  res.status = ST_ERROR; break;
    }
    return res;
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

inline result apply_template_sandboxed(const std::string & request_text, double timeout_s,
                                       size_t mem_budget, size_t max_output) {
    return sandboxed([&]() { return apply_template(request_text); }, timeout_s, mem_budget,
                     max_output);
}

// ---- JSON schema -> GBNF ----------------------------------------------------------------------

inline std::string schema_to_grammar(const std::string & schema_text, bool force_gbnf) {
    return json_schema_to_grammar(common_json::parse(schema_text), force_gbnf);
}

inline result schema_to_grammar_sandboxed(const std::string & schema_text, bool force_gbnf,
                                          double timeout_s, size_t mem_budget,
                                          size_t max_output) {
    return sandboxed([&]() { return schema_to_grammar(schema_text, force_gbnf); }, timeout_s,
                     mem_budget, max_output);
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
