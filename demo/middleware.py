"""ASGI layers every request and response goes through: a body-size limit and security headers.

Both are plain ASGI (no BaseHTTPMiddleware), so they add microseconds, not a task per request.
FastAPI's own ``max_body_size`` is not used: its 413 is plain text sent from outside the app's
middleware (so without these headers), where every other error here is JSON with a message.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The largest valid /api/recommend body (1000 ids of 64 ASCII characters, 20 interests of 200)
# is about 75 KB; anything much larger is refused before it is read in full.
MAX_BODY_BYTES = 256 * 1024

# Pages load only their own script and stylesheet; the inline ``style="--hue: ..."`` attributes
# of the thumbnails are the one inline thing allowed. Forms post only to the shop itself.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline'; "
    "img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
# Swagger UI and ReDoc (served locally) start from an inline script and inject styles.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
DOCS_PATHS = ("/docs", "/redoc")


class HeaderEditor:
    """Base of the layers that only edit a response's headers: ``editor(scope)`` returns the edit
    for this request (None: leave the response alone), applied when the response starts."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def editor(self, scope: Scope) -> Callable[[MutableHeaders], None] | None:
        raise NotImplementedError

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        edit = self.editor(scope) if scope["type"] == "http" else None
        if edit is None:
            await self.app(scope, receive, send)
            return

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                edit(MutableHeaders(scope=message))
            await send(message)

        await self.app(scope, receive, send_wrapper)


class SecurityHeaders(HeaderEditor):
    """Content-Security-Policy, nosniff and a referrer policy on every response."""

    def editor(self, scope: Scope) -> Callable[[MutableHeaders], None]:
        csp = DOCS_CSP if scope["path"].startswith(DOCS_PATHS) else PAGE_CSP

        def edit(headers: MutableHeaders) -> None:
            headers["content-security-policy"] = csp
            headers["x-content-type-options"] = "nosniff"
            headers["referrer-policy"] = "same-origin"

        return edit


async def _too_large(send: Send, limit: int) -> None:
    message = f"request body larger than {limit} bytes"
    body = json.dumps({"message": message, "detail": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Refuse bodies over ``max_bytes`` with 413: at once when Content-Length says so, else as
    soon as the streamed body passes the limit (the body is read before the app sees it)."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            await _too_large(send, self.max_bytes)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await _too_large(send, self.max_bytes)
                return
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)
