# cython: language_level=3
# distutils: language = c++
"""pyllamacy._chat — llama.cpp's common chat layer (libllama-common) through Cython.

* render(request) — a chat template applied to OpenAI-style messages/tools by llama.cpp's own
  Jinja engine and per-model logic (what llama-server does for /v1/chat/completions): the
  prompt, the tool-call / response-format grammar and its lazy triggers, extra stop strings and
  the serialized output parser.
* json_schema_to_grammar(schema) — llama.cpp's JSON schema -> GBNF converter.
* ChatParser — parses model output into content / reasoning / tool calls with the parser that
  render() returned (also on partial output, for streaming).

Templates and schemas are untrusted input: render() and json_schema_to_grammar() run in a
forked worker process (kept and reused; prestart_sandbox() forks them early) with a time and
memory budget (csrc/chat_shim.h says why); a template
that loops forever, recurses without end or renders gigabytes raises ChatTemplateError instead
of hanging or killing the process. set_limits() changes the budgets.
"""
from libcpp.string cimport string

from pyllamacy.includes cimport common_chat as C

import json

from pyllamacy._llama import LlamaError


class ChatTemplateError(LlamaError, ValueError):
    """A chat template could not be parsed or rendered, or it broke the sandbox's limits."""


class ChatTemplateLimitError(ChatTemplateError):
    """A chat template (or schema) ran past the time or memory budget, crashed its worker, or
    produced too much output."""


class SchemaError(LlamaError, ValueError):
    """A JSON schema could not be converted to a grammar."""


class ChatParseError(LlamaError, ValueError):
    """Model output does not match the chat format's expected shape."""


# a render takes milliseconds (a long conversation, tens of them): 3 s stops a template that
# loops without holding a sandbox worker (of at most four) long
_limits = {"timeout": 3.0, "memory": 1 << 30, "max_output": 64 << 20}

C.quiet_common_log()


def set_limits(timeout=None, memory=None, max_output=None):
    """Budgets of a sandboxed render / schema conversion: wall-clock seconds, bytes of memory
    the worker may add, bytes of answer. None keeps a value. Returns the previous limits."""
    old = dict(_limits)
    if timeout is not None:
        if not float(timeout) > 0:
            raise ValueError("timeout must be > 0")
        _limits["timeout"] = float(timeout)
    if memory is not None:
        if int(memory) < (16 << 20):
            raise ValueError("memory must be at least 16 MiB")
        _limits["memory"] = int(memory)
    if max_output is not None:
        if int(max_output) < 1024:
            raise ValueError("max_output must be at least 1024 bytes")
        _limits["max_output"] = int(max_output)
    return old


def get_limits():
    return dict(_limits)


def prestart_sandbox(int n=1):
    """Fork up to n sandbox workers now (at most sandbox_max_workers()). A worker is forked
    once and reused; forking is cheap while the process is small, so a server calls this
    before it loads its models. Returns how many were started."""
    if n < 0:
        raise ValueError("n must be >= 0")
    cdef size_t mem = _limits["memory"]
    cdef int made
    with nogil:
        made = C.sandbox_prestart(n, mem)
    return made


def sandbox_workers():
    """Process ids of the live sandbox workers (idle or busy)."""
    return list(C.sandbox_pids())


def sandbox_max_workers():
    """How many sandbox workers may run at once (jobs beyond that wait for one)."""
    return C.sandbox_max_workers()


cdef object _limit_error(int status, str what, str text, cls):
    if status == C.ST_TIMEOUT:
        return ChatTemplateLimitError(
            f"{what} took longer than {_limits['timeout']:g} s and was stopped (a template or "
            f"schema that loops too long?)")
    if status == C.ST_MEMORY:
        return ChatTemplateLimitError(
            f"{what} needed more than {_limits['memory'] >> 20} MiB and was stopped (huge "
            f"loops or outputs?)")
    if status == C.ST_TOO_LARGE:
        return ChatTemplateLimitError(
            f"{what} produced more than {_limits['max_output'] >> 20} MiB and was stopped")
    if status == C.ST_CRASHED:
        return ChatTemplateLimitError(
            f"{what} crashed its sandboxed worker ({text}; unbounded recursion or nesting?)")
    if status == C.ST_SYSTEM:
        return OSError(f"{what}: could not start the sandboxed worker: {text}")
    return cls(f"{what} failed: {text}")


def _dumps(obj):
    try:
        return json.dumps(obj, ensure_ascii=False, allow_nan=False).encode("utf-8", "surrogatepass")
    except (TypeError, ValueError) as e:
        raise ValueError(f"not JSON-serializable: {e}") from None


def render(dict request, *, bint sandbox=True):
    """Apply a chat template; see csrc/chat_shim.h for the request and answer keys."""
    cdef string c_req = _dumps(request)
    cdef C.result res
    cdef string out
    cdef double t = _limits["timeout"]
    cdef size_t mem = _limits["memory"], mx = _limits["max_output"]
    if sandbox:
        with nogil:
            res = C.apply_template_sandboxed(c_req, t, mem, mx)
        if res.status != C.ST_OK:
            raise _limit_error(res.status, "rendering the chat template",
                               res.text.decode("utf-8", "replace"), ChatTemplateError)
        out = res.text
    else:
        try:
            with nogil:
                out = C.apply_template(c_req)
        except (RuntimeError, ValueError, IndexError) as e:
            raise ChatTemplateError(f"rendering the chat template failed: {e}") from None
    return json.loads(out.decode("utf-8", "replace"))


def json_schema_to_grammar(schema, bint force_gbnf=True, *, bint sandbox=True):
    """GBNF text for a JSON schema (a dict, or JSON text)."""
    if isinstance(schema, (str, bytes)):
        try:
            schema = json.loads(schema)
        except ValueError as e:
            raise SchemaError(f"the schema is not valid JSON: {e}") from None
    if not isinstance(schema, (dict, bool)):
        raise SchemaError(f"a JSON schema must be an object, not {type(schema).__name__}")
    cdef string c_schema = _dumps(schema)
    cdef C.result res
    cdef string out
    cdef double t = _limits["timeout"]
    cdef size_t mem = _limits["memory"], mx = _limits["max_output"]
    if sandbox:
        with nogil:
            res = C.schema_to_grammar_sandboxed(c_schema, force_gbnf, t, mem, mx)
        if res.status != C.ST_OK:
            raise _limit_error(res.status, "converting the JSON schema to a grammar",
                               res.text.decode("utf-8", "replace"), SchemaError)
        out = res.text
    else:
        try:
            with nogil:
                out = C.schema_to_grammar(c_schema, force_gbnf)
        except (RuntimeError, ValueError, IndexError) as e:
            raise SchemaError(f"converting the JSON schema to a grammar failed: {e}") from None
    return out.decode("utf-8", "replace")


cdef class ChatParser:
    """Parses one reply's text into {"role", "content", "reasoning_content", "tool_calls"}.

    ChatParser({"format": int, "parser": str, "generation_prompt": str,
                "reasoning_format": "none"|"auto"|"deepseek"|..., "parse_tool_calls": bool})
    with the values that render() returned.
    """
    cdef C.parser * _p

    def __cinit__(self, dict config):
        self._p = NULL
        cdef string c_cfg = _dumps(config)
        try:
            self._p = C.parser_new(c_cfg)
        except (RuntimeError, ValueError, IndexError) as e:
            raise ChatParseError(f"cannot load the chat output parser: {e}") from None

    def __dealloc__(self):
        if self._p != NULL:
            C.parser_free(self._p)
            self._p = NULL

    def parse(self, text, bint partial=False):
        """Parse the whole output so far; partial=True while it is still being generated."""
        if self._p == NULL:
            raise ValueError("this ChatParser is not initialized")
        cdef string c_text = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
        cdef string out
        try:
            with nogil:
                out = C.parser_parse(self._p, c_text, partial)
        except (RuntimeError, ValueError, IndexError) as e:
            raise ChatParseError(str(e)) from None
        return json.loads(out.decode("utf-8", "replace"))

    def __reduce__(self):
        raise TypeError("pyllamacy._chat.ChatParser cannot be pickled")
