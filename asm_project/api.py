"""Plumbing shared by the apps' API modules (`sessions/api.py`, `runs/api.py`, `events/api.py`).

- `ErrorEnvelopeSerializer`: the error envelope as one OpenAPI component (`ErrorEnvelope`),
  and `error_responses(...)`, the documented error responses of an operation.
- `paginated(...)`: the OpenAPI shape of a cursor-paginated list.
- `request_user(...)`: the authenticated user of a request (views run behind
  `IsAuthenticated`, so it is always a real user).
- `AsyncAPIView`: an APIView whose handlers are `async def` (long-polls): DRF's
  authentication, permission and throttle checks run once in a worker thread, then the
  handler awaits without holding one. Errors come out in the same envelope.

Importing this module also makes DRF's serializer classes subscriptable at runtime
(`serializers.Serializer[Any]`, needed by mypy's strict mode), as `django_stubs_ext` does for
Django's own generic classes in the settings.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Any

import django_stubs_ext
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import serializers
from rest_framework.exceptions import MethodNotAllowed, NotAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from asm_project.errors import exception_handler

django_stubs_ext.monkeypatch(
    extra_classes=[serializers.BaseSerializer, serializers.Serializer, serializers.ListSerializer]
)

# --------------------------------------------------------------------------- errors


class ErrorBodySerializer(serializers.Serializer[Any]):
    code = serializers.CharField(help_text="Taxonomy code (docs/event-types.md section 2).")
    category = serializers.CharField(help_text="The code's category.")
    message = serializers.CharField()
    retryable = serializers.BooleanField(help_text="True when the same request may succeed later.")
    details = serializers.DictField(help_text="Code-specific context (e.g. `fields` for 400s).")

    class Meta:
        ref_name = "ErrorBody"


class ErrorEnvelopeSerializer(serializers.Serializer[Any]):
    """Every error response: `{"error": {code, category, message, retryable, details}}`."""

    error = ErrorBodySerializer()

    class Meta:
        ref_name = "ErrorEnvelope"


_ERROR_TEXT = {
    400: "Invalid request: `validation_error` (details.fields names each bad field), "
    "`invalid_format` (malformed JSON), or another validation code.",
    401: "`authentication_required`: no token, or a bad one (`Authorization: Bearer <token>`).",
    403: "`permission_denied`.",
    404: "`session_not_found` / `run_not_found` / `not_found`: no such object, or another "
    "owner's (the two answer alike).",
    405: "`method_not_allowed`.",
    409: "`invalid_transition`, `invalid_operation` or `already_exists` (Idempotency-Key reuse "
    "with another body).",
    429: "`throttled` (see Retry-After) or a queue limit (`max_runs_exceeded`).",
}


def error_responses(*statuses: int) -> dict[int, OpenApiResponse]:
    """OpenAPI responses for these error statuses (401 and 429 are added: every route has them)."""
    wanted = sorted({*statuses, 401, 429})
    return {
        status: OpenApiResponse(response=ErrorEnvelopeSerializer, description=_ERROR_TEXT[status])
        for status in wanted
    }


# --------------------------------------------------------------------------- JSON input


def json_storable(value: Any) -> None:
    """Validator of free-form JSON input (`context`, `metadata`, run `input` and `options`):
    what PostgreSQL's `jsonb` cannot store is a 400 `validation_error`, not a database error
    (a 500): a NUL character (U+0000) or a lone surrogate (not UTF-8) in any string or key,
    and a number that is not finite (`1e999` parses as infinity)."""
    stack = [value]
    while stack:  # iterative: no recursion limit to run into
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, str):
            if "\x00" in item:
                raise serializers.ValidationError("Null characters are not allowed.")
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise serializers.ValidationError("Surrogate characters are not allowed.") from None
        elif isinstance(item, float) and not math.isfinite(item):
            raise serializers.ValidationError("Numbers must be finite.")


# --------------------------------------------------------------------------- enums


def enum_choices(enum: type[Enum]) -> list[tuple[str, str]]:
    """Serializer choices of an enum: `(value, NAME)` pairs, which drf-spectacular matches
    with the settings' `ENUM_NAME_OVERRIDES` (so the schema names them `SessionStatusEnum`,
    `RunStatusEnum` and `EventTypeEnum` instead of colliding on `status`)."""
    return [(str(member.value), member.name) for member in enum]


# --------------------------------------------------------------------------- lists


_PAGINATED: dict[str, type[serializers.Serializer[Any]]] = {}


def page_parameters(*, default_size: int = 50, newest_first: bool = True) -> list[OpenApiParameter]:
    """The query parameters of a cursor-paginated list: `cursor`, `page_size` and, for lists
    that default to newest first, `ordering`."""
    from asm_project.pagination import CreatedCursorPagination

    params = [
        OpenApiParameter("cursor", OpenApiTypes.STR, description="Page cursor (opaque)."),
        OpenApiParameter(
            "page_size", OpenApiTypes.INT, description=f"1-500, default {default_size}."
        ),
    ]
    if newest_first:
        params.append(
            OpenApiParameter(
                "ordering",
                OpenApiTypes.STR,
                enum=list(CreatedCursorPagination.ordering_choices),
                description="`-created_at` (default, newest first) or `created_at`.",
            )
        )
    return params


def paginated(
    item: type[serializers.Serializer[Any]], name: str
) -> type[serializers.Serializer[Any]]:
    """The serializer of one cursor page of `item`s: `{next, previous, results}` (schema only)."""
    if name not in _PAGINATED:
        meta = type("Meta", (), {"ref_name": name})
        _PAGINATED[name] = type(
            f"{name}Serializer",
            (serializers.Serializer,),
            {
                "next": serializers.URLField(
                    allow_null=True, help_text="The next page's URL; null on the last page."
                ),
                "previous": serializers.URLField(
                    allow_null=True, help_text="The previous page's URL; null on the first page."
                ),
                "results": item(many=True),
                "Meta": meta,
            },
        )
    return _PAGINATED[name]


# --------------------------------------------------------------------------- users


def request_user(request: Request | HttpRequest) -> User:
    """The request's authenticated user; `authentication_required` if there is none."""
    user = request.user
    if not isinstance(user, User) or not user.is_authenticated:
        raise NotAuthenticated()
    return user


# --------------------------------------------------------------------------- async views


AsyncHandler = Callable[..., Awaitable[HttpResponse]]


class AsyncAPIView(APIView):
    """An APIView whose method handlers are coroutines (`async def get(self, request, ...)`).

    The request goes through DRF exactly as far as a sync view's does before its handler
    (content negotiation, authentication, permissions, throttling), in one `sync_to_async`
    call; the handler then runs on the event loop and returns a Django `HttpResponse` (use
    `sync_to_async` for ORM work). Any exception becomes the error envelope through the
    project's DRF exception handler, with its headers (Retry-After, WWW-Authenticate, Allow).
    drf-spectacular documents the view like any APIView (`extend_schema` on the handler).
    """

    http_method_names = ["get"]

    @classmethod
    def as_view(cls, **initkwargs: Any) -> Any:
        async def view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            self = cls(**initkwargs)
            self.setup(request, *args, **kwargs)
            self.headers = self.default_response_headers
            try:
                drf_request, handler = await sync_to_async(self._begin)(request, *args, **kwargs)
                return await handler(drf_request, *args, **kwargs)
            except Exception as exc:
                return self._error(exc)

        # What APIView.as_view puts on its view: drf-spectacular and DRF's URL tools read
        # `cls`/`initkwargs`; DRF views do their own CSRF checks (session auth only).
        view.__dict__.update(
            cls=cls,
            initkwargs=initkwargs,
            view_class=cls,
            view_initkwargs=initkwargs,
            csrf_exempt=True,
            login_required=False,
        )
        return view

    def _begin(
        self, request: HttpRequest, *args: Any, **kwargs: Any
    ) -> tuple[Request, AsyncHandler]:
        drf_request = self.initialize_request(request, *args, **kwargs)
        self.request = drf_request
        self.initial(drf_request, *args, **kwargs)
        method = drf_request.method.lower() if drf_request.method else ""
        handler = getattr(self, method, None) if method in self.http_method_names else None
        if handler is None:
            raise MethodNotAllowed(drf_request.method or "")
        return drf_request, handler

    @staticmethod
    def respond(data: Any, status: int = 200) -> HttpResponse:
        """`data` as JSON, rendered like DRF's responses (DRF's JSON renderer)."""
        return HttpResponse(
            JSONRenderer().render(data), status=status, content_type="application/json"
        )

    def _error(self, exc: Exception) -> HttpResponse:
        response = exception_handler(exc, {"view": self})
        out = self.respond(response.data, status=response.status_code)
        for name in ("Retry-After", "WWW-Authenticate"):
            if response.has_header(name):
                out[name] = response[name]
        if response.status_code == 405:
            out["Allow"] = ", ".join(m.upper() for m in self.http_method_names)
        return out
