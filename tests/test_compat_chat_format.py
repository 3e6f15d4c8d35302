"""pyllamacy.llama_cpp's chat formats, grammars, drafter and tokenizer, by behaviour.

Expected prompts of the format_* functions are written out by hand from llama-cpp-python
0.3.36's llama_chat_format.py (the fixed conversation CONV below, followed through its code);
Jinja2ChatFormatter is checked against pyllamacy's own chat rendering of the model's template;
json_schema_to_gbnf's grammar is checked by validating a generated reply with jsonschema.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import pyllamacy.chat as chat
from pyllamacy.chat_formats import get_chat_template
from pyllamacy.llama_cpp import llama_chat_format as lcf
from pyllamacy.llama_cpp import llama_grammar, llama_tokenizer
from pyllamacy.llama_cpp.llama import Llama
from pyllamacy.llama_cpp.llama_speculative import LlamaPromptLookupDecoding

from conftest import ROOT, missing_prerequisite

CONV = [{"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Name a color."}]
NO_SYSTEM = CONV[1:]


@pytest.fixture(scope="module")
def llm(smollm2_path):
    m = Llama(smollm2_path, n_ctx=1024, verbose=False)
    yield m
    m.close()


# -- format_* give llama-cpp-python's prompts ---------------------------------------------------------

EXPECTED = {
    # _format_llama2(" [INST] <<SYS>>..", turns, " ", "</s>") + "[/INST]"
    "format_llama2": ("[INST] <<SYS>>\nBe brief.\n<</SYS>> Hi [/INST]Hello! </s>"
                      "<s>[INST]Name a color.  [/INST]", None),
    "format_chatml": ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                      "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nName a color."
                      "<|im_end|>\n<|im_start|>assistant\n", "<|im_end|>"),
    "format_zephyr": ("<|system|>\nBe brief.</s>\n<|user|>\n\nHi</s>\n<|assistant|>\n\nHello!</s>\n"
                      "<|user|>\n\nName a color.</s>\n<|assistant|>\n\n", "</s>"),
    "format_alpaca": ("Be brief.\n\n### Instruction: Hi\n\n### Response: Hello!</s>"
                      "### Instruction: Name a color.\n\n", None),
    "format_gemma": ("<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello!"
                     "<end_of_turn>\n<start_of_turn>user\nName a color.<end_of_turn>\n"
                     "<start_of_turn>model\n", "<end_of_turn>\n"),
    "format_mistral_instruct": ("[INST] Hi [/INST]Hello!</s>[INST] Name a color. [/INST]", "</s>"),
    "format_phind": ("### System Prompt\nYou are an intelligent programming assistant.\n\n"
                     "### User Message: Hi\n\n### Assistant: Hello!\n\n"
                     "### User Message: Name a color.\n\n### Assistant:", None),
    "format_mistrallite": ("<|system|>Be brief.</s><|prompter|>Hi </s>\n<|assistant|>Hello! "
                           "<|prompter|>Name a color. </s>\n<|assistant|>", None),
    "format_llama3": ("<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                      "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                      "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
                      "<|start_header_id|>user<|end_header_id|>\n\nName a color.<|eot_id|>"
                      "<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>"),
    "format_saiga": ("<s>system\nBe brief.</s><s>user\nHi</s><s>user\nName a color.</s><s>bot",
                     None),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_format_functions_match_llama_cpp_python(name):
    res = getattr(lcf, name)(messages=CONV)
    assert (res.prompt, res.stop) == EXPECTED[name]
    assert isinstance(res, lcf.ChatFormatterResponse)


def test_format_without_system_message():
    # llama-cpp-python's chatml always opens a system turn; vicuna uses its default system text
    assert lcf.format_chatml(messages=NO_SYSTEM[:1]).prompt == (
        "<|im_start|>system\n<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert lcf.format(messages=NO_SYSTEM[:1]).prompt == (
        lcf.format_vicuna(messages=NO_SYSTEM[:1]).prompt) == (
        "A chat between a curious user and an artificial intelligence assistant. The assistant "
        "gives helpful, detailed, and polite answers to the user's questions. USER: Hi "
        "ASSISTANT:")


def _render_named(name, messages):
    t = get_chat_template(name)
    return chat.render_chat(t.template, messages, bos_token="", eos_token=t.eos_token)["prompt"]


@pytest.mark.parametrize("name,fmt,messages", [
    ("chatml", "format_chatml", CONV),
    ("llama-3", "format_llama3", CONV),
    ("gemma", "format_gemma", NO_SYSTEM),
])
def test_formats_agree_with_pyllamacy_templates(name, fmt, messages):
    """Where pyllamacy's chat_format templates and llama-cpp-python's functions overlap and
    neither has a quirk, they give the same prompt (BOS aside: tokenize() adds it)."""
    assert _render_named(name, messages) == getattr(lcf, fmt)(messages=messages).prompt


def test_registered_names():
    reg = lcf.LlamaChatCompletionHandlerRegistry()
    for name in ("chatml", "llama-2", "phind", "saiga", "chatml-function-calling"):
        assert callable(lcf.get_chat_completion_handler(name))
    with pytest.raises(lcf.LlamaChatCompletionHandlerNotFoundException, match="nope"):
        lcf.get_chat_completion_handler("nope")
    with pytest.raises(ValueError, match="already registered"):
        reg.register_chat_completion_handler("phind", lambda **kw: None)
    assert lcf.guess_chat_format_from_gguf_metadata(
        {"tokenizer.chat_template": lcf.CHATML_CHAT_TEMPLATE}) == "chatml"
    assert lcf.guess_chat_format_from_gguf_metadata({}) is None


def test_chat_format_name_drives_llama(llm):
    """A llama-cpp-python format name pyllamacy has no template for works as chat_format=."""
    m = Llama(llm.model_path, n_ctx=512, chat_format="phind", verbose=False)
    try:
        out = m.create_chat_completion(NO_SYSTEM, max_tokens=4, temperature=0)
        prompt = lcf.format_phind(messages=NO_SYSTEM).prompt
        assert out["usage"]["prompt_tokens"] == len(m.tokenize(prompt.encode(), add_bos=True,
                                                                special=True))
    finally:
        m.close()


# -- Jinja2ChatFormatter ------------------------------------------------------------------------------

def test_jinja2_formatter_renders_the_model_template_like_pyllamacy(llm):
    template = llm.metadata["tokenizer.chat_template"]
    bos = llm.detokenize([llm.token_bos()], special=True).decode()
    eos = llm.detokenize([llm.token_eos()], special=True).decode()
    res = lcf.Jinja2ChatFormatter(template, eos_token=eos, bos_token=bos)(messages=CONV)
    req = chat.prepare_chat(llm, CONV)
    assert res.prompt == req.plan.prompt
    assert "<|im_start|>user\nName a color.<|im_end|>" in res.prompt
    assert res.stop == [eos] and res.added_special
    no_gen = lcf.Jinja2ChatFormatter(template, eos, bos, add_generation_prompt=False)
    assert res.prompt == no_gen(messages=CONV).prompt + "<|im_start|>assistant\n"


def test_jinja2_formatter_variables_and_errors():
    f = lcf.Jinja2ChatFormatter(
        "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}:{{ m['content'] }}]{% endfor %}"
        "{% if add_generation_prompt %}>{% endif %}{{ greeting }}{{ eos_token }}",
        eos_token="</s>", bos_token="<s>", stop_token_ids=[7])
    res = f(messages=NO_SYSTEM[:1], greeting="!")
    assert res.prompt == "<s>[user:Hi]>!</s>"
    assert res.stopping_criteria(np.array([1, 7]), None) is True
    assert res.stopping_criteria(np.array([7, 1]), None) is False
    raising = lcf.Jinja2ChatFormatter("{{ raise_exception('no system role') }}", "", "")
    with pytest.raises(ValueError, match="no system role"):
        raising(messages=CONV)
    with pytest.raises(ValueError, match="non-empty"):
        lcf.Jinja2ChatFormatter("", "", "")


def test_hf_tokenizer_config_formatter():
    cfg = {"chat_template": "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}"
                            "{{ eos_token }}{% endfor %}",
           "bos_token": "<s>", "eos_token": {"content": "</s>"}}
    res = lcf.hf_tokenizer_config_to_chat_formatter(cfg)(messages=NO_SYSTEM[:1])
    # llama-cpp-python appends an empty assistant turn for the generation prompt
    assert res.prompt == "<user>Hi</s><assistant></s>"
    assert res.stop == ["</s>", "<s>"]
    with pytest.raises(ValueError, match="chat_template"):
        lcf.hf_tokenizer_config_to_chat_formatter({"bos_token": "", "eos_token": ""})
    with pytest.raises(ImportError, match="transformers"):
        lcf.hf_autotokenizer_to_chat_formatter("some/model")


def test_formatter_handler_forced_tool_and_json(llm):
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}},
              "required": ["city"]}
    tools = [{"type": "function", "function": {"name": "weather", "parameters": schema}}]
    handler = lcf.chat_formatter_to_chat_completion_handler(lcf.format_chatml)
    out = handler(llama=llm, messages=[{"role": "user", "content": "Weather in Paris?"}],
                  tools=tools, tool_choice={"type": "function", "function": {"name": "weather"}},
                  max_tokens=40, temperature=0)
    call = out["choices"][0]["message"]["tool_calls"][0]
    assert call["function"]["name"] == "weather"
    assert out["choices"][0]["finish_reason"] == "tool_calls"
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(json.loads(call["function"]["arguments"]), schema)
    with pytest.raises(ValueError, match="not in tools"):
        handler(llama=llm, messages=NO_SYSTEM, tools=tools,
                tool_choice={"type": "function", "function": {"name": "other"}})


# -- grammars ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(llama_grammar.GRAMMAR_FILES))
def test_grammar_constants_parse_and_drive_llama_cpp(llm, name):
    g = llama_grammar.LlamaGrammar.from_string(getattr(llama_grammar, name))
    out = llm.create_completion("Output:", max_tokens=3, temperature=0, grammar=g)
    assert out["choices"][0]["finish_reason"] in ("stop", "length")


def test_grammar_constants_equal_the_pinned_files():
    d = ROOT / "vendor" / "llama.cpp" / "grammars"
    if not d.is_dir():
        missing_prerequisite("llama_templates", f"no llama.cpp grammars folder at {d}")
    for const, filename in llama_grammar.GRAMMAR_FILES.items():
        assert getattr(llama_grammar, const) == (d / filename).read_text(encoding="utf-8"), (
            f"{const} differs from {filename}: run python -m buildtools.gen_gbnf")
    assert set(llama_grammar.GRAMMAR_FILES.values()) == {p.name for p in d.glob("*.gbnf")}


def test_json_schema_to_gbnf_drives_a_valid_reply(llm):
    jsonschema = pytest.importorskip("jsonschema")
    schema = {"type": "object",
              "properties": {"name": {"type": "string", "maxLength": 10},
                             "age": {"type": "integer", "minimum": 0, "maximum": 120}},
              "required": ["name", "age"], "additionalProperties": False}
    gbnf = llama_grammar.json_schema_to_gbnf(json.dumps(schema))
    out = llm.create_completion("A person as JSON:", max_tokens=60, temperature=0,
                                grammar=llama_grammar.LlamaGrammar.from_string(gbnf))
    jsonschema.validate(json.loads(out["choices"][0]["text"]), schema)


def test_schema_converter_prop_order_and_errors():
    schema = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}},
              "required": ["a", "b"]}
    conv = llama_grammar.SchemaConverter(prop_order={"b": 0}, allow_fetch=False, dotall=False,
                                         raw_pattern=False)
    assert conv.visit(conv.resolve_refs(schema, "x"), "") == "root"
    root = [line for line in conv.format_grammar().splitlines() if line.startswith("root ")][0]
    assert root.index("b-kv") < root.index("a-kv")
    plain = llama_grammar.json_schema_to_gbnf(schema)
    assert [ln for ln in plain.splitlines() if ln.startswith("root ")][0].index("a-kv") < \
        [ln for ln in plain.splitlines() if ln.startswith("root ")][0].index("b-kv")
    with pytest.raises(ValueError, match="remote"):
        conv.resolve_refs({"$ref": "https://example.com/s.json"}, "x")
    with pytest.raises(ValueError, match="not valid JSON"):
        llama_grammar.json_schema_to_gbnf("{nope")
    with pytest.raises(ValueError, match="dotall"):
        llama_grammar.SchemaConverter(prop_order={}, allow_fetch=False, dotall=True,
                                      raw_pattern=False)


# -- prompt lookup: llama-cpp-python's find_candidate_pred_tokens ---------------------------------------

@pytest.mark.parametrize("ids,ngram,n,expected", [
    # trailing [1, 2]: first earlier occurrence at 0 -> what follows it
    ([1, 2, 3, 9, 1, 2, 5, 6, 1, 2], 2, 3, [3, 9, 1]),
    # no 2-gram match; the 1-gram [7] first occurs at 1
    ([5, 7, 8, 9, 4, 7], 2, 2, [8, 9]),
    # the continuation is cut at the end of the input
    ([4, 4], 3, 5, [4]),
    ([1, 2, 3], 2, 4, []),                 # trailing token never seen before
    ([1], 2, 4, []),                        # too short to match anything
    ([], 2, 4, []),
])
def test_find_candidate_pred_tokens(ids, ngram, n, expected):
    got = LlamaPromptLookupDecoding.find_candidate_pred_tokens(
        np.array(ids, dtype=np.intc), max_ngram_size=ngram, num_pred_tokens=n)
    assert got.tolist() == expected
    with pytest.raises(ValueError, match="1-D"):
        LlamaPromptLookupDecoding.find_candidate_pred_tokens(np.zeros((2, 2), np.intc), 2, 2)


# -- tokenizers -------------------------------------------------------------------------------------

class FakeHFTokenizer:
    """A character-level stand-in for a transformers tokenizer (id 0 is a special BOS)."""

    def encode(self, text, add_special_tokens=True):
        return ([0] if add_special_tokens else []) + [ord(c) for c in text]

    def decode(self, ids, skip_special_tokens=False):
        return "".join("<s>" if i == 0 else chr(i) for i in ids
                       if not (skip_special_tokens and i == 0))


def test_hf_tokenizer_wrapper():
    tok = llama_tokenizer.LlamaHFTokenizer(FakeHFTokenizer())
    assert isinstance(tok, llama_tokenizer.BaseLlamaTokenizer)
    ids = tok.tokenize("héllo".encode())
    assert ids == [0] + [ord(c) for c in "héllo"]
    assert tok.tokenize(b"ab", special=False) == [97, 98]
    assert tok.detokenize(ids) == "héllo".encode()
    assert tok.detokenize(ids, special=True) == "<s>héllo".encode()
    assert tok.detokenize(ids[3:], prev_tokens=ids[:3]) == b"llo"
    with pytest.raises(TypeError, match="encode"):
        llama_tokenizer.LlamaHFTokenizer(object())
    with pytest.raises(ImportError, match="pip install transformers"):
        llama_tokenizer.LlamaHFTokenizer.from_pretrained("some/model")


def test_hf_tokenizer_drives_llama(llm):
    """Llama(tokenizer=...) tokenizes through the wrapper."""
    m = Llama(llm.model_path, n_ctx=256, vocab_only=True, verbose=False,
              tokenizer=llama_tokenizer.LlamaHFTokenizer(FakeHFTokenizer()))
    try:
        assert m.tokenize(b"ab", add_bos=True, special=False) == [97, 98]
    finally:
        m.close()


def test_llama_tokenizer_from_gguf(smollm2_path, llm):
    tok = llama_tokenizer.LlamaTokenizer.from_ggml_file(smollm2_path)
    assert isinstance(tok, llama_tokenizer.BaseLlamaTokenizer)
    assert tok.encode("Hello world") == llm.tokenize(b"Hello world")
    assert tok.decode(tok.encode("Hello world", add_bos=False)) == "Hello world"


def test_chatml_function_calling_handler(llm):
    """As Llama(chat_handler=...): ChatML with tools gives a tool call that fits the schema."""
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}},
              "required": ["city"]}
    m = Llama(llm.model_path, n_ctx=1024, chat_handler=lcf.chatml_function_calling,
              verbose=False)
    try:
        out = m.create_chat_completion(
            [{"role": "user", "content": "What is the weather in Paris?"}],
            tools=[{"type": "function", "function": {"name": "weather", "parameters": schema}}],
            tool_choice="required", max_tokens=60, temperature=0)
    finally:
        m.close()
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]["function"]
    assert call["name"] == "weather"
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(json.loads(call["arguments"]), schema)
