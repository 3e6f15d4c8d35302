"""A costly grammar cannot hold the other requests of a model hostage (issue 12): its cost is
measured when the request arrives (400 above the limit), and a token that takes too long to
choose ends only its own request."""
from __future__ import annotations

import json

import pytest

import pyllamacy
from pyllamacy import LlamaGrammar
from pyllamacy.pipeline.sampling import GrammarCostError, check_grammar_cost


def _enum_grammar(n: int) -> str:
    enum = [f"item-{i}-{'x' * (i % 7)}" for i in range(n)]
    return LlamaGrammar.from_json_schema(json.dumps({"type": "string", "enum": enum})).grammar


@pytest.fixture(scope="module")
def vocab(smollm2_path):
    with pyllamacy.Model(smollm2_path, vocab_only=True) as m:
        yield m


def test_grammar_cost_grows_with_the_grammar(vocab):
    assert pyllamacy.Sampler(vocab).greedy().grammar_cost() == 0.0
    small = pyllamacy.Sampler(vocab).grammar('root ::= "yes" | "no"')
    big = pyllamacy.Sampler(vocab).grammar(_enum_grammar(2000))
    c_small = min(small.grammar_cost(0) for _ in range(3))
    c_big = min(big.grammar_cost(0) for _ in range(3))
    assert 0 < c_small < c_big
    assert c_big > 5 * c_small
    # measuring changes nothing: the grammar still starts from its first state
    big.greedy()
    assert big.grammar_cost(0) > 0
    # a lazy grammar is measured in the state it starts from once triggered
    lazy = pyllamacy.Sampler(vocab).grammar_lazy(_enum_grammar(2000), ["<tool_call>"])
    assert lazy.grammar_cost(0) > 5 * c_small


def test_check_grammar_cost(vocab):
    cheap = pyllamacy.Sampler(vocab).grammar('root ::= "yes" | "no"').greedy()
    assert check_grammar_cost(cheap, 0) == 0.0          # no limit: nothing measured
    costly = pyllamacy.Sampler(vocab).grammar(_enum_grammar(3000)).greedy()
    with pytest.raises(GrammarCostError, match="response_format.*grammar_max_ms_per_token"):
        check_grammar_cost(costly, 0.01, "response_format")
    assert check_grammar_cost(pyllamacy.Sampler(vocab).greedy(), 0.01) == 0.0


def test_the_limit_scales_with_the_machine(vocab):
    """The limit is judged against a plain string's grammar on the same machine, so a slow CI
    box refuses what a fast one does: a tool schema is far under it, a 3,000-value enum over."""
    from pyllamacy.pipeline.sampling import (GRAMMAR_COST_REFERENCE_FACTOR, grammar_limit_ms,
                                             reference_grammar_ms)
    assert grammar_limit_ms(vocab, 0) == 0.0
    ref = reference_grammar_ms(vocab)
    assert ref > 0
    floor = grammar_limit_ms(vocab, 1e-6)
    assert GRAMMAR_COST_REFERENCE_FACTOR * ref / 3 < floor < GRAMMAR_COST_REFERENCE_FACTOR * ref * 3
    assert grammar_limit_ms(vocab, 1e9) == 1e9
    tool = LlamaGrammar.from_json_schema(json.dumps({
        "type": "object", "properties": {"city": {"type": "string"}, "unit": {
            "type": "string", "enum": ["celsius", "fahrenheit"]}, "days": {"type": "integer"}},
        "required": ["city"]})).grammar
    cheap = pyllamacy.Sampler(vocab).grammar(tool).greedy()
    assert check_grammar_cost(cheap, floor) < floor
    assert min(cheap.grammar_cost(0) for _ in range(3)) * 1000 < floor / 4
    costly = pyllamacy.Sampler(vocab).grammar(_enum_grammar(3000)).greedy()
    with pytest.raises(GrammarCostError, match="50x a plain string"):
        check_grammar_cost(costly, floor)


def test_engine_ends_a_slot_whose_token_takes_too_long(smollm2_path):
    with pyllamacy.Model(smollm2_path) as m, \
            pyllamacy.Context(m, n_ctx=512, n_batch=64, n_seq_max=2, n_threads=2) as ctx, \
            pyllamacy.Engine(ctx) as eng:
        prompt = m.tokenize("The list of colors:", add_special=True)
        slow = pyllamacy.Sampler(m).grammar(_enum_grammar(2000)).greedy()
        plain = pyllamacy.Sampler(m).greedy()
        r_slow = eng.submit(prompt, slow, max_tokens=8, max_sample_ms=0.001)
        r_plain = eng.submit(prompt, plain, max_tokens=8, max_sample_ms=1000)
        ends, toks = {}, {r_slow: [], r_plain: []}
        for _ in range(100):
            for rid, tok, fin in eng.step():
                if tok >= 0:
                    toks[rid].append(tok)
                if fin is not None:
                    ends[rid] = fin
                    if fin == "error":
                        err = eng.last_errors()[rid]
                        assert isinstance(err, pyllamacy.GrammarError)
                        assert "too costly" in str(err)
            if len(ends) == 2:
                break
        assert ends == {r_slow: "error", r_plain: "length"}
        assert len(toks[r_plain]) == 8 and toks[r_slow] == []


# -- the server --------------------------------------------------------------------------------

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")


@pytest.fixture(scope="module")
def server(smollm2_path):
    from pyllamacy.server import ModelSettings
    from serving import LocalServer
    s = LocalServer([ModelSettings(model=smollm2_path, model_alias="smol", n_ctx=256,
                                   n_batch=64, n_threads=2, n_parallel=4)])
    yield s.url
    s.stop()


def test_server_refuses_a_costly_grammar_and_keeps_serving(server):
    c = openai.OpenAI(base_url=server + "/v1", api_key="x", max_retries=0, timeout=120)
    msgs = [{"role": "user", "content": "Pick a color."}]
    before = c.chat.completions.create(model="smol", messages=msgs, max_tokens=8,
                                       temperature=0).choices[0].message.content
    enum = [f"item-{i}-{'x' * (i % 7)}" for i in range(5000)]
    schema = {"type": "string", "enum": enum}
    with pytest.raises(openai.BadRequestError) as ei:
        c.chat.completions.create(model="smol", messages=msgs, max_tokens=8, response_format={
            "type": "json_schema", "json_schema": {"name": "pick", "schema": schema}})
    assert "response_format" in str(ei.value) and "grammar_max_ms_per_token" in str(ei.value)
    with pytest.raises(openai.BadRequestError, match="grammar"):
        c.completions.create(model="smol", prompt="x", max_tokens=4,
                             extra_body={"grammar": _enum_grammar(5000)})
    # an ordinary schema is served
    ok = c.chat.completions.create(model="smol", messages=msgs, max_tokens=16, response_format={
        "type": "json_schema", "json_schema": {"name": "c", "schema": {
            "type": "object", "properties": {"c": {"type": "string", "enum": ["red", "blue"]}},
            "required": ["c"]}}})
    assert ok.choices[0].message.content.startswith("{")
    after = c.chat.completions.create(model="smol", messages=msgs, max_tokens=8,
                                      temperature=0).choices[0].message.content
    assert after == before


@pytest.mark.parametrize("gbnf", [
    'root ::= "The answer is " [0-9]+ "."',
    _enum_grammar(40),
    LlamaGrammar.from_json_schema(json.dumps({
        "type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"]})).grammar,
])
def test_greedy_grammar_fast_path_equals_the_full_chain(smollm2_path, gbnf):
    """[grammar, greedy] checks the argmax against the grammar first; the tokens are those of
    the same chain over the whole vocabulary (a temp(1.0) stage turns the fast path off)."""
    with pyllamacy.Model(smollm2_path) as m, \
            pyllamacy.Context(m, n_ctx=512, n_batch=64, n_threads=2) as ctx:
        prompt = m.tokenize("Describe a person as JSON. Answer:", add_special=True)
        outs = []
        for extra in (False, True):
            s = pyllamacy.Sampler(m).logit_bias({m.token_eos(): -2.0}).grammar(gbnf)
            if extra:
                s.temp(1.0)
            s.greedy()
            assert s.fast_path == (None if extra else "greedy_grammar")
            ctx.memory_clear()
            ctx.eval(prompt)
            outs.append(ctx.generate(s, max_tokens=40).run())
        assert outs[0] == outs[1] and len(outs[0]) > 3
