"""The error taxonomy: codes, categories, retryability, default messages, HTTP statuses.

Plain Python (no Django). Source: the seed's error taxonomy (spec section 13), 43 codes,
plus asm additions: ``worker_lost`` (category ``runtime``, not retryable: the reaper
records it when a run's lease lapses because its worker died, architecture section 4.3), and
the ``access`` category for the service's own surfaces: ``authentication_required`` (401),
``permission_denied`` (403), ``method_not_allowed`` (405) and ``throttled`` (429,
retryable).

Invariants:

- ``ErrorCode`` has exactly 48 members and ``ERROR_CATALOGUE`` has one ``ErrorSpec`` per
  member (checked at import time).
- Exactly five seed codes are retryable: ``provider_unavailable``, ``provider_rate_limited``,
  ``provider_timeout``, ``storage_connection_failed`` and ``timeout``; of the additions
  only ``throttled`` is (a client may retry after the wait it is told).
- Like the seed, ``AsmError`` accepts codes outside the taxonomy: they have category
  ``unknown``, default message "An error occurred", are not retryable and map to HTTP 500.
  ``AsmError.from_dict`` is stricter: it only accepts known codes.
- ``AsmError.to_dict()`` is the body of the HTTP error envelope
  (``{"error": {"code", "category", "message", "retryable", "details"}}``).

HTTP status mapping (asm decision; the seed has no HTTP surface):

=========== ========================================================== ======
Category    Codes                                                      Status
=========== ========================================================== ======
validation  every validation code                                      400
state       ``invalid_status``, ``invalid_event_type``,                400
            ``invalid_capability_type`` (bad values in a request)
state       every other state code (transitions, streams, cursors)     409
resource    ``not_found``, ``session_not_found``, ``run_not_found``,   404
            ``capability_not_found``
resource    ``already_exists``, ``duplicate_capability``               409
provider    ``provider_error``, ``provider_authentication_failed``     502
provider    ``provider_unavailable``, ``provider_rate_limited``,       503
            ``provider_timeout`` (the retryable ones)
provider    ``provider_quota_exceeded``                                429
storage     ``storage_connection_failed``                              503
storage     ``storage_error``, ``storage_write_failed``,               500
            ``storage_read_failed``
runtime     ``timeout``                                                504
runtime     ``cancelled``                                              409
runtime     ``policy_violation``                                       403
runtime     ``internal_error``, ``unknown_error``, ``worker_lost``     500
concurrency ``max_sessions_exceeded``, ``max_runs_exceeded``           429
concurrency ``capability_not_supported``                               400
concurrency ``invalid_operation``                                      409
tool        ``tool_not_found``                                         404
tool        ``tool_permission_denied``                                 403
tool        ``tool_error``, ``tool_execution_failed``                  422
access      ``authentication_required`` 401, ``permission_denied`` 403,
            ``method_not_allowed`` 405, ``throttled`` 429
(unknown)   any code outside the taxonomy                              500
=========== ========================================================== ======
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Self

__all__ = [
    "ERROR_CATALOGUE",
    "UNKNOWN_ERROR_MESSAGE",
    "AsmError",
    "ErrorCategory",
    "ErrorCode",
    "ErrorSpec",
    "default_message",
    "error_category",
    "http_status",
    "is_known_code",
    "is_retryable",
]

#: Default message of a code outside the taxonomy (the seed's wording).
UNKNOWN_ERROR_MESSAGE = "An error occurred"
_UNKNOWN_HTTP_STATUS = 500


class ErrorCategory(StrEnum):
    VALIDATION = "validation"
    STATE = "state"
    RESOURCE = "resource"
    PROVIDER = "provider"
    STORAGE = "storage"
    RUNTIME = "runtime"
    CONCURRENCY = "concurrency"
    TOOL = "tool"
    ACCESS = "access"  # asm addition: authentication, permissions, methods, throttling
    UNKNOWN = "unknown"


class ErrorCode(StrEnum):
    # validation
    VALIDATION_ERROR = "validation_error"
    INVALID_INPUT = "invalid_input"
    MISSING_REQUIRED_FIELD = "missing_required_field"
    INVALID_FORMAT = "invalid_format"
    # state
    INVALID_STATUS = "invalid_status"
    INVALID_TRANSITION = "invalid_transition"
    INVALID_EVENT_TYPE = "invalid_event_type"
    INVALID_CAPABILITY_TYPE = "invalid_capability_type"
    MISSING_REQUIRED_CAPABILITY = "missing_required_capability"
    STREAM_CLOSED = "stream_closed"
    CONTEXT_MISMATCH = "context_mismatch"
    INVALID_CURSOR = "invalid_cursor"
    SESSION_MISMATCH = "session_mismatch"
    RUN_MISMATCH = "run_mismatch"
    # resource
    NOT_FOUND = "not_found"
    SESSION_NOT_FOUND = "session_not_found"
    RUN_NOT_FOUND = "run_not_found"
    CAPABILITY_NOT_FOUND = "capability_not_found"
    ALREADY_EXISTS = "already_exists"
    DUPLICATE_CAPABILITY = "duplicate_capability"
    # provider
    PROVIDER_ERROR = "provider_error"
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    PROVIDER_RATE_LIMITED = "provider_rate_limited"
    PROVIDER_TIMEOUT = "provider_timeout"
    PROVIDER_AUTHENTICATION_FAILED = "provider_authentication_failed"
    PROVIDER_QUOTA_EXCEEDED = "provider_quota_exceeded"
    # storage
    STORAGE_ERROR = "storage_error"
    STORAGE_CONNECTION_FAILED = "storage_connection_failed"
    STORAGE_WRITE_FAILED = "storage_write_failed"
    STORAGE_READ_FAILED = "storage_read_failed"
    # runtime
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    POLICY_VIOLATION = "policy_violation"
    INTERNAL_ERROR = "internal_error"
    UNKNOWN_ERROR = "unknown_error"
    WORKER_LOST = "worker_lost"  # asm addition
    # access (asm additions: the service's own surfaces)
    AUTHENTICATION_REQUIRED = "authentication_required"
    PERMISSION_DENIED = "permission_denied"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    THROTTLED = "throttled"
    # concurrency
    MAX_SESSIONS_EXCEEDED = "max_sessions_exceeded"
    MAX_RUNS_EXCEEDED = "max_runs_exceeded"
    CAPABILITY_NOT_SUPPORTED = "capability_not_supported"
    INVALID_OPERATION = "invalid_operation"
    # tool
    TOOL_ERROR = "tool_error"
    TOOL_NOT_FOUND = "tool_not_found"
    TOOL_EXECUTION_FAILED = "tool_execution_failed"
    TOOL_PERMISSION_DENIED = "tool_permission_denied"


@dataclass(frozen=True)
class ErrorSpec:
    code: ErrorCode
    category: ErrorCategory
    retryable: bool
    default_message: str
    http_status: int


_C = ErrorCode
_V = ErrorCategory.VALIDATION
_ST = ErrorCategory.STATE
_RS = ErrorCategory.RESOURCE
_P = ErrorCategory.PROVIDER
_SG = ErrorCategory.STORAGE
_RT = ErrorCategory.RUNTIME
_CC = ErrorCategory.CONCURRENCY
_T = ErrorCategory.TOOL
_AC = ErrorCategory.ACCESS

# (code, category, retryable, default message, HTTP status)
_TABLE: tuple[tuple[ErrorCode, ErrorCategory, bool, str, int], ...] = (
    (_C.VALIDATION_ERROR, _V, False, "Validation error occurred", 400),
    (_C.INVALID_INPUT, _V, False, "Invalid input provided", 400),
    (_C.MISSING_REQUIRED_FIELD, _V, False, "Required field is missing", 400),
    (_C.INVALID_FORMAT, _V, False, "Invalid format", 400),
    (_C.INVALID_STATUS, _ST, False, "Invalid status value", 400),
    (_C.INVALID_TRANSITION, _ST, False, "Invalid state transition", 409),
    (_C.INVALID_EVENT_TYPE, _ST, False, "Invalid event type", 400),
    (_C.INVALID_CAPABILITY_TYPE, _ST, False, "Invalid capability type", 400),
    (_C.MISSING_REQUIRED_CAPABILITY, _ST, False, "Required capability is missing", 409),
    (_C.STREAM_CLOSED, _ST, False, "Stream is closed", 409),
    (_C.CONTEXT_MISMATCH, _ST, False, "Event context does not match stream context", 409),
    (_C.INVALID_CURSOR, _ST, False, "Invalid cursor operation", 409),
    (_C.SESSION_MISMATCH, _ST, False, "Session IDs do not match", 409),
    (_C.RUN_MISMATCH, _ST, False, "Run IDs do not match", 409),
    (_C.NOT_FOUND, _RS, False, "Resource not found", 404),
    (_C.SESSION_NOT_FOUND, _RS, False, "Session not found", 404),
    (_C.RUN_NOT_FOUND, _RS, False, "Run not found", 404),
    (_C.CAPABILITY_NOT_FOUND, _RS, False, "Capability not found", 404),
    (_C.ALREADY_EXISTS, _RS, False, "Resource already exists", 409),
    (_C.DUPLICATE_CAPABILITY, _RS, False, "Capability with this name already exists", 409),
    (_C.PROVIDER_ERROR, _P, False, "Provider error occurred", 502),
    (_C.PROVIDER_UNAVAILABLE, _P, True, "Provider is unavailable", 503),
    (_C.PROVIDER_RATE_LIMITED, _P, True, "Provider rate limit exceeded", 503),
    (_C.PROVIDER_TIMEOUT, _P, True, "Provider request timed out", 503),
    (_C.PROVIDER_AUTHENTICATION_FAILED, _P, False, "Provider authentication failed", 502),
    (_C.PROVIDER_QUOTA_EXCEEDED, _P, False, "Provider quota exceeded", 429),
    (_C.STORAGE_ERROR, _SG, False, "Storage error occurred", 500),
    (_C.STORAGE_CONNECTION_FAILED, _SG, True, "Storage connection failed", 503),
    (_C.STORAGE_WRITE_FAILED, _SG, False, "Storage write operation failed", 500),
    (_C.STORAGE_READ_FAILED, _SG, False, "Storage read operation failed", 500),
    (_C.TIMEOUT, _RT, True, "Operation timed out", 504),
    (_C.CANCELLED, _RT, False, "Operation was cancelled", 409),
    (_C.POLICY_VIOLATION, _RT, False, "Policy violation occurred", 403),
    (_C.INTERNAL_ERROR, _RT, False, "Internal error occurred", 500),
    (_C.UNKNOWN_ERROR, _RT, False, "An unknown error occurred", 500),
    (_C.WORKER_LOST, _RT, False, "The worker executing the run was lost", 500),
    (
        _C.AUTHENTICATION_REQUIRED,
        _AC,
        False,
        "Authentication credentials are missing or invalid",
        401,
    ),
    (_C.PERMISSION_DENIED, _AC, False, "You do not have permission to do this", 403),
    (_C.METHOD_NOT_ALLOWED, _AC, False, "Method not allowed", 405),
    (_C.THROTTLED, _AC, True, "Too many requests; slow down", 429),
    (_C.MAX_SESSIONS_EXCEEDED, _CC, False, "Maximum parallel sessions limit exceeded", 429),
    (_C.MAX_RUNS_EXCEEDED, _CC, False, "Maximum parallel runs limit exceeded", 429),
    (_C.CAPABILITY_NOT_SUPPORTED, _CC, False, "Capability not supported by provider", 400),
    (_C.INVALID_OPERATION, _CC, False, "Operation not valid for current state", 409),
    (_C.TOOL_ERROR, _T, False, "Tool error occurred", 422),
    (_C.TOOL_NOT_FOUND, _T, False, "Tool not found", 404),
    (_C.TOOL_EXECUTION_FAILED, _T, False, "Tool execution failed", 422),
    (_C.TOOL_PERMISSION_DENIED, _T, False, "Tool permission denied", 403),
)

ERROR_CATALOGUE: Mapping[ErrorCode, ErrorSpec] = types.MappingProxyType(
    {
        code: ErrorSpec(code, category, retryable, message, status)
        for code, category, retryable, message, status in _TABLE
    }
)

if set(ERROR_CATALOGUE) != set(ErrorCode) or len(_TABLE) != len(ErrorCode):  # pragma: no cover
    raise RuntimeError("ERROR_CATALOGUE must have exactly one entry per ErrorCode")

# Lookup by plain string (StrEnum members hash and compare like their values).
_BY_VALUE: Mapping[str, ErrorSpec] = types.MappingProxyType(
    {str(code): spec for code, spec in ERROR_CATALOGUE.items()}
)

del _C, _V, _ST, _RS, _P, _SG, _RT, _CC, _T


def is_known_code(code: str) -> bool:
    """True when ``code`` is one of the 48 taxonomy codes (the seed's ``valid_code?``)."""
    return code in _BY_VALUE


def error_category(code: str) -> ErrorCategory:
    """The category of ``code``; ``unknown`` for a code outside the taxonomy."""
    spec = _BY_VALUE.get(code)
    return spec.category if spec is not None else ErrorCategory.UNKNOWN


def is_retryable(code_or_error: str | AsmError) -> bool:
    """True exactly for the five retryable codes (an ``AsmError`` is judged by its code)."""
    code = code_or_error.code if isinstance(code_or_error, AsmError) else code_or_error
    spec = _BY_VALUE.get(code)
    return spec.retryable if spec is not None else False


def default_message(code: str) -> str:
    """The default message of ``code``; "An error occurred" for a code outside the taxonomy."""
    spec = _BY_VALUE.get(code)
    return spec.default_message if spec is not None else UNKNOWN_ERROR_MESSAGE


def http_status(code: str) -> int:
    """The HTTP status for ``code`` (see the module docstring); 500 for unknown codes."""
    spec = _BY_VALUE.get(code)
    return spec.http_status if spec is not None else _UNKNOWN_HTTP_STATUS


class AsmError(Exception):
    """An error carrying a taxonomy code; the Python form of the seed's ``Error``.

    ``str(err)`` is ``"[<code>] <message>"``. ``to_dict()`` is the JSON error envelope body.
    """

    code: str
    message: str
    details: dict[str, Any]
    provider_error: dict[str, Any] | None

    def __init__(
        self,
        code: str,
        message: str | None = None,
        details: Mapping[str, Any] | None = None,
        *,
        provider_error: Mapping[str, Any] | None = None,
    ) -> None:
        self.code = str(code)
        self.message = default_message(self.code) if message is None else message
        self.details = dict(details) if details is not None else {}
        self.provider_error = dict(provider_error) if provider_error is not None else None
        super().__init__(self.code, self.message)

    @property
    def category(self) -> ErrorCategory:
        return error_category(self.code)

    @property
    def retryable(self) -> bool:
        return is_retryable(self.code)

    @property
    def http_status(self) -> int:
        return http_status(self.code)

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r}, {self.details!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep details and provider_error across pickling (default pickling replays args).
        return (
            _rebuild_error,
            (type(self), self.code, self.message, self.details, self.provider_error),
        )

    def to_dict(self) -> dict[str, Any]:
        """``{"code", "category", "message", "retryable", "details"}``: the envelope body."""
        return {
            "code": self.code,
            "category": str(self.category),
            "message": self.message,
            "retryable": self.retryable,
            "details": dict(self.details),
        }

    @classmethod
    def from_dict(cls, data: object) -> Self:
        """Rebuild an error from ``to_dict()`` output (``category``/``retryable`` are derived).

        Raises ``AsmError("validation_error", ...)`` when ``data`` is not a mapping, its
        ``code`` is not a taxonomy code, ``message`` is missing or not a string, or
        ``details`` is present but not a mapping.
        """
        if not isinstance(data, Mapping):
            raise AsmError(ErrorCode.VALIDATION_ERROR, "Invalid error map")
        code = data.get("code")
        if not isinstance(code, str) or not is_known_code(code):
            raise AsmError(ErrorCode.VALIDATION_ERROR, f"Invalid error code: {code!r}")
        message = data.get("message")
        if not isinstance(message, str):
            raise AsmError(ErrorCode.VALIDATION_ERROR, "Error message must be a string")
        details = data.get("details")
        if details is not None and not isinstance(details, Mapping):
            raise AsmError(ErrorCode.VALIDATION_ERROR, "Error details must be a map")
        provider_error = data.get("provider_error")
        if provider_error is not None and not isinstance(provider_error, Mapping):
            raise AsmError(ErrorCode.VALIDATION_ERROR, "Error provider_error must be a map")
        return cls(code, message, details, provider_error=provider_error)

    @classmethod
    def wrap(
        cls,
        code: str,
        exc: BaseException,
        message: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> Self:
        """Wrap a caught exception (spec section 13 ``wrap``).

        The message is ``message`` or else the exception's own message (the code's default
        message when that is empty). ``details.original_exception`` is the exception's type
        name; with a custom message, ``details.original_message`` keeps the exception's one.
        """
        original = exc.message if isinstance(exc, AsmError) else str(exc)
        merged: dict[str, Any] = dict(details) if details is not None else {}
        merged["original_exception"] = type(exc).__name__
        if message is not None:
            merged["original_message"] = original
            text: str | None = message
        else:
            text = original or None
        return cls(code, text, merged)


def _rebuild_error(
    cls: type[AsmError],
    code: str,
    message: str,
    details: dict[str, Any],
    provider_error: dict[str, Any] | None,
) -> AsmError:
    return cls(code, message, details, provider_error=provider_error)


def session_not_found(session_id: object) -> AsmError:
    """The one way to say a session does not exist (same message and details everywhere)."""
    return AsmError(
        "session_not_found", f"Session not found: {session_id}", {"session_id": str(session_id)}
    )


def run_not_found(run_id: object) -> AsmError:
    """The one way to say a run does not exist (same message and details everywhere)."""
    return AsmError("run_not_found", f"Run not found: {run_id}", {"run_id": str(run_id)})
