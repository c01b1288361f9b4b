"""Provider failures -> the error taxonomy (one mapping for every adapter).

Plain Python, pure functions. The router fails over on exactly the retryable codes, so this
table decides failover:

=================================================== ===================================== =====
provider signal                                     code                                  retry
=================================================== ===================================== =====
HTTP 429, ``rate_limit_error``                      ``provider_rate_limited``             yes
HTTP 529, ``overloaded_error``, any 5xx, ``api_error`` ``provider_unavailable``           yes
HTTP 408/504, a timeout                             ``provider_timeout``                  yes
HTTP 401/403, ``authentication_error``,             ``provider_authentication_failed``    no
``permission_error``
quota / billing / credit exhausted (any status)     ``provider_quota_exceeded``           no
anything else (400, 404, 413, unknown)              ``provider_error``                    no
=================================================== ===================================== =====

Quota wins over the status (providers answer an exhausted quota with 429 or 403 and a
message saying so; retrying cannot help). CLI providers report errors as text
(``unexpected status 401 Unauthorized: ...``), so ``error_from_text`` finds the status and
the well-known words in it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from asm_core.errors import AsmError, ErrorCode

__all__ = ["code_for", "error_from_status", "error_from_text", "provider_error"]

_QUOTA = re.compile(
    r"quota|insufficient[_ ]quota|billing|credit balance|out of credits|usage limit",
    re.IGNORECASE,
)
_TYPE_CODES: dict[str, ErrorCode] = {
    "rate_limit_error": ErrorCode.PROVIDER_RATE_LIMITED,
    "rate_limit_exceeded": ErrorCode.PROVIDER_RATE_LIMITED,
    "overloaded_error": ErrorCode.PROVIDER_UNAVAILABLE,
    "api_error": ErrorCode.PROVIDER_UNAVAILABLE,
    "server_error": ErrorCode.PROVIDER_UNAVAILABLE,
    "timeout_error": ErrorCode.PROVIDER_TIMEOUT,
    "authentication_error": ErrorCode.PROVIDER_AUTHENTICATION_FAILED,
    "permission_error": ErrorCode.PROVIDER_AUTHENTICATION_FAILED,
    "invalid_api_key": ErrorCode.PROVIDER_AUTHENTICATION_FAILED,
    "insufficient_quota": ErrorCode.PROVIDER_QUOTA_EXCEEDED,
    "billing_error": ErrorCode.PROVIDER_QUOTA_EXCEEDED,
}


def code_for(
    status: int | None = None, error_type: str | None = None, message: str = ""
) -> ErrorCode:
    """The taxonomy code for a provider failure given its HTTP status, its error type (the
    provider's own name for it, e.g. ``overloaded_error``) and its message."""
    if _QUOTA.search(message or "") or error_type in ("insufficient_quota", "billing_error"):
        return ErrorCode.PROVIDER_QUOTA_EXCEEDED
    if error_type and error_type in _TYPE_CODES:
        return _TYPE_CODES[error_type]
    if status is not None:
        if status == 429:
            return ErrorCode.PROVIDER_RATE_LIMITED
        if status in (408, 504):
            return ErrorCode.PROVIDER_TIMEOUT
        if status in (401, 403):
            return ErrorCode.PROVIDER_AUTHENTICATION_FAILED
        if status >= 500:
            return ErrorCode.PROVIDER_UNAVAILABLE
    return ErrorCode.PROVIDER_ERROR


def provider_error(
    provider: str,
    message: str,
    *,
    status: int | None = None,
    error_type: str | None = None,
    code: ErrorCode | None = None,
    **details: Any,
) -> AsmError:
    """An ``AsmError`` for a provider failure; details name the provider, status and type."""
    chosen = code or code_for(status, error_type, message)
    info: dict[str, Any] = {"provider": provider}
    if status is not None:
        info["status"] = status
    if error_type:
        info["error_type"] = error_type
    info.update({k: v for k, v in details.items() if v is not None})
    return AsmError(chosen, f"{provider}: {message}" if message else f"{provider} failed", info)


def error_from_status(
    provider: str, status: int | None, body: object = None, message: str | None = None
) -> AsmError:
    """From an HTTP error: ``body`` is the provider's JSON error (``{"error": {"type",
    "message"}}`` as Anthropic and OpenAI both send it) or anything else."""
    error_type: str | None = None
    text = message or ""
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping):
            raw_type = inner.get("type") or inner.get("code")
            error_type = str(raw_type) if raw_type else None
            text = str(inner.get("message") or text)
    return provider_error(provider, text or f"HTTP {status}", status=status, error_type=error_type)


_STATUS_IN_TEXT = re.compile(r"\b(?:status|http)[ :]*([1-5]\d\d)\b", re.IGNORECASE)
_TIMEOUT_IN_TEXT = re.compile(r"timed? ?out|timeout", re.IGNORECASE)
_OVERLOADED_IN_TEXT = re.compile(
    r"overloaded|high demand|service unavailable|stream disconnected|connection (?:refused|reset)"
    r"|couldn't connect|could not connect|cannot reach|can't reach|unable to connect"
    r"|ENOTFOUND|ECONNRESET|ECONNREFUSED",
    re.IGNORECASE,
)
_AUTH_IN_TEXT = re.compile(
    r"invalid or missing api key|no api key found|invalid api key|unauthori[sz]ed"
    r"|authentication failed",
    re.IGNORECASE,
)


def error_from_text(provider: str, text: str, *, status: int | None = None) -> AsmError:
    """From a CLI's unstructured error text (``unexpected status 401 Unauthorized: ...``)."""
    if status is None:
        found = _STATUS_IN_TEXT.search(text or "")
        status = int(found.group(1)) if found else None
    code = code_for(status, None, text)
    if code == ErrorCode.PROVIDER_ERROR and status is None:
        if _AUTH_IN_TEXT.search(text or ""):
            code = ErrorCode.PROVIDER_AUTHENTICATION_FAILED
        elif _TIMEOUT_IN_TEXT.search(text or ""):
            code = ErrorCode.PROVIDER_TIMEOUT
        elif _OVERLOADED_IN_TEXT.search(text or ""):
            code = ErrorCode.PROVIDER_UNAVAILABLE
    return provider_error(provider, (text or "").strip()[:2000], status=status, code=code)
