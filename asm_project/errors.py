"""The one error envelope, everywhere: `{"error": {code, category, message, retryable, details}}`.

`AsmError` carries a taxonomy code and its HTTP status. DRF's own exceptions (parse errors,
authentication, permissions, 404, 405, throttling) and Django's 404/500 handlers are mapped
onto taxonomy codes, so every error a client sees has the same shape. Unexpected exceptions
become `internal_error` without leaking their text (they are logged).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import IO, Any

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from rest_framework import exceptions as drf
from rest_framework.parsers import JSONParser
from rest_framework.response import Response

from asm_core.errors import AsmError

logger = logging.getLogger(__name__)


def envelope(error: AsmError) -> dict[str, Any]:
    return {"error": error.to_dict()}


def as_asm_error(exc: Exception) -> AsmError:
    """The taxonomy error for any exception a request can raise."""
    if isinstance(exc, AsmError):
        return exc
    if isinstance(exc, drf.ValidationError):
        return AsmError("validation_error", "Invalid request", {"fields": exc.detail})
    if isinstance(exc, drf.ParseError):
        return AsmError("invalid_format", str(exc.detail))
    if isinstance(exc, drf.NotAuthenticated | drf.AuthenticationFailed):
        return AsmError("authentication_required", str(exc.detail))
    if isinstance(exc, drf.PermissionDenied | PermissionDenied):
        return AsmError("permission_denied")
    if isinstance(exc, drf.NotFound | Http404):
        return AsmError("not_found", "Not found")
    if isinstance(exc, drf.MethodNotAllowed):
        return AsmError("method_not_allowed", str(exc.detail))
    if isinstance(exc, drf.NotAcceptable | drf.UnsupportedMediaType):
        return AsmError("invalid_format", str(exc.detail))
    if isinstance(exc, drf.Throttled):
        return AsmError("throttled", str(exc.detail), {"retry_after_s": _wait(exc)})
    logger.error("unhandled error in a request", exc_info=exc)
    return AsmError("internal_error")


def _wait(exc: drf.Throttled) -> int | None:
    wait = getattr(exc, "wait", None)  # set by DRF's constructor; missing from its stubs
    return int(wait) if wait is not None else None


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """DRF's EXCEPTION_HANDLER: every error in the envelope, with the taxonomy's status."""
    error = as_asm_error(exc)
    status = getattr(exc, "status_code", None) if not isinstance(exc, AsmError) else None
    response = Response(envelope(error), status=status or error.http_status)
    if isinstance(exc, drf.Throttled) and _wait(exc) is not None:
        response["Retry-After"] = str(_wait(exc))
    if isinstance(exc, drf.NotAuthenticated | drf.AuthenticationFailed):
        response["WWW-Authenticate"] = 'Bearer realm="api"'
    return response


def error_response(error: AsmError, status: int | None = None) -> JsonResponse:
    """The envelope as a plain Django response (for non-DRF views: SSE, long-poll, probes)."""
    return JsonResponse(envelope(error), status=status or error.http_status)


class JsonBodyParser(JSONParser):
    """DRF's JSON parser (the API's only one, `DEFAULT_PARSER_CLASSES`), except that a body
    nested too deeply for Python's `json` module is a 400 `invalid_format` like any other
    malformed JSON (DRF only turns `ValueError`s into a parse error: its `RecursionError`
    was a 500)."""

    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise drf.ParseError("JSON parse error - nested too deeply") from None


def handler404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return error_response(AsmError("not_found", "Not found"))


def handler500(request: HttpRequest) -> HttpResponse:
    return error_response(AsmError("internal_error"))
