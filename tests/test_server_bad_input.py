"""Issue 12, "never abort": bad input gets a 4xx that names the field, in OpenAI's error shape,
by raw HTTP and through the official openai client -- and the server gives the same greedy
answer after every probe as before them. Pipeline-level checks are tested below the server's."""
from __future__ import annotations

import json
import logging

import pytest

import pyllamacy
from pyllamacy.gbnf import gbnf_problem
from pyllamacy.grammars import SchemaError, check_patterns, unsupported_pattern
from pyllamacy.pipeline.checks import FieldError, check_messages, check_seed, check_text
from pyllamacy.pipeline.options import stop_strings
from pyllamacy.pipeline.prompts import prompt_tokens
from pyllamacy.pipeline.sampling import SamplingParams, build_sampler

SAMPLING = dict(temp=0.0, top_k=40, top_p=0.95, min_p=0.05, typical_p=1.0, repeat_penalty=1.0,
                frequency_penalty=0.0, presence_penalty=0.0, mirostat_mode=0,
                mirostat_tau=5.0, mirostat_eta=0.1)

BIG = 200_000          # a 200 KB pattern: never echoed whole


# -- pipeline level (no server) -------------------------------------------------------------------

@pytest.mark.parametrize("bias, match", [
    ({"abc": 1.0}, "key 'abc' is not a token id"),
    ({"1.5": 1.0}, "is not a token id"),
    ({"5": float("nan")}, r"logit_bias\[5\] must be a finite number"),
    ({"5": float("inf")}, r"logit_bias\[5\] must be a finite number"),
    ({"5": "x"}, r"logit_bias\[5\] must be a number"),
    ([1, 2], "logit_bias must map token ids"),
])
def test_sampling_params_logit_bias(bias, match):
    with pytest.raises(pyllamacy.SamplerError, match=match):
        SamplingParams(**SAMPLING, logit_bias=bias)


def test_sampling_params_logit_bias_accepts_ban_and_int_keys():
    sp = SamplingParams(**SAMPLING, logit_bias={"5": float("-inf"), 7: 2, "+8": -1.5})
    assert sp.logit_bias == {5: float("-inf"), 7: 2.0, 8: -1.5}


def test_build_sampler_logit_bias_out_of_range(model):
    for t in (model.n_vocab, -1, 10 ** 12):
        sp = SamplingParams(**SAMPLING, logit_bias={str(t): 1.0})
        with pytest.raises(pyllamacy.SamplerError, match=f"token id {t} is out of range"):
            build_sampler(model, sp, 0, 64)
    build_sampler(model, SamplingParams(**SAMPLING, logit_bias={model.n_vocab - 1: 1}),
                  0, 64).close()


@pytest.mark.parametrize("grammar, bad", [
    ("root ::= []", "'[]'"),
    ("root ::= [^]", "'[^]'"),
    ('root ::= "a" x\nx ::= []*', "line 2"),
    ('root ::= ("a" | [])', "'[]'"),
    ('root ::= "[]" [a]', None),                 # inside a literal
    ("root ::= [\\]] # []", None),                # escaped bracket; a comment
    ('root ::= [^"\\\\] <[12]>', None),
    ('root ::= [a-z]+ "\\"[]"', None),
])
def test_gbnf_problem(grammar, bad):
    problem = gbnf_problem(grammar)
    if bad is None:
        assert problem is None
    else:
        assert problem is not None and bad in problem and "empty character class" in problem
        with pytest.raises(pyllamacy.GrammarError, match="grammar: empty character class"):
            SamplingParams(**SAMPLING, grammar=grammar)


@pytest.mark.parametrize("grammar, bad", [
    ('root ::= "a"{5,2}', "'{5,2}'"),
    ('root ::= x\nx ::= ("a" | [b]){ 3 ,\n 1 }', "line 2"),
    ('root ::= "a"{2,5} "{5,2}" [{5,2}]', None),  # in order; inside a literal and a class
    ('root ::= "a"{3} "b"{2,}', None),
])
def test_gbnf_repetition_max_below_min(grammar, bad):
    """llama.cpp's parser loops (max - min wraps around) on {m,n} with n < m: fuzz seed 3
    cases 503 and 972 hung in Sampler.grammar."""
    problem = gbnf_problem(grammar, empty_classes=False)
    if bad is None:
        assert problem is None
        return
    assert problem is not None and bad in problem and "below its minimum" in problem
    with pytest.raises(pyllamacy.GrammarError, match="below its minimum"):
        SamplingParams(**SAMPLING, grammar=grammar)


@pytest.mark.parametrize("lazy", [False, True])
def test_sampler_grammar_repetition_max_below_min_raises(model, lazy):
    s = pyllamacy.Sampler(model)
    try:
        with pytest.raises(pyllamacy.GrammarError, match="below its minimum"):
            if lazy:
                s.grammar_lazy('root ::= "a"{5,2}', trigger_patterns=["x"])
            else:
                s.grammar('root ::= "a"{5,2}')
        s.grammar('root ::= "a"{2,5}')      # a valid repetition still parses
    finally:
        s.close()


def test_surrogates_named():
    with pytest.raises(FieldError, match=r"prompt is not valid Unicode.*U\+D800") as ei:
        check_text("ab\ud800", "prompt")
    assert ei.value.param == "prompt"
    with pytest.raises(FieldError, match=r"stop\[1\]") as ei:
        stop_strings(["ok", "x\udfff"], 16)
    assert ei.value.param == "stop[1]"
    with pytest.raises(FieldError, match="grammar"):
        SamplingParams(**SAMPLING, grammar='root ::= "\ud800"')


def test_prompt_tokens_surrogate(model):
    for prompt, suffix, name in (("x\ud800", None, "prompt"), (["\ud800"], None, "prompt[0]"),
                                 ("x", "\ud800", "suffix")):
        with pytest.raises(FieldError) as ei:
            prompt_tokens(model, prompt, suffix)
        assert ei.value.param == name
    with pytest.raises(FieldError, match="prompt: token ids must be in"):
        prompt_tokens(model, [1, model.n_vocab])


GOOD_MESSAGES = [
    [{"role": "user", "content": "hi"}],
    [{"role": "developer", "content": "be brief"}, {"role": "user", "content": "hi"}],
    [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    [{"role": "user", "content": "hi"},
     {"role": "assistant", "content": None, "tool_calls": [
         {"id": "call_1", "type": "function",
          "function": {"name": "f", "arguments": "{}"}}]},
     {"role": "tool", "tool_call_id": "call_1", "content": "42"}],
    [{"role": "user", "content": "hi"},
     {"role": "assistant", "tool_calls": [
         {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
     {"role": "tool", "tool_call_id": "c", "content": [{"type": "text", "text": "42"}]}],
    [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""},
     {"role": "user", "content": "again"}],
    [{"role": "user", "content": "hi"},
     {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": "{}"}},
     {"role": "function", "name": "f", "content": "42"}],
]

BAD_MESSAGES = [
    ([], "messages"),
    ([{"role": "user"}], "messages[0].content"),
    ([{"role": "system", "content": None}, {"role": "user", "content": "x"}],
     "messages[0].content"),
    ([{"role": "user", "content": "x"}, {"role": "assistant", "content": None}],
     "messages[1].content"),
    ([{"role": "user", "content": "x"}, {"role": "assistant"}], "messages[1].content"),
    ([{"role": "tool", "content": "x"}], "messages[0].tool_call_id"),
    ([{"role": "function", "content": "x"}], "messages[0].name"),
    ([{"role": "wizard", "content": "x"}], "messages[0].role"),
    ([{"content": "x"}], "messages[0].role"),
    ([{"role": "user", "content": 5}], "messages[0].content"),
    (["hi"], "messages[0]"),
    ([{"role": "user", "content": "x\ud800"}], "messages[0].content"),
    ([{"role": "user", "content": [{"type": "text", "text": "\ud800"}]}],
     "messages[0].content[0].text"),
    ([{"role": "user", "content": "x"}, {"role": "assistant", "content": None,
                                         "tool_calls": "nope"}], "messages[1].tool_calls"),
]


@pytest.mark.parametrize("messages", GOOD_MESSAGES)
def test_check_messages_accepts(messages):
    check_messages(messages)


@pytest.mark.parametrize("messages, param", BAD_MESSAGES)
def test_check_messages_rejects(messages, param):
    with pytest.raises(FieldError) as ei:
        check_messages(messages)
    assert ei.value.param == param and param in str(ei.value)


def test_check_seed():
    assert check_seed(None) is None and check_seed(-1) == -1 and check_seed(2 ** 64 - 1)
    for bad in (2 ** 64, -2 ** 63 - 1, 1.5, True, "1"):
        with pytest.raises(FieldError, match="seed"):
            check_seed(bad)


@pytest.mark.parametrize("pattern, supported", [
    ("^[a-z]+$", True), ("^(ab|cd){2,3}$", True), ("^\\.\\u00e9[\\x41-\\x5A]$", True),
    ("[a-z]+", False), ("^\\d{3}$", False), ("^(?=a)a$", False), ("^[\\w]$", False),
    ("^a$b$", False), ("^a{x}$", False), ("^a]$", False),
])
def test_unsupported_pattern(pattern, supported):
    assert (unsupported_pattern(pattern) is None) == supported


SCHEMA_CASES = [
    ({"pattern": "x"}, True),
    ({"type": ["string", "null"], "pattern": "x"}, True),
    ({"anyOf": [{"type": "string", "pattern": "\\d"}]}, True),
    ({"additionalProperties": True, "pattern": "x"}, True),
    ({"$defs": {"s": {"type": "string", "pattern": "(?=a)"}}, "type": "object",
      "properties": {"a": {"$ref": "#/$defs/s"}}}, True),
    ({"allOf": [{"type": "object", "properties": {"a": {"type": "string", "pattern": "\\d"}}}]},
     True),
    ({"properties": {"a": {"type": "integer"}}, "pattern": "x"}, False),
    ({"type": "integer", "pattern": "x"}, False),
    ({"additionalProperties": False, "pattern": "x"}, False),
    ({"items": {"type": "string"}, "pattern": "x"}, False),
    ({"enum": ["a"], "pattern": "x"}, False),
    ({"type": "string", "pattern": "^ok$"}, False),
    ({"type": "object", "properties": {"a": {"allOf": [{"type": "string", "pattern": "x"}]}}},
     False),
    ({"type": "object", "properties": {"c": {"const": {"pattern": "x"}}}}, False),
]
PATTERNS = ["^abc$", "(?=x)abc", "^\\d{3}$", "^[a-z]+$", "^[\\d]$", "^a{2,}$", "^a{x}$",
            "^a{1,2,3}$", "^a}$", "^\\.$", "^\\u00e9$", "^a$b$", "^(a|b)*$", "^a{,3}$",
            "^\\w+@\\w+$", "^(?:ab)+c?$", "^a{99999999999}$", "^a{ 3}$", "^a{3x}$", "^a.b$",
            "^(?P<x>a)$", "^[\\x41-\\x5A]$", "^\\x4$", "^[\\-]$", "^(((a)))$", "^é+$"]

_CONVERT = r"""
import json, os, sys
from pyllamacy import _chat
for sc in json.loads(sys.stdin.read()):
    os.write(2, b"\n@@@\n")
    try:
        _chat.json_schema_to_grammar(sc, True)
    except Exception:
        pass
"""


def test_unsupported_patterns_agree_with_llama_cpp():
    """The Python mirror says "unsupported" exactly where llama.cpp's converter warns (its
    warning goes to stderr; the converter runs in a subprocess here)."""
    import os
    import subprocess
    import sys
    from pyllamacy.grammars import unsupported_patterns
    schemas = [sc for sc, _ in SCHEMA_CASES] + [{"type": "string", "pattern": p}
                                                for p in PATTERNS]
    root = os.path.dirname(os.path.dirname(pyllamacy.__file__))
    # cwd outside the source checkout: `python -c` puts the cwd first on sys.path, and the
    # checkout's uncompiled pyllamacy/ would shadow the installed one
    import tempfile
    r = subprocess.run([sys.executable, "-c", _CONVERT], input=json.dumps(schemas),
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": root}, cwd=tempfile.gettempdir())
    blocks = r.stderr.split("\n@@@\n")[1:]
    assert len(blocks) == len(schemas), r.stderr[-2000:]
    for sc, block in zip(schemas, blocks):
        warned = "conversion was incomplete" in block
        assert warned == bool(unsupported_patterns(sc)), (sc, block[:300])
    for sc, expected in SCHEMA_CASES:
        assert bool(unsupported_patterns(sc)) == expected, sc


def test_check_patterns_refuses_or_drops(caplog):
    schema = {"type": "object", "properties": {
        "ok": {"type": "string", "pattern": "^[a-z]+$"},
        "zip": {"type": "string", "pattern": "^\\d{5}$"},
        "big": {"type": "array", "items": {"type": "string", "pattern": "x" * BIG}},
        "n": {"type": "integer", "pattern": "ignored"},
        "c": {"const": {"pattern": "(data"}}}}
    with pytest.raises(SchemaError) as ei:
        check_patterns(schema, where="response_format")
    msg = str(ei.value)
    assert "response_format #/properties/big/items/pattern" in msg and "(and 1 more)" in msg
    assert len(msg) < 1000
    with caplog.at_level(logging.WARNING, logger="pyllamacy"):
        out = check_patterns(schema, True)
    assert "pattern" not in out["properties"]["zip"]
    assert "pattern" not in out["properties"]["big"]["items"]
    assert out["properties"]["ok"]["pattern"] == "^[a-z]+$"
    assert schema["properties"]["zip"]["pattern"] == "^\\d{5}$"          # not changed
    assert caplog.records and all(len(r.getMessage()) < 2000 for r in caplog.records)


def test_llama_api_grammar_and_pattern_errors_early(smollm2_path):
    from pyllamacy import Llama
    from pyllamacy.llama_types import LlamaGrammar
    llm = Llama(smollm2_path, n_ctx=256, n_batch=64, n_threads=1, verbose=False)
    try:
        with pytest.raises(pyllamacy.GrammarError, match="empty character class"):
            llm.create_completion("x", max_tokens=2,
                                  grammar=LlamaGrammar.from_string("root ::= []"))
        with pytest.raises(pyllamacy.SamplerError, match="out of range"):
            llm.create_completion("x", max_tokens=2, logit_bias={10 ** 9: 1.0})
        rf = {"type": "json_schema", "json_schema": {"name": "a", "schema": {
            "type": "object", "properties": {"a": {"type": "string", "pattern": "^\\d+$"}},
            "required": ["a"]}}}
        msgs = [{"role": "user", "content": "Give a."}]
        with pytest.raises(SchemaError, match="#/properties/a/pattern"):
            llm.create_chat_completion(msgs, response_format=rf, max_tokens=4)
        out = llm.create_chat_completion(msgs, response_format=rf, max_tokens=4,
                                         allow_unconstrained_patterns=True, temperature=0)
        assert out["choices"][0]["message"]["role"] == "assistant"
        with pytest.raises(SchemaError, match=r"LlamaGrammar|#/pattern"):
            LlamaGrammar.from_json_schema(json.dumps({"type": "string", "pattern": "a+"}))
    finally:
        llm.close()


# -- the server ------------------------------------------------------------------------------------

fastapi = pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
import httpx  # noqa: E402

from pyllamacy.server import ModelSettings  # noqa: E402
from serving import LocalServer  # noqa: E402


class _Server(LocalServer):
    def post(self, path, raw: str):
        return httpx.post(self.url + path, content=raw.encode("utf-8"), timeout=120,
                          headers={"Content-Type": "application/json"})


@pytest.fixture(scope="module")
def server(smollm2_path):
    s = _Server([ModelSettings(model=smollm2_path, model_alias="smol", n_ctx=256, n_batch=64,
                               n_threads=1, n_threads_batch=1, n_parallel=2, max_queue=8,
                               verbose=False)])
    yield s
    s.stop()


GREEDY_PROMPT = "The capital of France is"
GREEDY_CHAT = [{"role": "user", "content": "Name a color."}]


def _greedy(server):
    c = server.client()
    a = c.completions.create(model="smol", prompt=GREEDY_PROMPT, max_tokens=12, temperature=0)
    b = c.chat.completions.create(model="smol", messages=GREEDY_CHAT, max_tokens=12,
                                  temperature=0)
    return a.choices[0].text, b.choices[0].message.content


@pytest.fixture(scope="module")
def baseline(server):
    """The greedy answers before any probe (every probe test asks for this first)."""
    return _greedy(server)


def _chat(extra: str, messages='[{"role":"user","content":"x"}]') -> str:
    return '{"messages":' + messages + ',"max_tokens":2' + extra + '}'


def _cmp(extra: str, prompt='"x"') -> str:
    return '{"prompt":' + prompt + ',"max_tokens":2' + extra + '}'


_SCHEMA_BAD = ('{"type":"json_schema","json_schema":{"name":"a","schema":{"type":"object",'
               '"properties":{"zip":{"type":"string","pattern":"^\\\\d{5}$"}}}}}')
_TOOL_BAD = ('[{"type":"function","function":{"name":"f","parameters":{"type":"object",'
             '"properties":{"a":{"type":"string","pattern":"(?=x)y"}}}}}]')

# (path, raw JSON body, what the error message must name)
PROBES = [
    # 1. logit_bias
    ("/v1/completions", _cmp(',"logit_bias":{"999999":5}'), "logit_bias"),
    ("/v1/completions", _cmp(',"logit_bias":{"-1":5}'), "token id -1"),
    ("/v1/completions", _cmp(',"logit_bias":{"abc":5}'), "logit_bias"),
    ("/v1/completions", _cmp(',"logit_bias":{"5":NaN}'), "logit_bias[5]"),
    ("/v1/completions", _cmp(',"logit_bias":{"5":Infinity}'), "logit_bias[5]"),
    ("/v1/chat/completions", _chat(',"logit_bias":{"49152":1}'), "token id 49152"),
    ("/v1/completions", _cmp(',"logit_bias":{"999999":5},"stream":true'), "logit_bias"),
    # 2. lone surrogates
    ("/v1/completions", _cmp("", prompt='"x\\ud800"'), "prompt"),
    ("/v1/completions", _cmp("", prompt='["\\udfff"]'), "prompt[0]"),
    ("/v1/completions", _cmp(',"suffix":"\\ud800"'), "suffix"),
    ("/v1/completions", _cmp(',"stop":["a","\\ud800"]'), "stop[1]"),
    ("/v1/completions", _cmp(',"stop":"\\ud800","stream":true'), "stop"),
    ("/v1/chat/completions", _chat(',"stop":"\\ud800"'), "stop"),
    ("/v1/chat/completions", _chat("", '[{"role":"user","content":"a\\ud800"}]'),
     "messages[0].content"),
    ("/v1/chat/completions",
     _chat("", '[{"role":"user","content":[{"type":"text","text":"\\ud800"}]}]'),
     "messages[0].content[0].text"),
    ("/v1/chat/completions", _chat(',"chat_template_kwargs":{"k":"\\ud800"}'),
     "chat_template_kwargs.k"),
    ("/v1/chat/completions", _chat(',"tools":[{"type":"function","function":'
                                   '{"name":"f\\ud800"}}]'), "tools[0].function.name"),
    # (pydantic's string check of a length-limited field: 422, naming it too)
    ("/v1/completions", _cmp(',"grammar":"root ::= \\"\\ud800\\""'), "grammar", 422),
    ("/extras/tokenize", '{"input":"x\\ud800"}', "input"),
    ("/extras/tokenize/count", '{"input":"\\ud800"}', "input"),
    ("/v1/embeddings", '{"input":["ok","\\ud800"]}', "input[1]"),
    # 3. grammars
    ("/v1/completions", _cmp(',"grammar":"root ::= []"'), "grammar"),
    ("/v1/completions", _cmp(',"grammar":"root ::= \\"a\\" [^]*","stream":true'), "grammar"),
    ("/v1/chat/completions", _chat(',"grammar":"root ::= x\\nx ::= []"'), "grammar"),
    # 4. messages
    ("/v1/chat/completions", _chat("", '[{"role":"user"}]'), "messages[0].content"),
    ("/v1/chat/completions", _chat("", '[{"role":"user","content":null}]'),
     "messages[0].content"),
    ("/v1/chat/completions", _chat("", '[{"role":"system"},{"role":"user","content":"x"}]'),
     "messages[0].content"),
    ("/v1/chat/completions",
     _chat("", '[{"role":"user","content":"x"},{"role":"assistant","content":null}]'),
     "messages[1].content"),
    ("/v1/chat/completions", _chat("", '[{"role":"tool","content":"x"}]'),
     "messages[0].tool_call_id"),
    ("/v1/chat/completions", _chat("", '[{"role":"wizard","content":"x"}]'),
     "messages[0].role"),
    ("/v1/chat/completions", _chat(',"stream":true', '[{"role":"user","content":7}]'),
     "messages[0].content"),
    # 5. schema patterns
    ("/v1/chat/completions", _chat(',"response_format":' + _SCHEMA_BAD),
     "#/properties/zip/pattern"),
    ("/v1/chat/completions", _chat(',"tools":' + _TOOL_BAD),
     "tools[0].function.parameters #/properties/a/pattern"),
    ("/v1/chat/completions", _chat(',"response_format":{"type":"json_schema","json_schema":'
                                   '{"name":"a","schema":{"type":"string","pattern":"'
                                   + "y" * BIG + '"}}}'), "#/pattern"),
    ("/v1/chat/completions", _chat(',"functions":[{"name":"f","parameters":{"type":"object",'
                                   '"properties":{"a":{"type":"string","pattern":"\\\\w"}}}}]'),
     "functions[0].parameters #/properties/a/pattern"),
    ("/v1/chat/completions", _chat(',"tools":[{"type":"function","function":{}}]'), "tools[0]"),
    ("/v1/chat/completions", _chat(',"functions":[{}]'), "functions[0]"),
    # other limits
    ("/v1/completions", _cmp(',"seed":99999999999999999999999'), "seed"),
    ("/v1/completions", _cmp(',"n":1000000'), "n must be"),
    ("/v1/completions", _cmp(',"stop":[' + ",".join(f'"s{i}"' for i in range(40)) + ']'),
     "stop"),
    ("/v1/completions", _cmp(',"logprobs":99999999999999999999'), "logprobs"),
    ("/v1/chat/completions", _chat(',"logprobs":true,"top_logprobs":1000'), "top_logprobs"),
    ("/v1/completions", _cmp(',"top_k":99999999999999999999999'), "top_k"),
    ("/v1/completions", '{"prompt":[1,2,99999999999]}', "prompt"),
    ("/extras/detokenize", '{"tokens":[-5]}', "tokens"),
]


@pytest.mark.parametrize("path, raw, field, status", [(p + (400,))[:4] for p in PROBES],
                         ids=[f"{i}-{p[0].rsplit('/', 1)[1]}-{p[2][:30]}"
                              for i, p in enumerate(PROBES)])
def test_probe_raw_http(server, baseline, path, raw, field, status):
    r = server.post(path, raw)
    assert r.status_code == status, (r.status_code, r.text[:500])
    body = r.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) >= {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error" and err["code"] == status
    assert field in err["message"], err["message"]
    assert len(r.content) < 2000 and "Traceback" not in r.text


def _bad_request(fn, field):
    with pytest.raises(openai.BadRequestError) as ei:
        fn()
    assert ei.value.status_code == 400
    assert field in ei.value.message, ei.value.message


def test_probes_official_client(server, baseline):
    c = server.client()
    chat = c.chat.completions.create
    m = [{"role": "user", "content": "x"}]
    _bad_request(lambda: c.completions.create(model="smol", prompt="x", max_tokens=2,
                                              logit_bias={"999999": 5}), "logit_bias")
    _bad_request(lambda: chat(model="smol", messages=m, max_tokens=2,
                              logit_bias={"-3": 1}), "token id -3")
    _bad_request(lambda: c.completions.create(model="smol", prompt="x", max_tokens=2,
                                              extra_body={"grammar": "root ::= []"}),
                 "grammar")
    _bad_request(lambda: chat(model="smol", messages=[{"role": "user"}], max_tokens=2),
                 "messages[0].content")
    _bad_request(lambda: chat(model="smol", messages=[
        {"role": "user", "content": "x"}, {"role": "tool", "content": "42"}], max_tokens=2),
        "messages[1].tool_call_id")
    _bad_request(lambda: chat(model="smol", messages=[{"role": "narrator", "content": "x"}],
                              max_tokens=2), "messages[0].role")
    rf = {"type": "json_schema", "json_schema": {"name": "a", "schema": {
        "type": "object", "properties": {"zip": {"type": "string", "pattern": "^\\d{5}$"}}}}}
    _bad_request(lambda: chat(model="smol", messages=m, max_tokens=2, response_format=rf),
                 "#/properties/zip/pattern")
    _bad_request(lambda: chat(model="smol", messages=m, max_tokens=2, response_format=rf,
                              stream=True), "#/properties/zip/pattern")
    _bad_request(lambda: c.completions.create(model="smol", prompt="x", max_tokens=2,
                                              seed=2 ** 70), "seed")


def test_pattern_opt_in(server, baseline):
    c = server.client()
    m = [{"role": "user", "content": "Give a zip code as JSON."}]
    rf = {"type": "json_schema", "json_schema": {"name": "a", "schema": {
        "type": "object", "properties": {"zip": {"type": "string", "pattern": "^\\d{5}$"}},
        "required": ["zip"]}}}
    out = c.chat.completions.create(model="smol", messages=m, max_tokens=24, temperature=0,
                                    response_format=rf,
                                    extra_body={"allow_unconstrained_patterns": True})
    assert out.choices[0].message.content.lstrip().startswith("{")
    # the server setting; a request's false still refuses
    settings = server.app.state.server.settings
    settings.allow_unconstrained_patterns = True
    try:
        out = c.chat.completions.create(model="smol", messages=m, max_tokens=8,
                                        temperature=0, response_format=rf)
        assert out.choices[0].message.content.lstrip().startswith("{")
        _bad_request(lambda: c.chat.completions.create(
            model="smol", messages=m, max_tokens=2, response_format=rf,
            extra_body={"allow_unconstrained_patterns": False}), "#/properties/zip/pattern")
    finally:
        settings.allow_unconstrained_patterns = False


def test_normal_client_shapes_accepted(server, baseline):
    """What openai / LangChain clients send in tool loops stays accepted."""
    c = server.client()
    call = {"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}}]
    shapes = [
        [{"role": "system", "content": "Be brief."},
         {"role": "user", "content": "Weather in Paris?"},
         {"role": "assistant", "content": None, "tool_calls": [call]},
         {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}],
        [{"role": "user", "content": "Weather in Paris?"},
         {"role": "assistant", "content": "", "tool_calls": [call]},
         {"role": "tool", "tool_call_id": "call_1",
          "content": [{"type": "text", "text": "sunny"}]}],
        [{"role": "developer", "content": "Be brief."},
         {"role": "user", "content": [{"type": "text", "text": "Hi"},
                                      {"type": "text", "text": "there"}]}],
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": ""},
         {"role": "user", "content": "Hi again"}],
    ]
    for msgs in shapes:
        out = c.chat.completions.create(model="smol", messages=msgs, tools=tools,
                                        max_tokens=4, temperature=0)
        assert out.choices[0].message.role == "assistant"
        r = server.post("/v1/chat/completions", json.dumps(
            {"messages": msgs, "tools": tools, "max_tokens": 4, "temperature": 0}))
        assert r.status_code == 200, r.text[:300]


def test_zz_same_greedy_answer_after_probes(server, baseline):
    """Runs last in this module: after every probe, the server answers as before them."""
    assert _greedy(server) == baseline
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}


def test_pattern_opt_in_cli_setting(smollm2_path):
    from pyllamacy.server.__main__ import settings_from_args
    server, _models = settings_from_args(["--model", smollm2_path,
                                          "--allow-unconstrained-patterns", "true"])
    assert server.allow_unconstrained_patterns is True
    server, _models = settings_from_args(["--model", smollm2_path])
    assert server.allow_unconstrained_patterns is False
