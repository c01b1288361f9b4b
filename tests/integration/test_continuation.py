"""Continuity end to end: PostgreSQL, Redis and a REAL `celery worker` process.

A session's runs go echo -> claude (FakeAnthropic, in this process) -> codex (a stand-in
`codex` executable) -> codex again, submitted through the services and executed by the
worker: claude gets the first exchange as Messages API turns, the first codex run gets the
transcript replayed as its prompt prefix, the second resumes the codex thread. Then, through
the HTTP API: a compaction (the next claude run gets its summary and only the newest
messages) and a fork at the end of the second run (its transcript is the source's up to that
point; the source is untouched).

Run: DATABASE_URL=postgres://postgres@127.0.0.1:5432/<db> REDIS_URL=redis://127.0.0.1:6379/<n>
pytest -m integration tests/integration/test_continuation.py
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from events.models import Event
from runs.models import Run
from runs.services import run_submit, run_wait
from runs.store import DjangoSessionStore
from runs.transcript import transcript_build
from sessions.models import Session
from sessions.services import session_create
from tests.fakes.anthropic_server import FakeAnthropic, text_turn
from tests.integration.celery_workers import use_pool, worker_pool
from tests.unit.runs.test_continuation import REPLAY, STAND_IN

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def anthropic() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


@pytest.fixture
def codex_log(tmp_path: Path) -> tuple[Path, Path]:
    log = tmp_path / "codex-argv.jsonl"
    binary = tmp_path / "codex-stand-in"
    binary.write_text(STAND_IN.format(python=sys.executable, log=str(log)))
    binary.chmod(0o755)
    return binary, log


def submit(session_id: Any, provider: str, prompt: str, **options: Any) -> Run:
    created = run_submit(
        session_id=session_id, input={"prompt": prompt}, provider=provider, options=options
    )
    run = run_wait(run_id=created.run.id, timeout_s=60)
    assert run.status == "completed", (run.status, run.error)
    return run


def test_continuity_across_providers_workers_and_the_api(
    anthropic: FakeAnthropic,
    codex_log: tuple[Path, Path],
    tmp_path: Path,
    settings: Any,
) -> None:
    binary, log = codex_log
    config = {
        "claude": {"api_key": "k", "base_url": anthropic.url, "max_retries": 0},
        "codex": {"binary": str(binary), "codex_home": str(tmp_path / "home"), "api_key": "k"},
    }
    settings.ASM_PROVIDER_CONFIG = config
    with (
        worker_pool(
            1,
            log_dir=tmp_path,
            extra_env={"ASM_PROVIDER_CONFIG": json.dumps(config)},
        ) as pool,
        use_pool(pool, settings),
    ):
        alice = User.objects.create_user("alice")
        session = session_create(agent_id="continuity", owner=alice)
        sid = session.id
        tool = {"name": "lookup", "input": {"q": "x"}, "output": "found"}
        submit(sid, "echo", "hello echo", adapter_opts={"tool_calls": [tool]})
        anthropic.script(text_turn("claude answer"))
        submit(sid, "claude", "now claude", continuation=True)
        messages = anthropic.message_requests[0].body["messages"]
        assert messages[1]["content"][0]["type"] == "tool_use"
        assert messages[2]["content"][0]["type"] == "tool_result"
        assert messages[-1] == {"role": "user", "content": "now claude"}

        submit(sid, "codex", "now codex", continuation=True)
        assert json.loads(log.read_text().splitlines()[0])[-1] == REPLAY
        resumed = submit(sid, "codex", "and again", continuation=True)
        argv = json.loads(log.read_text().splitlines()[-1])
        assert argv[:3] == ["exec", "resume", "thread-codex-1"]
        assert resumed.output["content"] == "codex answer resumed"

        api = APIClient()
        api.credentials(HTTP_AUTHORIZATION=f"Bearer {Token.objects.create(user=alice).key}")
        compacted = api.post(f"/api/v1/sessions/{sid}/compact", {"keep_messages": 2}, format="json")
        assert compacted.status_code == 201, compacted.content
        summary = compacted.json()["event"]["data"]["summary"]
        anthropic.script(text_turn("after compaction"))
        submit(sid, "claude", "last one", continuation=True)
        body = anthropic.message_requests[1].body
        assert summary in body["system"]
        assert body["messages"] == [
            {"role": "user", "content": "and again"},
            {"role": "assistant", "content": "codex answer resumed"},
            {"role": "user", "content": "last one"},
        ]

        # fork at the end of the claude run
        source_events = list(Event.objects.filter(session_id=sid).values().order_by("id"))
        k = (
            Event.objects.filter(session_id=sid, type="run_completed")
            .order_by("sequence_number")[1]
            .sequence_number
        )
        forked = api.post(f"/api/v1/sessions/{sid}/fork", {"at_sequence": k}, format="json")
        assert forked.status_code == 201, forked.content
        fork_id = forked.json()["id"]
        store = DjangoSessionStore()
        source_t = transcript_build(
            [e for e in store.event_list(sid) if e.sequence_number <= k], session_id=sid
        )
        fork_t = transcript_build(store.event_list(Session.objects.get(id=fork_id).id))

        def plain(messages: Any) -> list[dict[str, Any]]:
            return [{k_: v for k_, v in m.items() if k_ != "metadata"} for m in messages]

        assert plain(fork_t.messages) == plain(source_t.messages)
        assert [m["content"] for m in fork_t.messages][-1] == "claude answer"
        assert list(Event.objects.filter(session_id=sid).values().order_by("id")) == (source_events)
