"""Chat completion, templates, tool calls, grammars and JSON schema (issue 3)."""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

import pyllamacy
from pyllamacy import Llama, LlamaGrammar, chat
from pyllamacy._chat import ChatTemplateError, ChatTemplateLimitError, SchemaError

FIXTURES = Path(__file__).parent / "fixtures" / "chat"

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Get the weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}},
                   "required": ["city"]}}}]


@pytest.fixture(scope="module")
def llm(smollm2_path):
    with Llama(smollm2_path, n_ctx=1024, n_threads=2, verbose=False, seed=1) as m:
        yield m


@pytest.fixture
def fast_limits():
    old = chat.set_limits(timeout=3.0, memory=512 << 20)
    yield
    chat.set_limits(**old)


# -- templates ---------------------------------------------------------------------------------

def test_smollm2_template_renders_expected_prompt(llm):
    tmpl = llm.model.chat_template()
    assert tmpl and "<|im_start|>" in tmpl
    r = chat.render_chat(tmpl, [{"role": "user", "content": "Hi"}], bos_token="<|im_start|>",
                         eos_token="<|im_end|>")
    assert r["prompt"] == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, "
                           "trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                           "<|im_start|>assistant\n")
    assert r["generation_prompt"] == "<|im_start|>assistant\n"


@pytest.mark.parametrize("case", json.loads((FIXTURES / "expected_prompts.json").read_text()),
                         ids=lambda c: c["template"])
def test_family_templates_render_expected_prompts(case, templates_dir):
    src = (templates_dir / case["template"]).read_text()
    msgs = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi there"},
            {"role": "user", "content": "Weather in Paris?"}]
    r = chat.render_chat(src, msgs, bos_token=case["bos"], eos_token=case["eos"])
    if "prompt" in case:
        assert r["prompt"] == case["prompt"]
    else:
        assert re.match(case["prompt_regex"], r["prompt"]), r["prompt"]


@pytest.mark.parametrize("name,expected", [
    ("chatml", "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
               "<|im_start|>assistant\n"),
    ("llama-2", "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST]"),
    ("llama-3", "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief."
                "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\n"),
    ("mistral-instruct", "<s>[INST] Be brief.\n\nHi [/INST]"),
    ("gemma", "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"),
    ("phi-3", "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n"),
])
def test_named_formats(name, expected):
    from pyllamacy.chat_formats import get_chat_template
    t = get_chat_template(name)
    r = chat.render_chat(t.template, [{"role": "system", "content": "Be brief."},
                                      {"role": "user", "content": "Hi"}],
                         bos_token=t.bos_token, eos_token=t.eos_token)
    assert r["prompt"] == expected


def test_multi_turn_with_tool_messages_renders(templates_dir):
    src = (templates_dir / "Qwen-Qwen2.5-7B-Instruct.jinja").read_text()
    msgs = [{"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "22 C, sunny"}]
    r = chat.render_chat(src, chat._normalize_messages(msgs), tools=TOOLS)
    p = r["prompt"]
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in p
    assert "<tool_response>\n22 C, sunny\n</tool_response>" in p
    assert p.endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize("case", json.loads((FIXTURES / "recorded_tool_calls.json").read_text()),
                         ids=lambda c: c["template"])
def test_tool_calls_parsed_from_recorded_outputs(case, templates_dir):
    from pyllamacy._chat import ChatParser
    src = (templates_dir / case["template"]).read_text()
    r = chat.render_chat(src, [{"role": "user", "content": "Weather?"}], bos_token=case["bos"],
                         eos_token=case["eos"], tools=TOOLS,
                         parallel_tool_calls=case.get("parallel", False))
    p = ChatParser({"format": r["format"], "parser": r["parser"],
                    "generation_prompt": r["generation_prompt"]})
    msg = p.parse(case["output"])
    got = [(c["name"], json.loads(c["arguments"])) for c in msg["tool_calls"]]
    assert got == [tuple(c) for c in case["calls"]]
    if "content" in case:
        assert msg["content"] == case["content"]


# -- sandbox -------------------------------------------------------------------------------------

def test_cve_2024_34359_payload_fails_harmlessly(tmp_path):
    marker = tmp_path / "pwned"
    payloads = [
        '{{ lipsum.__globals__["os"].popen("touch ' + str(marker) + '").read() }}',
        "{{ self.__init__.__globals__.__builtins__.__import__('os').system('touch "
        + str(marker) + "') }}",
        "{{ cycler.__init__.__globals__.os.popen('touch " + str(marker) + "').read() }}",
        "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    ]
    for tmpl in payloads:
        try:
            r = chat.render_chat(tmpl, [{"role": "user", "content": "x"}])
            assert "os" not in r["prompt"] or "popen" not in r["prompt"]
        except ChatTemplateError:
            pass
    assert not marker.exists()


@pytest.mark.parametrize("tmpl", [
    # ~10^10 iterations, no output: the time budget
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    # gigabytes of output / a huge list: the memory budget
    "{% for i in range(1000000000) %}xxxxxxxxxxxxxxxx{% endfor %}",
    "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}"
    "{% endfor %}{{ ns.s }}",
    # unbounded recursion: the worker's stack overflows, not ours
    "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
])
def test_runaway_templates_are_stopped(tmpl, fast_limits):
    t0 = time.monotonic()
    with pytest.raises(ChatTemplateError) as ei:
        chat.render_chat(tmpl, [{"role": "user", "content": "x"}])
    assert time.monotonic() - t0 < 30
    assert str(ei.value)
    # the process is fine afterwards
    r = chat.render_chat("{{ messages[0]['content'] }}", [{"role": "user", "content": "ok"}])
    assert r["prompt"] == "ok"


def _alive(pid: int) -> bool:
    try:
        st = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return st.rsplit(")", 1)[1].split()[0] != "Z"


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


ECHO = "{{ messages[0]['content'] }}"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_sandbox_workers_are_reused_and_replaced(fast_limits):
    from pyllamacy import _chat
    r = chat.render_chat(ECHO, [{"role": "user", "content": "one"}])
    assert r["prompt"] == "one"
    pids = _chat.sandbox_workers()
    assert pids and all(_parent(p) == os.getpid() for p in pids)
    assert len(pids) <= _chat.sandbox_max_workers()
    # one job after another: the same worker serves them, no new process per call
    for i in range(5):
        assert chat.render_chat(ECHO, [{"role": "user", "content": f"m{i}"}])["prompt"] == f"m{i}"
    assert set(_chat.sandbox_workers()) == set(pids)
    # a runaway job: its worker is killed, and the next job gets a fresh one
    chat.set_limits(timeout=1.0)
    with pytest.raises(ChatTemplateLimitError):
        chat.render_chat("{% for i in range(100000) %}{% for j in range(100000) %}"
                         "{% endfor %}{% endfor %}", [{"role": "user", "content": "x"}])
    dead = [p for p in pids if not _alive(p)]
    assert dead, "the worker that ran past its budget is still alive"
    assert chat.render_chat(ECHO, [{"role": "user", "content": "after"}])["prompt"] == "after"
    assert not set(dead) & set(_chat.sandbox_workers())
    # a worker killed from outside while idle: the next job still gets an answer
    victim = _chat.sandbox_workers()[0]
    os.kill(victim, 9)
    time.sleep(0.1)
    assert chat.render_chat(ECHO, [{"role": "user", "content": "again"}])["prompt"] == "again"
    assert victim not in _chat.sandbox_workers()
    # another memory budget: workers forked with the old one are retired
    before = set(_chat.sandbox_workers())
    chat.set_limits(memory=600 << 20)
    assert chat.render_chat(ECHO, [{"role": "user", "content": "m"}])["prompt"] == "m"
    assert not before & set(_chat.sandbox_workers())


def test_sandbox_serves_threads_at_once():
    from concurrent.futures import ThreadPoolExecutor
    from pyllamacy import _chat
    texts = [f"request {i} " + "word " * (50 * i) for i in range(16)]
    with ThreadPoolExecutor(8) as ex:
        out = list(ex.map(lambda t: chat.render_chat(ECHO, [{"role": "user", "content": t}]),
                          texts))
    assert [o["prompt"] for o in out] == texts
    assert 1 <= len(_chat.sandbox_workers()) <= _chat.sandbox_max_workers()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_sandbox_workers_end_with_their_process(tmp_path):
    import subprocess
    import sys
    code = ("from pyllamacy import _chat; _chat.prestart_sandbox(2); "
            "print(*_chat.sandbox_workers())")
    # the package under test, from outside the source checkout (whose uncompiled pyllamacy/
    # would shadow it: `python -c` puts the cwd first on sys.path)
    env = dict(os.environ, PYTHONPATH=str(Path(pyllamacy.__file__).parent.parent))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    pids = [int(p) for p in out.stdout.split()]
    assert pids
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids), "sandbox workers outlived their process"


def test_template_syntax_error_is_clear():
    with pytest.raises(ChatTemplateError, match="template"):
        chat.render_chat("{% for x in %}", [{"role": "user", "content": "x"}])


# -- grammars and schemas --------------------------------------------------------------------------

@pytest.mark.parametrize("gbnf", [
    'rot ::= "a"',                                  # no root
    'root ::= foo',                                 # undefined rule
    'root ::= root "a" | "b"',                      # left recursion
    "root ::= " + "(" * 60000 + '"a"' + ")" * 60000,  # absurd nesting
    'root ::= "a',                                  # unterminated string
    'root ::= "a"{5,2}',                            # max < min: llama.cpp's parser loops
    'root ::= [] "a"',                              # empty class: matches nothing
])
def test_bad_grammars_raise_quickly(llm, gbnf):
    t0 = time.monotonic()
    with pytest.raises(pyllamacy.GrammarError):
        llm.create_completion("x", max_tokens=2, grammar=LlamaGrammar.from_string(gbnf))
    assert time.monotonic() - t0 < 10


def test_grammar_lazy_sampler(llm):
    s = pyllamacy.Sampler(llm.model).grammar_lazy('root ::= "x"', ["<tool_call>"]).greedy()
    assert s.names == ["grammar", "greedy"]
    with pytest.raises(pyllamacy.GrammarError):
        pyllamacy.Sampler(llm.model).grammar_lazy('root ::= "x"', ["(?<=a)b"])
    with pytest.raises(pyllamacy.GrammarError):
        pyllamacy.Sampler(llm.model).grammar_lazy('root ::= "x"', [])


def test_from_json_schema():
    g = LlamaGrammar.from_json_schema(json.dumps(
        {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}))
    assert "root ::=" in g.grammar


@pytest.mark.parametrize("schema", [
    {"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}},
    {"$ref": "#"},
    {"type": "object", "properties": {"x": {"$ref": "#/nowhere"}}},
    "{not json",
    [1, 2],
])
def test_bad_schemas_raise_quickly(schema, fast_limits):
    t0 = time.monotonic()
    with pytest.raises((SchemaError, ChatTemplateLimitError)):
        LlamaGrammar.from_json_schema(schema if isinstance(schema, str) else json.dumps(schema))
    assert time.monotonic() - t0 < 10


def test_absurdly_nested_schema_raises_quickly():
    text = '{"type": "array", "items": ' * 5000 + '{"type": "string"}' + "}" * 5000
    t0 = time.monotonic()
    with pytest.raises(SchemaError):
        LlamaGrammar.from_json_schema(text)
    with pytest.raises(SchemaError):
        LlamaGrammar.from_json_schema('{"type": "array", "items": ' * 100 + "{}" + "}" * 100)
    assert time.monotonic() - t0 < 10


# -- generation with SmolLM2 --------------------------------------------------------------------------

def test_chat_completion_shape(llm):
    r = llm.create_chat_completion([{"role": "user", "content": "Say hi."}], max_tokens=8,
                                   temperature=0)
    assert r["object"] == "chat.completion" and r["id"].startswith("chatcmpl-")
    ch = r["choices"][0]
    assert ch["message"]["role"] == "assistant" and isinstance(ch["message"]["content"], str)
    assert ch["finish_reason"] in ("stop", "length")
    u = r["usage"]
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    assert u["completion_tokens"] <= 8


def test_stream_concatenates_to_message(llm):
    kw = dict(messages=[{"role": "user", "content": "Name a color."}], max_tokens=12,
              temperature=0)
    full = llm.create_chat_completion(**kw)
    chunks = list(llm.create_chat_completion(stream=True, **kw))
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == full["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == full["choices"][0]["finish_reason"]


def test_stop_and_logprobs(llm):
    r = llm.create_chat_completion([{"role": "user", "content": "Count: 1, 2, 3"}],
                                   max_tokens=6, temperature=0, logprobs=True, top_logprobs=2)
    lp = r["choices"][0]["logprobs"]["content"]
    assert lp and all(len(e["top_logprobs"]) >= 1 and e["logprob"] <= 0 for e in lp)


def test_json_schema_output_validates_over_seeds(llm):
    jsonschema = pytest.importorskip("jsonschema")
    schema = {"type": "object",
              "properties": {"name": {"type": "string", "maxLength": 12},
                             "age": {"type": "integer", "minimum": 0, "maximum": 120},
                             "tags": {"type": "array", "items": {"enum": ["a", "b"]},
                                      "maxItems": 3}},
              "required": ["name", "age", "tags"], "additionalProperties": False}
    for seed in range(5):
        r = llm.create_chat_completion(
            [{"role": "user", "content": "Describe a person as JSON."}], seed=seed,
            temperature=1.0, max_tokens=60,
            response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": schema}})
        ch = r["choices"][0]
        assert ch["finish_reason"] == "stop", ch
        jsonschema.validate(json.loads(ch["message"]["content"]), schema)


def test_json_object_output_parses(llm):
    r = llm.create_chat_completion([{"role": "user", "content": "Give JSON."}], seed=3,
                                   max_tokens=60, response_format={"type": "json_object"})
    if r["choices"][0]["finish_reason"] == "stop":
        assert isinstance(json.loads(r["choices"][0]["message"]["content"]), dict)


@pytest.mark.parametrize("choice", [{"type": "function", "function": {"name": "get_weather"}},
                                    "required"])
def test_forced_tool_choice_gives_parseable_arguments(llm, choice):
    for seed in (1, 2):
        r = llm.create_chat_completion([{"role": "user", "content": "Weather in Paris?"}],
                                       tools=TOOLS, tool_choice=choice, seed=seed,
                                       max_tokens=60)
        ch = r["choices"][0]
        assert ch["finish_reason"] == "tool_calls"
        (call,) = ch["message"]["tool_calls"]
        assert call["type"] == "function" and call["id"]
        assert call["function"]["name"] == "get_weather"
        assert isinstance(json.loads(call["function"]["arguments"])["city"], str)


def test_tool_choice_none_and_multi_turn(llm):
    msgs = [{"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "22 C, sunny"}]
    r = llm.create_chat_completion(msgs, tools=TOOLS, tool_choice="none", max_tokens=8,
                                   temperature=0)
    assert "tool_calls" not in r["choices"][0]["message"]
    r = llm.create_chat_completion(msgs, tools=TOOLS, tool_choice="auto", max_tokens=40, seed=1)
    assert r["choices"][0]["finish_reason"] in ("stop", "length", "tool_calls")


def test_stream_tool_calls(llm):
    chunks = list(llm.create_chat_completion(
        [{"role": "user", "content": "Weather in Rome?"}], tools=TOOLS, stream=True, seed=1,
        tool_choice={"type": "function", "function": {"name": "get_weather"}}, max_tokens=60))
    deltas = [c["choices"][0]["delta"] for c in chunks]
    calls = [tc for d in deltas for tc in d.get("tool_calls", [])]
    assert calls[0]["function"]["name"] == "get_weather"
    args = "".join(tc["function"].get("arguments", "") for tc in calls)
    assert "city" in json.loads(args)
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def _stream_calls(deltas):
    """{index: [name, [argument fragments]]} of a stream's tool_calls deltas, checking OpenAI's
    shape: a call's first delta has id, type and name with arguments "", later ones only
    arguments."""
    calls = {}
    for d in deltas:
        for tc in d.get("tool_calls", []):
            i = tc["index"]
            if i not in calls:
                assert tc["id"] and tc["type"] == "function" and tc["function"]["name"]
                assert tc["function"]["arguments"] == ""
                calls[i] = [tc["function"]["name"], []]
            else:
                assert set(tc) == {"index", "function"} and set(tc["function"]) == {"arguments"}
                calls[i][1].append(tc["function"]["arguments"])
    return calls


def test_stream_tool_call_arguments_arrive_as_generated(llm):
    """A forced tool call streams its arguments in many deltas, as generated; they join to the
    non-streamed call's arguments, byte for byte."""
    kw = dict(messages=[{"role": "user", "content": "Weather in Rome?"}], tools=TOOLS,
              tool_choice={"type": "function", "function": {"name": "get_weather"}},
              temperature=0, max_tokens=60)
    full = llm.create_chat_completion(**kw)["choices"][0]["message"]["tool_calls"][0]
    chunks = list(llm.create_chat_completion(stream=True, **kw))
    calls = _stream_calls(c["choices"][0]["delta"] for c in chunks)
    (name, frags), = calls.values()
    assert name == "get_weather" and len(frags) > 1
    assert "".join(frags) == full["function"]["arguments"]
    assert json.loads("".join(frags))["city"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def _generic_deltas(text, step, tools_given=True):
    plan = chat._Plan()
    plan.generic_tools = True
    plan.tools_given = tools_given
    d = chat.ChatDeltas(chat.ChatRequest([], None, [], set(), plan, False))
    out = []
    for i in range(0, len(text), step):
        out += d.feed(text[i:i + step])
    last, finish = d.finish("stop")
    return out, last, finish


GENERIC_PARALLEL = ('{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Par\\u00eds",'
                    '\n   "days":3, "tags": ["a", {"b": null}], "t": true}}, {"name": "get_time", '
                    '"arguments": {"tz": "Europe/Rome", "x": -1.5e3}}]}')


@pytest.mark.parametrize("step", [1, 3, 7, 1000])
def test_generic_tool_calls_stream_in_parallel(step):
    """The generic scheme read incrementally: two parallel calls (index 0 and 1), each with
    its own arguments deltas, joined equal to the final parse; whitespace normalized as
    json.dumps does; the model's own string escapes and numbers kept."""
    out, last, finish = _generic_deltas(GENERIC_PARALLEL, step)
    calls = _stream_calls(out + last)
    assert [calls[i][0] for i in sorted(calls)] == ["get_weather", "get_time"]
    final = chat._parse_generic(GENERIC_PARALLEL)[1]
    assert [(calls[i][0], "".join(calls[i][1])) for i in sorted(calls)] == final
    assert final[0][1] == ('{"city": "Par\\u00eds", "days": 3, "tags": ["a", {"b": null}], '
                           '"t": true}')
    assert json.loads(final[1][1]) == {"tz": "Europe/Rome", "x": -1500.0}
    assert finish == "tool_calls" and not any("content" in d for d in out + last)
    if step < 100:
        assert all(len(calls[i][1]) > 1 for i in calls)   # streamed, not sent at the end


@pytest.mark.parametrize("step", [1, 2, 5])
def test_generic_response_streams_as_content(step):
    """{"response": ...} (tool_choice="auto", no call) streams its text as content while it is
    generated; escapes and a surrogate pair split across pieces decode as json.loads does."""
    text = '{"response": "Hi \\"you\\"\\n\\ud83d\\ude00 \\u00e9!"}'
    out, last, finish = _generic_deltas(text, step)
    assert len([d for d in out if d.get("content")]) > 1
    got = "".join(d.get("content", "") for d in out + last)
    assert got == json.loads(text)["response"] == 'Hi "you"\n\U0001F600 \u00e9!'
    assert finish == "stop"


def test_generic_scanner_matches_json_loads_on_structure():
    from pyllamacy.chat_generic import scan_generic_reply
    s = scan_generic_reply(GENERIC_PARALLEL)
    assert s.done and not s.broken
    assert [json.loads(c.arguments) for c in s.calls] == \
        [c["arguments"] for c in json.loads(GENERIC_PARALLEL)["tool_calls"]]
    for bad in ('{"tool_calls": [}', '{"a" 1}', '{"response": "x\u0001"}', '{"a": @}'):
        assert scan_generic_reply(bad).broken
    # text before the object (a fence) is skipped, as the final parse skips it
    assert scan_generic_reply('```json\n{"response": "x"}```').response == "x"


def test_generic_cut_short_inside_a_call_keeps_the_finish_reason():
    """max_tokens inside a streamed call: the call as sent, finish "length" (OpenAI's shape),
    no raw JSON sent as content."""
    plan = chat._Plan()
    plan.generic_tools = plan.tools_given = True
    d = chat.ChatDeltas(chat.ChatRequest([], None, [], set(), plan, False))
    out = d.feed('{"tool_calls": [{"name": "f", "arguments": {"a": "b')
    assert _stream_calls(out)[0][0] == "f"
    last, finish = d.finish("length")
    assert last == [] and finish == "length"


def test_native_formats_stream_arguments_as_generated(templates_dir):
    """Templates with a tool-call format of their own (llama.cpp's chat parser): recorded
    replies fed in small pieces give argument deltas before the end, which join to the final
    parse's arguments (parallel calls: index 0 and 1)."""
    from pyllamacy._chat import ChatParser
    cases = json.loads((FIXTURES / "recorded_tool_calls.json").read_text())
    for case in [c for c in cases if c["calls"]]:
        src = (templates_dir / case["template"]).read_text()
        r = chat.render_chat(src, [{"role": "user", "content": "Weather?"}],
                             bos_token=case["bos"], eos_token=case["eos"], tools=TOOLS,
                             parallel_tool_calls=case.get("parallel", False))
        plan = chat._Plan()
        plan.tools_given = True
        plan.parser = ChatParser({"format": r["format"], "parser": r["parser"],
                                  "generation_prompt": r["generation_prompt"]})
        d = chat.ChatDeltas(chat.ChatRequest([], None, [], set(), plan, False))
        out = []
        for i in range(0, len(case["output"]), 3):
            out += d.feed(case["output"][i:i + 3])
        last, finish = d.finish("stop")
        calls = _stream_calls(out + last)
        before = _stream_calls(out)
        assert finish == "tool_calls", case["template"]
        assert [(calls[i][0], json.loads("".join(calls[i][1]))) for i in sorted(calls)] == \
            [tuple(c) for c in case["calls"]], case["template"]
        assert all(len(before[i][1]) > 1 for i in before) and len(before) == len(calls), \
            case["template"]


def test_legacy_functions_api(llm):
    r = llm.create_chat_completion(
        [{"role": "user", "content": "Weather in Oslo?"}], max_tokens=60, seed=1,
        functions=[TOOLS[0]["function"]], function_call={"name": "get_weather"})
    msg = r["choices"][0]["message"]
    assert msg["function_call"]["name"] == "get_weather"
    json.loads(msg["function_call"]["arguments"])
    assert r["choices"][0]["finish_reason"] == "function_call"     # OpenAI's legacy reply
    # streamed: function_call deltas (name first, then the arguments), finish "function_call"
    chunks = list(llm.create_chat_completion(
        [{"role": "user", "content": "Weather in Oslo?"}], max_tokens=60, seed=1, stream=True,
        functions=[TOOLS[0]["function"]], function_call={"name": "get_weather"}))
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    fc = [d["function_call"] for d in deltas if "function_call" in d]
    assert fc and fc[0]["name"] == "get_weather"
    assert "".join(f.get("arguments", "") for f in fc) == msg["function_call"]["arguments"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "function_call"


def test_chat_format_and_handler(smollm2_path):
    with Llama(smollm2_path, n_ctx=512, n_threads=2, verbose=False, chat_format="chatml") as m:
        r = m.create_chat_completion([{"role": "user", "content": "Hi"}], max_tokens=4,
                                     temperature=0)
        assert r["choices"][0]["message"]["role"] == "assistant"
    seen = {}

    def handler(llama, messages, **kwargs):
        seen.update(kwargs, messages=messages)
        return {"id": "x", "object": "chat.completion", "choices": []}
    with Llama(smollm2_path, n_ctx=256, n_threads=1, verbose=False, chat_handler=handler) as m:
        assert m.create_chat_completion([{"role": "user", "content": "Hi"}], max_tokens=3,
                                        tools=TOOLS)["id"] == "x"
    assert seen["max_tokens"] == 3 and seen["tools"] == TOOLS
    with pytest.raises(ValueError, match="chat_format"):
        with Llama(smollm2_path, n_ctx=256, n_threads=1, verbose=False,
                   chat_format="no-such-format") as m:
            m.create_chat_completion([{"role": "user", "content": "Hi"}], max_tokens=2)


def test_function_style_format(smollm2_path):
    """A register_chat_format function renders the prompt and stops; the reply is plain
    content, streamed equal to non-streamed, with logprobs and stopping_criteria honoured."""
    @chat.register_chat_format("test-plain-lines")
    def fmt(messages, **kwargs):
        prompt = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
        return chat.ChatFormatterResponse(prompt=prompt, stop="\n")
    kw = dict(messages=[{"role": "user", "content": "Name a color."}], max_tokens=10,
              temperature=0)
    with Llama(smollm2_path, n_ctx=256, n_threads=1, verbose=False,
               chat_format="test-plain-lines") as m:
        r = m.create_chat_completion(logprobs=True, top_logprobs=1, **kw)
        ch = r["choices"][0]
        content = ch["message"]["content"]
        assert "\n" not in content and ch["finish_reason"] in ("stop", "length")
        assert "".join(e["token"] for e in ch["logprobs"]["content"]).startswith(content)
        chunks = list(m.create_chat_completion(stream=True, **kw))
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == content
        r = m.create_chat_completion(stopping_criteria=lambda ids, logits: True, **kw)
        assert r["usage"]["completion_tokens"] == 0
        with pytest.raises(TypeError):
            m.create_chat_completion(no_such_argument=1, **kw)


def test_bad_arguments(llm):
    with pytest.raises(ValueError):
        llm.create_chat_completion([{"role": "user", "content": "x"}], tools=TOOLS,
                                   tool_choice="sometimes")
    with pytest.raises(ValueError):
        llm.create_chat_completion([{"role": "user", "content": "x"}], tools=TOOLS,
                                   tool_choice={"type": "function", "function": {"name": "nope"}})
    with pytest.raises(ValueError):
        llm.create_chat_completion([{"role": "user", "content": "x"}],
                                   response_format={"type": "xml"})
    with pytest.raises(TypeError):
        llm.create_chat_completion([{"role": "user", "content": "x"}], bogus=1)
