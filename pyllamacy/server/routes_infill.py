"""POST /infill: llama-server's code completion for editors (llama.vscode, llama.vim).

The request gives the code before and after the cursor (`input_prefix`, `input_suffix`), the
line being typed (`prompt`, optional) and chunks of other files (`input_extra`: a list of
{"filename", "text"}); pipeline.prompts.infill_tokens makes the fill-in-the-middle prompt
(the same function /v1/completions' `suffix` uses), cut to llama-server's budget for a slot
(InfillLimits), and routes.start_completion runs it as /v1/completions would. The answer is
llama-server's native completion object (`content`, `stop`, `tokens_predicted`,
`tokens_evaluated`, `stop_type`, `timings`, ...); with `stream: true`, `data: {...}` events
with `content` pieces and a last one with `stop: true`. `n_indent` (as llama-server) ends the
completion before the first line after the first that is less indented than that many spaces
or tabs (`stop_type: "limit"`).

Every field is checked before anything runs: a wrong type or range is a 400 naming the field.
Fields llama-server takes that change nothing here are accepted and ignored: `cache_prompt`
(the runner reuses a slot's prompt on its own), `t_max_prompt_ms` (llama-server does not apply
it either), `id_slot`, `samplers`, `n_probs` (no probabilities in the answer), `response_fields`."""
from __future__ import annotations

import json
import math
from typing import Any, Dict, List, NamedTuple

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from ..pipeline.checks import FieldError, check_text
from ..pipeline.prompts import InfillLimits, InfillUnsupportedError, infill_tokens
from .errors import ApiError
from .routes import CompletionJob, start_completion
from .runner import EngineRunner
from .state import ServerState
from .types import CompletionRequest

__all__ = ["router", "infill_request", "InfillCall"]

router = APIRouter()

_MAX_EXTRA_CHUNKS = 1024        # input_extra chunks per request (the body limit caps the size)

# llama-server field -> (CompletionRequest field, kind) for the sampling fields mapped as they are
_NUMBERS = {"temperature": "temperature", "top_p": "top_p", "min_p": "min_p",
            "typical_p": "typical_p", "repeat_penalty": "repeat_penalty",
            "frequency_penalty": "frequency_penalty", "presence_penalty": "presence_penalty",
            "mirostat_tau": "mirostat_tau", "mirostat_eta": "mirostat_eta",
            "t_max_predict_ms": "t_max_predict_ms", "timeout": "timeout"}
_INTEGERS = {"top_k": "top_k", "mirostat": "mirostat_mode"}
_IGNORED_NUMBERS = ("t_max_prompt_ms", "id_slot", "n_probs")
_MAX_INDENT = 1 << 16


def _bad(field: str, message: str) -> ApiError:
    return ApiError(400, f"{field}: {message}", param=field)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _text(data: dict, field: str, required: bool) -> str:
    if field not in data:
        if required:
            raise _bad(field, "is required (a string)")
        return ""
    v = data[field]
    if not isinstance(v, str):
        raise _bad(field, f"must be a string, not {type(v).__name__}")
    try:
        return check_text(v, field)
    except FieldError as e:
        raise ApiError(400, str(e), param=e.param) from None


def _extra(data: dict) -> List[Tuple[str, str]]:
    """input_extra -> [(filename, text)]; a chunk without filename is llama-server's "tmp"."""
    v = data.get("input_extra")
    if v is None:
        return []
    shape = 'must be a list of {"filename": string, "text": string}'
    if not isinstance(v, list):
        raise _bad("input_extra", f"{shape}, not {type(v).__name__}")
    if len(v) > _MAX_EXTRA_CHUNKS:
        raise _bad("input_extra", f"at most {_MAX_EXTRA_CHUNKS} chunks, got {len(v)}")
    out = []
    for i, chunk in enumerate(v):
        where = f"input_extra[{i}]"
        if not isinstance(chunk, dict):
            raise _bad(where, f"{shape}: got {type(chunk).__name__}")
        text = chunk.get("text")
        if not isinstance(text, str):
            raise _bad(f"{where}.text", "is required (a string)" if text is None else
                       f"must be a string, not {type(text).__name__}")
        name = chunk.get("filename", "tmp")
        if not isinstance(name, str):
            raise _bad(f"{where}.filename", f"must be a string, not {type(name).__name__}")
        try:
            out.append((check_text(name, f"{where}.filename"), check_text(text, f"{where}.text")))
        except FieldError as e:
            raise ApiError(400, str(e), param=e.param) from None
    return out


class InfillCall(NamedTuple):
    """A checked /infill body: the code around the cursor, the line being typed, chunks of
    other files [(filename, text)], the sampling fields as a CompletionRequest, whether only
    the prompt is evaluated (n_predict 0), and llama-server's n_indent (0: none)."""
    prefix: str
    suffix: str
    typed: str
    extra: List[Any]
    body: CompletionRequest
    prompt_only: bool
    n_indent: int


def infill_request(data: Any) -> InfillCall:
    """A /infill body (parsed JSON) checked -> InfillCall. ApiError(400) naming the field."""
    if not isinstance(data, dict):
        raise ApiError(400, f"the body must be a JSON object, not {type(data).__name__}")
    prefix = _text(data, "input_prefix", True)
    suffix = _text(data, "input_suffix", True)
    typed = _text(data, "prompt", False)
    extra = _extra(data)
    fields: Dict[str, Any] = {}
    for native, ours in _NUMBERS.items():
        if data.get(native) is not None:
            if not _is_number(data[native]):
                raise _bad(native, f"must be a number, got {data[native]!r}")
            fields[ours] = data[native]
    for native, ours in _INTEGERS.items():
        if data.get(native) is not None:
            if not _is_int(data[native]):
                raise _bad(native, f"must be an integer, got {data[native]!r}")
            fields[ours] = data[native]
    for native in _IGNORED_NUMBERS:
        if data.get(native) is not None and not _is_number(data[native]):
            raise _bad(native, f"must be a number, got {data[native]!r}")
    n_indent = data.get("n_indent") or 0
    if not _is_int(n_indent) or not 0 <= n_indent <= _MAX_INDENT:
        raise _bad("n_indent", f"must be an integer from 0 to {_MAX_INDENT}, got {n_indent!r}")
    for flag in ("stream", "cache_prompt"):
        if data.get(flag) is not None and not isinstance(data[flag], bool):
            raise _bad(flag, f"must be true or false, got {data[flag]!r}")
    fields["stream"] = bool(data.get("stream"))
    n_predict = data.get("n_predict", -1)
    if n_predict is None:
        n_predict = -1
    if not _is_int(n_predict) or n_predict < -1:
        raise _bad("n_predict", f"must be an integer >= -1 (-1: no limit), got {n_predict!r}")
    prompt_only = n_predict == 0
    fields["max_tokens"] = None if n_predict <= 0 else n_predict
    seed = data.get("seed")
    if seed is not None:
        if not _is_int(seed):
            raise _bad("seed", f"must be an integer, got {seed!r}")
        if seed != -1:                             # -1: llama-server's random seed
            fields["seed"] = seed
    stop = data.get("stop")
    if stop is not None:
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise _bad("stop", "must be a string or a list of strings")
        fields["stop"] = stop
    for name in ("model", "grammar"):
        if data.get(name) is not None:
            if not isinstance(data[name], str):
                raise _bad(name, f"must be a string, not {type(data[name]).__name__}")
            fields[name] = data[name]
    if data.get("lora") is not None:
        fields["lora"] = data["lora"]              # checked by start_completion
    try:
        body = CompletionRequest(**fields)
    except ValidationError as e:
        err = e.errors()[0]
        ours = str(err.get("loc", ("body",))[0])
        native = next((k for k, v in {**_NUMBERS, **_INTEGERS}.items() if v == ours),
                      "n_predict" if ours == "max_tokens" else ours)
        raise _bad(native, err.get("msg", "invalid")) from None
    return InfillCall(prefix, suffix, typed, extra, body, prompt_only, n_indent)


def _prompt(runner: EngineRunner, prefix: str, suffix: str, typed: str,
            extra: List[Tuple[str, str]], n_predict: int) -> List[int]:
    """In a worker thread (long files take a while to tokenize): the FIM prompt, cut as
    llama-server cuts it for a slot of this model."""
    model = runner.model

    def plain(text: str) -> List[int]:
        return model.tokenize(text.encode("utf-8"), add_special=False, parse_special=False) \
            if text else []
    # the typed line is tokenized as llama-server tokenizes a prompt: special-token text parsed
    typed_toks = model.tokenize(typed.encode("utf-8"), add_special=False,
                                parse_special=True) if typed else []
    limits = InfillLimits(n_batch=runner.settings.n_batch, n_ctx=runner.n_ctx_slot,
                          n_predict=max(n_predict, 0))
    return infill_tokens(model, plain(prefix), plain(suffix), runner.settings.spm_infill,
                         f"model {runner.name!r}", typed=typed_toks, extra=extra,
                         limits=limits)


def _stop_type(job: CompletionJob) -> str:
    if job.finish_reason == "length":
        return "limit"
    return "word" if job.stop_hit else "eos"


def _final(job: CompletionJob, content: str, settings: dict, stream: bool) -> dict:
    """llama-server's last object of a completion (its whole text unless streamed)."""
    return {"index": 0, "content": content, "tokens": [], "id_slot": -1, "stop": True,
            "model": job.runner.name, "tokens_predicted": job.n_tokens,
            "tokens_evaluated": job.n_prompt, "generation_settings": settings,
            # the prompt as text, special tokens written out (llama-server's `prompt`)
            "prompt": job.runner.model.detokenize(job.req.tokens, unparse_special=True)
            .decode("utf-8", "replace"),
            "has_new_line": "\n" in content, "truncated": False,
            "stop_type": _stop_type(job), "stopping_word": job.stop_hit or "",
            "tokens_cached": 0, "timings": job.timings()}


def _encode(obj: dict):
    """A native stream event: `data: {...}` (an error object marks the stream failed)."""
    line = b"data: " + json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n\n"
    return line, "error" in obj


@router.post("/infill")
async def infill(request: Request):
    try:
        data = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the body must be JSON") from None
    prefix, suffix, typed, extra, body, prompt_only, n_indent = infill_request(data)
    state: ServerState = request.app.state.server
    runner = await state.acquire(body.model)
    n_predict = body.max_tokens or 0
    try:
        tokens = await run_in_threadpool(_prompt, runner, prefix, suffix, typed, extra,
                                         n_predict)
    except InfillUnsupportedError as e:
        raise ApiError(400, f"infill is not supported by this model: {e}", param="model") \
            from None
    job = await start_completion(body, request, runner, tokens, route="infill",
                                 prompt_only=prompt_only, min_indent=n_indent)
    settings = {"n_predict": -1 if body.max_tokens is None else body.max_tokens,
                "temperature": body.temperature, "top_k": body.top_k, "top_p": body.top_p,
                "min_p": body.min_p, "seed": -1 if body.seed is None else body.seed,
                "stop": list(body.stop or []), "stream": body.stream, "n_indent": n_indent}
    if prompt_only:
        settings["n_predict"] = 0

    if body.stream:
        async def events():
            n = 0
            async for text, done in job.texts():
                if prompt_only:
                    text = ""
                if text:
                    n += 1
                    yield {"index": 0, "content": text, "tokens": [], "stop": False,
                           "id_slot": -1, "tokens_predicted": job.n_tokens,
                           "tokens_evaluated": job.n_prompt}
                if done:
                    if job.finish_reason == "error":
                        yield {"error": {"code": 500, "message": job.error_message,
                                         "type": "server_error"}}
                        return
                    final = _final(job, "", settings, True)
                    if prompt_only:
                        final.update(tokens_predicted=0, stop_type="limit")
                    yield final
        return job.sse(events(), encode=_encode, end=b"")

    text = await job.result()
    if text is None:
        raise ApiError(499, "client closed the request", "cancelled")
    if prompt_only:
        out = _final(job, "", settings, False)
        out.update(tokens_predicted=0, stop_type="limit")
        return out
    return _final(job, text, settings, False)
