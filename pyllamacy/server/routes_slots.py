"""llama-server's slot routes: GET /slots (each slot's state) and
POST /slots/{id}?action=save|restore|erase (a slot's cache to a file in --slot_save_path and
back; Engine.slot_save / slot_restore / slot_erase do the work and check the files).

A file name is a plain name inside slot_save_path: no "/", "\\\\", "..", NUL or leading dot,
and a name that resolves (symlinks followed) outside the folder is refused. The model is the
request's "model" (query parameter or body), else the server's default one."""
from __future__ import annotations

import os
import time
from typing import Any, Dict, Optional

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from .._llama import BusyError, StateError
from .errors import ApiError
from .state import ServerState

__all__ = ["router", "slot_file_path"]

router = APIRouter()

_MAX_NAME = 255


def slot_file_path(folder: str, name: Any) -> str:
    """The path of slot file `name` in `folder`, or ApiError 400 naming what is wrong."""
    if not isinstance(name, str) or not name:
        raise ApiError(400, "filename must be a non-empty string", param="filename")
    if (len(name) > _MAX_NAME or "/" in name or "\\" in name or "\0" in name
            or name.startswith(".") or name in ("..", ".")):
        raise ApiError(400, f"filename must be a plain file name inside the slot folder "
                       f"(no '/', '\\\\', '..', NUL or leading '.'), got {name[:80]!r}",
                       param="filename")
    root = os.path.realpath(folder)
    path = os.path.join(root, name)
    real = os.path.realpath(path)
    if os.path.dirname(real) != root:
        raise ApiError(400, f"filename {name!r} resolves outside the slot folder",
                       param="filename")
    return path


def _slot_id(runner, slot_id: str) -> int:
    try:
        i = int(slot_id)
    except ValueError:
        i = -1
    if not 0 <= i < runner.n_slots:
        raise ApiError(400, f"slot id must be 0..{runner.n_slots - 1}, got {slot_id!r}",
                       param="id_slot")
    return i


@router.get("/slots")
async def slots(request: Request, model: Optional[str] = None):
    state: ServerState = request.app.state.server
    runner = await state.acquire(model)
    out = []
    for s in runner.engine.slot_info():
        out.append({"id": s["slot"], "n_ctx": runner.n_ctx_slot,
                    "is_processing": s["state"] != "free", "state": s["state"],
                    "id_task": s["request_id"], "n_cached_tokens": s["cached_tokens"]})
    return out


@router.post("/slots/{slot_id}")
async def slot_action(slot_id: str, request: Request, action: Optional[str] = None,
                      model: Optional[str] = None):
    state: ServerState = request.app.state.server
    body: Dict[str, Any] = {}
    raw = await request.body()
    if raw:
        try:
            import json
            body = json.loads(raw)
        except ValueError:
            raise ApiError(400, "the body must be JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object")
    runner = await state.acquire(model if model is not None else body.get("model"))
    i = _slot_id(runner, slot_id)
    if action not in ("save", "restore", "erase"):
        raise ApiError(400, f"action must be save, restore or erase, got {action!r}",
                       param="action")
    eng = runner.engine
    t0 = time.perf_counter()
    try:
        if action == "erase":
            n = await run_in_threadpool(eng.slot_erase, i)
            return {"id_slot": i, "n_erased": n}
        folder = state.settings.slot_save_path
        if folder is None:
            raise ApiError(400, "slot save/restore needs the server's slot_save_path "
                           "(--slot_save_path)", param="action")
        name = body.get("filename")
        path = slot_file_path(folder, name)
        if action == "save":
            n, size = await run_in_threadpool(eng.slot_save, i, path)
            return {"id_slot": i, "filename": name, "n_saved": n, "n_written": size,
                    "timings": {"save_ms": round((time.perf_counter() - t0) * 1e3, 3)}}
        if not os.path.isfile(path):
            raise ApiError(400, f"no slot file {name!r} in the slot folder", param="filename")
        n, size = await run_in_threadpool(eng.slot_restore, i, path)
        return {"id_slot": i, "filename": name, "n_restored": n, "n_read": size,
                "timings": {"restore_ms": round((time.perf_counter() - t0) * 1e3, 3)}}
    except BusyError as e:
        raise ApiError(409, str(e), param="id_slot") from None
    except StateError as e:
        raise ApiError(400, f"{action}: {e}", param="filename") from None
    except OSError as e:
        raise ApiError(400, f"{action}: {e.strerror or e}", param="filename") from None
