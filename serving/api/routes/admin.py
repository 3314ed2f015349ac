"""Admin routes (TLREC_ADMIN_KEY only)."""

from __future__ import annotations

from fastapi import APIRouter

from tlrec.serving.api import service
from tlrec.serving.api.deps import AdminAuth, State
from tlrec.serving.api.routes import errors
from tlrec.serving.api.schemas import ReloadOut

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[AdminAuth])


@router.post("/reload", response_model=ReloadOut, responses=errors(401, 403, 409, 413, 422))
async def reload(state: State) -> ReloadOut:
    """Swap atomically to the version `ARTIFACTS/current` names.

    A corrupt or mismatched version is refused (409, one line); the old one keeps serving.
    """
    return await service.reload_model(state)
