"""Schema fuzzing: schemathesis against the LIVE schema of a real server (issue 4).

Acceptance: "A schema fuzzing run (schemathesis against the live schema, in CI, bounded to a
few minutes) finds no 5xx response and no response that breaks the schema".

Topology (the production shape, on the pytest PostgreSQL test database): one `uvicorn
asm_project.asgi:application` process with `DJANGO_DEBUG=False` on a free loopback port, and
one `celery worker` (`tests/integration/celery_workers.py`) on the same queue, so submitted
runs really execute and `/wait` and the one-shot see them finish. PostgreSQL rather than the
embedded SQLite mode on purpose: it is what production runs, and it refuses things SQLite
takes (a NUL character in a string, say), which is exactly what a fuzzer sends.

Data made up front (through the API, as its users would): a user `alice` with a Bearer token
(the requests' credentials), three of her sessions (pending, active with a finished run,
active with a second run) and a session and run of another user (`bob`), so that owned
objects, foreign ones (404 like missing ones) and random UUIDs are all exercised. Their ids
are schemathesis dictionaries bound to `session_id` / `run_id` (path, query and
`parent_session_id` in bodies) with probability 0.5: about half of the generated cases hit
real objects. schemathesis also reuses ids from earlier responses on its own.

What runs: schemathesis' engine (the CLI's, through the Python API, v4) on the schema as the
server serves it at `/api/v1/schema/?format=json`, every operation, every phase (examples,
coverage, fuzzing, stateful where links are inferred), positive and negative data, with the
checks `not_a_server_error`, `status_code_conformance`, `content_type_conformance` and
`response_schema_conformance`. Bounded: `max-examples` per operation and phase
(`ASM_FUZZ_MAX_EXAMPLES`, 25), and a total time budget (`ASM_FUZZ_BUDGET_S`, 150 s) after
which the engine is stopped (what ran must be clean; a run cut short is reported). Derandomized
with a fixed seed (`ASM_FUZZ_SEED`, 20250401) so a failure replays.

Nothing is excluded. Only the two waits are kept short: a `before_call` hook caps a valid
`timeout` of `GET /runs/{id}/wait` (query) and `POST /run` (body) at 0.5 s, and supplies it
when the case leaves it out (the defaults are 30 and 60 s); invalid values go out as
generated, so their 400s are still fuzzed.

Any failure fails the test, with schemathesis' reproduction (a curl command) per failure.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from django.contrib.auth.models import User
from django.db import connection
from rest_framework.authtoken.models import Token

from tests.integration.asgi_server import AsgiServer
from tests.integration.celery_workers import WorkerPool, worker_pool
from tests.integration.conftest import child_env

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SEED = int(os.environ.get("ASM_FUZZ_SEED") or 20250401)
MAX_EXAMPLES = int(os.environ.get("ASM_FUZZ_MAX_EXAMPLES") or 25)
BUDGET_S = float(os.environ.get("ASM_FUZZ_BUDGET_S") or 150)
WAIT_CAP_S = 0.5
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)


# --------------------------------------------------------------------------- processes
def server_env() -> dict[str, str]:
    """The production settings (DEBUG off) on the test database and Redis."""
    return {
        **child_env(),
        "DJANGO_DEBUG": "False",
        "DJANGO_SECRET_KEY": "asm-fuzz-only",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "ASM_CHANNELS_PREFIX": f"asm-fuzz-{uuid.uuid4().hex[:12]}",
        # The fuzzer sends thousands of requests a minute as one user: throttling would turn
        # most of them into 429s that test nothing.
        "ASM_THROTTLE_RATE": "1000000/min",
        "ASM_ANON_THROTTLE_RATE": "1000000/min",
        "ASM_LOG_LEVEL": "WARNING",
    }


class FuzzServer(AsgiServer):
    """The server under fuzzing; its log hides Django's one warning line per 4xx."""

    def log(self) -> str:
        """The log's tail, without Django's one-line warning per 4xx response."""
        lines = self.log_path.read_text(errors="replace").splitlines()
        kept = [ln for ln in lines if "WARNING django.request" not in ln]
        return "\n".join(kept)[-8000:]


@pytest.fixture(scope="module")
def stack(django_db_setup, tmp_path_factory) -> Iterator[tuple[FuzzServer, WorkerPool]]:
    """The worker, then the server on the worker's queue and Redis prefix."""
    log_dir = tmp_path_factory.mktemp("fuzz")
    with worker_pool(1, log_dir=log_dir, base_env=server_env()) as pool:
        server = FuzzServer(pool.env, log_dir / "server.log")
        try:
            server.wait_ready()
            yield server, pool
        finally:
            server.stop()
            connection.close()


# --------------------------------------------------------------------------- data
@dataclass
class Fixtures:
    token: str
    sessions: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)


def user_token(name: str) -> str:
    user = User.objects.create_user(f"{name}-{uuid.uuid4().hex[:6]}")
    key: str = Token.objects.create(user=user).key
    return key


def make_fixtures(base: str) -> Fixtures:
    """Alice's token, and ids of her sessions and runs and of one of bob's (a foreign one)."""
    alice, bob = user_token("alice"), user_token("bob")
    made = Fixtures(token=alice)
    with httpx.Client(base_url=f"{base}/api/v1", timeout=30) as client:

        def call(token: str, method: str, path: str, body: Any = None) -> dict[str, Any]:
            response = client.request(
                method, path, json=body, headers={"Authorization": f"Bearer {token}"}
            )
            assert response.status_code < 300, (method, path, response.text)
            data: dict[str, Any] = response.json()
            return data

        def session(token: str, agent_id: str) -> str:
            sid: str = call(token, "POST", "/sessions", {"agent_id": agent_id, "tags": ["x"]})["id"]
            made.sessions.append(sid)
            return sid

        def run(token: str, sid: str) -> str:
            rid: str = call(token, "POST", f"/sessions/{sid}/runs", {"input": "hi"})["id"]
            made.runs.append(rid)
            return rid

        session(alice, "fuzz-pending")
        first = run(alice, session(alice, "fuzz-active"))
        done = call(alice, "GET", f"/runs/{first}/wait?timeout=20")
        assert done["status"] == "completed", done
        run(alice, session(alice, "fuzz-second"))
        run(bob, session(bob, "fuzz-foreign"))
    return made


# --------------------------------------------------------------------------- the waits
def _capped(value: Any) -> Any:
    """A valid timeout (a number in 0..60, or a string of one) at most WAIT_CAP_S."""
    try:
        seconds = float(value)
    except (TypeError, ValueError, OverflowError):
        return value
    if isinstance(value, bool) or not 0 <= seconds <= 60:
        return value
    return min(seconds, WAIT_CAP_S)


def cap_waits(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """schemathesis `before_call`: keep the long-poll and the one-shot's wait short."""
    label = case.operation.label
    if label == "GET /api/v1/runs/{run_id}/wait":
        query = case.query if isinstance(case.query, dict) else None
        if query is None:
            case.query = {"timeout": WAIT_CAP_S}
        elif "timeout" not in query:
            query["timeout"] = WAIT_CAP_S
        elif not isinstance(query["timeout"], list):
            query["timeout"] = _capped(query["timeout"])
    elif label == "POST /api/v1/run" and isinstance(case.body, dict):
        case.body["timeout"] = _capped(case.body.get("timeout", WAIT_CAP_S))


# --------------------------------------------------------------------------- the run
@dataclass
class Outcome:
    problems: list[str] = field(default_factory=list)
    scenarios: int = 0
    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    operations: set[str] = field(default_factory=set)
    stop_reason: str = ""
    elapsed_s: float = 0.0


def fuzz(base: str, made: Fixtures, storage: Path) -> Outcome:
    import schemathesis
    from hypothesis.configuration import set_hypothesis_home_dir
    from schemathesis.engine import Status, events, from_schema
    from schemathesis.hooks import GLOBAL_HOOK_DISPATCHER

    ids = {"dictionary": "sessions", "probability": 0.5}
    run_ids = {"dictionary": "runs", "probability": 0.5}
    config = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "base-url": base,
            "headers": {"Authorization": f"Bearer {made.token}"},
            "workers": 1,
            "request-timeout": 20,
            "generation": {
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "mode": "all",
                "database": "none",
            },
            "cache": {"enabled": False},  # no state carried from one run to the next
            "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
            "dictionaries": {
                "sessions": {"values": made.sessions},
                "runs": {"values": made.runs},
                # `input` and `provider` are free-form in the schema: without these, hardly
                # any generated run would be accepted (a bare string is a valid prompt).
                "inputs": {"values": ["hello asm", "summarise order 42"]},
                "providers": {"values": ["echo"]},
            },
            "parameters": {
                "path.session_id": ids,
                "path.run_id": run_ids,
                "query.run_id": run_ids,
                "body.parent_session_id": ids,
                "body.input": {"dictionary": "inputs", "probability": 0.5},
                "body.provider": {"dictionary": "providers", "probability": 0.5},
            },
        }
    )
    schema = schemathesis.openapi.from_url(
        f"{base}/api/v1/schema/?format=json", config=config, timeout=30
    )
    outcome = Outcome()
    set_hypothesis_home_dir(storage)  # not ./.hypothesis in the work tree
    schemathesis.hook("before_call")(cap_waits)
    started = time.monotonic()
    stream = from_schema(schema).execute()
    watchdog = threading.Timer(BUDGET_S, stream.stop)
    watchdog.daemon = True
    watchdog.start()
    try:
        for event in stream:
            if isinstance(event, events.ScenarioFinished):
                outcome.scenarios += 1
                recorder = event.recorder
                outcome.operations.add(recorder.label)
                for interaction in recorder.interactions.values():
                    outcome.requests += 1
                    if interaction.response is not None:
                        code = interaction.response.status_code
                        outcome.statuses[code] = outcome.statuses.get(code, 0) + 1
                if event.status == Status.FAILURE:
                    outcome.problems.extend(failures_of(recorder))
                elif event.status == Status.ERROR:
                    outcome.problems.append(f"{recorder.label}: the scenario ended in an error")
            elif isinstance(event, events.NonFatalError):
                outcome.problems.append(
                    f"{event.label} ({event.phase}): {event.info.title}: {event.info.message}"
                )
            elif isinstance(event, events.FatalError):
                outcome.problems.append(f"fatal: {event.exception!r}")
            elif isinstance(event, events.EngineFinished):
                outcome.stop_reason = str(event.stop_reason)
                outcome.problems.extend(f"after run: {f.title}" for f in event.failures)
    finally:
        watchdog.cancel()
        GLOBAL_HOOK_DISPATCHER.unregister(cap_waits)
        set_hypothesis_home_dir(None)
        outcome.elapsed_s = time.monotonic() - started
    return outcome


def failures_of(recorder: Any) -> list[str]:
    """One line per distinct failed check of a scenario, with the request that shows it."""
    out: dict[str, str] = {}
    for case_id, nodes in recorder.checks.items():
        for node in nodes:
            info = node.failure_info
            if info is None:
                continue
            failure = info.failure
            key = f"{recorder.label}: {node.name}: {failure.title}"
            if key in out:
                continue
            response = recorder.interactions.get(case_id)
            status = response.response.status_code if response and response.response else None
            message = str(getattr(failure, "message", "") or "")[:600]
            out[key] = f"{key} [{status}]\n    {message}\n    {info.code_sample[:800]}"
    return list(out.values())


# --------------------------------------------------------------------------- the test
def test_fuzzing_the_live_schema_finds_no_server_error_and_no_schema_violation(stack, tmp_path):
    server, pool = stack
    made = make_fixtures(server.url)
    outcome = fuzz(server.url, made, tmp_path)
    summary = (
        f"seed {SEED}, {outcome.elapsed_s:.0f}s, stop: {outcome.stop_reason}, "
        f"{len(outcome.operations)} operations, {outcome.scenarios} scenarios, "
        f"{outcome.requests} requests, statuses {dict(sorted(outcome.statuses.items()))}"
    )
    print(f"schema fuzzing: {summary}")
    detail = "\n".join(outcome.problems[:40])
    assert not outcome.problems, (
        f"schemathesis found {len(outcome.problems)} problem(s) ({summary}):\n{detail}\n"
        f"----- server log -----\n{server.log()}\n{pool.logs(tail=40)}"
    )
    schema = json.loads(httpx.get(f"{server.url}/api/v1/schema/?format=json", timeout=30).text)
    expected = {
        f"{method.upper()} {path}" for path, item in schema["paths"].items() for method in item
    }
    assert outcome.operations >= expected, f"not fuzzed: {expected - outcome.operations}"
    assert outcome.statuses.get(200, 0) > 0


def test_inputs_the_generator_rarely_makes_are_client_errors(stack):
    """What the generator makes rarely or never (JSON nested a thousand levels deep, NUL
    characters, lone surrogates, `1e999`, forged cursors, unsafe methods on unknown paths),
    found while fixing what it did find: each was a 500, or an HTML 403 from Django's CSRF
    check. Each must be a 4xx in the error envelope."""
    server, _ = stack
    auth = {"Authorization": f"Bearer {user_token('carol')}"}
    base = f"{server.url}/api/v1"

    def forged(cursor: str) -> str:
        return base64.b64encode(cursor.encode()).decode()

    raw = {"Content-Type": "application/json", **auth}
    cases: list[tuple[str, str, dict[str, Any], str | None, int, str]] = [
        ("POST", "/sessions", raw, "[" * 5000, 400, "invalid_format"),
        (
            "POST",
            "/sessions",
            raw,
            '{"agent_id": "a", "metadata": {"k": "a\\u0000b"}}',
            400,
            "validation_error",
        ),
        (
            "POST",
            "/sessions",
            raw,
            '{"agent_id": "a", "context": {"a\\u0000": 1}}',
            400,
            "validation_error",
        ),
        (
            "POST",
            "/sessions",
            raw,
            '{"agent_id": "a", "metadata": {"k": "\\ud800"}}',
            400,
            "validation_error",
        ),
        (
            "POST",
            "/sessions",
            raw,
            '{"agent_id": "a", "metadata": {"k": 1e999}}',
            400,
            "validation_error",
        ),
        (
            "POST",
            "/run",
            raw,
            '{"input": {"prompt": "a\\u0000"}, "timeout": 0}',
            400,
            "validation_error",
        ),
        ("GET", f"/sessions?cursor={forged('p=not-a-time')}", auth, None, 400, "validation_error"),
        (
            "GET",
            f"/sessions?cursor={forged('r=1&p=2024-01-01')}",
            auth,
            None,
            400,
            "validation_error",
        ),
        ("POST", "/sessions/not-a-uuid/pause", auth, None, 404, "not_found"),
        ("DELETE", "/no/such/endpoint", auth, None, 404, "not_found"),
    ]
    with httpx.Client(base_url=base, timeout=30) as client:
        for method, path, headers, body, status, code in cases:
            response = client.request(method, path, headers=headers, content=body)
            where = f"{method} {path} {(body or '')[:60]!r}"
            assert response.status_code == status, (
                f"{where}: {response.status_code} {response.text[:300]}"
            )
            assert response.headers["content-type"].startswith("application/json"), where
            assert response.json()["error"]["code"] == code, f"{where}: {response.text[:300]}"
