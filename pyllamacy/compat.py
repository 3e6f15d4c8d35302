"""One-line switch for code written against llama-cpp-python.

    import pyllamacy.compat
    pyllamacy.compat.install_llama_cpp()
    import llama_cpp                      # now pyllamacy.llama_cpp

install_llama_cpp() never shadows a real llama-cpp-python: when one is importable it changes
nothing and returns False.

What code then gets is pyllamacy.llama_cpp: its ``Llama`` is pyllamacy.Llama with
llama-cpp-python's defaults (flash_attn=False, its thread counts, raw embeddings: see
pyllamacy.llama_cpp.llama), and its low-level ``llama_*`` functions take pyllamacy objects
(pyllamacy.llama_cpp.llama_cpp). This is how LangChain's LlamaCpp / ChatLlamaCpp /
LlamaCppEmbeddings and outlines' from_llamacpp run on pyllamacy.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from typing import Optional

__all__ = ["install_llama_cpp", "uninstall_llama_cpp", "installed"]

_ALIAS = "llama_cpp"
_TARGET = "pyllamacy.llama_cpp"


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str):
        self._target = target

    def create_module(self, spec):
        module = importlib.import_module(self._target)
        self._own = (module.__spec__, module.__loader__)
        return module

    def exec_module(self, module):
        # the target module was executed by import_module; the import system has set the
        # alias spec on it: give it back its own, so that it stays pyllamacy.llama_cpp.*
        module.__spec__, module.__loader__ = self._own


class _AliasFinder(importlib.abc.MetaPathFinder):
    """Resolves ``llama_cpp`` and ``llama_cpp.<sub>`` to the modules under pyllamacy.llama_cpp."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != _ALIAS and not fullname.startswith(_ALIAS + "."):
            return None
        real = _TARGET + fullname[len(_ALIAS):]
        if importlib.util.find_spec(real) is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(real),
                                              is_package=(fullname == _ALIAS))


_finder: Optional[_AliasFinder] = None


def _real_llama_cpp_available() -> bool:
    mod = sys.modules.get(_ALIAS)
    if mod is not None:
        return not getattr(mod, "__name__", "").startswith(_TARGET)
    return importlib.util.find_spec(_ALIAS) is not None


def install_llama_cpp() -> bool:
    """Make ``import llama_cpp`` (and its submodules) resolve to pyllamacy.llama_cpp.

    Returns True when the switch is in place (or already was), False when a real
    llama-cpp-python is importable, which is then left alone.
    """
    global _finder
    if _finder is not None:
        return True
    if _real_llama_cpp_available():
        return False
    _finder = _AliasFinder()
    sys.meta_path.insert(0, _finder)
    return True


def uninstall_llama_cpp() -> None:
    """Undo install_llama_cpp(): remove the finder and the ``llama_cpp`` aliases."""
    global _finder
    if _finder is None:
        return
    try:
        sys.meta_path.remove(_finder)
    except ValueError:
        pass
    _finder = None
    for name in [n for n in sys.modules if n == _ALIAS or n.startswith(_ALIAS + ".")]:
        if sys.modules[name].__name__.startswith(_TARGET):
            del sys.modules[name]


def installed() -> bool:
    """Whether install_llama_cpp() has put the switch in place (and it was not undone)."""
    return _finder is not None
