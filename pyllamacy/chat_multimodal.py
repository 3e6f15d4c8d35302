"""Chat with images (and audio) for Llama: llama-cpp-python's multimodal chat handlers.

    from pyllamacy import Llama
    from pyllamacy.chat_multimodal import Llava15ChatHandler      # or MultimodalChatHandler

    llm = Llama("model.gguf", chat_handler=Llava15ChatHandler(clip_model_path="mmproj.gguf"),
                n_ctx=4096)
    llm.create_chat_completion(messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}]}])

The messages are rendered with the model's own chat template (llama.cpp's chat layer, as for
text chat; tools and response_format work the same), each image or audio part standing as the
projector's marker; libmtmd then tokenizes the text around the markers, encodes the media with
the projector (an mmproj GGUF) and the reply is generated as usual. This is what llama-server
does for /v1/chat/completions with --mmproj. llama-cpp-python's per-family handler names
(Llava15ChatHandler, Llava16ChatHandler, MoondreamChatHandler, ...) are the same handler here:
the model's template decides the format, so use a GGUF that carries one (or chat_format=).

Media parts: {"type": "image_url", "image_url": {"url": URL}} (or "image_url": URL) with URL a
data: URI (base64), a local path or file:// URL (allow_files), or http(s) (allow_urls; read up
to max_media_bytes); {"type": "input_audio", "input_audio": {"data": BASE64, "format": "wav"}};
raw bytes or an RGB uint8 array as {"type": "image", "image": ...}.

Each call evaluates the whole conversation again (the prompt cache reuses no prefix through an
image: an image's embeddings are never taken for another's).
"""
from __future__ import annotations

import base64
import binascii
import os
import urllib.parse
import urllib.request
import weakref
from typing import Any, List, Optional, Tuple

import numpy as np

from .chat import prepare_chat, prompt_text
from ._llama import MediaError, Projector

__all__ = ["MultimodalChatHandler", "Llava15ChatHandler", "Llava16ChatHandler",
           "MoondreamChatHandler", "NanoLlavaChatHandler", "Llama3VisionAlphaChatHandler",
           "MiniCPMv26ChatHandler", "Qwen25VLChatHandler", "Gemma3ChatHandler",
           "load_media", "split_media", "has_media", "prepare_multimodal_chat",
           "MAX_MEDIA_BYTES"]

_MEDIA_TYPES = ("image_url", "input_audio", "image")


MAX_MEDIA_BYTES = 50 << 20


def load_media(part: dict, *, allow_files: bool = True, allow_urls: bool = True,
               max_media_bytes: int = MAX_MEDIA_BYTES, timeout: float = 30.0):
    """The bytes (or RGB array) of one media content part (see the module docstring)."""
    kind = part.get("type")
    if kind == "image":
        data = part.get("image")
        if isinstance(data, (bytes, bytearray, memoryview, np.ndarray)):
            return data
        raise MediaError("an 'image' part must hold bytes or an RGB uint8 array")
    if kind == "input_audio":
        audio = part.get("input_audio") or {}
        if not isinstance(audio, dict) or not isinstance(audio.get("data"), str):
            raise MediaError("an 'input_audio' part needs {'data': base64, 'format': ...}")
        return _b64(audio["data"], "input_audio.data", max_media_bytes)
    url = part.get("image_url")
    if isinstance(url, dict):
        url = url.get("url")
    if not isinstance(url, str) or not url:
        raise MediaError("an 'image_url' part needs a URL ({'image_url': {'url': ...}})")
    if url.startswith("data:"):
        head, sep, payload = url.partition(",")
        if not sep:
            raise MediaError("a data: URI without a comma")
        if head.endswith(";base64"):
            return _b64(payload, "the data: URI", max_media_bytes)
        raw = urllib.parse.unquote_to_bytes(payload)
        if len(raw) > max_media_bytes:
            raise MediaError(f"the data: URI holds more than {max_media_bytes} bytes")
        return raw
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme in ("http", "https"):
        if not allow_urls:
            raise MediaError("image URLs are not allowed here; send a data: URI")
        with urllib.request.urlopen(url, timeout=timeout) as r:
            data = r.read(max_media_bytes + 1)
        if len(data) > max_media_bytes:
            raise MediaError(f"{url} is larger than {max_media_bytes} bytes")
        return data
    if scheme in ("file", "") or (len(scheme) == 1 and os.name == "nt"):
        if not allow_files:
            raise MediaError("local image paths are not allowed here; send a data: URI")
        path = urllib.parse.unquote(urllib.parse.urlsplit(url).path) if scheme == "file" else url
        try:
            size = os.path.getsize(path)
        except OSError as e:
            raise MediaError(f"cannot read the image {path}: {e.strerror or e}") from e
        if size > max_media_bytes:
            raise MediaError(f"{path} is larger than {max_media_bytes} bytes")
        with open(path, "rb") as f:
            return f.read()
    raise MediaError(f"unsupported image URL scheme {scheme!r}")


def _b64(text: str, what: str, limit: int) -> bytes:
    if len(text) > limit * 4 // 3 + 4:
        raise MediaError(f"{what} holds more than {limit} bytes")
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as e:
        raise MediaError(f"{what} is not valid base64: {e}") from e


class MultimodalChatHandler:
    """A chat_handler for Llama that accepts image (and audio) content parts.

    MultimodalChatHandler(clip_model_path, verbose=True, *, use_gpu=True, n_threads=None,
                          allow_files=True, allow_urls=True, max_media_bytes=50 MiB)

    The projector loads on the first call, for that Llama's model (one per model)."""

    def __init__(self, clip_model_path: str, verbose: bool = True, *, use_gpu: bool = True,
                 n_threads: Optional[int] = None, allow_files: bool = True,
                 allow_urls: bool = True, max_media_bytes: int = MAX_MEDIA_BYTES,
                 **projector_kw):
        if not isinstance(clip_model_path, (str, os.PathLike)):
            raise TypeError(f"clip_model_path must be a path, not "
                            f"{type(clip_model_path).__name__}")
        if not os.path.exists(clip_model_path):
            raise FileNotFoundError(2, "multimodal projector file not found", clip_model_path)
        self.clip_model_path = os.fspath(clip_model_path)
        self.verbose = verbose
        self.allow_files = allow_files
        self.allow_urls = allow_urls
        self.max_media_bytes = int(max_media_bytes)
        self._projector_kw = dict(use_gpu=use_gpu, n_threads=n_threads, **projector_kw)
        self._projectors: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()

    @classmethod
    def from_pretrained(cls, repo_id: str, filename: Optional[str], local_dir=None,
                        cache_dir=None, **kwargs) -> "MultimodalChatHandler":
        """The projector from the Hugging Face Hub (pyllamacy.hub, as Llama.from_pretrained):
        filename is a file of the repository or a pattern matching one ("*mmproj*")."""
        from . import hub
        if filename is None:
            raise ValueError("filename is required: the mmproj GGUF of the repository (or a "
                             "pattern such as '*mmproj*.gguf')")
        path = hub.download(repo_id, filename, local_dir=local_dir, cache_dir=cache_dir)
        return cls(clip_model_path=path, **kwargs)

    def projector(self, llama) -> Projector:
        """The Projector for this Llama's model (loaded on first use)."""
        model = llama.model
        p = self._projectors.get(model)
        if p is None or p.closed:
            kw = dict(self._projector_kw)
            if kw.get("n_threads") is None:
                kw["n_threads"] = getattr(llama, "n_threads", None)
            p = Projector(model, self.clip_model_path, **kw)
            self._projectors[model] = p
        return p

    def close(self) -> None:
        for p in list(self._projectors.values()):
            p.close()
        self._projectors.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def split_messages(self, messages, marker: str) -> Tuple[List[dict], List[Any]]:
        """Messages with every media part replaced by `marker` text (content as one string),
        and the media in order."""
        return split_media(messages, marker, allow_files=self.allow_files,
                           allow_urls=self.allow_urls, max_media_bytes=self.max_media_bytes)

    def __call__(self, *, llama, messages, functions=None, function_call=None, tools=None,
                 tool_choice=None, response_format=None, grammar=None, stop=None,
                 parallel_tool_calls=None, chat_template_kwargs=None, stopping_criteria=None,
                 **kwargs):
        """llama-cpp-python's handler call: Llama.create_chat_completion's arguments (all of
        them, parallel_tool_calls, chat_template_kwargs and stopping_criteria included)."""
        req, prompt = prepare_multimodal_chat(
            llama, self.projector(llama), messages, allow_files=self.allow_files,
            allow_urls=self.allow_urls, max_media_bytes=self.max_media_bytes,
            functions=functions, function_call=function_call, tools=tools,
            tool_choice=tool_choice, response_format=response_format, grammar=grammar,
            stop=stop, parallel_tool_calls=parallel_tool_calls,
            chat_template_kwargs=chat_template_kwargs)
        return llama.complete_chat(req, prompt, stopping_criteria=stopping_criteria, **kwargs)


def split_media(messages, marker: str, *, allow_files: bool = True, allow_urls: bool = True,
                max_media_bytes: int = MAX_MEDIA_BYTES) -> Tuple[List[dict], List[Any]]:
    """Messages with every media part replaced by `marker` text (content as one string), and
    the media (load_media) in order."""
    if not isinstance(messages, (list, tuple)):
        raise TypeError("messages must be a list of {'role', 'content'} dicts")
    out, media = [], []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            m = dict(m)
        content = m.get("content")
        if not isinstance(content, (list, tuple)):
            out.append(m)
            continue
        texts = []
        for j, part in enumerate(content):
            if isinstance(part, str):
                texts.append(part)
                continue
            if not isinstance(part, dict):
                raise TypeError(f"messages[{i}].content[{j}] must be a dict part")
            kind = part.get("type")
            if kind == "text":
                texts.append(str(part.get("text", "")))
            elif kind in _MEDIA_TYPES:
                media.append(load_media(part, allow_files=allow_files, allow_urls=allow_urls,
                                        max_media_bytes=max_media_bytes))
                texts.append(marker)
            else:
                raise ValueError(f"messages[{i}].content[{j}] has an unknown type {kind!r}")
        out.append(dict(m, content="".join(texts)))
    return out, media


def has_media(messages) -> bool:
    """Whether any message holds an image or audio part."""
    for m in messages if isinstance(messages, (list, tuple)) else ():
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, (list, tuple)) and any(
                isinstance(p, dict) and p.get("type") in _MEDIA_TYPES for p in content):
            return True
    return False


def prepare_multimodal_chat(target, projector: Projector, messages, *, allow_files: bool = True,
                            allow_urls: bool = True, max_media_bytes: int = MAX_MEDIA_BYTES,
                            **chat_kw):
    """The chat request for messages with media: (ChatRequest, MultimodalInput or None when
    there are no media). The template renders the projector's marker where each media part
    was (as llama-server does); the projector tokenizes that text around the media. Shared by
    MultimodalChatHandler and the server. target: a Llama, or what prepare_chat takes."""
    text_messages, media = split_media(messages, projector.marker, allow_files=allow_files,
                                       allow_urls=allow_urls, max_media_bytes=max_media_bytes)
    req = prepare_chat(target, text_messages, **chat_kw)
    if not media:
        return req, None
    if req.plan is None:
        raise ValueError("images need the model's own chat template; this model uses a "
                         f"function-style chat_format ({target.chat_format!r})")
    return req, projector.tokenize(prompt_text(target, req.plan), media)


# llama-cpp-python's names: one handler, the model's own template decides the format
Llava15ChatHandler = MultimodalChatHandler
Llava16ChatHandler = MultimodalChatHandler
MoondreamChatHandler = MultimodalChatHandler
NanoLlavaChatHandler = MultimodalChatHandler
Llama3VisionAlphaChatHandler = MultimodalChatHandler
MiniCPMv26ChatHandler = MultimodalChatHandler
Qwen25VLChatHandler = MultimodalChatHandler
Gemma3ChatHandler = MultimodalChatHandler
