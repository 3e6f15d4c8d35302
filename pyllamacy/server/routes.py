"""The routes: OpenAI's /v1/completions, /v1/chat/completions, /v1/embeddings, /v1/models,
plus /health, /metrics and llama-cpp-python's /extras/tokenize, /extras/detokenize."""
from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import deque
from typing import AsyncIterator, Deque, List, Optional, Tuple

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from .._llama import LlamaError, SamplerError
from .._text import TextAssembler, normalize_stop
from ..llama import _Sampling, build_sampler
from .errors import ApiError, error_body
from .runner import EngineRunner, GenRequest, QueueFullError, RunnerClosedError
from .state import ServerState
from .types import (ChatCompletionRequest, CompletionRequest, DetokenizeRequest,
                    EmbeddingRequest, TokenizeRequest)

router = APIRouter()

_POLL_S = 0.2            # how often a waiting handler checks that its client is still there
_MAX_STOPS = 16


class _Disconnected(Exception):
    pass


def _state(request: Request) -> ServerState:
    return request.app.state.server


# -- shared: sampling, submit, events ------------------------------------------------------------

def _sampling(state: ServerState, body, grammar=None) -> _Sampling:
    if body.n > state.settings.max_n:
        raise ApiError(400, f"n must be <= {state.settings.max_n}")
    try:
        return _Sampling(temp=body.temperature, top_k=body.top_k, top_p=body.top_p,
                         min_p=body.min_p, typical_p=body.typical_p,
                         repeat_penalty=body.repeat_penalty,
                         frequency_penalty=body.frequency_penalty,
                         presence_penalty=body.presence_penalty,
                         mirostat_mode=body.mirostat_mode, mirostat_tau=body.mirostat_tau,
                         mirostat_eta=body.mirostat_eta,
                         grammar=grammar if grammar is not None else body.grammar,
                         logit_bias=body.logit_bias)
    except (SamplerError, TypeError, ValueError) as e:
        raise ApiError(400, str(e)) from None


def _max_tokens(state: ServerState, runner: EngineRunner, requested: Optional[int],
                n_prompt: int) -> int:
    room = runner.n_ctx_slot - n_prompt
    if room <= 0:
        raise ApiError(400, f"the prompt has {n_prompt} tokens; a slot of this model holds "
                            f"{runner.n_ctx_slot} (shorten the prompt)")
    limit = state.settings.max_tokens_limit
    if requested is not None and requested > limit:
        raise ApiError(400, f"max_tokens must be <= {limit}")
    if requested is None or requested <= 0:
        requested = limit
    return min(requested, room)


def _stops(stop) -> List[str]:
    try:
        out = normalize_stop(stop)
    except TypeError as e:
        raise ApiError(400, str(e)) from None
    if len(out) > _MAX_STOPS:
        raise ApiError(400, f"at most {_MAX_STOPS} stop strings")
    return out


_MAX_LOGPROBS = 20


def _check_logprobs(n: Optional[int], what: str) -> Optional[int]:
    if n is not None and n > _MAX_LOGPROBS:
        raise ApiError(400, f"{what} must be <= {_MAX_LOGPROBS}")
    return n


def _submit(state: ServerState, runner: EngineRunner, tokens: List[int], sp: _Sampling,
            seed: Optional[int], max_tokens: int, stop: List[str], special=None,
            logprobs: Optional[int] = None, prompt_logprobs: bool = False) -> GenRequest:
    ms = runner.settings
    if seed is None:
        seed = ms.seed if ms.seed != 0xFFFFFFFF else random.getrandbits(32)
    try:
        sampler = build_sampler(runner.model, sp, int(seed) & 0xFFFFFFFF, ms.last_n_tokens_size)
    except (LlamaError, ValueError, TypeError) as e:
        raise ApiError(400, f"bad sampling settings: {e}") from None
    if sp.penalized and sp.grammar is None and ms.last_n_tokens_size != 0:
        # the penalties see the end of the prompt, as in Llama and llama-server
        n = ms.last_n_tokens_size
        for t in (tokens if n < 0 else tokens[-n:]):
            sampler.accept(t)
    req = GenRequest(tokens, sampler, max_tokens, stop, special, logprobs, prompt_logprobs)
    try:
        runner.submit(req)
    except QueueFullError as e:
        sampler.close()
        state.metrics.reject(runner.name, "queue_full")
        raise ApiError(429, str(e), "rate_limit_error",
                       {"Retry-After": str(state.settings.retry_after_s)}) from None
    except RunnerClosedError as e:
        sampler.close()
        raise ApiError(503, str(e), "server_error",
                       {"Retry-After": str(state.settings.retry_after_s)}) from None
    return req


async def _events(request: Request, req: GenRequest) -> AsyncIterator[tuple]:
    """(piece, finish_reason, logprob entry) until the request ends; _Disconnected when the
    client leaves."""
    q = req.queue
    while True:
        if q.empty():
            try:
                item = await asyncio.wait_for(q.get(), _POLL_S)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    raise _Disconnected()
                continue
        else:
            item = q.get_nowait()
        yield item
        if item[1] is not None:
            return


async def _texts(request: Request, runner: EngineRunner, req: GenRequest, stop: List[str],
                 base: int = 0):
    """(text, None, entries) as it becomes final, then ("", finish_reason, entries). Cancels
    the request if the client disconnects or this consumer is closed early.

    entries: the logprob entries (token text, text offset, log-probability, top) of the tokens
    whose text has been released (offsets count from `base`); always [] without logprobs.
    Tokens cut by a stop string are not reported, as in Llama.create_completion."""
    asm = TextAssembler(stop)
    finish = None
    pending: Deque[tuple] = deque()

    def released():
        out = []
        while pending and pending[0][1] - base < asm.released:
            out.append(pending.popleft())
        return out

    try:
        async for piece, fin, lp in _events(request, req):
            if piece is not None and not asm.stopped:
                offset = asm.decoded
                out = asm.push(piece)
                if lp is not None:
                    pending.append((lp[0], base + offset, lp[1], lp[2]))
                entries = released()
                if out or entries:
                    yield out, None, entries
                if asm.stopped:
                    runner.cancel(req)
            if fin is not None:
                finish = fin
        tail = asm.flush()
        entries = released() if asm.stopped else list(pending)
        pending.clear()
        if tail or entries:
            yield tail, None, entries
        if asm.stopped or finish == "cancelled":
            finish = "stop"
        yield "", finish, []
    finally:
        if not req.done:
            runner.cancel(req)


def _record(state: ServerState, runner: EngineRunner, route: str, req: GenRequest,
            n_prompt: int, status: int, t0: float) -> None:
    m = state.metrics
    m.request(runner.name, route, status)
    m.tokens(runner.name, n_prompt, req.n_tokens)
    m.latency_s(runner.name, route, time.perf_counter() - t0)
    if req.t_first is not None:
        m.ttft_s(runner.name, req.t_first - req.t_submit)


def _sse(obj) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n\n"


_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def _collect(request: Request, state, runner: EngineRunner, route: str, req: GenRequest,
                   n_prompt: int, stop: List[str], t0: float, base: int = 0):
    """Run a non-streamed request to its end and record it: (text, finish_reason, logprob
    entries), or (None, None, None) when the client left; ApiError(500) when generation
    failed."""
    texts: List[str] = []
    entries: list = []
    finish = None
    try:
        async for text, fin, ents in _texts(request, runner, req, stop, base):
            texts.append(text)
            entries.extend(ents)
            finish = fin or finish
    except _Disconnected:
        _record(state, runner, route, req, n_prompt, 499, t0)
        return None, None, None
    err = _finish_error(finish)
    _record(state, runner, route, req, n_prompt, 500 if err else 200, t0)
    if err:
        raise ApiError(500, err, "server_error")
    return "".join(texts), finish, entries


def _finish_error(finish: str) -> Optional[str]:
    return finish[len("error: "):] if finish and finish.startswith("error") else None


# -- /v1/completions ---------------------------------------------------------------------------

def _prompt_tokens(runner: EngineRunner, prompt, suffix: Optional[str] = None
                   ) -> Tuple[List[int], str]:
    """The request's prompt -> (tokens, prompt text); with `suffix`, the fill-in-the-middle
    prompt around it (the model's FIM tokens; 400 for a model without them)."""
    model = runner.model
    given: Optional[List[int]] = None
    if isinstance(prompt, list):
        if prompt and all(isinstance(p, str) for p in prompt):
            if len(prompt) != 1:
                raise ApiError(400, "one prompt per request (a list of several prompts is not "
                                    "supported)")
            prompt = prompt[0]
        elif all(isinstance(p, int) for p in prompt):
            n_vocab = model.n_vocab
            if any(t < 0 or t >= n_vocab for t in prompt):
                raise ApiError(400, f"token ids must be in 0..{n_vocab - 1}")
            given = list(prompt)
            prompt = model.detokenize(given).decode("utf-8", "replace") if given else ""
            if not given and suffix is None:
                raise ApiError(400, "empty prompt")
    if not isinstance(prompt, str):
        raise ApiError(400, "prompt must be a string or a list of token ids")
    if suffix is not None:
        from ..llama import infill_tokens
        body = given if given is not None else (
            model.tokenize(prompt.encode("utf-8"), add_special=False, parse_special=False)
            if prompt else [])
        suffix_toks = (model.tokenize(suffix.encode("utf-8"), add_special=False,
                                      parse_special=False) if suffix else [])
        try:
            return infill_tokens(model, body, suffix_toks, runner.settings.spm_infill,
                                 f"model {runner.name!r}"), prompt
        except ValueError as e:
            raise ApiError(400, str(e)) from None
    if given is not None:
        return given, prompt
    toks = model.tokenize(prompt.encode("utf-8"), add_special=True, parse_special=True)
    if not toks:
        bos = model.token_bos()
        if bos < 0:
            raise ApiError(400, "empty prompt")
        toks = [bos]
    return toks, prompt


def _submit_n(state: ServerState, runner: EngineRunner, n: int, tokens: List[int],
              sp: _Sampling, seed: Optional[int], max_tokens: int, stop: List[str],
              special=None, logprobs: Optional[int] = None,
              prompt_logprobs: bool = False) -> List[GenRequest]:
    """n requests for n choices (choice i seeded seed + i); all or none: when one cannot be
    queued, those already queued are cancelled and the error is raised."""
    if n > 1 and seed is None:
        ms = runner.settings
        seed = ms.seed if ms.seed != 0xFFFFFFFF else random.getrandbits(32)
    reqs: List[GenRequest] = []
    try:
        for i in range(n):
            reqs.append(_submit(state, runner, tokens, sp,
                                None if seed is None else (int(seed) + i) & 0xFFFFFFFF,
                                max_tokens, stop, special, logprobs, prompt_logprobs))
    except BaseException:
        for r in reqs:
            runner.cancel(r)
        raise
    return reqs


async def _merged(streams) -> AsyncIterator[tuple]:
    """(choice index, item) from several async iterators as their items come; an exception in
    any of them is raised here; leaving early closes them all (cancelling their requests)."""
    q: asyncio.Queue = asyncio.Queue()

    async def pump(i, it):
        try:
            async for item in it:
                await q.put((i, item, None))
            await q.put((i, None, None))
        except asyncio.CancelledError:
            raise
        except BaseException as e:        # _Disconnected, errors: to the consumer
            await q.put((i, None, e))

    tasks = [asyncio.ensure_future(pump(i, it)) for i, it in enumerate(streams)]
    try:
        left = len(tasks)
        while left:
            i, item, exc = await q.get()
            if exc is not None:
                raise exc
            if item is None:
                left -= 1
                continue
            yield i, item
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _collect_n(request: Request, state, runner: EngineRunner, route: str,
                     reqs: List[GenRequest], n_prompt: int, stop: List[str], t0: float,
                     base: int = 0):
    """_collect for each choice, concurrently: a list of (text, finish, entries), or None when
    the client left; ApiError(500) when a choice failed."""
    results = await asyncio.gather(
        *(_collect(request, state, runner, route, r, n_prompt, stop, t0, base) for r in reqs),
        return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    if any(r[0] is None for r in results):
        return None
    return results


def _usage(n_prompt: int, reqs: List[GenRequest]) -> dict:
    done = sum(r.n_tokens for r in reqs)
    return {"prompt_tokens": n_prompt, "completion_tokens": done,
            "total_tokens": n_prompt + done}


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request):
    t0 = time.perf_counter()
    state = _state(request)
    runner = state.runner(body.model)
    n_logprobs = _check_logprobs(body.logprobs, "logprobs")
    echo_lp = body.echo and n_logprobs is not None      # the prompt's log-probabilities too
    # echo with max_tokens=0: the prompt alone (how evaluation harnesses score a text)
    prompt_only = body.echo and body.max_tokens == 0
    toks, prompt_text = _prompt_tokens(runner, body.prompt, body.suffix)
    max_tokens = 1 if prompt_only else _max_tokens(state, runner, body.max_tokens, len(toks))
    if prompt_only and len(toks) >= runner.n_ctx_slot:
        _max_tokens(state, runner, None, len(toks))               # the same 400
    stop = _stops(body.stop)
    sp = _sampling(state, body)
    reqs = _submit_n(state, runner, body.n, toks, sp, body.seed, max_tokens, stop,
                     logprobs=n_logprobs, prompt_logprobs=echo_lp)
    cid = f"cmpl-{uuid.uuid4()}"
    created = int(time.time())
    name = runner.name
    base = len(prompt_text)           # text offsets count the prompt, as in Llama

    def choice(i, text, finish, entries=None):
        return {"text": text, "index": i,
                "logprobs": None if n_logprobs is None else _logprobs_dict(entries),
                "finish_reason": finish}

    def chunk(i, text, finish, entries=None):
        return {"id": cid, "object": "text_completion", "created": created, "model": name,
                "choices": [choice(i, text, finish, entries)]}

    if body.stream:
        async def gen():
            status = 200
            echoed = set()
            try:
                if body.echo and not echo_lp:
                    for i in range(len(reqs)):
                        yield _sse(chunk(i, prompt_text, None))
                async for i, (text, finish, entries) in _merged(
                        [_texts(request, runner, r, stop, base) for r in reqs]):
                    if echo_lp and i not in echoed:
                        # the prompt's entries are complete once its first event is here
                        echoed.add(i)
                        yield _sse(chunk(i, prompt_text, None, _echo_entries(runner, reqs[i])))
                    if prompt_only:
                        text, entries = "", []
                        if finish and not _finish_error(finish):
                            finish = "length"
                    err = _finish_error(finish)
                    if err:
                        status = 500
                        yield _sse(error_body(500, err, "server_error"))
                    elif text or finish or entries:
                        yield _sse(chunk(i, text, finish, entries))
                yield b"data: [DONE]\n\n"
            except _Disconnected:
                status = 499
            finally:
                for r in reqs:
                    _record(state, runner, "completions", r, len(toks), status, t0)
        return StreamingResponse(gen(), media_type="text/event-stream", headers=_SSE_HEADERS)

    results = await _collect_n(request, state, runner, "completions", reqs, len(toks), stop,
                               t0, base)
    if results is None:
        return JSONResponse(error_body(499, "client closed the request", "cancelled"), 499)
    choices = []
    for i, (text, finish, entries) in enumerate(results):
        if prompt_only:
            text, finish, entries = "", "length", []
        if echo_lp:
            entries = _echo_entries(runner, reqs[i]) + entries
        choices.append(choice(i, prompt_text + text if body.echo else text, finish, entries))
    usage = _usage(len(toks), reqs)
    if prompt_only:
        usage = _usage(len(toks), [])
    return {"id": cid, "object": "text_completion", "created": created, "model": name,
            "choices": choices, "usage": usage}


def _echo_entries(runner: EngineRunner, req: GenRequest) -> list:
    """The prompt's logprob entries, as Llama.create_completion(echo=True, logprobs=N) gives
    them: from the first token after BOS, the first one without a log-probability."""
    toks = req.tokens
    first = 1 if toks and toks[0] == runner.model.token_bos() else 0
    out, off = [], 0
    for i in range(first, len(toks)):
        ent = req.prompt_entries.get(i) if i > first else None
        s = ent[0] if ent is not None else runner._piece_str(toks[i])
        out.append((s, off, None, None) if ent is None else (s, off, ent[1], ent[2]))
        off += len(s)
    return out


def _logprobs_dict(entries) -> dict:
    entries = entries or []
    return {"tokens": [e[0] for e in entries], "text_offset": [e[1] for e in entries],
            "token_logprobs": [e[2] for e in entries], "top_logprobs": [e[3] for e in entries]}


# -- /v1/chat/completions ----------------------------------------------------------------------

@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request):
    from ..chat import (ChatDeltas, ChatParseError, ChatTemplateError, SchemaError,
                        _chat_logprobs, chat_message, prepare_chat)
    t0 = time.perf_counter()
    state = _state(request)
    runner = state.runner(body.model)
    if body.top_logprobs is not None and not body.logprobs:
        raise ApiError(400, "top_logprobs requires logprobs=true")
    n_logprobs = _check_logprobs(body.top_logprobs or 0, "top_logprobs") if body.logprobs \
        else None
    stop = _stops(body.stop)
    try:
        creq = await run_in_threadpool(
            prepare_chat, state.chat_targets[runner.name], body.messages,
            functions=body.functions, function_call=body.function_call, tools=body.tools,
            tool_choice=body.tool_choice, response_format=body.response_format,
            grammar=body.grammar, stop=stop, parallel_tool_calls=body.parallel_tool_calls,
            chat_template_kwargs=body.chat_template_kwargs)
    except (ValueError, TypeError, KeyError, ChatTemplateError, SchemaError,
            ChatParseError, LlamaError) as e:
        raise ApiError(400, f"{type(e).__name__}: {e}") from None
    toks = creq.prompt_tokens
    requested = body.max_completion_tokens if body.max_completion_tokens is not None \
        else body.max_tokens
    max_tokens = _max_tokens(state, runner, requested, len(toks))
    sp = _sampling(state, body, grammar=creq.grammar)
    stops = creq.stop
    reqs = _submit_n(state, runner, body.n, toks, sp, body.seed, max_tokens, stops,
                     creq.special_tokens, n_logprobs)
    cid = f"chatcmpl-{uuid.uuid4()}"
    created = int(time.time())
    name = runner.name

    if body.stream:
        def chunk(i, delta, finish=None, logprobs=None):
            return {"id": cid, "object": "chat.completion.chunk", "created": created,
                    "model": name, "choices": [{"index": i, "delta": delta,
                                                "logprobs": logprobs, "finish_reason": finish}]}

        async def gen():
            status = 200
            deltas = [ChatDeltas(creq) for _ in reqs]
            try:
                for i in range(len(reqs)):
                    yield _sse(chunk(i, {"role": "assistant", "content": ""}))
                async for i, (text, finish, entries) in _merged(
                        [_texts(request, runner, r, stops) for r in reqs]):
                    err = _finish_error(finish)
                    if err:
                        status = 500
                        yield _sse(error_body(500, err, "server_error"))
                        break
                    lp = _chat_logprobs(entries) if n_logprobs is not None and entries \
                        else None
                    ds = deltas[i].feed(text) if text else []
                    if not ds and lp is not None:
                        ds = [{"content": ""}]
                    for j, d in enumerate(ds):
                        yield _sse(chunk(i, d, None, lp if j == 0 else None))
                    if finish:
                        last, fin = deltas[i].finish(finish)
                        for d in last:
                            yield _sse(chunk(i, d))
                        yield _sse(chunk(i, {}, fin))
                yield b"data: [DONE]\n\n"
            except _Disconnected:
                status = 499
            finally:
                for r in reqs:
                    _record(state, runner, "chat", r, len(toks), status, t0)
        return StreamingResponse(gen(), media_type="text/event-stream", headers=_SSE_HEADERS)

    results = await _collect_n(request, state, runner, "chat", reqs, len(toks), stops, t0)
    if results is None:
        return JSONResponse(error_body(499, "client closed the request", "cancelled"), 499)
    choices = []
    for i, (text, finish, entries) in enumerate(results):
        message, finish = await run_in_threadpool(chat_message, creq, text, finish)
        choices.append({"index": i, "message": message,
                        "logprobs": _chat_logprobs(entries) if n_logprobs is not None
                        else None,
                        "finish_reason": finish})
    return {"id": cid, "object": "chat.completion", "created": created, "model": name,
            "choices": choices, "usage": _usage(len(toks), reqs)}


# -- /v1/embeddings ----------------------------------------------------------------------------

@router.post("/v1/embeddings")
async def embeddings(body: EmbeddingRequest, request: Request):
    t0 = time.perf_counter()
    state = _state(request)
    runner = state.runner(body.model)
    if not runner.settings.embedding:
        raise ApiError(400, f"model {runner.name!r} is not served for embeddings")
    inputs = [body.input] if isinstance(body.input, str) else list(body.input)
    if not inputs or len(inputs) > 256:
        raise ApiError(400, "input must be a string or a list of 1..256 strings")
    try:
        vecs, total = await run_in_threadpool(state.embedders[runner.name].embed, inputs)
    except (ValueError, TypeError, LlamaError) as e:
        raise ApiError(400, str(e)) from None
    state.metrics.request(runner.name, "embeddings", 200)
    state.metrics.tokens(runner.name, total, 0)
    state.metrics.latency_s(runner.name, "embeddings", time.perf_counter() - t0)
    return {"object": "list", "model": runner.name,
            "data": [{"object": "embedding", "embedding": v, "index": i}
                     for i, v in enumerate(vecs)],
            "usage": {"prompt_tokens": total, "total_tokens": total}}


# -- models, health, metrics, extras -------------------------------------------------------------

@router.get("/v1/models")
async def models(request: Request):
    state = _state(request)
    return {"object": "list",
            "data": [{"id": name, "object": "model", "owned_by": "me", "permissions": [],
                      "created": 0} for name in state.runners]}


@router.get("/health")
async def health(request: Request):
    state = _state(request)
    if not state.runners:
        return JSONResponse({"status": "loading"}, status_code=503)
    return {"status": "ok"}


@router.get("/metrics")
async def metrics(request: Request):
    state = _state(request)
    return PlainTextResponse(state.metrics.render(state.runners),
                             media_type="text/plain; version=0.0.4")


@router.post("/extras/tokenize")
async def tokenize(body: TokenizeRequest, request: Request):
    runner = _state(request).runner(body.model)
    toks = runner.model.tokenize(body.input.encode("utf-8"), add_special=True,
                                 parse_special=True)
    return {"tokens": toks}


@router.post("/extras/tokenize/count")
async def tokenize_count(body: TokenizeRequest, request: Request):
    runner = _state(request).runner(body.model)
    return {"count": len(runner.model.tokenize(body.input.encode("utf-8"), add_special=True,
                                               parse_special=True))}


@router.post("/extras/detokenize")
async def detokenize(body: DetokenizeRequest, request: Request):
    runner = _state(request).runner(body.model)
    n_vocab = runner.model.n_vocab
    if any(t < 0 or t >= n_vocab for t in body.tokens):
        raise ApiError(400, f"token ids must be in 0..{n_vocab - 1}")
    return {"text": runner.model.detokenize(body.tokens).decode("utf-8", "replace")}
