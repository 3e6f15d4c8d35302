"""Discovery of installed backend packages (pyllamacy-cuda, -vulkan, -metal, -arm-fp16).

A backend package registers an entry point in the group ``pyllamacy.backends``; the object it
names is a callable returning a description (a dict, see ``_REQUIRED``)::

    {"name": "cuda", "label": "CUDA", "kind": "gpu", "priority": 30,
     "version": "0.1.0", "core_version": "0.1.0", "llama_cpp_commit": "0c1e57098",
     "modules": ["/.../pyllamacy_cuda/lib/libggml-cuda.so"],     # ggml backend modules
     "preload": ["/.../nvidia/cu13/lib/libcudart.so.13", ...],   # dlopen'ed RTLD_GLOBAL first
     "missing": [],                                              # runtime libraries not found
     "driver": "libcuda.so.1"}                                   # system library it needs

``discover()`` runs once at ``import pyllamacy`` (after the CPU backend is loaded): it loads each
package's modules in priority order through ``_llama.load_backend`` and records in
``pyllamacy.backend_report()`` why each one did or did not load. Nothing here raises: a missing
driver, a broken package or a version mismatch is reported and the CPU keeps working.

Environment:
  PYLLAMACY_BACKEND       "auto" (default): every installed backend, but only the first GPU
                          backend (by priority: CUDA/Metal, then Vulkan) that finds a device, so
                          one GPU is not driven twice; "cpu": none; "cuda", "vulkan,cuda", ...:
                          exactly these (a warning when one cannot be loaded).
  PYLLAMACY_BACKEND_PATH  extra folders (os.pathsep-separated) holding ggml backend modules
                          (libggml-<name>.so) built by hand: loaded like packages, priority 10.

Note: ``pyllamacy.backends`` is the function listing registered backends; this module is
``importlib.import_module("pyllamacy.backends")`` (``__init__`` keeps the function's name).
"""
from __future__ import annotations

import ctypes
import os
import re
import sys
import warnings
from typing import Callable, Dict, List, Optional

ENTRY_POINT_GROUP = "pyllamacy.backends"
ENV_CHOICE = "PYLLAMACY_BACKEND"
ENV_PATH = "PYLLAMACY_BACKEND_PATH"

_REQUIRED = ("name", "modules")
_MODULE_RE = re.compile(r"^(?:lib)?ggml-([A-Za-z0-9_]+)\.(?:so|dylib|dll)$")
_DEFAULT_PRIORITY = {"cuda": 30, "metal": 30, "hip": 28, "vulkan": 20, "sycl": 15}

# results of the last discover(): one dict per backend package / module found
_discovered: List[dict] = []
_done = False


class BackendWarning(RuntimeWarning):
    """A backend that PYLLAMACY_BACKEND asked for could not be loaded."""


def _entry_points() -> list:
    from importlib import metadata
    try:
        return list(metadata.entry_points(group=ENTRY_POINT_GROUP))
    except TypeError:                       # Python 3.9: a dict of group -> entry points
        return list(metadata.entry_points().get(ENTRY_POINT_GROUP, []))


def _describe_entry_point(ep) -> dict:
    dist = getattr(ep, "dist", None)
    source = f"entry point {ep.name} = {ep.value}"
    if dist is not None:
        source += f" ({dist.metadata['Name']} {dist.version})"
    try:
        obj = ep.load()
        desc = obj() if callable(obj) else obj
        if not isinstance(desc, dict):
            raise TypeError(f"returned {type(desc).__name__}, not a dict")
        missing = [k for k in _REQUIRED if k not in desc]
        if missing:
            raise KeyError(f"description lacks {missing}")
    except Exception as e:          # a broken package must never break `import pyllamacy`
        return {"name": ep.name, "label": ep.name.upper(), "modules": [], "source": source,
                "broken": f"broken backend package: {type(e).__name__}: {e}"}
    desc = dict(desc)
    desc.setdefault("source", source)
    return desc


def _describe_path_modules() -> List[dict]:
    out = []
    for folder in filter(None, os.environ.get(ENV_PATH, "").split(os.pathsep)):
        try:
            names = sorted(os.listdir(folder))
        except OSError as e:
            out.append({"name": os.path.basename(folder.rstrip("/")) or folder, "modules": [],
                        "source": f"{ENV_PATH} {folder}", "broken": f"cannot list folder: {e}"})
            continue
        for fn in names:
            m = _MODULE_RE.match(fn)
            if not m or m.group(1) in ("base",) or m.group(1).startswith("cpu"):
                continue
            name = m.group(1).lower()
            out.append({"name": name, "label": name.upper(), "kind": "gpu",
                        "priority": 10, "modules": [os.path.join(folder, fn)],
                        "source": f"{ENV_PATH} {folder}"})
    return out


def installed() -> List[dict]:
    """Descriptions of every backend package installed (nothing is loaded)."""
    descs = [_describe_entry_point(ep) for ep in _entry_points()]
    descs += _describe_path_modules()
    for d in descs:
        d["name"] = str(d["name"]).lower()
        d.setdefault("label", d["name"].upper())
        d.setdefault("kind", "gpu")
        d.setdefault("priority", _DEFAULT_PRIORITY.get(d["name"], 10))
    descs.sort(key=lambda d: (-int(d["priority"]), d["name"]))
    return descs


def _choice() -> Optional[List[str]]:
    raw = os.environ.get(ENV_CHOICE, "").strip().lower()
    if raw in ("", "auto", "all"):
        return None
    return [c.strip() for c in raw.split(",") if c.strip()]


def _preload(paths: List[str]) -> Optional[str]:
    mode = getattr(os, "RTLD_GLOBAL", 0) | getattr(os, "RTLD_NOW", 0)
    for p in paths:
        try:
            ctypes.CDLL(p, mode=mode)
        except OSError as e:
            return f"runtime library {p} could not be loaded: {e}"
    return None


def _driver_missing(driver: Optional[str]) -> Optional[str]:
    if not driver:
        return None
    try:
        ctypes.CDLL(driver)
    except OSError as e:
        return str(e)
    return None


def _n_devices(reg_name: str) -> int:
    from . import _llama
    return sum(1 for d in _llama.devices() if d["backend"] == reg_name)


def _version_problem(desc: dict) -> Optional[str]:
    from ._version import __version__ as core_version
    want = desc.get("core_version")
    if want and want != core_version:
        pkg = desc.get("package") or f"pyllamacy-{desc['name']}"
        return (f"{pkg} {desc.get('version', '?')} was built for pyllamacy {want}, this is "
                f"pyllamacy {core_version}: pip install '{pkg}=={core_version}' "
                f"(or 'pyllamacy[{desc['name']}]=={core_version}')")
    return None


def _load_one(desc: dict, note: Callable[[str, str, str, str], None]) -> str:
    """Try one package; return its status ('loaded', 'skipped', 'failed')."""
    from . import _llama
    label = desc.get("label") or desc["name"].upper()
    where = desc["modules"][0] if desc.get("modules") else desc.get("source", "")
    pkg = desc.get("package") or f"pyllamacy-{desc['name']}"

    def fail(status, reason):
        desc["status"], desc["reason"] = status, reason
        note(label, where, status, reason)
        return status

    if desc.get("broken"):
        return fail("failed", desc["broken"])
    problem = _version_problem(desc)
    if problem:
        return fail("failed", problem)
    if not desc["modules"]:
        return fail("failed", f"{pkg} lists no backend module")
    for m in desc["modules"]:
        if not os.path.exists(m):
            return fail("failed", f"{pkg} is installed but its module {m} is missing: "
                                  "reinstall it")
    if desc.get("missing"):
        return fail("failed", f"{pkg} is installed but its runtime libraries are missing: "
                              f"{', '.join(desc['missing'])} "
                              f"({desc.get('missing_hint') or 'reinstall its dependencies'})")
    if desc.get("kind") == "cpu":
        # CPU variants live in pyllamacy/lib/ and compete by score in the core's picker,
        # which has already run: report whether this one won
        variant = desc.get("cpu_variant")
        chosen = _llama.cpu_variant()
        if variant and chosen == variant:
            desc["status"], desc["reason"] = "loaded", f"from {pkg}: CPU variant {variant}"
            note(label, where, "loaded", desc["reason"])
            return "loaded"
        return fail("skipped", f"the CPU variant in use is {chosen!r}; set "
                               f"PYLLAMACY_CPU_VARIANT={variant} to use {pkg}'s")
    driver_err = _driver_missing(desc.get("driver"))
    if driver_err:
        why = driver_err if desc["driver"] in driver_err else f"{desc['driver']}: {driver_err}"
        return fail("skipped", f"{label} backend installed but no driver found ({why})")
    err = _preload(list(desc.get("preload") or []))
    if err:
        return fail("failed", err)
    names = []
    for m in desc["modules"]:
        try:
            names.append(_llama.load_backend(m))
        except Exception as e:          # BackendError with ggml's log lines, OSError, ...
            return fail("failed", f"{type(e).__name__}: {e}")
    n_dev = sum(_n_devices(n) for n in names)
    desc["registered"], desc["n_devices"] = names, n_dev
    reason = f"from {pkg} {desc.get('version', '')}".rstrip() + f", {n_dev} device(s)"
    if desc.get("kind") == "gpu" and n_dev == 0:
        reason += f"; {label} found no usable device"
    for n in names:
        note(n, where, "loaded", reason)
    desc["status"], desc["reason"] = "loaded", reason
    return "loaded"


def discover(force: bool = False) -> List[dict]:
    """Find installed backend packages and load them (once; `force` to try again).

    Returns one dict per package: its description plus ``status`` and ``reason``.
    """
    global _done, _discovered
    if _done and not force:
        return [dict(d) for d in _discovered]
    from . import _llama
    note = _llama._note_backend
    choice = _choice()
    descs = installed()
    gpu_owner = None
    for desc in descs:
        label = desc.get("label") or desc["name"].upper()
        where = desc["modules"][0] if desc.get("modules") else desc.get("source", "")
        if choice is not None and (choice == ["cpu"] or desc["name"] not in choice):
            desc["status"] = "skipped"
            desc["reason"] = f"{ENV_CHOICE}={os.environ.get(ENV_CHOICE)}"
            note(label, where, desc["status"], desc["reason"])
            continue
        if choice is None and desc.get("kind") == "gpu" and gpu_owner is not None \
                and not desc.get("broken"):
            desc["status"] = "skipped"
            desc["reason"] = (f"{gpu_owner} already drives the GPU; set {ENV_CHOICE}="
                              f"{desc['name']} to use {label} instead")
            note(label, where, desc["status"], desc["reason"])
            continue
        status = _load_one(desc, note)
        if status == "loaded" and desc.get("kind") == "gpu" and desc.get("n_devices"):
            gpu_owner = label
        elif status != "loaded" and choice is not None:
            warnings.warn(f"{ENV_CHOICE} asks for {desc['name']}, which did not load: "
                          f"{desc.get('reason')}", BackendWarning, stacklevel=3)
    if choice is not None:
        known = {d["name"] for d in descs} | {"cpu"}
        for name in choice:
            if name not in known:
                reason = (f"{ENV_CHOICE} asks for {name!r}, which is not installed "
                          f"(pip install 'pyllamacy[{name}]')")
                note(name.upper(), "", "failed", reason)
                warnings.warn(reason, BackendWarning, stacklevel=3)
    _discovered = descs
    _done = True
    return [dict(d) for d in descs]


def packages() -> List[dict]:
    """What the last discover() found (a copy): name, version, status, reason, modules, ..."""
    return [dict(d) for d in _discovered]


def discover_at_import() -> None:
    """Called by ``pyllamacy/__init__.py``: discovery problems never break the import."""
    try:
        discover()
    except Exception as e:          # pragma: no cover - defensive
        try:
            from . import _llama
            _llama._note_backend("discovery", "", "failed", f"{type(e).__name__}: {e}")
        except Exception:
            pass
        print(f"pyllamacy: backend discovery failed: {e}", file=sys.stderr)
