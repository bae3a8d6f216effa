"""Signed session cookies: each visitor gets a random id the server can trust it issued.

The cookie carries only ``<id>.<hmac>``; history and interests stay on the server, so a visitor
can neither read nor forge another visitor's state. The key comes from ``GENREC_SECRET`` (stable
across restarts) or is random per process (cookies then expire with the process).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets

COOKIE_NAME = "genrec_sid"
SECRET_ENV = "GENREC_SECRET"


def load_secret() -> bytes:
    """The signing key: ``$GENREC_SECRET`` if set, else 32 random bytes for this process."""
    env = os.environ.get(SECRET_ENV, "")
    return env.encode() if env else secrets.token_bytes(32)


class CookieSigner:
    """Issues and checks ``<id>.<signature>`` cookie values."""

    def __init__(self, secret: bytes) -> None:
        if not secret:
            raise ValueError("session secret must not be empty")
        self._secret = secret

    def _signature(self, sid: str) -> str:
        digest = hmac.new(self._secret, sid.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def new_value(self) -> tuple[str, str]:
        """A fresh session id and the cookie value that carries it."""
        sid = secrets.token_urlsafe(18)
        return sid, f"{sid}.{self._signature(sid)}"

    def verify(self, value: str | None) -> str | None:
        """The session id if ``value`` was signed by us, else None."""
        if not value or value.count(".") != 1:
            return None
        sid, sig = value.split(".")
        if not sid or len(sid) > 64:
            return None
        return sid if hmac.compare_digest(sig, self._signature(sid)) else None
