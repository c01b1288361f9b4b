"""Who is subscribing: credentials for the streaming surfaces (WebSocket and SSE).

Accepted, in this order:
1. a DRF token in the `Authorization: Bearer <token>` header;
2. a DRF token in the `?token=` query parameter (browsers cannot set headers on a
   WebSocket or an EventSource; prefer the header elsewhere: URLs end up in logs);
3. the Django login session cookie (the admin's operator console).
A token that is given but unknown (or whose user is inactive) means "no credentials", even
when a login cookie is also present: the client said who it is, and it was wrong.

`ws_auth_stack(inner)` is the Channels middleware stack setting `scope["user"]`;
`request_user(request)` is the same rule for the async SSE view. `origin_validator(app)`
guards the WebSocket against cross-site use of the login cookie.
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any, cast
from urllib.parse import parse_qs, urlparse

from channels.auth import get_user
from channels.middleware import BaseMiddleware
from channels.security.websocket import OriginValidator
from channels.sessions import CookieMiddleware, SessionMiddleware
from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest
from rest_framework.exceptions import AuthenticationFailed

from asm_project.auth import BearerTokenAuthentication
from events.streaming import db_call

User = AbstractBaseUser | AnonymousUser


def token_from(authorization: str | None, query_token: str | None) -> str | None:
    """The token a client presented: `Authorization: Bearer <t>` first, then `?token=`.

    None when it presented none; "" when it presented an empty one (which matches nobody).
    """
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == BearerTokenAuthentication.keyword.lower():
            return value.strip()
    if query_token is not None:
        return query_token.strip()
    return None


def token_user(key: str) -> User:
    """The active user owning token `key`, or AnonymousUser (the API's exact rule)."""
    if not key:
        return AnonymousUser()
    try:
        user, _token = BearerTokenAuthentication().authenticate_credentials(key)
    except AuthenticationFailed:
        return AnonymousUser()
    return cast(AbstractBaseUser, user)


# On the loop's shared thread pool (no thread of the connection's own).
_token_user = db_call(token_user)


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin1")
    return None


def _query_token(query_string: bytes | str) -> str | None:
    text = query_string.decode("latin1") if isinstance(query_string, bytes) else query_string
    values = parse_qs(text, keep_blank_values=True).get("token")
    return values[-1] if values else None


class WsAuthMiddleware(BaseMiddleware):  # type: ignore[misc]
    """Sets `scope["user"]` from a token (header or query) or else the login session."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        scope = dict(scope)
        key = token_from(
            _header(scope, b"authorization"), _query_token(scope.get("query_string", b""))
        )
        if key is not None:
            scope["user"] = await _token_user(key)
            scope["asm_auth"] = "token"
        else:
            scope["user"] = await get_user(scope)
            scope["asm_auth"] = "session" if scope["user"].is_authenticated else None
        return await super().__call__(scope, receive, send)


def ws_auth_stack(inner: Any) -> Any:
    """Cookies -> Django session -> `WsAuthMiddleware` -> `inner`."""
    return CookieMiddleware(SessionMiddleware(WsAuthMiddleware(inner)))


async def request_user(request: HttpRequest) -> User:
    """The SSE view's subscriber: the same rule as `WsAuthMiddleware`, for a Django request."""
    key = token_from(request.headers.get("Authorization"), request.GET.get("token"))
    if key is not None:
        return await _token_user(key)
    return cast(User, await request.auser())


class BrowserOriginValidator(OriginValidator):  # type: ignore[misc]
    """Channels' `AllowedHostsOriginValidator`, except that a missing `Origin` passes.

    The check exists against cross-site WebSocket hijacking: a page on another site opening
    a socket that the browser authenticates with the login cookie. Browsers always send
    `Origin` on a WebSocket handshake, so that case is still refused (HTTP 403); clients
    that send no `Origin` (the CLI, scripts, the `websockets` package) are not browsers and
    authenticate with a token, so they pass.
    """

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        origin = None
        for name, value in scope.get("headers", ()):
            if name == b"origin":
                with suppress(UnicodeDecodeError):
                    origin = urlparse(bytes(value).decode("latin1"))
        if self.valid_origin(origin):
            return await self.application(scope, receive, send)
        await deny_websocket(receive, send)
        return None

    def valid_origin(self, parsed_origin: Any) -> bool:
        if parsed_origin is None:
            return True
        return bool(super().valid_origin(parsed_origin))


async def deny_websocket(receive: Any, send: Any) -> None:
    """Refuse the handshake (HTTP 403) as plain ASGI.

    Not Channels' `WebsocketDenier`: it is a consumer with a channel-layer channel, and its
    end can hang on a layer receive that swallowed its cancellation (see
    `events.streaming.feed_subscription`), leaving a task per refused connection.
    """
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.close"})
    while message["type"] != "websocket.disconnect":
        message = await receive()


def origin_validator(application: Any) -> BrowserOriginValidator:
    """`BrowserOriginValidator` over `ALLOWED_HOSTS` (with DEBUG's local defaults if empty)."""
    allowed_hosts: list[str] = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed_hosts:
        allowed_hosts = ["localhost", "127.0.0.1", "[::1]"]
    return BrowserOriginValidator(application, allowed_hosts)
