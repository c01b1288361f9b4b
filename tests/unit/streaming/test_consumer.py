"""`WS /ws/sessions/{id}/events`: credentials, close codes, filters, exactly-once delivery.

Through the real ASGI application (origin check, auth stack, routing, consumer) with the
in-process channel layer (`events.layers.LocalChannelLayer`). Doorbells are injected with
the layer's `group_send`, duplicated and out of order, and events are also written without
any doorbell (`append_silently`): whatever the mixture, each sequence number arrives once
and in order.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.urls import re_path

from asm_project.ws_auth import ws_auth_stack
from events.consumers import SessionEventsConsumer
from events.streaming import EventFrame, Frame
from tests.unit.streaming.conftest import (
    append,
    append_silently,
    as_json,
    close_code,
    in_thread,
    make_owner,
    receive_events,
    ring,
    ws,
)

pytestmark = [pytest.mark.anyio, pytest.mark.django_db(transaction=True)]


def path(session, query: str = "") -> str:
    return f"/ws/sessions/{session.id}/events" + (f"?{query}" if query else "")


# --------------------------------------------------------------------------- credentials
async def test_token_in_the_query_string(session, alice, fast_streams):
    first = as_json(await in_thread(lambda: list(session.events.all()))())[0]
    comm = ws(path(session, f"token={alice.token}"))
    assert (await comm.connect())[0]
    assert await comm.receive_json_from() == {"type": "event", "event": first}
    await comm.disconnect()


async def test_token_in_the_authorization_header(session, alice, fast_streams):
    comm = ws(path(session), headers=[(b"authorization", f"Bearer {alice.token}".encode())])
    assert (await comm.connect())[0]
    assert await receive_events(comm, 1) == [1]
    await comm.disconnect()


async def test_login_cookie_of_the_admin(session, alice, fast_streams):
    cookie = await in_thread(alice.cookie)()
    comm = ws(path(session), headers=[(b"cookie", cookie.encode())])
    assert (await comm.connect())[0]
    assert await receive_events(comm, 1) == [1]
    await comm.disconnect()


async def test_staff_may_follow_any_session(session, fast_streams):
    staff = await in_thread(make_owner)("root", staff=True)
    comm = ws(path(session, f"token={staff.token}"))
    await comm.connect()
    assert await receive_events(comm, 1) == [1]
    await comm.disconnect()


@pytest.mark.parametrize(
    ("query", "headers"),
    [
        ("", []),
        ("token=", []),
        ("token=not-a-token", []),
        ("", [(b"authorization", b"Bearer nope")]),
        ("", [(b"authorization", b"Basic YWxpY2U6eA==")]),
    ],
    ids=["none", "empty-token", "unknown-token", "unknown-bearer", "other-scheme"],
)
async def test_no_valid_credentials_closes_4401(session, query, headers):
    comm = ws(path(session, query), headers=headers)
    assert (await comm.connect())[0]  # accepted first, so that the close code arrives
    assert await close_code(comm) == 4401


async def test_a_wrong_token_is_not_rescued_by_a_login_cookie(session, alice):
    cookie = await in_thread(alice.cookie)()
    comm = ws(path(session, "token=wrong"), headers=[(b"cookie", cookie.encode())])
    await comm.connect()
    assert await close_code(comm) == 4401


async def test_an_inactive_users_token_closes_4401(session, alice):
    def deactivate() -> None:
        alice.user.is_active = False
        alice.user.save(update_fields=["is_active"])

    await in_thread(deactivate)()
    comm = ws(path(session, f"token={alice.token}"))
    await comm.connect()
    assert await close_code(comm) == 4401


# --------------------------------------------------------------------------- session access
async def test_another_owners_session_closes_4403(session, bob):
    comm = ws(path(session, f"token={bob.token}"))
    await comm.connect()
    assert await close_code(comm) == 4403


@pytest.mark.parametrize(
    "session_id", ["00000000-0000-0000-0000-000000000000", "not-a-uuid", "12345"]
)
async def test_no_such_session_closes_4404(alice, session_id):
    comm = ws(f"/ws/sessions/{session_id}/events?token={alice.token}")
    await comm.connect()
    assert await close_code(comm) == 4404


@pytest.mark.parametrize(
    "query",
    [
        "after=-1",
        "after=abc",
        "after=1.5",
        "after=99999999999999999999",
        "type=no_such_type",
        "type=message_streamed,bogus",
        "run_id=not-a-uuid",
    ],
)
async def test_bad_parameters_close_4400(session, alice, query):
    comm = ws(path(session, f"token={alice.token}&{query}"))
    await comm.connect()
    out = await comm.receive_output(timeout=3)
    assert out["type"] == "websocket.close"
    assert out["code"] == 4400
    assert out["reason"]  # says which parameter


async def test_a_foreign_origin_is_refused_and_a_listed_one_accepted(session, alice, fast_streams):
    evil = ws(path(session, f"token={alice.token}"), headers=[(b"origin", b"http://evil.example")])
    assert (await evil.connect())[0] is False  # handshake refused (HTTP 403)
    ok = ws(path(session, f"token={alice.token}"), headers=[(b"origin", b"http://localhost")])
    assert (await ok.connect())[0]
    assert await receive_events(ok, 1) == [1]
    await ok.disconnect()


# --------------------------------------------------------------------------- delivery
async def test_backfill_after_the_cursor_then_live_events(session, alice, fast_streams):
    await in_thread(append)(session, 4)  # 2..5
    comm = ws(path(session, f"token={alice.token}&after=2"))
    await comm.connect()
    assert await receive_events(comm, 5) == [3, 4, 5]
    await in_thread(append)(session, 3)  # 6..8, doorbells rung by the publisher thread
    assert await receive_events(comm, 8) == [6, 7, 8]
    assert await comm.receive_nothing(0.3)
    await comm.disconnect()


async def test_each_sequence_once_in_order_whatever_the_doorbells_do(session, alice, fast_streams):
    """Duplicates, reordering, gaps with no doorbell, a bare `last_sequence` bell."""
    await in_thread(append)(session, 2)  # 2..3
    comm = ws(path(session, f"token={alice.token}&after=1"))
    await comm.connect()
    assert await receive_events(comm, 3) == [2, 3]

    lost = as_json(await in_thread(append_silently)(session, 6))  # 4..9, never rung
    await ring(session.id, lost[5:6])  # 9 alone: a gap, backfilled 4..8 first
    await ring(session.id, lost[0:3])  # 4..6 again: duplicates
    await ring(session.id, lost[2:6][::-1])  # 9, 8, 7, 6 reversed: duplicates
    assert await receive_events(comm, 9) == [4, 5, 6, 7, 8, 9]
    assert await comm.receive_nothing(0.2)

    more = as_json(await in_thread(append_silently)(session, 3))  # 10..12
    await ring(session.id, [], last=12)  # a bell with no events: backfill up to 12
    await ring(session.id, more[::-1])  # then all three again, reversed
    await ring(session.id, more)
    assert await receive_events(comm, 12) == [10, 11, 12]
    assert await comm.receive_nothing(0.2)

    live = await in_thread(append)(session, 3)  # 13..15 with their real doorbells
    await ring(session.id, as_json(live))  # ... and the same again by hand
    assert await receive_events(comm, 15) == [13, 14, 15]
    assert await comm.receive_nothing(0.3)
    await comm.disconnect()


async def test_reconnecting_with_the_last_sequence_gets_the_rest_exactly_once(
    session, alice, fast_streams
):
    await in_thread(append)(session, 9)  # 2..10
    got: list[int] = []
    after = 0
    for stop_at in (3, 4, 8, 10):
        comm = ws(path(session, f"token={alice.token}&after={after}"))
        await comm.connect()
        got += await receive_events(comm, stop_at)
        await comm.disconnect()
        after = got[-1]
    assert got == list(range(1, 11))


async def test_filters_apply_to_what_is_sent_not_to_the_cursor(session, run, alice, settings):
    settings.ASM_STREAM_POLL_S = 0.2  # a poll that finds only filtered-out events, often
    settings.ASM_WS_HEARTBEAT_S = 60.0
    await in_thread(append)(session, 3, run=run)  # 2..4 of the run
    await in_thread(append)(session, 1, type="session_started")  # 5
    comm = ws(path(session, f"token={alice.token}&type=message_streamed&run_id={run.id}"))
    await comm.connect()
    assert await receive_events(comm, 4) == [2, 3, 4]
    await in_thread(append)(session, 3, type="session_started")  # 6..8: none sent
    await ring(session.id, [], last=8)
    assert await comm.receive_nothing(0.6)  # polls and bells found nothing to send
    await in_thread(append)(session, 2, run=run)  # 9..10
    assert await receive_events(comm, 10) == [9, 10]
    await comm.disconnect()


async def test_type_filter_accepts_repeats_and_commas(session, run, alice, fast_streams):
    await in_thread(append)(session, 1, run=run)  # 2
    await in_thread(append)(session, 1, type="session_started")  # 3
    query = "type=session_created,session_started&type=session_started"
    comm = ws(path(session, f"token={alice.token}&{query}"))
    await comm.connect()
    assert await receive_events(comm, 3) == [1, 3]
    await comm.disconnect()


async def test_heartbeat_ping_when_idle(session, alice, settings):
    settings.ASM_WS_HEARTBEAT_S = 0.1
    settings.ASM_STREAM_POLL_S = 60.0
    comm = ws(path(session, f"token={alice.token}&after=1"))
    await comm.connect()
    assert await comm.receive_json_from(timeout=2) == {"type": "ping"}
    assert await comm.receive_json_from(timeout=2) == {"type": "ping"}
    await comm.disconnect()


async def test_poll_fallback_delivers_when_the_doorbell_is_lost(session, alice, settings):
    settings.ASM_WS_HEARTBEAT_S = 60.0
    settings.ASM_STREAM_POLL_S = 0.2
    comm = ws(path(session, f"token={alice.token}&after=1"))
    await comm.connect()
    await asyncio.sleep(0.1)
    await in_thread(append_silently)(session, 2)  # no doorbell at all
    assert await receive_events(comm, 3, timeout=2) == [2, 3]
    await comm.disconnect()


async def test_events_appended_by_a_worker_thread_wake_the_subscriber(session, alice, settings):
    """The embedded mode: a worker THREAD appends, the publisher thread rings on its own
    event loop, the consumer waits on the server's loop. No poll (60 s): only the doorbell
    can deliver within the test's 2 s."""
    settings.ASM_WS_HEARTBEAT_S = 60.0
    settings.ASM_STREAM_POLL_S = 60.0
    comm = ws(path(session, f"token={alice.token}&after=1"))
    await comm.connect()
    await asyncio.sleep(0.1)  # the consumer is waiting

    worker = threading.Thread(target=lambda: _append_and_close(session, 5))
    started = time.monotonic()
    worker.start()
    assert await receive_events(comm, 6, timeout=2) == [2, 3, 4, 5, 6]
    assert time.monotonic() - started < 2
    worker.join()
    await comm.disconnect()


def _append_and_close(session, n: int) -> None:
    from django.db import connection

    try:
        append(session, n)
    finally:
        connection.close()


async def test_client_frames_are_ignored(session, alice, fast_streams):
    comm = ws(path(session, f"token={alice.token}"))
    await comm.connect()
    assert await receive_events(comm, 1) == [1]
    await comm.send_to(text_data='{"type": "cancel"}')
    await comm.send_to(bytes_data=b"\x00")
    await in_thread(append)(session, 1)
    assert await receive_events(comm, 2) == [2]
    await comm.disconnect()


# --------------------------------------------------------------------------- slow consumer
class StuckClientConsumer(SessionEventsConsumer):
    """A client that stops reading: sending any event frame never completes."""

    async def send_frame(self, frame: Frame) -> None:
        if isinstance(frame, EventFrame):
            await asyncio.Event().wait()
        await super().send_frame(frame)


async def test_a_subscriber_too_far_behind_is_closed_4408(session, alice, settings):
    settings.ASM_STREAM_BUFFER = 5
    settings.ASM_WS_HEARTBEAT_S = 60.0
    settings.ASM_STREAM_POLL_S = 60.0
    app = ws_auth_stack(
        URLRouter(
            [re_path(r"^ws/sessions/(?P<session_id>[^/]+)/events$", StuckClientConsumer.as_asgi())]
        )
    )
    comm = WebsocketCommunicator(app, path(session, f"token={alice.token}"))
    await comm.connect()  # stuck on sending event 1
    events = as_json(await in_thread(append_silently)(session, 12))  # 2..13
    for i in range(0, 12, 3):  # 4 bells of 3 events: the second one exceeds 5
        await ring(session.id, events[i : i + 3])
    out = await comm.receive_output(timeout=3)
    assert out == {
        "type": "websocket.close",
        "code": 4408,
        "reason": "too slow: reconnect with after=<last sequence received>",
    }


async def test_one_large_bell_is_taken_when_the_buffer_is_empty(session, alice, settings):
    settings.ASM_STREAM_BUFFER = 5
    settings.ASM_WS_HEARTBEAT_S = 60.0
    settings.ASM_STREAM_POLL_S = 60.0
    comm = ws(path(session, f"token={alice.token}&after=1"))
    await comm.connect()
    await asyncio.sleep(0.1)
    events = as_json(await in_thread(append_silently)(session, 20))
    await ring(session.id, events)
    assert await receive_events(comm, 21) == list(range(2, 22))
    await comm.disconnect()
