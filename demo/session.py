"""Signed session cookies via Starlette's SessionMiddleware (itsdangerous underneath).

The cookie carries only ``{"sid": <random id>}``, signed and time-stamped; history and interests
stay on the server, so a visitor can neither read nor forge another visitor's state. A cookie is
issued only when a visitor first changes something (``keep_sid``): reading pages creates
nothing. A cookie that fails verification (tampered, expired, garbage, non-ASCII) is treated as
absent and expired in the same response, so a browser does not keep sending it. The key comes
from ``GENREC_SECRET`` (stable across restarts) or is random per process.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable

from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.types import Scope

from demo.middleware import HeaderEditor

COOKIE_NAME = "genrec_sid"
COOKIE_MAX_AGE_S = 30 * 24 * 3600
SECRET_ENV = "GENREC_SECRET"


def load_secret() -> str:
    """The signing key: ``$GENREC_SECRET`` if set, else a random one for this process."""
    return os.environ.get(SECRET_ENV, "") or secrets.token_urlsafe(32)


def session_sid(request: Request) -> str | None:
    """The caller's session id, or None without a valid session cookie."""
    sid = request.session.get("sid")
    return sid if isinstance(sid, str) and sid else None


def new_sid() -> str:
    return secrets.token_urlsafe(18)


def keep_sid(request: Request, sid: str) -> None:
    """Issue (or re-send) the cookie for ``sid``: re-sending it on every write keeps an active
    visitor's session from expiring."""
    request.session["sid"] = sid


class ExpireRejectedCookie(HeaderEditor):
    """Inside SessionMiddleware: expire a cookie that did not verify and was not replaced."""

    def editor(self, scope: Scope) -> Callable[[MutableHeaders], None] | None:
        session = scope["session"]
        if COOKIE_NAME not in HTTPConnection(scope).cookies or session:
            return None

        def edit(headers: MutableHeaders) -> None:
            if not session:  # the app did not issue a new session meanwhile
                headers.append(
                    "set-cookie", f"{COOKIE_NAME}=null; path=/; Max-Age=0; httponly; samesite=lax"
                )

        return edit


def session_middleware(secret: str) -> list[Middleware]:
    """The session layers, outermost first, for ``FastAPI(middleware=...)``."""
    if not secret:
        raise ValueError("session secret must not be empty")
    return [
        Middleware(
            SessionMiddleware,
            secret_key=secret,
            session_cookie=COOKIE_NAME,
            max_age=COOKIE_MAX_AGE_S,
            same_site="lax",
        ),
        Middleware(ExpireRejectedCookie),
    ]
