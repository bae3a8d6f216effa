"""Error bodies of the JSON API: always ``{"message": one readable line, "detail": ...}``.

An error never echoes more than a short excerpt of what was sent (a 100 MB body must not come
back as a 100 MB error), and never a value JSON cannot carry (``1e309`` parses as infinity).
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

MAX_EXCERPT = 80
MAX_MESSAGE_ERRORS = 5
MAX_DETAIL_ERRORS = 20


def excerpt(value: Any) -> Any:
    """A short, JSON-safe stand-in for an input value: small numbers, strings and booleans as
    they are; anything else (long text, lists, objects, NaN, infinity) as a cut-down repr."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and len(str(value)) <= MAX_EXCERPT:
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= MAX_EXCERPT else text[: MAX_EXCERPT - 1] + "…"


def validation_message(errors: list[dict[str, Any]]) -> str:
    """``history.3: unknown item id '9999'; k: ...``: one readable line naming each field (the
    first few; a count says how many more)."""
    parts = []
    for err in errors[:MAX_MESSAGE_ERRORS]:
        if err.get("type") == "json_invalid":
            parts.append(f"body: {err.get('msg', 'invalid JSON')}")
            continue
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        parts.append(f"{'.'.join(loc) or 'body'}: {err.get('msg', 'invalid')}")
    more = len(errors) - MAX_MESSAGE_ERRORS
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def field_error(loc: tuple[str | int, ...], msg: str, value: Any) -> RequestValidationError:
    return RequestValidationError([{"type": "value_error", "loc": loc, "msg": msg, "input": value}])


def error_body(message: str, detail: Any) -> dict[str, Any]:
    return {"message": message, "detail": detail}


async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = list(exc.errors())
    detail = [
        {
            "type": str(err.get("type", "")),
            "loc": [p if isinstance(p, int) else str(p) for p in err.get("loc", ())],
            "msg": str(err.get("msg", ""))[:200],
            "input": excerpt(err.get("input")),
        }
        for err in errors[:MAX_DETAIL_ERRORS]
    ]
    return JSONResponse(status_code=422, content=error_body(validation_message(errors), detail))


async def on_http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """Starlette's and FastAPI's own errors (400 unparsable body, 404, 405) with a message."""
    message = exc.detail if isinstance(exc.detail, str) else "request failed"
    return JSONResponse(
        status_code=exc.status_code,
        content=error_body(message[:200], message[:200]),
        headers=exc.headers,
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, on_invalid)
    app.add_exception_handler(HTTPException, on_http_error)
