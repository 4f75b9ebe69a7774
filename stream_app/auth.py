"""Who may call the HTTP API: bearer tokens with a scope, and no cross-site changes.

Every route of the worker's web server and of the read server passes `Guard.check`
(`middleware`, installed by `stream_app.web` and `stream_app.serve`), so a route added
later is guarded without a word:

1. Probes (``/livez``, ``/readyz``, ``/healthz``) and the HTML of the ops and trends
   pages (``/ops``, ``/ops/trends``, which hold no data: they fetch ``/ops/feed.json``,
   ``/trends`` and ``/customers/unprofitable`` with the token they were opened with)
   are open (`OPEN_PATHS`).
2. With tokens configured (``CVM_API_TOKENS``), a request carries
   ``Authorization: Bearer <token>``; none or an unknown one is 401. Reading needs
   the ``read`` or ``admin`` scope; any other method needs ``admin`` (403 otherwise).
   Tokens are compared in constant time (`hmac.compare_digest`), against all of them.
3. A request that changes something (any method but GET, HEAD, OPTIONS) must not be
   one a browser sends cross-site on its own, tokens or not (a worker on loopback
   has none, and a page in the developer's browser can still reach it): it must say
   ``Content-Type: application/json`` (a form post cannot, and a cross-site page that
   tries must pass a CORS preflight this server never grants), and its ``Origin``, if
   any, must be the server's own; ``Sec-Fetch-Site: cross-site`` is refused too.

Refusals name no secret: the detail says what was missing, never what was sent.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware

from stream_app.settings import ApiToken, is_loopback

__all__ = ["OPEN_PATHS", "READ_METHODS", "Denied", "Guard", "middleware"]

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Paths served without credentials: the probes, and the ops and trends pages' HTML (no data).
OPEN_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/ops", "/ops/trends"})
#: Methods that only read.
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Denied:
    """Why a request is refused: HTTP status, error code and a detail without secrets."""

    status: int
    code: str
    detail: str


class Guard:
    """Checks one request's credentials and, for a change, that it is not cross-site."""

    def __init__(self, tokens: Sequence[ApiToken]) -> None:
        self._tokens = [(t.secret.encode(), t) for t in tokens]

    @property
    def enabled(self) -> bool:
        """True if requests must carry a token."""
        return bool(self._tokens)

    def _token(self, authorization: str) -> ApiToken | None:
        scheme, _, presented = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return None
        given = presented.strip().encode()
        found = None
        for secret, token in self._tokens:  # every one, so timing tells nothing
            if hmac.compare_digest(given, secret):
                found = token
        return found

    def check(
        self, method: str, path: str, headers: Mapping[str, str], own_origins: Sequence[str]
    ) -> Denied | None:
        """None if the request may proceed, else why not.

        `own_origins` are the origins this server is reached at (``http://host:port``).
        """
        if path in OPEN_PATHS:
            return None
        changes = method.upper() not in READ_METHODS
        if self._tokens:
            token = self._token(headers.get("Authorization", ""))
            if token is None:
                return Denied(401, "unauthorized", "a valid 'Authorization: Bearer' token is "
                              "required")
            if changes and token.scope != "admin":
                return Denied(403, "forbidden", f"token {token.name!r} has scope "
                              f"{token.scope!r}; this needs 'admin'")
        if changes:
            content_type = headers.get("Content-Type", "").split(";")[0].strip().lower()
            if content_type != "application/json":
                return Denied(415, "unsupported_media_type",
                              "a change must be sent with 'Content-Type: application/json'")
            origin = headers.get("Origin")
            if origin is not None and origin.rstrip("/") not in own_origins:
                return Denied(403, "cross_origin", "a change from another origin is refused")
            if headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
                return Denied(403, "cross_origin", "a change from another site is refused")
        return None


def middleware(guard: Guard) -> Middleware:
    """An aiohttp middleware that passes every request through `guard`.

    Without tokens only loopback host names are served: a page that rebinds its own name
    to 127.0.0.1 still sends that name as Host, and is refused (421).
    """

    @web.middleware
    async def check(request: web.Request, handler: _Handler) -> web.StreamResponse:
        host = request.host.rsplit(":", 1)[0] if request.host else ""
        if not guard.enabled and request.path not in OPEN_PATHS and not is_loopback(host):
            denied: Denied | None = Denied(
                421, "misdirected", "without API tokens only loopback host names are served")
        else:
            denied = guard.check(request.method, request.path, request.headers,
                                 [f"{request.scheme}://{request.host}"])
        if denied is None:
            return await handler(request)
        headers = {"WWW-Authenticate": 'Bearer realm="cvm"'} if denied.status == 401 else {}
        return web.json_response(
            {"error": denied.code, "detail": denied.detail}, status=denied.status,
            headers={**headers, "Cache-Control": "no-store"},
        )

    return check
