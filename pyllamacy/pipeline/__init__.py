"""The response pipeline, shared by `Llama` (pyllamacy.llama, pyllamacy.chat) and the server
(pyllamacy.server.routes): request -> tokens and sampler -> generated tokens -> released text
-> OpenAI-shaped objects. It knows nothing of HTTP and imports neither pyllamacy.llama nor
pyllamacy.server; producing the tokens is the caller's (Llama's Generation, the server's Engine).

    prompts.py    the prompt (str / token ids / FIM suffix / empty -> BOS) -> tokens
    options.py    max_tokens budget, logprobs counts, stop strings: checked once
    checks.py     FieldError naming the field: lone surrogates, chat messages, seeds
    sampling.py   SamplingParams -> build_sampler(); feed_history(): what the penalties see
    text.py       TokenText: (piece, logprob entry) -> released text + entries, finish reason
    responses.py  completion / chat objects and stream chunks, logprobs, usage (llama_types)
"""
from .checks import FieldError, check_messages, check_seed, check_text, check_texts
from .options import (chat_logprobs_count, completion_logprobs_count, stop_strings,
                      token_budget)
from .prompts import infill_tokens, prompt_tokens
from .responses import (ChatChunks, ResponseMeta, chat_chunk, chat_choice, chat_logprobs,
                        chat_response, completion_choice, completion_chunk,
                        completion_logprobs, completion_response, echo_entries, usage)
from .sampling import SamplingParams, build_sampler, feed_history, prefill_tokens
from .text import (LogprobEntry, TextAssembler, TextEntry, TokenText, logprob_entry,
                   normalize_stop, piece_text)

__all__ = ["FieldError", "check_text", "check_texts", "check_messages", "check_seed",
           "prompt_tokens", "infill_tokens", "token_budget", "completion_logprobs_count",
           "chat_logprobs_count", "stop_strings", "SamplingParams", "build_sampler",
           "feed_history", "prefill_tokens", "TextAssembler", "normalize_stop", "TokenText",
           "LogprobEntry", "TextEntry", "piece_text", "logprob_entry", "ResponseMeta",
           "completion_logprobs", "chat_logprobs", "usage", "echo_entries",
           "completion_choice", "completion_response", "completion_chunk", "chat_choice",
           "chat_response", "chat_chunk", "ChatChunks"]
