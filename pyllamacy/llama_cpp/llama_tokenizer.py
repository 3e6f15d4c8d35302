"""``llama_cpp.llama_tokenizer``: tokenizer objects for ``Llama(tokenizer=...)``.

A Llama given ``tokenizer=`` tokenizes and detokenizes through it (tokenize(text, add_bos,
special) -> ids; detokenize(ids, prev_tokens=, special=) -> bytes). LlamaTokenizer is the
model's own vocabulary (pyllamacy.llama.LlamaTokenizer); LlamaHFTokenizer wraps a Hugging Face
``transformers`` tokenizer, for models whose GGUF vocabulary is not the one to use.
"""
from __future__ import annotations

import abc
from typing import Any, List, Optional

from ..llama import LlamaTokenizer as _ModelTokenizer

__all__ = ["BaseLlamaTokenizer", "LlamaTokenizer", "LlamaHFTokenizer"]


class BaseLlamaTokenizer(abc.ABC):
    """What ``Llama(tokenizer=...)`` calls."""

    @abc.abstractmethod
    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = True) -> List[int]:
        """UTF-8 `text` -> token ids; `add_bos`: prepend the BOS token where the model uses
        one; `special`: parse special-token texts (<|im_start|>, ...) as those tokens."""

    @abc.abstractmethod
    def detokenize(self, tokens: List[int], prev_tokens: Optional[List[int]] = None,
                   special: bool = False) -> bytes:
        """Token ids -> UTF-8 bytes; with `prev_tokens`, only the text that `tokens` add after
        them; `special`: render special tokens as their text."""


class LlamaTokenizer(_ModelTokenizer, BaseLlamaTokenizer):
    """The vocabulary of a Llama (what ``Llama.tokenizer()`` returns)."""

    @classmethod
    def from_ggml_file(cls, path: str) -> "LlamaTokenizer":
        """The tokenizer of a GGUF file, loaded without weights (vocab_only)."""
        from .llama import Llama
        return cls(Llama(model_path=path, vocab_only=True, verbose=False))


class LlamaHFTokenizer(BaseLlamaTokenizer):
    """A Hugging Face tokenizer (anything with ``encode(text, add_special_tokens=)`` and
    ``decode(ids, skip_special_tokens=)``, e.g. ``transformers.AutoTokenizer``)."""

    def __init__(self, hf_tokenizer: Any):
        for method in ("encode", "decode"):
            if not callable(getattr(hf_tokenizer, method, None)):
                raise TypeError(f"hf_tokenizer must have an {method}() method (a transformers "
                                f"tokenizer), got {type(hf_tokenizer).__name__}")
        self.hf_tokenizer = hf_tokenizer

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = True) -> List[int]:
        """As llama-cpp-python: `special` decides add_special_tokens (the HF tokenizer adds
        BOS itself when its config says so); `add_bos` is not consulted."""
        if isinstance(text, str):
            text = text.encode("utf-8")
        return list(self.hf_tokenizer.encode(text.decode("utf-8", errors="ignore"),
                                             add_special_tokens=special))

    def _decode(self, tokens: List[int], special: bool) -> bytes:
        return self.hf_tokenizer.decode(list(tokens), skip_special_tokens=not special).encode(
            "utf-8", errors="ignore")

    def detokenize(self, tokens: List[int], prev_tokens: Optional[List[int]] = None,
                   special: bool = False) -> bytes:
        if prev_tokens is None:
            return self._decode(tokens, special)
        prev = list(prev_tokens)
        before = self._decode(prev, special)
        return self._decode(prev + list(tokens), special)[len(before):]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str) -> "LlamaHFTokenizer":
        """AutoTokenizer.from_pretrained(...) wrapped; needs the `transformers` package."""
        try:
            from transformers import AutoTokenizer
        except ImportError as e:
            raise ImportError("LlamaHFTokenizer.from_pretrained needs the `transformers` "
                              "package: pip install transformers") from e
        return cls(AutoTokenizer.from_pretrained(
            pretrained_model_name_or_path=pretrained_model_name_or_path))
