"""The error taxonomy (spec section 13, plus asm's worker_lost)."""

import json
import pickle

import pytest

from asm_core.errors import (
    ERROR_CATALOGUE,
    AsmError,
    ErrorCategory,
    ErrorCode,
    default_message,
    error_category,
    http_status,
    is_known_code,
    is_retryable,
)

# The spec table, written out independently of the implementation:
# code -> (category, retryable, default message)
SPEC_TABLE: dict[str, tuple[str, bool, str]] = {
    "validation_error": ("validation", False, "Validation error occurred"),
    "invalid_input": ("validation", False, "Invalid input provided"),
    "missing_required_field": ("validation", False, "Required field is missing"),
    "invalid_format": ("validation", False, "Invalid format"),
    "invalid_status": ("state", False, "Invalid status value"),
    "invalid_transition": ("state", False, "Invalid state transition"),
    "invalid_event_type": ("state", False, "Invalid event type"),
    "invalid_capability_type": ("state", False, "Invalid capability type"),
    "missing_required_capability": ("state", False, "Required capability is missing"),
    "stream_closed": ("state", False, "Stream is closed"),
    "context_mismatch": ("state", False, "Event context does not match stream context"),
    "invalid_cursor": ("state", False, "Invalid cursor operation"),
    "session_mismatch": ("state", False, "Session IDs do not match"),
    "run_mismatch": ("state", False, "Run IDs do not match"),
    "not_found": ("resource", False, "Resource not found"),
    "session_not_found": ("resource", False, "Session not found"),
    "run_not_found": ("resource", False, "Run not found"),
    "capability_not_found": ("resource", False, "Capability not found"),
    "already_exists": ("resource", False, "Resource already exists"),
    "duplicate_capability": ("resource", False, "Capability with this name already exists"),
    "provider_error": ("provider", False, "Provider error occurred"),
    "provider_unavailable": ("provider", True, "Provider is unavailable"),
    "provider_rate_limited": ("provider", True, "Provider rate limit exceeded"),
    "provider_timeout": ("provider", True, "Provider request timed out"),
    "provider_authentication_failed": ("provider", False, "Provider authentication failed"),
    "provider_quota_exceeded": ("provider", False, "Provider quota exceeded"),
    "storage_error": ("storage", False, "Storage error occurred"),
    "storage_connection_failed": ("storage", True, "Storage connection failed"),
    "storage_write_failed": ("storage", False, "Storage write operation failed"),
    "storage_read_failed": ("storage", False, "Storage read operation failed"),
    "timeout": ("runtime", True, "Operation timed out"),
    "cancelled": ("runtime", False, "Operation was cancelled"),
    "policy_violation": ("runtime", False, "Policy violation occurred"),
    "internal_error": ("runtime", False, "Internal error occurred"),
    "unknown_error": ("runtime", False, "An unknown error occurred"),
    "max_sessions_exceeded": ("concurrency", False, "Maximum parallel sessions limit exceeded"),
    "max_runs_exceeded": ("concurrency", False, "Maximum parallel runs limit exceeded"),
    "capability_not_supported": ("concurrency", False, "Capability not supported by provider"),
    "invalid_operation": ("concurrency", False, "Operation not valid for current state"),
    "tool_error": ("tool", False, "Tool error occurred"),
    "tool_not_found": ("tool", False, "Tool not found"),
    "tool_execution_failed": ("tool", False, "Tool execution failed"),
    "tool_permission_denied": ("tool", False, "Tool permission denied"),
}
ASM_ADDITIONS: dict[str, tuple[str, bool, str]] = {
    "worker_lost": ("runtime", False, "The worker executing the run was lost"),
    "authentication_required": (
        "access",
        False,
        "Authentication credentials are missing or invalid",
    ),
    "permission_denied": ("access", False, "You do not have permission to do this"),
    "method_not_allowed": ("access", False, "Method not allowed"),
    "throttled": ("access", True, "Too many requests; slow down"),
}
ALL_CODES = {**SPEC_TABLE, **ASM_ADDITIONS}


def test_the_seed_table_has_43_codes():
    assert len(SPEC_TABLE) == 43


def test_exactly_the_48_codes():
    assert len(ErrorCode) == 48
    assert {str(c) for c in ErrorCode} == set(ALL_CODES)
    assert set(ERROR_CATALOGUE) == set(ErrorCode)


def test_categories():
    assert {str(c) for c in ErrorCategory} == {
        "validation",
        "state",
        "resource",
        "provider",
        "storage",
        "runtime",
        "concurrency",
        "tool",
        "access",
        "unknown",
    }


@pytest.mark.parametrize(("code", "expected"), sorted(ALL_CODES.items()))
def test_catalogue_row(code, expected):
    category, retryable, message = expected
    assert error_category(code) == category
    assert is_retryable(code) is retryable
    assert default_message(code) == message
    spec = ERROR_CATALOGUE[ErrorCode(code)]
    assert (spec.code, spec.category, spec.retryable, spec.default_message) == (
        code,
        category,
        retryable,
        message,
    )
    assert is_known_code(code)


def test_exactly_five_seed_codes_are_retryable_plus_throttled():
    assert {str(c) for c in ErrorCode if is_retryable(c)} == {
        "throttled",
        "provider_unavailable",
        "provider_rate_limited",
        "provider_timeout",
        "storage_connection_failed",
        "timeout",
    }


def test_unknown_code_helpers():
    assert error_category("no_such_code") is ErrorCategory.UNKNOWN
    assert is_retryable("no_such_code") is False
    assert default_message("no_such_code") == "An error occurred"
    assert http_status("no_such_code") == 500
    assert not is_known_code("no_such_code")


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("validation_error", 400),
        ("invalid_input", 400),
        ("invalid_transition", 409),
        ("invalid_event_type", 400),
        ("invalid_status", 400),
        ("stream_closed", 409),
        ("not_found", 404),
        ("session_not_found", 404),
        ("run_not_found", 404),
        ("already_exists", 409),
        ("duplicate_capability", 409),
        ("provider_error", 502),
        ("provider_authentication_failed", 502),
        ("provider_unavailable", 503),
        ("provider_rate_limited", 503),
        ("provider_timeout", 503),
        ("provider_quota_exceeded", 429),
        ("storage_error", 500),
        ("storage_connection_failed", 503),
        ("timeout", 504),
        ("cancelled", 409),
        ("policy_violation", 403),
        ("internal_error", 500),
        ("worker_lost", 500),
        ("authentication_required", 401),
        ("permission_denied", 403),
        ("method_not_allowed", 405),
        ("throttled", 429),
        ("max_sessions_exceeded", 429),
        ("max_runs_exceeded", 429),
        ("capability_not_supported", 400),
        ("invalid_operation", 409),
        ("tool_error", 422),
        ("tool_execution_failed", 422),
        ("tool_not_found", 404),
        ("tool_permission_denied", 403),
    ],
)
def test_http_status(code, status):
    assert http_status(code) == status
    assert AsmError(code).http_status == status


def test_every_validation_code_is_400():
    for code, (category, _, _) in ALL_CODES.items():
        if category == "validation":
            assert http_status(code) == 400, code


def test_default_message_and_str_form():
    err = AsmError("run_not_found")
    assert err.message == "Run not found"
    assert str(err) == "[run_not_found] Run not found"
    assert err.details == {}
    assert err.provider_error is None
    assert err.category is ErrorCategory.RESOURCE
    assert err.retryable is False


def test_custom_message_and_details():
    err = AsmError(ErrorCode.PROVIDER_TIMEOUT, "no events for 30 s", {"after_ms": 30000})
    assert err.code == "provider_timeout"
    assert str(err) == "[provider_timeout] no events for 30 s"
    assert err.details == {"after_ms": 30000}
    assert err.retryable is True
    assert is_retryable(err) is True


def test_details_are_copied():
    details = {"a": 1}
    err = AsmError("validation_error", details=details)
    details["b"] = 2
    assert err.details == {"a": 1}


def test_provider_error_is_kept():
    err = AsmError("provider_rate_limited", provider_error={"status_code": 429})
    assert err.provider_error == {"status_code": 429}


def test_unknown_code_is_accepted_like_the_seed():
    err = AsmError("sdk_error")
    assert err.category is ErrorCategory.UNKNOWN
    assert err.message == "An error occurred"
    assert err.retryable is False
    assert err.http_status == 500
    assert str(err) == "[sdk_error] An error occurred"


def test_raisable():
    with pytest.raises(AsmError) as info:
        raise AsmError("invalid_transition", "pending -> completed")
    assert info.value.code == "invalid_transition"


def test_to_dict_is_the_envelope_body_and_json_able():
    err = AsmError("storage_connection_failed", details={"host": "db"})
    body = err.to_dict()
    assert body == {
        "code": "storage_connection_failed",
        "category": "storage",
        "message": "Storage connection failed",
        "retryable": True,
        "details": {"host": "db"},
    }
    assert json.loads(json.dumps(body)) == body
    assert type(body["code"]) is str
    assert type(body["category"]) is str


def test_to_dict_from_dict_round_trip():
    err = AsmError("tool_not_found", "no tool named bash", {"tool": "bash"})
    again = AsmError.from_dict(json.loads(json.dumps(err.to_dict())))
    assert isinstance(again, AsmError)
    assert again.to_dict() == err.to_dict()
    assert str(again) == str(err)


def test_from_dict_takes_provider_error_and_no_details():
    err = AsmError.from_dict(
        {"code": "provider_error", "message": "boom", "provider_error": {"status": 500}}
    )
    assert err.details == {}
    assert err.provider_error == {"status": 500}


@pytest.mark.parametrize(
    "data",
    [
        {"code": "no_such_code", "message": "x"},
        {"code": 42, "message": "x"},
        {"message": "x"},
        {"code": "not_found"},
        {"code": "not_found", "message": 1},
        {"code": "not_found", "message": "x", "details": [1]},
        ["not", "a", "map"],
        None,
    ],
)
def test_from_dict_rejects_bad_input(data):
    with pytest.raises(AsmError) as info:
        AsmError.from_dict(data)
    assert info.value.code == "validation_error"


def test_from_dict_unknown_code_message():
    with pytest.raises(AsmError, match="Invalid error code"):
        AsmError.from_dict({"code": "no_such_code", "message": "x"})


def test_wrap_uses_the_exception_message():
    err = AsmError.wrap("storage_write_failed", OSError("disk full"))
    assert err.code == "storage_write_failed"
    assert err.message == "disk full"
    assert err.details == {"original_exception": "OSError"}


def test_wrap_with_custom_message_keeps_the_original():
    err = AsmError.wrap(
        "internal_error", ValueError("bad value"), "Executor crashed", {"run_id": "r1"}
    )
    assert err.message == "Executor crashed"
    assert err.details == {
        "run_id": "r1",
        "original_exception": "ValueError",
        "original_message": "bad value",
    }


def test_wrap_of_an_empty_exception_message_falls_back_to_the_default():
    err = AsmError.wrap("internal_error", RuntimeError())
    assert err.message == "Internal error occurred"
    assert err.details == {"original_exception": "RuntimeError"}


def test_wrap_of_an_asm_error_uses_its_message_not_its_str():
    inner = AsmError("provider_timeout", "slow")
    err = AsmError.wrap("run_not_found", inner, "outer")
    assert err.details["original_message"] == "slow"
    assert err.details["original_exception"] == "AsmError"


def test_pickle_keeps_everything():
    err = AsmError("provider_error", "boom", {"a": 1}, provider_error={"status": 500})
    again = pickle.loads(pickle.dumps(err))  # noqa: S301 (our own bytes)
    assert (again.code, again.message, again.details, again.provider_error) == (
        "provider_error",
        "boom",
        {"a": 1},
        {"status": 500},
    )
