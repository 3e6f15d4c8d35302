"""The routes: OpenAI's /v1/completions, /v1/chat/completions, /v1/embeddings, /v1/models,
plus /health, /metrics and llama-cpp-python's /extras/tokenize, /extras/detokenize.

The completion routes are thin: the request is checked and turned into tokens, a sampler and
stops by pyllamacy.pipeline (and pyllamacy.chat for messages), the runner's events become text
through pipeline.text.TokenText and objects through pipeline.responses -- the functions
Llama.create_completion / create_chat_completion use. What stays here is HTTP: status codes,
the server's limits, n choices side by side, disconnects, Server-Sent Events, metrics."""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import random
import time
from typing import Any, AsyncIterator, Callable, List, Optional, Tuple

import numpy as np
from fastapi import APIRouter, Request
from pydantic import ValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from .._llama import LlamaError
from ..chat import (ChatDeltas, ChatParseError, ChatTemplateError, SchemaError, chat_message,
                    prepare_chat)
from ..chat_multimodal import has_media, prepare_multimodal_chat
from ..pipeline.checks import FieldError, check_messages, check_seed, check_text, check_texts
from ..pipeline.options import (chat_logprobs_count, completion_logprobs_count, stop_strings,
                                token_budget)
from ..pipeline.prompts import prompt_tokens
from ..pipeline.responses import (ChatChunks, ResponseMeta, chat_choice, chat_response,
                                  completion_choice, completion_chunk, completion_response,
                                  echo_entries, usage, usage_chunk)
from ..pipeline.sampling import (GrammarCostError, SamplingParams, build_sampler,
                                 check_grammar_cost, feed_history)
from ..pipeline.text import TextEntry, TokenText, piece_text
from .errors import ApiError, error_body
from .logs import access
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .runner import EngineRunner, GenRequest, QueueFullError, RunnerClosedError
from .state import ServerState
from .types import (ChatCompletionRequest, CompletionRequest, DetokenizeRequest,
                    EmbeddingRequest, TokenizeRequest)

router = APIRouter()

log = logging.getLogger("pyllamacy.server")
_POLL_S = 0.2            # how often a waiting handler checks that its client is still there
_MAX_STOPS = 16
_MAX_LOGPROBS = 20


class _Disconnected(Exception):
    pass


def _state(request: Request) -> ServerState:
    return request.app.state.server


def _checked(fn, *args, **kwargs):
    """fn(...), with the pipeline's ValueError / TypeError answered by 400 (naming the field of
    a FieldError)."""
    try:
        return fn(*args, **kwargs)
    except FieldError as e:
        raise ApiError(400, str(e), param=e.param) from None
    except (TypeError, ValueError) as e:
        raise ApiError(400, str(e)) from None


# -- shared: sampling, submit, events ------------------------------------------------------------

def _sampling(state: ServerState, body, grammar=None) -> SamplingParams:
    if body.n > state.settings.max_n:
        raise ApiError(400, f"n must be <= {state.settings.max_n}", param="n")
    _checked(check_seed, body.seed)
    return _checked(SamplingParams, temp=body.temperature, top_k=body.top_k, top_p=body.top_p,
                    min_p=body.min_p, typical_p=body.typical_p,
                    repeat_penalty=body.repeat_penalty,
                    frequency_penalty=body.frequency_penalty,
                    presence_penalty=body.presence_penalty, mirostat_mode=body.mirostat_mode,
                    mirostat_tau=body.mirostat_tau, mirostat_eta=body.mirostat_eta,
                    grammar=grammar if grammar is not None else body.grammar,
                    logit_bias=body.logit_bias)


def _max_tokens(state: ServerState, runner: EngineRunner, requested: Optional[int],
                n_prompt: int) -> int:
    return _checked(token_budget, requested, n_prompt, runner.n_ctx_slot,
                    limit=state.settings.max_tokens_limit, holder="a slot of this model")


def _model_seed(runner: EngineRunner) -> int:
    """The seed of a request that names none: the model's, or a random one."""
    seed = runner.settings.seed
    return seed if seed != 0xFFFFFFFF else random.getrandbits(32)


def _deadlines(state: ServerState, body) -> Tuple[Optional[float], Optional[float]]:
    """(timeout_s, t_max_predict_ms) of a request: its own fields (`timeout` in seconds,
    llama-server's `t_max_predict_ms`), capped by the server's request_timeout_s /
    t_max_predict_ms, which are also the default; None (or 0) is no limit."""
    def pick(asked, server_max):
        asked = asked if asked else None            # 0: none asked for, as in llama-server
        server_max = server_max if server_max else None
        if asked is None:
            return server_max
        return asked if server_max is None else min(asked, server_max)
    st = state.settings
    return (pick(getattr(body, "timeout", None), st.request_timeout_s),
            pick(getattr(body, "t_max_predict_ms", None), st.t_max_predict_ms))


def _new_sampler(runner: EngineRunner, sp: SamplingParams, seed: int, tokens: List[int],
                 grammar_field: str = "grammar"):
    """The request's sampler; a grammar costing more per token than the model allows is
    refused here (GrammarCostError), before the request shares a batch with others."""
    ms = runner.settings
    sampler = build_sampler(runner.model, sp, seed, ms.last_n_tokens_size)
    try:
        check_grammar_cost(sampler, runner.grammar_limit_ms, grammar_field)
    except BaseException:
        sampler.close()
        raise
    feed_history(sampler, sp, tokens, ms.last_n_tokens_size)
    return sampler


async def _submit(state: ServerState, runner: EngineRunner, tokens: List[int],
                  sp: SamplingParams, seed: Optional[int], max_tokens: int, stop: List[str],
                  special=None, logprobs: Optional[int] = None, prompt_logprobs: bool = False,
                  media=None, loras=None, deadlines=(None, None),
                  grammar_field: str = "grammar") -> GenRequest:
    if seed is None:
        seed = _model_seed(runner)
    seed = int(seed) & 0xFFFFFFFF
    try:
        if sp.grammar is not None:
            # a grammar is parsed (and a lazy one's patterns compiled) when the sampler is
            # built: as long as the grammar makes it, so not on the event loop
            sampler = await run_in_threadpool(_new_sampler, runner, sp, seed, tokens,
                                              grammar_field)
        else:
            sampler = _new_sampler(runner, sp, seed, tokens)
    except GrammarCostError as e:
        raise ApiError(400, str(e)) from None
    except (LlamaError, ValueError, TypeError) as e:
        raise ApiError(400, f"bad sampling settings: {e}") from None
    req = GenRequest(tokens, sampler, max_tokens, stop, special, logprobs, prompt_logprobs,
                     media, loras, timeout_s=deadlines[0], t_max_predict_ms=deadlines[1])
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


async def _submit_n(state: ServerState, runner: EngineRunner, n: int, tokens: List[int],
                    sp: SamplingParams, seed: Optional[int], max_tokens: int, stop: List[str],
                    special=None, logprobs: Optional[int] = None,
                    prompt_logprobs: bool = False, media=None, loras=None,
                    deadlines=(None, None), grammar_field: str = "grammar") -> List[GenRequest]:
    """n requests for n choices (choice i seeded seed + i); all or none: when one cannot be
    queued, those already queued are cancelled and the error is raised."""
    if n > 1 and seed is None:
        seed = _model_seed(runner)
    reqs: List[GenRequest] = []
    try:
        for i in range(n):
            reqs.append(await _submit(state, runner, tokens, sp,
                                      None if seed is None else (int(seed) + i) & 0xFFFFFFFF,
                                      max_tokens, stop, special, logprobs, prompt_logprobs,
                                      media, loras, deadlines, grammar_field))
    except BaseException:
        for r in reqs:
            runner.cancel(r)
        raise
    return reqs


def _lora(runner: EngineRunner, field):
    """llama-server's per-request `lora: [{"id": i, "scale": s}, ...]` -> the request's adapter
    set [(LoraAdapter, scale)] (adapters not listed are off), or None without the field (the
    model's own scales)."""
    if field is None:
        return None
    adapters = runner.loras
    if not isinstance(field, list):
        raise ApiError(400, "lora must be a list of {\"id\": int, \"scale\": number}")
    out, seen = [], set()
    for i, item in enumerate(field):
        if not isinstance(item, dict) or "id" not in item:
            raise ApiError(400, f"lora[{i}] must be {{\"id\": int, \"scale\": number}}")
        lid, scale = item["id"], item.get("scale", 1.0)
        if isinstance(lid, bool) or not isinstance(lid, int) or not 0 <= lid < len(adapters):
            raise ApiError(400, f"lora[{i}].id must be an adapter id of this model "
                                f"(0..{len(adapters) - 1}; see /lora-adapters), got {lid!r}")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or \
                not math.isfinite(scale):
            raise ApiError(400, f"lora[{i}].scale must be a finite number, got {scale!r}")
        if lid in seen:
            raise ApiError(400, f"lora[{i}]: adapter {lid} is given twice")
        seen.add(lid)
        if scale != 0:
            out.append((adapters[lid][0], float(scale)))
    return out


def _engine_finish(fin) -> Tuple[str, Optional[BaseException]]:
    """The runner's finish ("stop", "length", "aborted" or the exception that ended the
    request) -> (finish reason, error), as the pipeline takes them."""
    if isinstance(fin, BaseException):
        return "error", fin
    return fin, None


def _include_usage(body) -> bool:
    """stream_options: {"include_usage": true} (OpenAI): the stream ends with a usage chunk."""
    opts = body.stream_options
    if opts is None:
        return False
    if not isinstance(opts, dict) or not isinstance(opts.get("include_usage", False), bool):
        raise ApiError(400, "stream_options.include_usage must be true or false",
                       param="stream_options")
    return bool(opts.get("include_usage")) and bool(body.stream)


def _error_message(tt: TokenText) -> str:
    return str(tt.error) if tt.error is not None else "generation failed"


# put on a request's queue by _ClientWatch when the client has gone
_LEFT = (None, None, None)


class _ClientWatch:
    """Waits on the ASGI receive channel for the client's http.disconnect while `reqs` run,
    and then cancels them at once (the runner frees their slots at its next step) and wakes
    their consumers (_events raises _Disconnected). The request body has been read by then
    (FastAPI parses it before the route runs), so what receive() still brings is the
    disconnect -- uvicorn answers it as soon as the connection is lost, or once the response
    is complete (close() has stopped the watch by then). Starlette's StreamingResponse listens
    on the same channel, which is fine: a disconnect wakes every receiver."""

    def __init__(self, request: Request, runner: EngineRunner, reqs: List[GenRequest]):
        self.left = False
        self._task = asyncio.ensure_future(self._watch(request, runner, reqs))

    async def _watch(self, request, runner, reqs) -> None:
        try:
            for _ in range(1000):             # a receive() that never waits: give up
                if (await request.receive())["type"] == "http.disconnect":
                    break
                await asyncio.sleep(0)
            else:
                return
        except asyncio.CancelledError:
            raise
        except Exception:                      # no receive channel: _events polls
            return
        self.left = True
        for r in reqs:
            if not r.done:
                runner.cancel(r)
                r.queue.put_nowait(_LEFT)

    def close(self) -> None:
        self._task.cancel()


async def _events(request: Request, req: GenRequest) -> AsyncIterator[tuple]:
    """(piece, finish_reason, logprob entry) until the request ends; _Disconnected when the
    client leaves (told by _ClientWatch at once; polled every _POLL_S without a token as a
    fallback)."""
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
        if item is _LEFT:
            raise _Disconnected()
        yield item
        if item[1] is not None:
            return


async def _texts(request: Request, runner: EngineRunner, req: GenRequest, tt: TokenText):
    """The request's events through `tt`: (text, entries, False) as text is released, then
    (what was held back, entries, True) with tt.finish_reason / tt.error set. Cancels the
    request once a stop string ended the text, and if the client disconnects or this consumer
    is closed early."""
    reason, error = None, None
    try:
        async for piece, fin, lp in _events(request, req):
            if piece is not None and not tt.stopped:
                text, entries = tt.push(piece, lp)
                if text or entries:
                    yield text, entries, False
                if tt.stopped:
                    runner.cancel(req)
            if fin is not None:
                reason, error = _engine_finish(fin)
        text, entries = tt.finish(reason, error)
        yield text, entries, True
    finally:
        if not req.done:
            runner.cancel(req)


def _record(state: ServerState, runner: EngineRunner, route: str, req: GenRequest,
            n_prompt: int, status: int, t0: float) -> None:
    m = state.metrics
    m.request(runner.name, route, status)
    m.tokens(runner.name, n_prompt, req.n_tokens)
    took = time.perf_counter() - t0
    m.latency_s(runner.name, route, took)
    if req.t_first is not None:
        m.ttft_s(runner.name, req.t_first - req.t_submit)
    fin = req.finish_reason
    access(log, method="POST", route=_ROUTE_PATHS.get(route, route), model=runner.name,
           status=status, tokens_in=n_prompt, tokens_out=req.n_tokens, duration_s=took,
           ttft_s=None if req.t_first is None else round(req.t_first - req.t_submit, 6),
           finish_reason=fin if isinstance(fin, (str, type(None))) else type(fin).__name__)


_ROUTE_PATHS = {"chat": "/v1/chat/completions", "completions": "/v1/completions",
                "embeddings": "/v1/embeddings", "infill": "/infill"}


def _sse(obj) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n\n"


_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _openai_event(obj: dict):
    return _sse(obj), "error" in obj


def _sse_response(request: Request, state: ServerState, runner: EngineRunner, route: str,
                  reqs: List[GenRequest], n_prompt: int, t0: float,
                  objects: AsyncIterator[Any], encode: Callable = _openai_event,
                  end: bytes = b"data: [DONE]\n\n") -> StreamingResponse:
    """Stream `objects` as Server-Sent Events: encode(obj) -> (bytes, is_error) (OpenAI's
    `data:` lines by default; an error makes the recorded status 500), then `end` (OpenAI's
    [DONE]); record the requests when the stream ends (499 when the client left). A client
    that leaves has its requests cancelled at once (_ClientWatch)."""
    async def gen():
        status = 200
        watch = _ClientWatch(request, runner, reqs)
        try:
            async for obj in objects:
                data, failed = encode(obj)
                if failed:
                    status = 500
                yield data
            if end:
                yield end
        except _Disconnected:
            status = 499
        finally:
            watch.close()
            if watch.left:
                status = 499
            await objects.aclose()         # cancels what is still running
            for r in reqs:
                _record(state, runner, route, r, n_prompt, status, t0)
    return StreamingResponse(gen(), media_type="text/event-stream", headers=_SSE_HEADERS)


async def _collect(request: Request, state, runner: EngineRunner, route: str, req: GenRequest,
                   n_prompt: int, tt: TokenText, t0: float):
    """Run a non-streamed request to its end and record it: (text, logprob entries), or None
    when the client left; ApiError(500) when generation failed."""
    texts: List[str] = []
    entries: List[TextEntry] = []
    try:
        async for text, ents, _done in _texts(request, runner, req, tt):
            texts.append(text)
            entries.extend(ents)
    except _Disconnected:
        _record(state, runner, route, req, n_prompt, 499, t0)
        return None
    failed = tt.finish_reason == "error"
    _record(state, runner, route, req, n_prompt, 500 if failed else 200, t0)
    if failed:
        raise ApiError(500, _error_message(tt), "server_error")
    return "".join(texts), entries


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
                     reqs: List[GenRequest], n_prompt: int, tts: List[TokenText], t0: float):
    """_collect for each choice, concurrently: a list of (text, entries), or None when the
    client left (its requests are cancelled as soon as it leaves: _ClientWatch); ApiError(500)
    when a choice failed."""
    watch = _ClientWatch(request, runner, reqs)
    try:
        results = await asyncio.gather(
            *(_collect(request, state, runner, route, r, n_prompt, tt, t0)
              for r, tt in zip(reqs, tts)),
            return_exceptions=True)
    finally:
        watch.close()
    for r in results:
        if isinstance(r, BaseException):
            raise r
    if any(r is None for r in results):
        return None
    return results


def _client_left() -> JSONResponse:
    return JSONResponse(error_body(499, "client closed the request", "cancelled"), 499)


# -- /v1/completions ---------------------------------------------------------------------------

def _echo_entries(runner: EngineRunner, req: GenRequest) -> List[TextEntry]:
    """The prompt's logprob entries (from the engine's prompt log-probabilities), as
    Llama.create_completion(echo=True, logprobs=N) gives them."""
    model = runner.model
    return echo_entries(req.tokens, model.token_bos(), req.prompt_entries,
                        lambda t: piece_text(model, t))


def _prompt_list(prompt, limit: int) -> list:
    """The prompts of a completion request: a list of texts or of token-id lists is a batch
    (OpenAI's API); anything else is one prompt."""
    if isinstance(prompt, list) and len(prompt) > 1 and (
            all(isinstance(p, str) for p in prompt) or all(isinstance(p, list) for p in prompt)):
        if len(prompt) > limit:
            raise ApiError(400, f"prompt: at most {limit} prompts per request (max_prompts), "
                           f"got {len(prompt)}", param="prompt")
        return list(prompt)
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], list):
        return [prompt[0]]
    return [prompt]


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request):
    t0 = time.perf_counter()
    state = _state(request)
    runner = await state.acquire(body.model)
    n_logprobs = _checked(completion_logprobs_count, body.logprobs, _MAX_LOGPROBS)
    want = n_logprobs is not None
    with_usage = _include_usage(body)
    echo_lp = body.echo and want               # the prompt's log-probabilities too
    # echo with max_tokens=0: the prompt alone (how evaluation harnesses score a text)
    prompt_only = body.echo and body.max_tokens == 0
    prompts = []                               # (tokens, text) of each prompt
    plist = _prompt_list(body.prompt, state.settings.max_prompts)
    for k, p in enumerate(plist):
        try:
            prompts.append(prompt_tokens(runner.model, p, body.suffix,
                                         spm_infill=runner.settings.spm_infill,
                                         model_name=f"model {runner.name!r}"))
        except FieldError as e:
            raise ApiError(400, str(e), param=e.param) from None
        except (TypeError, ValueError) as e:
            where = f"prompt[{k}]: " if len(plist) > 1 else ""
            raise ApiError(400, f"{where}{e}", param="prompt") from None
    stop = _checked(stop_strings, body.stop, _MAX_STOPS)
    sp = _sampling(state, body)
    loras = _lora(runner, body.lora)
    reqs: List[GenRequest] = []
    of: List[int] = []                         # the prompt of each choice
    try:
        for k, (toks, _text) in enumerate(prompts):
            max_tokens = _max_tokens(state, runner, None if prompt_only else body.max_tokens,
                                     len(toks))
            if prompt_only:
                max_tokens = 1
            got = await _submit_n(state, runner, body.n, toks, sp, body.seed, max_tokens, stop,
                                  logprobs=n_logprobs, prompt_logprobs=echo_lp, loras=loras,
                                  deadlines=_deadlines(state, body))
            reqs += got
            of += [k] * len(got)
    except BaseException:
        for r in reqs:
            runner.cancel(r)
        raise
    n_prompt = sum(len(t) for t, _ in prompts)
    meta = ResponseMeta.completion(runner.name)
    # text offsets count the prompt, as in Llama
    tts = [TokenText(stop, base=len(prompts[of[i]][1])) for i in range(len(reqs))]

    def lp(entries):
        return entries if want else None

    if body.stream:
        async def chunks():
            echoed = set()
            if body.echo and not echo_lp:
                for i in range(len(reqs)):
                    yield completion_chunk(meta, i, prompts[of[i]][1])
            async for i, (text, entries, done) in _merged(
                    [_texts(request, runner, r, tt) for r, tt in zip(reqs, tts)]):
                if echo_lp and i not in echoed:
                    # the prompt's entries are complete once its first event is here
                    echoed.add(i)
                    yield completion_chunk(meta, i, prompts[of[i]][1], None,
                                           _echo_entries(runner, reqs[i]))
                if prompt_only:
                    text, entries = "", []
                if text or entries:
                    yield completion_chunk(meta, i, text, None, lp(entries))
                if done:
                    tt = tts[i]
                    if tt.finish_reason == "error":
                        yield error_body(500, _error_message(tt), "server_error")
                    else:
                        yield completion_chunk(meta, i, "",
                                               "length" if prompt_only else tt.finish_reason)
            if with_usage:
                yield usage_chunk(meta, "text_completion",
                                  usage(n_prompt, sum(tt.n_tokens for tt in tts)))
        return _sse_response(request, state, runner, "completions", reqs, n_prompt, t0, chunks())

    results = await _collect_n(request, state, runner, "completions", reqs, n_prompt, tts, t0)
    if results is None:
        return _client_left()
    choices = []
    for i, ((text, entries), tt) in enumerate(zip(results, tts)):
        finish = tt.finish_reason
        prompt_text = prompts[of[i]][1]
        if prompt_only:
            text, finish, entries = "", "length", []
        if echo_lp:
            entries = _echo_entries(runner, reqs[i]) + entries
        choices.append(completion_choice(i, prompt_text + text if body.echo else text, finish,
                                         lp(entries)))
    n_completion = 0 if prompt_only else sum(tt.n_tokens for tt in tts)
    return completion_response(meta, choices, usage(n_prompt, n_completion))


# -- one completion for other front ends (llama-server's /infill) ------------------------------

class CompletionJob:
    """One prompt of tokens, one choice, submitted to its model's runner: what routes that
    answer in a shape of their own (llama-server's /infill) build on. texts() yields (text,
    done) as text is released; result() waits for the whole text (None when the client left);
    sse() streams objects made from texts(). Once done: finish_reason ("stop", "length",
    "error"), stop_hit (the stop string that ended it), n_tokens, timings()."""

    def __init__(self, request: Request, state: ServerState, runner: EngineRunner,
                 req: GenRequest, tt: TokenText, n_prompt: int, t0: float, route: str):
        self.request, self.state, self.runner = request, state, runner
        self.req, self.tt, self.n_prompt, self.t0, self.route = req, tt, n_prompt, t0, route
        self.t_done: Optional[float] = None

    @property
    def finish_reason(self) -> Optional[str]:
        return self.tt.finish_reason

    @property
    def stop_hit(self) -> Optional[str]:
        return self.tt.stop_hit

    @property
    def n_tokens(self) -> int:
        return self.tt.n_tokens

    @property
    def error_message(self) -> str:
        return _error_message(self.tt)

    def timings(self) -> dict:
        """llama-server's `timings`: prompt and generation times (ms) and rates (from the
        submit to the first token, and from there to the end)."""
        req = self.req
        end = self.t_done if self.t_done is not None else time.perf_counter()
        first = req.t_first if req.t_first is not None else end
        prompt_ms, predicted_ms = (first - req.t_submit) * 1000.0, (end - first) * 1000.0
        n_gen = self.tt.n_tokens

        def rate(n, ms):
            return (ms / n if n else 0.0), (1000.0 * n / ms if ms > 0 else 0.0)
        p_tok, p_sec = rate(self.n_prompt, prompt_ms)
        g_tok, g_sec = rate(n_gen, predicted_ms)
        return {"prompt_n": self.n_prompt, "prompt_ms": prompt_ms,
                "prompt_per_token_ms": p_tok, "prompt_per_second": p_sec,
                "predicted_n": n_gen, "predicted_ms": predicted_ms,
                "predicted_per_token_ms": g_tok, "predicted_per_second": g_sec}

    async def texts(self) -> AsyncIterator[Tuple[str, bool]]:
        """(text, done) until the end (done True once, with what was held back)."""
        async for text, _entries, done in _texts(self.request, self.runner, self.req, self.tt):
            if done:
                self.t_done = time.perf_counter()
            yield text, done

    def sse(self, objects: AsyncIterator[Any], **kw) -> StreamingResponse:
        """`objects` (made from texts()) as Server-Sent Events (see _sse_response)."""
        return _sse_response(self.request, self.state, self.runner, self.route, [self.req],
                             self.n_prompt, self.t0, objects, **kw)

    async def result(self) -> Optional[str]:
        """The whole text; None when the client left; ApiError(500) when generation failed."""
        out = await _collect_n(self.request, self.state, self.runner, self.route, [self.req],
                               self.n_prompt, [self.tt], self.t0)
        self.t_done = time.perf_counter()
        return None if out is None else out[0][0]


async def start_completion(body: CompletionRequest, request: Request, runner: EngineRunner,
                           tokens: List[int], route: str = "completions",
                           prompt_only: bool = False, min_indent: int = 0) -> CompletionJob:
    """Submit `tokens` (a prompt made by the caller) with `body`'s sampling, stop, lora,
    seed, max_tokens and deadline fields, as /v1/completions does: one choice (body.n is not
    used), no logprobs. prompt_only: evaluate the prompt, generate nothing kept (max_tokens 0
    as /v1/completions' echo). min_indent: llama-server's n_indent (TokenText). ApiError (4xx)
    for a bad request."""
    t0 = time.perf_counter()
    state = _state(request)
    stop = _checked(stop_strings, body.stop, _MAX_STOPS)
    sp = _sampling(state, body)
    loras = _lora(runner, body.lora)
    max_tokens = 1 if prompt_only else _max_tokens(state, runner, body.max_tokens, len(tokens))
    if prompt_only:
        _max_tokens(state, runner, None, len(tokens))      # the prompt must still fit
    req = await _submit(state, runner, tokens, sp, body.seed, max_tokens, stop, loras=loras,
                        deadlines=_deadlines(state, body))
    return CompletionJob(request, state, runner, req, TokenText(stop, min_indent=min_indent),
                         len(tokens), t0, route)


# -- /v1/chat/completions ----------------------------------------------------------------------

class ChatJob:
    """A chat request submitted to its model's runner: what the chat route and the routes
    built on it (Anthropic's /v1/messages, /v1/responses) answer from. chunks() streams the
    chat.completion.chunk dicts (the include_usage chunk last when asked); result() waits
    for the chat.completion dict (None when the client left)."""

    def __init__(self, request: Request, state: ServerState, runner: EngineRunner, creq,
                 reqs: List[GenRequest], tts: List[TokenText], n_prompt: int, want: bool,
                 with_usage: bool, t0: float, route: str):
        self.request, self.state, self.runner = request, state, runner
        self.creq, self.reqs, self.tts = creq, reqs, tts
        self.n_prompt, self.want, self.with_usage, self.t0 = n_prompt, want, with_usage, t0
        self.route = route
        self.meta = ResponseMeta.chat(runner.name)

    def usage(self):
        return usage(self.n_prompt, sum(tt.n_tokens for tt in self.tts))

    async def chunks(self):
        reqs, tts, meta = self.reqs, self.tts, self.meta
        streams = [ChatChunks(meta, i, ChatDeltas(self.creq), self.want)
                   for i in range(len(reqs))]
        for cs in streams:
            yield cs.start()
        async for i, (text, entries, done) in _merged(
                [_texts(self.request, self.runner, r, tt) for r, tt in zip(reqs, tts)]):
            for c in streams[i].push(text, entries):
                yield c
            if done:
                tt = tts[i]
                if tt.finish_reason == "error":
                    yield error_body(500, _error_message(tt), "server_error")
                    return
                for c in streams[i].finish(tt.finish_reason):
                    yield c
        if self.with_usage:
            yield usage_chunk(meta, "chat.completion.chunk", self.usage())

    def sse(self, objects: Optional[AsyncIterator[Any]] = None, **kw) -> StreamingResponse:
        """The streamed answer: chunks() (or `objects` made from them) as Server-Sent Events."""
        return _sse_response(self.request, self.state, self.runner, self.route, self.reqs,
                             self.n_prompt, self.t0,
                             self.chunks() if objects is None else objects, **kw)

    async def result(self) -> Optional[dict]:
        results = await _collect_n(self.request, self.state, self.runner, self.route,
                                   self.reqs, self.n_prompt, self.tts, self.t0)
        if results is None:
            return None
        choices = []
        for i, ((text, entries), tt) in enumerate(zip(results, self.tts)):
            message, finish = await run_in_threadpool(chat_message, self.creq, text,
                                                      tt.finish_reason)
            choices.append(chat_choice(i, message, finish, entries if self.want else None))
        return chat_response(self.meta, choices, self.usage())


async def read_json_object(request: Request) -> dict:
    """The request body as a JSON object (the routes that take it unparsed: /v1/messages,
    /v1/responses); ApiError 400 otherwise."""
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise ApiError(400, "the body must be JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


def chat_request_model(chat: dict) -> ChatCompletionRequest:
    """A chat request dict (made by another API's adapter) as the chat route's request model;
    ApiError 400 naming the first field pydantic refuses."""
    try:
        return ChatCompletionRequest.model_validate(chat)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err.get("loc", ()))
        raise ApiError(400, f"{loc}: {err.get('msg', 'invalid')}") from None


def _chat_options(state: ServerState, runner: EngineRunner, body: ChatCompletionRequest,
                  stop) -> dict:
    """The keywords of pyllamacy.chat.prepare_chat for a chat request (one place for the
    route and the token count)."""
    allow_any = body.allow_unconstrained_patterns
    return dict(functions=body.functions, function_call=body.function_call,
                tools=body.tools, tool_choice=body.tool_choice,
                response_format=body.response_format, grammar=body.grammar, stop=stop,
                parallel_tool_calls=body.parallel_tool_calls,
                chat_template_kwargs=body.chat_template_kwargs,
                allow_unconstrained_patterns=state.settings.allow_unconstrained_patterns
                if allow_any is None else allow_any,
                reasoning_format=runner.settings.reasoning_format
                if body.reasoning_format is None else body.reasoning_format,
                reasoning_effort=body.reasoning_effort)


async def start_chat(body: ChatCompletionRequest, request: Request,
                     route: str = "chat") -> ChatJob:
    """Check a chat request, render its prompt, submit its choices: the chat pipeline of
    every front end. ApiError (4xx) for a bad request."""
    t0 = time.perf_counter()
    state = _state(request)
    runner = await state.acquire(body.model)
    n_logprobs = _checked(chat_logprobs_count, body.logprobs, body.top_logprobs,
                          _MAX_LOGPROBS)
    want = n_logprobs is not None
    with_usage = _include_usage(body)
    stop = _checked(stop_strings, body.stop, _MAX_STOPS)
    _checked(check_messages, body.messages)
    for name in ("tools", "functions", "tool_choice", "function_call", "response_format",
                 "chat_template_kwargs"):
        _checked(check_texts, getattr(body, name), name)
    loras = _lora(runner, body.lora)
    chat_kw = _chat_options(state, runner, body, stop)
    target = state.chat_targets[runner.name]
    media = None
    try:
        if runner.projector is not None and has_media(body.messages):
            # the model's template with the projector's marker for each media part; the
            # projector tokenizes the text around the media (as MultimodalChatHandler does)
            ms = runner.settings
            creq, media = await run_in_threadpool(
                prepare_multimodal_chat, target, runner.media_tokenizer, body.messages,
                allow_files=ms.media_allow_files, allow_urls=ms.media_allow_urls,
                max_media_bytes=ms.media_max_bytes, **chat_kw)
        else:
            creq = await run_in_threadpool(prepare_chat, target, body.messages, **chat_kw)
    except (ValueError, TypeError, KeyError, ChatTemplateError, SchemaError,
            ChatParseError, LlamaError) as e:
        raise ApiError(400, f"{type(e).__name__}: {e}") from None
    toks = creq.prompt_tokens
    n_prompt = len(toks)
    if media is not None:
        # positions of the text and the media; penalties see the text tokens alone
        n_prompt = media.n_pos
        toks = [t for kind, _n, _p, text in media.chunks() if kind == "text" for t in text]
    requested = body.max_completion_tokens if body.max_completion_tokens is not None \
        else body.max_tokens
    max_tokens = _max_tokens(state, runner, requested, n_prompt)
    sp = _sampling(state, body, grammar=creq.grammar)
    reqs = await _submit_n(state, runner, body.n, toks, sp, body.seed, max_tokens, creq.stop,
                           creq.special_tokens, n_logprobs, media=media, loras=loras,
                           deadlines=_deadlines(state, body),
                           grammar_field=("grammar" if body.grammar else "response_format"
                                          if body.response_format else "tools"))
    tts = [TokenText(creq.stop) for _ in reqs]
    return ChatJob(request, state, runner, creq, reqs, tts, n_prompt, want, with_usage, t0,
                   route)


async def count_chat_tokens(body: ChatCompletionRequest, request: Request) -> int:
    """The prompt tokens a chat request would take (its template rendered, nothing run)."""
    state = _state(request)
    runner = await state.acquire(body.model)
    _checked(check_messages, body.messages)
    stop = _checked(stop_strings, body.stop, _MAX_STOPS)
    target = state.chat_targets[runner.name]
    try:
        creq = await run_in_threadpool(prepare_chat, target, body.messages,
                                       **_chat_options(state, runner, body, stop))
    except (ValueError, TypeError, KeyError, ChatTemplateError, SchemaError,
            ChatParseError, LlamaError) as e:
        raise ApiError(400, f"{type(e).__name__}: {e}") from None
    return len(creq.prompt_tokens)


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request):
    job = await start_chat(body, request)
    if body.stream:
        return job.sse()
    out = await job.result()
    return _client_left() if out is None else out


# -- /v1/embeddings ----------------------------------------------------------------------------

@router.post("/v1/embeddings")
async def embeddings(body: EmbeddingRequest, request: Request):
    t0 = time.perf_counter()
    state = _state(request)
    runner = await state.acquire(body.model)
    if not runner.settings.embedding:
        raise ApiError(400, f"model {runner.name!r} is not served for embeddings")
    _checked(check_texts, body.input, "input")
    inp = body.input
    # one text, or one list of token ids, is one input
    inputs = [inp] if isinstance(inp, str) or (inp and isinstance(inp[0], int)) else list(inp)
    if not inputs or len(inputs) > 256:
        raise ApiError(400, "input must be a string, a list of token ids, or a list of 1..256 "
                       "of those", param="input")
    fmt = body.encoding_format or "float"
    if fmt not in ("float", "base64"):
        raise ApiError(400, f"encoding_format must be 'float' or 'base64', not {fmt!r}",
                       param="encoding_format")
    n_embd = runner.model.n_embd
    if body.dimensions is not None and body.dimensions != n_embd:
        raise ApiError(400, f"dimensions: model {runner.name!r} gives vectors of {n_embd} "
                       f"dimensions, not {body.dimensions}", param="dimensions")
    try:
        vecs, total = await run_in_threadpool(state.embedders[runner.name].embed, inputs)
    except (ValueError, TypeError, LlamaError) as e:
        msg = str(e)
        if "outside the vocabulary" in msg:
            msg += (f" of model {runner.name!r}. A client that tokenizes with tiktoken sends "
                    "OpenAI's token ids, not this model's: have it send text (LangChain: "
                    "OpenAIEmbeddings(check_embedding_ctx_length=False))")
        raise ApiError(400, msg, param="input") from None
    if fmt == "base64":
        vecs = [base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode("ascii")
                for v in vecs]
    state.metrics.request(runner.name, "embeddings", 200)
    state.metrics.tokens(runner.name, total, 0)
    took = time.perf_counter() - t0
    state.metrics.latency_s(runner.name, "embeddings", took)
    access(log, method="POST", route="/v1/embeddings", model=runner.name, status=200,
           tokens_in=total, tokens_out=0, duration_s=took)
    return {"object": "list", "model": runner.name,
            "data": [{"object": "embedding", "embedding": v, "index": i}
                     for i, v in enumerate(vecs)],
            "usage": {"prompt_tokens": total, "total_tokens": total}}


# -- models, health, metrics, extras -------------------------------------------------------------

@router.get("/v1/models")
async def models(request: Request):
    """Every model this server knows, with its status (loaded, unloaded, loading, failed)."""
    return {"object": "list", "data": _state(request).model_list()}


@router.get("/v1/models/{model_id:path}")
async def model_info(model_id: str, request: Request):
    """One served model (OpenAI's models.retrieve); 404 naming the served ones otherwise."""
    state = _state(request)
    for m in state.model_list():
        if m["id"] == model_id:
            return m
    raise ApiError(404, f"no model {model_id!r} here; served: {sorted(state.entries)}",
                   param="model")


@router.get("/lora-adapters")
async def lora_adapters(request: Request, model: Optional[str] = None):
    """llama-server's list of a model's LoRA adapters: id (for a request's `lora` field),
    path and the scale requests without that field use."""
    runner = await _state(request).acquire(model)
    return [{"id": i, "path": a.path, "scale": scale} for i, (a, scale) in
            enumerate(runner.loras)]


@router.get("/health")
async def health(request: Request):
    state = _state(request)
    if not state.started or not (state.runners or state.on_demand):
        return JSONResponse({"status": "loading"}, status_code=503)
    return {"status": "ok"}


@router.get("/metrics")
async def metrics(request: Request):
    state = _state(request)
    return PlainTextResponse(state.metrics.render(state.runners),
                             media_type=METRICS_CONTENT_TYPE)


def _tokenize_response(runner: EngineRunner, text: str, count: bool) -> JSONResponse:
    """In a worker thread: a large input takes seconds to tokenize (the tokenizer runs
    without the GIL) and its answer long to encode -- the JSON is made here too."""
    toks = runner.model.tokenize(text.encode("utf-8"), add_special=True, parse_special=True)
    return JSONResponse({"count": len(toks)} if count else {"tokens": toks})


@router.post("/extras/tokenize")
async def tokenize(body: TokenizeRequest, request: Request):
    runner = await _state(request).acquire(body.model)
    _checked(check_text, body.input, "input")
    return await run_in_threadpool(_tokenize_response, runner, body.input, False)


@router.post("/extras/tokenize/count")
async def tokenize_count(body: TokenizeRequest, request: Request):
    runner = await _state(request).acquire(body.model)
    _checked(check_text, body.input, "input")
    return await run_in_threadpool(_tokenize_response, runner, body.input, True)


@router.post("/extras/detokenize")
async def detokenize(body: DetokenizeRequest, request: Request):
    runner = await _state(request).acquire(body.model)
    n_vocab = runner.model.n_vocab
    if any(t < 0 or t >= n_vocab for t in body.tokens):
        raise ApiError(400, f"tokens: token ids must be in 0..{n_vocab - 1}", param="tokens")
    return {"text": runner.model.detokenize(body.tokens).decode("utf-8", "replace")}
