"""Multimodal input through libmtmd: Projector, MultimodalInput, Context.eval_multimodal, and
the chat handlers over them.

The models: the tiny random F32 text model of gguf_fixtures and a tiny random LLaVA-style
projector for it (4 embeddings per image). Random weights give gibberish, but deterministic
gibberish: greedy output must equal that of llama.cpp's own llama-mtmd-cli on the same files,
and must change with the image.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import threading

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

import pyllamacy as pc  # noqa: E402

from conftest import missing_prerequisite  # noqa: E402
from gguf_fixtures import (TINY, png_bytes, tiny_weights, write_tiny_mmproj,  # noqa: E402
                           write_tiny_model)

QUESTION = "Describe the image."


@pytest.fixture(scope="module")
def mm(tmp_path_factory, smollm2_path):
    d = tmp_path_factory.mktemp("mm")
    n_vocab = len(gguf.GGUFReader(smollm2_path).fields["tokenizer.ggml.tokens"].data)
    text = str(d / "text.gguf")
    write_tiny_model(text, smollm2_path, tiny_weights(n_vocab))
    proj = str(d / "mmproj.gguf")
    write_tiny_mmproj(proj, TINY["n_embd"])
    images = []
    for seed in range(3):
        rgb = np.random.default_rng(seed).integers(0, 256, (40, 48, 3), dtype=np.uint8)
        path = d / f"img{seed}.png"
        path.write_bytes(png_bytes(rgb))
        images.append((str(path), rgb))
    return text, proj, images, d


@pytest.fixture(scope="module")
def loaded(mm):
    text, proj, _, _ = mm
    model = pc.Model(text)
    projector = pc.Projector(model, proj, n_threads=1)
    yield model, projector
    projector.close()
    model.close()


def _prompt(marker):
    # the model's own template (SmolLM2's ChatML) for one user turn, as llama-mtmd-cli renders it
    return f"<|im_start|>user\n{marker}{QUESTION}<|im_end|>\n<|im_start|>assistant\n"


def _greedy(model, projector, image, n=8):
    inp = projector.tokenize(_prompt(projector.marker), [image])
    with pc.Context(model, n_ctx=256, n_threads=1) as ctx:
        end = ctx.eval_multimodal(inp)
        assert end == inp.n_pos
        toks = ctx.generate(pc.Sampler(model).greedy(), max_tokens=n).run()
    return model.detokenize(toks).decode("utf-8", errors="replace")


def _mtmd_cli():
    d = pc.build_info().get("build_bin_dir")
    exe = os.path.join(d, "llama-mtmd-cli") if d else None
    if exe and os.path.exists(exe):
        return exe
    missing_prerequisite("llama_tools", f"llama.cpp's llama-mtmd-cli is not built in {d!r}; "
                                        "the build must produce it")


@pytest.mark.llama_tools
def test_matches_llama_mtmd_cli(mm, loaded):
    exe = _mtmd_cli()
    text, proj, images, _ = mm
    model, projector = loaded
    outs = []
    for path, _ in images:
        with open(path, "rb") as f:
            ours = _greedy(model, projector, f.read())
        r = subprocess.run([exe, "-m", text, "--mmproj", proj, "--image", path, "-p", QUESTION,
                            "--temp", "0", "-n", "8", "-t", "1", "-c", "256"],
                           capture_output=True, timeout=120)
        assert r.returncode == 0, r.stderr.decode(errors="replace")[-2000:]
        theirs = r.stdout.decode("utf-8", errors="replace").strip()
        assert ours.strip() == theirs, (ours, theirs)
        outs.append(ours)
    assert len(set(outs)) == len(outs)            # the image matters


def test_pixels_equal_the_file(mm, loaded):
    """An RGB array gives what the PNG file holding the same pixels gives."""
    _, _, images, _ = mm
    model, projector = loaded
    path, rgb = images[1]
    with open(path, "rb") as f:
        from_file = _greedy(model, projector, f.read())
    assert _greedy(model, projector, rgb) == from_file


def test_chunks_and_positions(loaded):
    model, projector = loaded
    img = png_bytes(np.full((16, 16, 3), 200, dtype=np.uint8))
    inp = projector.tokenize(f"a {projector.marker} b {projector.marker} c", [img, img])
    kinds = [c[0] for c in inp.chunks()]
    assert kinds == ["text", "image", "text", "image", "text"]
    assert [c[1] for c in inp.chunks() if c[0] == "image"] == [4, 4]
    assert inp.n_tokens == sum(c[1] for c in inp.chunks()) == inp.n_pos
    assert inp.chunks()[0][3] == model.tokenize("a ", add_special=True, parse_special=True)
    assert projector.supports_vision and not projector.supports_audio
    assert not projector.uses_mrope and projector.marker == "<__media__>"
    assert len(inp) == 5 and "MultimodalInput" in repr(inp)
    with pc.Context(model, n_ctx=64, n_threads=1) as ctx:
        ctx.eval(model.tokenize("prefix"))
        p0 = ctx.seq_pos_max(0) + 1
        assert ctx.eval_multimodal(inp) == p0 + inp.n_pos      # after what the context holds
        assert ctx.eval_multimodal(inp, pos=0) == inp.n_pos    # or from a position given
        assert ctx.seq_pos_max(0) == inp.n_pos - 1


# -- bad input ------------------------------------------------------------------------------------

def test_bad_media_and_prompts(mm, loaded, tmp_path, model):
    _, proj, images, _ = mm
    tiny, projector = loaded
    m = projector.marker
    good = png_bytes(np.zeros((8, 8, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="1 media marker"):
        projector.tokenize(f"{m} text", [])
    with pytest.raises(ValueError, match="0 media marker"):
        projector.tokenize("no marker", [good])
    with pytest.raises(pc.MediaError, match="could not be decoded"):
        projector.tokenize(m, [b"this is not an image"])
    with pytest.raises(pc.MediaError, match="empty"):
        projector.tokenize(m, [b""])
    with pytest.raises(pc.MediaError, match="could not be decoded"):
        projector.tokenize(m, [good[:40]])                         # truncated PNG
    with pytest.raises(TypeError):
        projector.tokenize(m, [np.zeros((8, 8), dtype=np.uint8)])  # not RGB
    with pytest.raises(TypeError):
        projector.tokenize(m, [np.zeros((8, 8, 3), dtype=np.float32)])
    with pytest.raises(TypeError):
        projector.tokenize(m, ["img.png"])                         # a path is not the bytes
    with pytest.raises(TypeError):
        projector.tokenize(42, [])
    # the projector still works
    assert projector.tokenize(m, [good]).n_tokens == 4
    # files
    with pytest.raises(FileNotFoundError, match="multimodal projector file not found"):
        pc.Projector(tiny, tmp_path / "nope.gguf")
    with pytest.raises(pc.ProjectorLoadError):
        pc.Projector(tiny, mm[0])                                   # a text model
    with pytest.raises(pc.ProjectorLoadError):                      # width 64 vs SmolLM2's 576
        pc.Projector(model, proj, n_threads=1)
    # a prompt of another model's projector, a context too small, a closed projector
    inp = projector.tokenize(_prompt(m), [good])
    with pc.Context(model, n_ctx=64, n_threads=1) as other:
        with pytest.raises(ValueError, match="another Model"):
            other.eval_multimodal(inp)
    with pc.Context(tiny, n_ctx=64, n_threads=1) as small:
        with pytest.raises(pc.ContextOverflowError):
            small.eval_multimodal(inp, pos=small.n_ctx - 2)   # llama.cpp rounds n_ctx up
        with pytest.raises(ValueError):
            small.eval_multimodal(inp, pos=-1)
        with pytest.raises(TypeError):
            small.eval_multimodal("text")
    with pc.Model(mm[0]) as m2:
        p2 = pc.Projector(m2, proj, n_threads=1)
        inp2 = p2.tokenize(_prompt(m), [good])
        p2.close()
        p2.close()
        assert p2.closed
        with pytest.raises(pc.ClosedError):
            p2.tokenize(m, [good])
        with pc.Context(m2, n_ctx=64, n_threads=1) as ctx:
            with pytest.raises(pc.ClosedError):
                ctx.eval_multimodal(inp2)


def test_model_outlives_its_projector(mm):
    text, proj, images, _ = mm
    model = pc.Model(text)
    projector = pc.Projector(model, proj, n_threads=1)
    model.close()                         # deferred: the projector uses the weights
    assert model.closed
    with open(images[0][0], "rb") as f:
        inp = projector.tokenize(_prompt(projector.marker), [f.read()])
    assert inp.n_tokens > 4          # text and the image's 4
    projector.close()                     # now the model goes too
    del inp


def test_one_call_at_a_time(loaded):
    """Two threads on one projector: one waits for BusyError, none crashes."""
    model, projector = loaded
    img = png_bytes(np.random.default_rng(9).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    errors, done = [], []

    def work():
        try:
            for _ in range(20):
                done.append(projector.tokenize(projector.marker, [img]).n_tokens)
        except pc.BusyError as e:
            errors.append(e)
    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert done and all(n == done[0] for n in done)


# -- the chat handler -----------------------------------------------------------------------------

def _data_uri(path):
    import base64
    with open(path, "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode()


def _msgs(image_part, text=QUESTION):
    return [{"role": "user", "content": [image_part, {"type": "text", "text": text}]}]


@pytest.fixture(scope="module")
def chat_llm(mm):
    from pyllamacy import Llama
    from pyllamacy.chat_multimodal import Llava15ChatHandler
    text, proj, _, _ = mm
    handler = Llava15ChatHandler(clip_model_path=proj)
    llm = Llama(text, chat_handler=handler, n_ctx=256, n_threads=1, verbose=False)
    yield llm
    llm.close()
    handler.close()


def _reply(llm, messages, **kw):
    r = llm.create_chat_completion(messages=messages, max_tokens=8, temperature=0, **kw)
    return r["choices"][0]["message"]["content"], r


def test_chat_handler_equals_the_core_path(mm, chat_llm):
    from pyllamacy import chat
    _, _, images, _ = mm
    llm = chat_llm
    projector = llm.chat_handler.projector(llm)
    replies = []
    for path, _ in images:
        got, r = _reply(llm, _msgs({"type": "image_url", "image_url": {"url": _data_uri(path)}}))
        # the same prompt through the core: the template's text, the projector, greedy
        req = chat.prepare_chat(llm, [{"role": "user", "content": projector.marker + QUESTION}])
        with open(path, "rb") as f:
            inp = projector.tokenize(chat.prompt_text(llm, req.plan), [f.read()])
        with pc.Context(llm.model, n_ctx=256, n_threads=1) as ctx:
            ctx.eval_multimodal(inp)
            want = llm.model.detokenize(ctx.generate(pc.Sampler(llm.model).greedy(),
                                                     max_tokens=8).run()).decode(errors="replace")
        assert got == want
        assert r["usage"]["prompt_tokens"] == inp.n_pos
        stream = list(llm.create_chat_completion(
            messages=_msgs({"type": "image_url", "image_url": {"url": _data_uri(path)}}),
            max_tokens=8, temperature=0, stream=True))
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in stream) == got
        replies.append(got)
    assert len(set(replies)) == len(replies)


def test_chat_image_sources_agree(mm, chat_llm):
    _, _, images, _ = mm
    path, rgb = images[2]
    want, _ = _reply(chat_llm, _msgs({"type": "image_url", "image_url": {"url": _data_uri(path)}}))
    for part in ({"type": "image_url", "image_url": path},
                 {"type": "image_url", "image_url": {"url": "file://" + path}},
                 {"type": "image", "image": rgb}):
        assert _reply(chat_llm, _msgs(part))[0] == want


def test_chat_after_images_text_is_clean(mm, chat_llm, smollm2_path):
    """A text prompt after an image reuses nothing computed from the image; so does a chat with
    another image."""
    from pyllamacy import Llama
    text, _, images, _ = mm
    with Llama(text, n_ctx=256, n_threads=1, verbose=False) as fresh:
        want_text = fresh("Once upon a time", max_tokens=6, temperature=0)["choices"][0]["text"]
        want_chat = fresh.create_chat_completion(
            messages=[{"role": "user", "content": "Hello"}], max_tokens=6,
            temperature=0)["choices"][0]["message"]["content"]
    a = _reply(chat_llm, _msgs({"type": "image_url", "image_url": images[0][0]}))[0]
    assert chat_llm("Once upon a time", max_tokens=6,
                    temperature=0)["choices"][0]["text"] == want_text
    b = _reply(chat_llm, _msgs({"type": "image_url", "image_url": images[1][0]}))[0]
    a2 = _reply(chat_llm, _msgs({"type": "image_url", "image_url": images[0][0]}))[0]
    assert a2 == a and b != a
    # text-only messages through the handler: the ordinary chat path
    assert chat_llm.create_chat_completion(
        messages=[{"role": "user", "content": "Hello"}], max_tokens=6,
        temperature=0)["choices"][0]["message"]["content"] == want_chat


def test_chat_handler_honours_every_argument(mm, chat_llm, monkeypatch):
    """parallel_tool_calls, chat_template_kwargs and stopping_criteria reach the template and
    the generation through the handler (they used to be dropped when a chat_handler was set)."""
    from pyllamacy import chat_multimodal
    _, _, images, _ = mm
    seen = {}
    real = chat_multimodal.prepare_chat

    def spy(*args, **kw):
        seen.update(kw)
        return real(*args, **kw)
    monkeypatch.setattr(chat_multimodal, "prepare_chat", spy)
    msgs = _msgs({"type": "image_url", "image_url": images[0][0]})
    full, r = _reply(chat_llm, msgs, parallel_tool_calls=True,
                     chat_template_kwargs={"add_vision_id": False})
    assert seen["parallel_tool_calls"] is True
    assert seen["chat_template_kwargs"] == {"add_vision_id": False}
    assert r["usage"]["completion_tokens"] > 0
    calls = []

    def stop_now(ids, logits):
        calls.append(len(ids))
        return True
    _, r = _reply(chat_llm, msgs, stopping_criteria=stop_now)
    assert calls and r["usage"]["completion_tokens"] == 0
    assert r["choices"][0]["finish_reason"] == "stop"


def test_chat_bad_media(mm, tmp_path):
    from pyllamacy import Llama
    from pyllamacy.chat_multimodal import MultimodalChatHandler
    text, proj, images, _ = mm
    with pytest.raises(FileNotFoundError):
        MultimodalChatHandler(str(tmp_path / "none.gguf"))
    strict = MultimodalChatHandler(proj, allow_files=False, allow_urls=False)
    with Llama(text, chat_handler=strict, n_ctx=256, n_threads=1, verbose=False) as llm:
        for part, exc, msg in [
                ({"type": "image_url", "image_url": images[0][0]}, pc.MediaError, "not allowed"),
                ({"type": "image_url", "image_url": "https://example.invalid/a.png"},
                 pc.MediaError, "not allowed"),
                ({"type": "image_url", "image_url": "data:image/png;base64,%%%"},
                 pc.MediaError, "could not be decoded|base64"),
                ({"type": "image_url", "image_url": "data:image/png,notbase64"},
                 pc.MediaError, "could not be decoded"),
                ({"type": "image_url", "image_url": {}}, pc.MediaError, "needs a URL"),
                ({"type": "image_url", "image_url": "ftp://x/y.png"}, pc.MediaError, "scheme"),
                ({"type": "video", "video": "x"}, ValueError, "unknown type"),
                ({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
                 pc.MediaError, "could not be decoded")]:
            with pytest.raises(exc, match=msg):
                _reply(llm, _msgs(part))
        # still fine afterwards
        assert isinstance(_reply(llm, _msgs({"type": "image_url",
                                             "image_url": _data_uri(images[0][0])}))[0], str)
    strict.close()


def test_images_without_a_projector_are_refused(smollm2_path):
    from pyllamacy import Llama
    with Llama(smollm2_path, n_ctx=256, n_threads=1, verbose=False) as llm:
        with pytest.raises(ValueError, match="multimodal projector"):
            llm.create_chat_completion(messages=_msgs(
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}))
