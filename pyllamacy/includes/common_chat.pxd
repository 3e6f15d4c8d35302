# Declarations of pyllamacy/csrc/chat_shim.h: our JSON-text layer over llama.cpp's common chat
# code (common/chat.h, common/json-schema-to-grammar.h). See that header for the request and
# answer shapes and for why rendering runs in a sandboxed child process.
from libcpp.string cimport string
from libcpp.vector cimport vector

cdef extern from "chat_shim.h" namespace "pyl_chat" nogil:
    int ST_OK
    int ST_ERROR
    int ST_TIMEOUT
    int ST_CRASHED
    int ST_MEMORY
    int ST_TOO_LARGE
    int ST_SYSTEM

    cppclass result:
        int status
        string text

    void quiet_common_log()

    int sandbox_prestart(int n, size_t mem_budget)
    vector[int] sandbox_pids()
    int sandbox_max_workers()

    string apply_template(const string & request) except +
    result apply_template_sandboxed(const string & request, double timeout_s, size_t mem_budget,
                                    size_t max_output) except +

    string schema_to_grammar(const string & schema, bint force_gbnf) except +
    result schema_to_grammar_sandboxed(const string & schema, bint force_gbnf, double timeout_s,
                                       size_t mem_budget, size_t max_output) except +

    cppclass parser:
        pass
    parser * parser_new(const string & config) except +
    void parser_free(parser * p)
    string parser_parse(const parser * p, const string & text, bint partial) except +
