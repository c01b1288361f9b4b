"""Streaming test fixtures: owners with real DRF tokens, their sessions, event helpers.

The tests are coroutines run by anyio's pytest plugin on asyncio. The consumer and the SSE
view read the database on worker threads, so every test that touches the database commits
(`django_db(transaction=True)`); setup that writes runs in sync fixtures, and writes during
a test go through `in_thread` (a worker thread, its connection closed afterwards).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import F
from django.test import Client
from rest_framework.authtoken.models import Token

from events.models import Event
from events.publish import MESSAGE_TYPE, event_json, session_group
from events.services import event_append
from events.streaming import db_call
from runs.models import Run
from sessions.models import Session
from sessions.services import session_create

P = ParamSpec("P")
R = TypeVar("R")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Owner:
    user: User
    token: str

    def cookie(self) -> str:
        """A login-session cookie header value for this user (the admin console's way in)."""
        client = Client()
        client.force_login(self.user)
        name = django_settings.SESSION_COOKIE_NAME
        return f"{name}={client.cookies[name].value}"


def make_owner(username: str, *, staff: bool = False) -> Owner:
    user = User.objects.create_user(username, is_staff=staff)
    return Owner(user, Token.objects.create(user=user).key)


@pytest.fixture
def alice(transactional_db) -> Owner:
    return make_owner("alice")


@pytest.fixture
def bob(transactional_db) -> Owner:
    return make_owner("bob")


@pytest.fixture
def session(alice: Owner) -> Session:
    """Alice's session: `session_created` is event 1."""
    return session_create(agent_id="stream-test", owner=alice.user)


@pytest.fixture
def run(session: Session) -> Run:
    return Run.objects.create(session=session, input={"prompt": "hi"}, provider="echo")


@pytest.fixture
def fast_streams(settings) -> None:
    """No heartbeat and no poll during a test unless it asks (doorbells only)."""
    settings.ASM_WS_HEARTBEAT_S = 60.0
    settings.ASM_STREAM_POLL_S = 60.0


def append(
    session: Session, n: int = 1, *, run: Run | None = None, type: str = "message_streamed"
) -> list[Event]:
    """Append n events through the event store (their doorbells ring after commit)."""
    out = []
    for i in range(n):
        data = {"delta": f"w{i}"} if type == "message_streamed" else {}
        out.append(
            event_append(
                session_id=session.id, type=type, data=data, run_id=run.id if run else None
            )
        )
    return out


def append_silently(
    session: Session, n: int = 1, *, run: Run | None = None, type: str = "message_streamed"
) -> list[Event]:
    """Append n events straight to the tables: a doorbell that is LOST (never rung).

    The same rows `event_append` writes (the session's counter bumped in the same
    transaction); only the publishing is missing, which is what a lost message looks like
    to a subscriber.
    """
    with transaction.atomic():
        Session.objects.filter(id=session.id).update(last_sequence=F("last_sequence") + n)
        last = Session.objects.values_list("last_sequence", flat=True).get(id=session.id)
        return [
            Event.objects.create(
                session_id=session.id,
                run=run,
                sequence_number=last - n + 1 + i,
                type=type,
                data={"delta": f"s{i}"} if type == "message_streamed" else {},
            )
            for i in range(n)
        ]


def doorbell(session_id: uuid.UUID, events: list[dict[str, Any]], last: int | None = None):
    """The message `events.publish` group-sends (events as `event_json`)."""
    seqs = [e["sequence_number"] for e in events]
    return {
        "type": MESSAGE_TYPE,
        "session_id": str(session_id),
        "events": events,
        "last_sequence": last if last is not None else max(seqs, default=0),
    }


async def ring(session_id: uuid.UUID, events: list[dict[str, Any]], last: int | None = None):
    """Group-send a hand-made doorbell message to the session's subscribers."""
    await get_channel_layer().group_send(
        session_group(session_id), doorbell(session_id, events, last)
    )


def as_json(events: list[Event]) -> list[dict[str, Any]]:
    return [json.loads(json.dumps(event_json(e))) for e in events]


def in_thread(fn: Callable[P, R]) -> Callable[P, Coroutine[Any, Any, R]]:
    """`fn` on a worker thread (its DB connection closed after), for use inside a test."""
    return db_call(fn)


def ws(path: str, *, headers: list[tuple[bytes, bytes]] | None = None) -> WebsocketCommunicator:
    """A communicator on the real ASGI application (origin check, auth, routing)."""
    from asm_project.asgi import application

    return WebsocketCommunicator(application, path, headers=headers)


async def receive_events(comm: WebsocketCommunicator, upto: int, timeout: float = 3) -> list[int]:
    """Sequence numbers of the event frames received until `upto` (pings skipped)."""
    seen: list[int] = []
    while not seen or seen[-1] < upto:
        frame = await comm.receive_json_from(timeout=timeout)
        if frame["type"] == "event":
            seen.append(frame["event"]["sequence_number"])
    return seen


async def close_code(comm: WebsocketCommunicator, timeout: float = 3) -> int:
    """The close code the server sent (after skipping any data frames)."""
    while True:
        out = await comm.receive_output(timeout=timeout)
        if out["type"] == "websocket.close":
            return int(out.get("code", 1000))
