"""How much of llama-cpp-python 0.3.36's public module surface pyllamacy.llama_cpp covers.

The reference is llama-cpp-python's own source, extracted from the pinned, sha256-checked sdist
into vendor/llama_cpp_python/ by buildtools/vendor.py: each module's public names (top-level
defs, classes and assignments, plus __all__ when present; no _private ones) are compared with
dir() of the matching pyllamacy.llama_cpp module. Coverage is printed per module (pytest -s);
each module has a floor at the number of names reached, so a name that goes missing fails, and the
names integrations use must all be present.
"""
from __future__ import annotations

import ast
import importlib

import pytest

from conftest import ROOT, missing_prerequisite

SOURCE = ROOT / "vendor" / "llama_cpp_python" / "llama_cpp"

# names present when this floor was set (of llama-cpp-python's public names): a name that goes
# missing fails; raise a floor when adding names
FLOORS = {
    "llama": 6,               # of 7: no MinTokensLogitsProcessor
    "llama_types": 62,        # of 62
    "llama_chat_format": 58,  # of 60: no functionary handlers
    "llama_grammar": 11,      # of 23: the rest are internals of its Python schema converter
    "llama_speculative": 2,   # of 2
    "llama_cache": 4,         # of 4
    "llama_tokenizer": 3,     # of 3
    "llama_cpp": 203,         # of 534 ctypes names: those integrations call (no raw pointers)
}

# names that integrations (LangChain, LlamaIndex, instructor, outlines, guidance, server code)
# import from llama-cpp-python; all must exist
REQUIRED = {
    "llama": ["Llama", "LlamaState", "LogitsProcessorList", "StoppingCriteriaList"],
    "llama_types": ["ChatCompletionRequestMessage", "ChatCompletionRequestUserMessage",
                    "ChatCompletionRequestSystemMessage", "ChatCompletionRequestAssistantMessage",
                    "ChatCompletionRequestToolMessage", "ChatCompletionTool",
                    "ChatCompletionToolChoiceOption", "ChatCompletionRequestResponseFormat",
                    "ChatCompletionFunction", "CreateChatCompletionResponse",
                    "CreateChatCompletionStreamResponse", "CreateCompletionResponse",
                    "ChatCompletionChunk", "Completion", "CompletionChunk",
                    "CreateEmbeddingResponse", "JsonType"],
    "llama_chat_format": ["ChatFormatter", "ChatFormatterResponse", "Jinja2ChatFormatter",
                          "LlamaChatCompletionHandler", "LlamaChatCompletionHandlerRegistry",
                          "get_chat_completion_handler", "register_chat_completion_handler",
                          "register_chat_format", "chat_formatter_to_chat_completion_handler",
                          "hf_autotokenizer_to_chat_formatter",
                          "hf_tokenizer_config_to_chat_formatter",
                          "hf_autotokenizer_to_chat_completion_handler",
                          "hf_tokenizer_config_to_chat_completion_handler",
                          "format_llama2", "format_llama3", "format_alpaca", "format_chatml",
                          "format_mistrallite", "format_zephyr", "format_gemma", "format_phind",
                          "Llava15ChatHandler", "Llava16ChatHandler", "MoondreamChatHandler",
                          "chatml_function_calling", "guess_chat_format_from_gguf_metadata"],
    "llama_grammar": ["LlamaGrammar", "JSON_GBNF", "JSON_ARR_GBNF", "ARITHMETIC_GBNF",
                      "C_GBNF", "CHESS_GBNF", "JAPANESE_GBNF", "LIST_GBNF", "SchemaConverter",
                      "json_schema_to_gbnf", "LLAMA_GRAMMAR_DEFAULT_ROOT"],
    "llama_speculative": ["LlamaDraftModel", "LlamaPromptLookupDecoding"],
    "llama_cache": ["BaseLlamaCache", "LlamaCache", "LlamaRAMCache", "LlamaDiskCache"],
    "llama_tokenizer": ["BaseLlamaTokenizer", "LlamaTokenizer", "LlamaHFTokenizer"],
    "llama_cpp": [],
}
PACKAGE_REQUIRED = ["Llama", "LlamaGrammar", "LlamaCache", "LlamaRAMCache", "LlamaDiskCache",
                    "LlamaTokenizer", "BaseLlamaTokenizer", "LlamaDraftModel", "LlamaState",
                    "ChatCompletionRequestMessage", "CreateChatCompletionResponse",
                    "llama_chat_format", "__version__"]


def public_names(path) -> set:
    """The public names a module defines at top level (and lists in __all__)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                for t in ast.walk(target):
                    if isinstance(t, ast.Name):
                        names.add(t.id)
                        if t.id == "__all__" and isinstance(node.value, (ast.List, ast.Tuple)):
                            names.update(e.value for e in node.value.elts
                                         if isinstance(e, ast.Constant))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if not n.startswith("_")}


@pytest.fixture(scope="module")
def source():
    if not (SOURCE / "llama.py").is_file():
        missing_prerequisite("llama_templates", f"llama-cpp-python's sources are not at {SOURCE} "
                             "(python -m buildtools.vendor extracts them from the pinned sdist)")
    return SOURCE


def coverage(source, module: str):
    theirs = public_names(source / f"{module}.py")
    ours = set(dir(importlib.import_module(f"pyllamacy.llama_cpp.{module}")))
    return theirs, theirs & ours, sorted(theirs - ours)


@pytest.mark.llama_templates
@pytest.mark.parametrize("module", sorted(FLOORS))
def test_module_coverage(source, module, capsys):
    theirs, have, missing = coverage(source, module)
    ratio = len(have) / len(theirs) if theirs else 1.0
    with capsys.disabled():
        print(f"\n[compat] llama_cpp.{module}: {len(have)}/{len(theirs)} public names "
              f"({ratio:.0%})" + (f"; missing: {', '.join(missing[:40])}"
                                  + (" ..." if len(missing) > 40 else "") if missing else ""))
    assert len(have) >= FLOORS[module], (
        f"llama_cpp.{module} has {len(have)} of llama-cpp-python's public names, below the "
        f"floor {FLOORS[module]}; missing: {missing}")


@pytest.mark.llama_templates
@pytest.mark.parametrize("module", sorted(REQUIRED))
def test_required_names(source, module):
    theirs = public_names(source / f"{module}.py")
    mod = importlib.import_module(f"pyllamacy.llama_cpp.{module}")
    # the list names only what llama-cpp-python has, and all of it is here
    assert set(REQUIRED[module]) <= theirs | {"JsonType"}, set(REQUIRED[module]) - theirs
    assert [n for n in REQUIRED[module] if not hasattr(mod, n)] == []


def test_package_exports():
    pkg = importlib.import_module("pyllamacy.llama_cpp")
    assert [n for n in PACKAGE_REQUIRED if not hasattr(pkg, n)] == []


def test_public_names_reader(tmp_path):
    """The reader itself: defs, classes, (annotated) assignments, __all__; no _private."""
    f = tmp_path / "m.py"
    f.write_text("import os\nfrom x import y\nA = 1\nB: int = 2\nC, D = 3, 4\n_p = 5\n"
                 "def f(): pass\nclass K: pass\nasync def g(): pass\n__all__ = ['Z']\n"
                 "if True:\n    H = 1\n")
    assert public_names(f) == {"A", "B", "C", "D", "f", "K", "g", "Z"}
