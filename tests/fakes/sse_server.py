"""The machinery the scripted SSE fakes share (anthropic_server.py, responses_server.py).

A fake is a `ThreadingHTTPServer` on 127.0.0.1 (a free port) served from a daemon thread. It
records every request (`RecordedRequest`) and answers each request to its one turn route
(e.g. ``POST /v1/messages``) with the next scripted turn, in order:

- a list of SSE events, written as ``event: <type>\\ndata: <json>\\n\\n`` frames, chunked and
  flushed one by one, then the connection closes;
- an `HttpError`: a JSON reply with that status, body and headers;
- a `HangTurn`: its ``before`` events, then silence until released or the client goes away.

A request beyond the script gets HTTP 500 saying so. A subclass brings its wire format: the
handler (`SseHandler` subclass) turns one scripted event into a frame, shapes error bodies and
routes anything beyond the turn route; the fake (`SseFake` subclass) names its turn route and
handler.
"""

from __future__ import annotations

import gzip
import itertools
import json
import select
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar, Generic, Self, TypeVar

__all__ = ["HangTurn", "HttpError", "RecordedRequest", "SseFake", "SseHandler", "next_id"]

E = TypeVar("E")
"""The type of one scripted SSE event (each fake has its own)."""

_ids = itertools.count(1)


def next_id(prefix: str) -> str:
    """``<prefix>_fake_NN``, from one counter shared by every fake: ids never repeat in a run."""
    return f"{prefix}_fake_{next(_ids):02d}"


# --------------------------------------------------------------------------- turn types


@dataclass
class HttpError:
    """A non-2xx reply: status, JSON body (in the API's error shape) and extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class HangTurn(Generic[E]):
    """Sends ``before``, then stays silent until ``release`` is set or the server closes; then
    sends ``after`` (if released) and closes the connection.

    ``started`` is set once the request arrived and ``before`` was sent;
    ``client_disconnected`` is set when the client closed the connection while the server was
    silent (a cancelled stream).
    """

    before: list[E]
    after: list[E] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    started: threading.Event = field(default_factory=threading.Event)
    client_disconnected: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def of(
        cls,
        before: Sequence[E],
        after: Sequence[E] | None = None,
        release: threading.Event | None = None,
    ) -> HangTurn[E]:
        """A hang turn; `release`, when given, is the event the test will set."""
        turn = cls(list(before), list(after or []))
        if release is not None:
            turn.release = release
        return turn


@dataclass
class RecordedRequest:
    """One request the fake received."""

    method: str
    path: str  # including the query string, e.g. "/v1/messages?beta=true"
    headers: dict[str, str]  # lower-case keys
    body: Any  # parsed JSON, or None when there was no/invalid JSON body
    raw: bytes = b""

    @property
    def route(self) -> str:
        """The path without its query string."""
        return self.path.split("?", 1)[0]


# --------------------------------------------------------------------------- server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: SseFake[Any]


class SseHandler(BaseHTTPRequestHandler):
    """Records requests and serves turns; a subclass supplies the API's wire format."""

    protocol_version = "HTTP/1.1"
    server: _Server

    #: The header carrying a fresh request id on every reply.
    request_id_header: ClassVar[str] = "request-id"
    #: The Content-Type of a streamed reply.
    stream_content_type: ClassVar[str] = "text/event-stream"
    #: The error types of a 404 and of the 500 past the end of the script.
    not_found_type: ClassVar[str] = "not_found_error"
    server_error_type: ClassVar[str] = "api_error"

    # -- the wire format (subclasses)

    def error_body(self, message: str, error_type: str) -> dict[str, Any]:
        """The API's JSON error body."""
        raise NotImplementedError

    def frame(self, event: Any, req: RecordedRequest) -> tuple[str, Mapping[str, Any], float]:
        """One scripted event -> (SSE event name, data, seconds to wait before sending it)."""
        raise NotImplementedError

    def answer_unstreamed(self, req: RecordedRequest, events: Sequence[Any]) -> bool:
        """Answer a turn of events without streaming; False (the default): stream it."""
        return False

    # -- plumbing

    def log_message(self, format: str, *args: Any) -> None:  # silence stderr logging
        return

    @property
    def fake(self) -> SseFake[Any]:
        return self.server.fake

    def record(self) -> RecordedRequest:
        """Read the request's body and record the request."""
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.headers.get("content-encoding", "").lower() == "gzip" and raw:
            raw = gzip.decompress(raw)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        req = RecordedRequest(
            self.command,
            self.path,
            {k.lower(): v for k, v in self.headers.items()},
            body,
            raw,
        )
        self.fake._record(req)
        return req

    def send_json(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.send_header(self.request_id_header, next_id("req"))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.wfile.flush()
        self.close_connection = True

    def send_error_json(self, status: int, message: str, error_type: str) -> None:
        self.send_json(status, self.error_body(message, error_type))

    def not_found(self, req: RecordedRequest) -> None:
        name = type(self.fake).__name__
        self.send_error_json(404, f"{name}: no route {req.method} {req.path}", self.not_found_type)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _send_events(self, events: Sequence[Any], req: RecordedRequest) -> bool:
        """Write SSE frames; False when the client went away or the server is closing."""
        closing = self.fake._closing
        try:
            for event in events:
                name, data, delay = self.frame(event, req)
                if delay and closing.wait(delay):
                    return False
                self._chunk(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
        except OSError:  # BrokenPipeError, ConnectionResetError, ...
            return False
        return True

    def _client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            data: bytes = self.connection.recv(1, socket.MSG_PEEK)
            return data == b""
        except OSError:
            return True

    def _stream(self, turn: list[Any] | HangTurn[Any], req: RecordedRequest) -> None:
        self.send_response(200)
        self.send_header("Content-Type", self.stream_content_type)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.send_header(self.request_id_header, next_id("req"))
        self.end_headers()
        self.close_connection = True
        if isinstance(turn, HangTurn):
            ok = self._send_events(turn.before, req)
            turn.started.set()
            if not ok:
                turn.client_disconnected.set()
                return
            closing = self.fake._closing
            while not (turn.release.is_set() or closing.is_set()):
                if self._client_gone():
                    turn.client_disconnected.set()
                    return
                time.sleep(0.02)
            if closing.is_set() or not self._send_events(turn.after, req):
                return
        elif not self._send_events(turn, req):
            return
        try:
            self.wfile.write(b"0\r\n\r\n")  # last chunk
            self.wfile.flush()
        except OSError:
            return

    def serve_turn(self, req: RecordedRequest) -> None:
        """Answer a request to the turn route with the next scripted turn."""
        turn, number, total = self.fake._next_turn()
        if turn is None:
            self.send_error_json(
                500,
                f"{type(self.fake).__name__}: no scripted turn left for {self.fake.turn_route} "
                f"request #{number} (the script has {total} turns)",
                self.server_error_type,
            )
        elif isinstance(turn, HttpError):
            self.send_json(turn.status, turn.body, turn.headers)
        elif isinstance(turn, HangTurn) or not self.answer_unstreamed(req, turn):
            self._stream(turn, req)

    # -- verbs: POST to the turn route serves a turn, anything else is not found

    def post(self, req: RecordedRequest) -> None:
        """Answer a recorded POST (subclasses add their other endpoints)."""
        if req.route.rstrip("/") == self.fake.turn_route:
            self.serve_turn(req)
        else:
            self.not_found(req)

    def do_POST(self) -> None:
        self.post(self.record())

    def do_GET(self) -> None:
        self.not_found(self.record())

    do_HEAD = do_GET
    do_PUT = do_GET
    do_DELETE = do_GET
    do_PATCH = do_GET


class SseFake(Generic[E]):
    """A scripted fake server. Use as a context manager, or `start()` / `close()`."""

    #: The path whose POSTs consume turns, e.g. "/v1/messages".
    turn_route: ClassVar[str]
    #: The handler speaking the API's wire format.
    handler: ClassVar[type[SseHandler]]
    #: What `url` appends to ``http://127.0.0.1:PORT`` (the base URL the clients want).
    url_suffix: ClassVar[str] = ""

    def __init__(self, *turns: list[E] | HttpError | HangTurn[E]) -> None:
        self._lock = threading.Lock()
        self._turns: list[list[E] | HttpError | HangTurn[E]] = list(turns)
        self._served = 0
        self._closing = threading.Event()
        self.requests: list[RecordedRequest] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._request_arrived = threading.Condition(self._lock)

    # -- lifecycle

    def start(self) -> Self:
        if self._server is not None:
            return self
        server = _Server(("127.0.0.1", 0), self.handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- scripting and inspection

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` plus `url_suffix`: the base URL to give the client."""
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}{self.url_suffix}"

    def script(self, *turns: list[E] | HttpError | HangTurn[E]) -> Self:
        """Append turns; each answers one POST to the turn route, in order."""
        with self._lock:
            self._turns.extend(turns)
        return self

    @property
    def turn_requests(self) -> list[RecordedRequest]:
        """The recorded POSTs to the turn route (the requests that consume turns)."""
        with self._lock:
            return [
                r
                for r in self.requests
                if r.method == "POST" and r.route.rstrip("/") == self.turn_route
            ]

    @property
    def turns_served(self) -> int:
        with self._lock:
            return self._served

    @property
    def turns_left(self) -> int:
        with self._lock:
            return len(self._turns) - self._served

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> bool:
        """Block until at least n requests (any endpoint) were recorded."""
        with self._request_arrived:
            return bool(self._request_arrived.wait_for(lambda: len(self.requests) >= n, timeout))

    # -- handler side

    def _record(self, req: RecordedRequest) -> None:
        with self._request_arrived:
            self.requests.append(req)
            self._request_arrived.notify_all()

    def _next_turn(self) -> tuple[list[E] | HttpError | HangTurn[E] | None, int, int]:
        with self._lock:
            self._served += 1
            number, total = self._served, len(self._turns)
            turn = self._turns[number - 1] if number <= total else None
            return turn, number, total
