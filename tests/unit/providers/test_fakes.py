"""The scripted SSE fakes themselves (tests/fakes/): what they answer beyond what the real
clients in test_claude*.py and test_codex_cli.py exercise."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.fakes import anthropic_server as fa
from tests.fakes import responses_server as fr
from tests.fakes.sse_server import SseFake


def call(
    fake: SseFake[Any],
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request to the fake: status, lower-case headers, the whole (de-chunked) body."""
    conn = http.client.HTTPConnection(urlsplit(fake.url).netloc, timeout=5)
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def frames(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """The (event, data) pairs of an SSE body."""
    found = []
    for block in raw.decode().split("\n\n"):
        if block:
            event, data = block.split("\n")
            found.append((event.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return found


# --------------------------------------------------------------------------- FakeAnthropic


@pytest.fixture
def anthropic() -> Iterator[fa.FakeAnthropic]:
    with fa.FakeAnthropic() as fake:
        yield fake


@pytest.mark.parametrize(("error_type", "status"), [("overloaded_error", 529), ("api_error", 500)])
def test_a_non_streaming_request_for_an_error_turn_gets_that_error(
    anthropic: fa.FakeAnthropic, error_type: str, status: int
) -> None:
    """The Claude Code CLI retries a stream cut by `event: error` without streaming."""
    anthropic.script(fa.error_event_turn(error_type, "try later"))
    code, headers, raw = call(anthropic, "POST", "/v1/messages", {"model": "m", "stream": False})
    assert code == status
    assert headers["request-id"].startswith("req_fake_")
    assert json.loads(raw) == {
        "type": "error",
        "error": {"type": error_type, "message": "try later"},
    }


def test_a_non_streaming_request_gets_the_turn_folded_into_one_message(
    anthropic: fa.FakeAnthropic,
) -> None:
    anthropic.script(fa.tool_use_turn([{"name": "get", "input": {"k": 1}}], text="Let me look."))
    code, _, raw = call(anthropic, "POST", "/v1/messages", {"model": "claude-x"})
    assert code == 200
    message = json.loads(raw)
    assert message["model"] == "claude-x"
    assert message["stop_reason"] == "tool_use"
    assert [b["type"] for b in message["content"]] == ["text", "tool_use"]
    assert message["content"][0]["text"] == "Let me look."
    assert message["content"][1]["input"] == {"k": 1}


def test_a_streamed_error_turn_ends_with_the_error_frame(anthropic: fa.FakeAnthropic) -> None:
    anthropic.script(fa.error_event_turn())
    code, headers, raw = call(anthropic, "POST", "/v1/messages", {"model": "m", "stream": True})
    assert code == 200
    assert headers["content-type"] == "text/event-stream; charset=utf-8"
    events = frames(raw)
    assert events[0][0] == "message_start"
    assert events[0][1]["message"]["model"] == "m"  # filled in from the request
    assert events[-1] == (
        "error",
        {"type": "error", "error": {"type": "overloaded_error", "message": "overloaded_error"}},
    )


def test_anthropic_routes_and_the_end_of_the_script(anthropic: fa.FakeAnthropic) -> None:
    assert call(anthropic, "HEAD", "/")[0] == 200
    code, _, raw = call(anthropic, "DELETE", "/v1/messages")
    assert code == 404
    assert json.loads(raw)["error"] == {
        "type": "not_found_error",
        "message": "FakeAnthropic: no route DELETE /v1/messages",
    }
    code, _, raw = call(anthropic, "POST", "/v1/messages", {"stream": True})
    assert code == 500
    error = json.loads(raw)["error"]
    assert error["type"] == "api_error"
    assert "no scripted turn left for /v1/messages request #1" in error["message"]
    assert [r.method for r in anthropic.requests] == ["HEAD", "DELETE", "POST"]
    assert len(anthropic.message_requests) == 1


# --------------------------------------------------------------------------- FakeResponses


@pytest.fixture
def responses() -> Iterator[fr.FakeResponses]:
    with fr.FakeResponses() as fake:
        yield fake


def test_responses_streams_a_turn_and_records_the_request(responses: fr.FakeResponses) -> None:
    responses.script(fr.message_turn("hi there"), fr.http_error(429, "slow down"))
    assert responses.url.endswith("/v1")
    code, headers, raw = call(responses, "POST", "/v1/responses", {"model": "gpt", "input": []})
    assert code == 200
    assert headers["content-type"] == "text/event-stream"
    assert headers["x-request-id"].startswith("req_fake_")
    events = frames(raw)
    assert [name for name, _ in events] == [
        "response.created",
        "response.output_item.done",
        "response.completed",
    ]
    assert all(name == data["type"] for name, data in events)
    assert events[1][1]["item"]["content"][0]["text"] == "hi there"

    code, _, raw = call(responses, "POST", "/v1/responses/", {})
    assert code == 429
    assert json.loads(raw)["error"]["code"] == "rate_limit_exceeded"
    assert [r.body for r in responses.response_requests] == [{"model": "gpt", "input": []}, {}]
    assert (responses.turns_served, responses.turns_left) == (2, 0)


def test_responses_routes_and_the_end_of_the_script(responses: fr.FakeResponses) -> None:
    code, _, raw = call(responses, "GET", "/v1/responses", headers={"Upgrade": "websocket"})
    assert code == 426
    assert "WebSockets are not supported" in json.loads(raw)["error"]["message"]
    code, _, raw = call(responses, "GET", "/v1/models")
    assert code == 404
    assert json.loads(raw) == {
        "error": {
            "message": "FakeResponses: no route GET /v1/models",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }
    code, _, raw = call(responses, "POST", "/v1/responses", {})
    assert code == 500
    error = json.loads(raw)["error"]
    assert error["type"] == "server_error"
    assert "no scripted turn left for /v1/responses request #1" in error["message"]
    assert responses.turns_served == 1  # the GETs consumed no turn
    assert responses.wait_for_requests(3, timeout=0)
