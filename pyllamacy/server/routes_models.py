"""llama-server's router routes: POST /models/load and POST /models/unload ({"model": name}).
The list with each model's status is GET /v1/models (routes.py)."""
from __future__ import annotations

from typing import Optional

from fastapi import APIRouter, Request
from pydantic import BaseModel

from .errors import ApiError
from .state import ServerState

__all__ = ["router"]

router = APIRouter()


class ModelRequest(BaseModel):
    model_config = {"extra": "ignore", "protected_namespaces": ()}
    model: Optional[str] = None


def _name(state: ServerState, body: ModelRequest) -> str:
    if not isinstance(body.model, str) or body.model not in state.entries:
        raise ApiError(404 if isinstance(body.model, str) else 400,
                       f"model must name a model of this server ({sorted(state.entries)}), got "
                       f"{body.model!r}", param="model")
    return body.model


@router.post("/models/load")
async def load_model(body: ModelRequest, request: Request):
    state: ServerState = request.app.state.server
    await state.load(_name(state, body))
    return {"success": True, "model": body.model}


@router.post("/models/unload")
async def unload_model(body: ModelRequest, request: Request):
    state: ServerState = request.app.state.server
    unloaded = await state.unload(_name(state, body))
    return {"success": True, "model": body.model, "unloaded": unloaded}
