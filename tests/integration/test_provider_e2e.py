"""Every real adapter through the whole service: API submit -> Celery worker -> adapter ->
events in PostgreSQL -> a WebSocket subscriber.

Topology (once for the module): one `uvicorn` web process and one `celery worker` process
(tests/integration/celery_workers.py) on channels_redis with a prefix of this module's own,
both configured (`ASM_PROVIDERS`, `ASM_PROVIDER_CONFIG`) with the four adapters pointed at
the fakes of their unit tests, which run in THIS process:

- `claude`: the real anthropic SDK in the worker -> `FakeAnthropic` (Messages API SSE);
- `claude_code`: the real Claude Code CLI (bundled by claude-agent-sdk) -> another
  `FakeAnthropic`;
- `codex`: the real `codex` binary (npm) -> `FakeResponses` (Responses API SSE);
- `amp`: the fake `amp` executable (tests/fakes/fake_amp.py) playing a stream-json fixture.

Each test: a user with an API token creates a session over HTTP, opens the session's
WebSocket, submits a run for one provider, reads events until the run's terminal event,
and checks the run's result over HTTP and that the WebSocket delivered exactly the events
stored in the database (same ids, sequences 1..N).
"""

from __future__ import annotations

import asyncio
import json
import shlex
import shutil
import stat
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from django.contrib.auth.models import User
from django.db import connection
from rest_framework.authtoken.models import Token
from websockets.asyncio.client import connect as ws_connect

from events.models import Event
from tests.fakes import anthropic_server as fa
from tests.fakes import responses_server as fr
from tests.integration.asgi_server import AsgiServer
from tests.integration.celery_workers import WorkerPool, use_pool, worker_pool
from tests.tools import tool_missing

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
CHANNELS_PREFIX = f"asm-e2e-{uuid.uuid4().hex[:12]}"
TERMINAL = {"run_completed", "run_failed", "run_cancelled", "run_timeout"}
PROVIDERS = [
    "runs.providers.echo.EchoProvider",
    "runs.providers.claude.ClaudeProvider",
    "runs.providers.claude_code.ClaudeCodeProvider",
    "runs.providers.codex.CodexProvider",
    "runs.providers.amp.AmpProvider",
]
CODEX_BIN = ROOT / "node_modules" / ".bin" / "codex"
AMP_FIXTURE = ROOT / "tests" / "fixtures" / "providers" / "amp" / "success.jsonl"


def claude_code_binary() -> str | None:
    from runs.providers.claude_code import ClaudeCodeProvider

    try:
        ClaudeCodeProvider(api_key="x").validate_config()
    except Exception:
        return None
    return "found"


class Fakes:
    def __init__(self, tmp: Path) -> None:
        self.claude = fa.FakeAnthropic().start()
        self.claude_code = fa.FakeAnthropic().start()
        self.codex = fr.FakeResponses().start()
        self.amp = tmp / "bin" / "amp"
        self.amp.parent.mkdir()
        fake = ROOT / "tests" / "fakes" / "fake_amp.py"
        self.amp.write_text(
            f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(fake))} "$@"\n'
        )
        self.amp.chmod(self.amp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        self.tmp = tmp

    def config(self) -> dict[str, Any]:
        (self.tmp / "codex-home").mkdir(exist_ok=True)
        (self.tmp / "claude-home").mkdir(exist_ok=True)
        return {
            "claude": {"base_url": self.claude.url, "api_key": "sk-ant-fake", "max_retries": 0},
            "claude_code": {
                "base_url": self.claude_code.url,
                "api_key": "sk-ant-fake",
                "home": str(self.tmp / "claude-home"),
            },
            "codex": {
                "binary": str(CODEX_BIN),
                "base_url": self.codex.url,
                "api_key": "sk-fake",
                "codex_home": str(self.tmp / "codex-home"),
                "request_max_retries": 0,
                "stream_max_retries": 0,
            },
            "amp": {
                "binary": str(self.amp),
                "api_key": "amp-fake",
                "extra_env": {"FAKE_AMP_SCRIPT": str(AMP_FIXTURE)},
            },
        }

    def close(self) -> None:
        for server in (self.claude, self.claude_code, self.codex):
            server.close()


@pytest.fixture(scope="module")
def fakes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fakes]:
    f = Fakes(tmp_path_factory.mktemp("fakes"))
    try:
        yield f
    finally:
        f.close()


@pytest.fixture(scope="module")
def provider_env(fakes: Fakes) -> dict[str, str]:
    return {
        "ASM_CHANNELS_PREFIX": CHANNELS_PREFIX,
        "ASM_PROVIDERS": ",".join(PROVIDERS),
        "ASM_PROVIDER_CONFIG": json.dumps(fakes.config()),
    }


@pytest.fixture(scope="module")
def web(pool: WorkerPool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AsgiServer]:
    """The web process submits runs over HTTP: it enqueues to the pool's queue and uses its
    Redis prefix (the pool's environment), with the same provider configuration."""
    log = tmp_path_factory.mktemp("web") / "web.log"
    server = AsgiServer(pool.env, log)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
        connection.close()


@pytest.fixture(scope="module")
def pool(
    django_db_setup: None, provider_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerPool]:
    log_dir = tmp_path_factory.mktemp("workers")
    with worker_pool(1, log_dir=log_dir, extra_env=provider_env) as p:
        yield p


@pytest.fixture
def workers(pool: WorkerPool, settings: Any, transactional_db: None) -> Iterator[WorkerPool]:
    with use_pool(pool, settings):
        yield pool


def api_user() -> str:
    user = User.objects.create_user(f"e2e-{uuid.uuid4().hex[:8]}")
    return str(Token.objects.create(user=user).key)


async def run_through_service(
    web: AsgiServer, token: str, provider: str, prompt: str
) -> tuple[dict[str, Any], list[dict[str, Any]], str]:
    """Session over HTTP, WebSocket open, run submitted; the run, the events seen, the
    session id."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=web.http, headers=headers, timeout=30) as client:
        created = await client.post("/api/v1/sessions", json={"agent_id": f"e2e-{provider}"})
        assert created.status_code == 201, created.text
        session_id = created.json()["id"]
        url = f"{web.ws}/ws/sessions/{session_id}/events?after=0&token={token}"
        seen: list[dict[str, Any]] = []
        async with ws_connect(url, open_timeout=10) as ws:
            submitted = await client.post(
                f"/api/v1/sessions/{session_id}/runs",
                json={"input": {"prompt": prompt}, "provider": provider},
            )
            assert submitted.status_code == 202, submitted.text
            run_id = submitted.json()["id"]

            async def follow() -> None:
                async for raw in ws:
                    message = json.loads(raw)
                    if message["type"] != "event":
                        continue
                    seen.append(message["event"])
                    event = message["event"]
                    if event["type"] in TERMINAL and event["run_id"] == run_id:
                        return

            await asyncio.wait_for(follow(), timeout=90)
        run = (await client.get(f"/api/v1/runs/{run_id}")).json()
    return run, seen, session_id


def check_delivery(seen: list[dict[str, Any]], session_id: str) -> None:
    stored = list(
        Event.objects.filter(session_id=session_id)
        .order_by("sequence_number")
        .values_list("id", "sequence_number")
    )
    assert [(uuid.UUID(e["id"]), e["sequence_number"]) for e in seen] == stored
    assert [s for _, s in stored] == list(range(1, len(stored) + 1))


def go(
    web: AsgiServer, provider: str, prompt: str, pool: WorkerPool
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    token = api_user()
    try:
        run, seen, session_id = asyncio.run(run_through_service(web, token, provider, prompt))
    except TimeoutError:
        pytest.fail(f"no terminal event within 90 s\n{pool.logs(tail=80)}\n{web.log()}")
    assert run["status"] == "completed", f"{run}\n{pool.logs(tail=80)}"
    check_delivery(seen, session_id)
    connection.close()
    return run, seen


def types(seen: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in seen]


def test_claude_end_to_end(web: AsgiServer, workers: WorkerPool, fakes: Fakes) -> None:
    fakes.claude.script(fa.text_turn("Hello from the fake Claude", usage={"input_tokens": 9}))
    run, seen = go(web, "claude", "say hello", workers)
    assert run["output"]["content"] == "Hello from the fake Claude"
    assert "message_streamed" in types(seen)
    received = [e for e in seen if e["type"] == "message_received"]
    assert received[-1]["data"]["content"] == "Hello from the fake Claude"
    assert run["token_usage"]["input_tokens"] == 9
    assert fakes.claude.message_requests[-1].body["messages"][-1]["content"] in (
        "say hello",
        [{"type": "text", "text": "say hello"}],
    )


def test_claude_code_end_to_end(web: AsgiServer, workers: WorkerPool, fakes: Fakes) -> None:
    if claude_code_binary() is None:
        tool_missing("the Claude Code CLI is not installed (pip install claude-agent-sdk)")
    fakes.claude_code.script(fa.text_turn("Hello from the fake Claude Code"))
    run, seen = go(web, "claude_code", "say hello", workers)
    assert run["output"]["content"] == "Hello from the fake Claude Code"
    assert "message_received" in types(seen)


def test_codex_end_to_end(web: AsgiServer, workers: WorkerPool, fakes: Fakes) -> None:
    if not CODEX_BIN.exists() and not shutil.which("codex"):
        tool_missing("the codex CLI is not installed (npm ci)")
    fakes.codex.script(fr.message_turn("Hello from the fake Codex"))
    run, seen = go(web, "codex", "say hello", workers)
    assert run["output"]["content"] == "Hello from the fake Codex"
    received = [e for e in seen if e["type"] == "message_received"]
    assert received[-1]["data"]["content"] == "Hello from the fake Codex"


def test_amp_end_to_end(web: AsgiServer, workers: WorkerPool, fakes: Fakes) -> None:
    run, seen = go(web, "amp", "what is 2+2?", workers)
    assert run["output"]["content"] == "2 + 2 equals 4."
    assert "message_received" in types(seen)
