"""HTTP routes, one module per area; each route is thin and calls ``serving.api.service``."""

from __future__ import annotations

from typing import Any

from tlrec.serving.api.schemas import ErrorOut

_DESCRIPTIONS = {
    401: "Missing or invalid X-API-Key.",
    403: "The key may not use this route (admin routes need TLREC_ADMIN_KEY).",
    404: "Unknown item, no such path, or no model of that kind served.",
    409: "Conflict: idempotency key reused with another batch, or a reload refused (old version keeps serving).",
    413: "Request body over the limit (TLREC_MAX_BODY_BYTES).",
    415: "The body is not labelled `Content-Type: application/json`.",
    422: "Invalid input; `error` names the first bad field, `detail` lists them all.",
    503: "Not ready: model or event log not loaded yet.",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries (ErrorOut body) for the given status codes."""
    return {code: {"model": ErrorOut, "description": _DESCRIPTIONS[code]} for code in codes}
