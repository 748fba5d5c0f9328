"""Who may use the console: an admin key's session cookie, and the CSRF token of the one
request that changes something (the playground's send).

With ``server.keys`` set, a person signs in once with a key marked ``admin: true``, posted in a
form (never in a URL). The session cookie names the key's variable, an expiry and an HMAC of both
made with the key itself: it is HttpOnly and SameSite=Strict, any worker process can check it
without shared state, and it stops working when the key is changed or removed (a reload applies
that). Without keys the server listens on loopback only and the console is open, as the API is.

Every state-changing request (sign-in, sign-out, send) must carry the CSRF token: a random
value kept in its own HttpOnly, SameSite=Strict cookie and written into each page; the request
sends it back in a form field or the ``X-CSRF-Token`` header, and the two must match. A request
whose ``Origin`` is another site is refused too.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response

from semroute.server.auth import ANONYMOUS, Client, Keys

__all__ = [
    "CSRF_COOKIE",
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "SESSION_S",
    "csrf_ok",
    "csrf_token",
    "new_session",
    "session_client",
    "set_cookie",
]

SESSION_COOKIE = "semroute_session"
CSRF_COOKIE = "semroute_csrf"
CSRF_HEADER = "x-csrf-token"
SESSION_S = 12 * 3600
"""How long a sign-in lasts."""
COOKIE_PATH = "/ui"
MAX_COOKIE = 512


def _sign(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def new_session(keys: Keys, client: Client, now: float | None = None) -> str:
    """The session cookie's value for ``client`` (an admin key's)."""
    found = keys.secret(client.key or "")
    if found is None:
        raise ValueError("no such key")
    expiry = int((time.time() if now is None else now) + SESSION_S)
    message = f"{client.key}.{expiry}"
    return f"{message}.{_sign(found[1], message)}"


def session_client(
    keys: Keys, request: Request, clock: Callable[[], float] = time.time
) -> Client | None:
    """The admin client whose session the request carries (without keys: anyone), else None."""
    if not keys.required:
        return ANONYMOUS
    value = request.cookies.get(SESSION_COOKIE, "")
    if not value or len(value) > MAX_COOKIE:
        return None
    env, _, rest = value.partition(".")
    expiry, _, signature = rest.partition(".")
    found = keys.secret(env)
    if found is None or not expiry.isdigit() or int(expiry) < clock():
        return None
    client, key = found
    expected = _sign(key, f"{env}.{expiry}")
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
        return None
    return client if client.admin else None


def csrf_token(request: Request) -> tuple[str, bool]:
    """The request's CSRF token, and whether it is new (then :func:`set_cookie` it)."""
    token = request.cookies.get(CSRF_COOKIE, "")
    if (
        20 <= len(token) <= 100
        and token.isascii()
        and token.replace("-", "").replace("_", "").isalnum()
    ):
        return token, False
    return secrets.token_urlsafe(32), True


def csrf_ok(request: Request, given: str | None) -> bool:
    """Whether ``given`` (the form field or header) matches the request's CSRF cookie, and the
    request does not come from another site."""
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
        return False
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not cookie or not given:
        return False
    return hmac.compare_digest(cookie.encode("utf-8", "replace"), given.encode("utf-8", "replace"))


def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    """An HttpOnly, SameSite=Strict cookie for the console's paths (Secure over HTTPS)."""
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
