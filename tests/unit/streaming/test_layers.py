"""`LocalChannelLayer`: the in-process layer, woken from other threads' event loops.

The embedded mode's trap: the publisher thread sends on an event loop of its own while the
subscriber waits on the server's loop. These tests send from a plain thread running its
own loop (exactly what `async_to_sync(layer.group_send)` does) and require the receiver to
wake at once, not at its next unrelated wake-up.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.exceptions import ChannelFull

from events.layers import LocalChannelLayer

pytestmark = pytest.mark.anyio


def send_from_another_thread(fn, *args) -> threading.Thread:
    thread = threading.Thread(target=lambda: async_to_sync(fn)(*args))
    thread.start()
    return thread


async def test_a_send_from_another_threads_loop_wakes_the_receiver():
    layer = LocalChannelLayer()
    channel = await layer.new_channel()
    waiting = asyncio.create_task(layer.receive(channel))
    await asyncio.sleep(0.05)  # the receiver is parked on this loop
    started = time.monotonic()
    send_from_another_thread(layer.send, channel, {"type": "hello"}).join()
    assert await asyncio.wait_for(waiting, 1) == {"type": "hello"}
    assert time.monotonic() - started < 0.5


async def test_group_send_from_another_thread_reaches_every_member_once():
    layer = LocalChannelLayer()
    channels = [await layer.new_channel() for _ in range(3)]
    for channel in channels:
        await layer.group_add("session.x", channel)
    receivers = [asyncio.create_task(layer.receive(c)) for c in channels]
    await asyncio.sleep(0.05)
    for i in range(5):
        send_from_another_thread(layer.group_send, "session.x", {"type": "t", "n": i}).join()
    for channel, first in zip(channels, receivers, strict=True):
        got = [await asyncio.wait_for(first, 1)]
        got += [await asyncio.wait_for(layer.receive(channel), 1) for _ in range(4)]
        assert [m["n"] for m in got] == [0, 1, 2, 3, 4]


async def test_messages_wait_for_a_receiver_and_are_copies():
    layer = LocalChannelLayer()
    channel = await layer.new_channel()
    message: dict[str, Any] = {"type": "t", "events": [1]}
    await layer.send(channel, message)
    message["events"].append(2)
    assert await layer.receive(channel) == {"type": "t", "events": [1]}


async def test_a_full_channel_refuses_sends_and_group_send_skips_it():
    layer = LocalChannelLayer(capacity=2)
    full, free = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("g", full)
    await layer.group_add("g", free)
    await layer.send(full, {"type": "a"})
    await layer.send(full, {"type": "b"})
    with pytest.raises(ChannelFull):
        await layer.send(full, {"type": "c"})
    await layer.group_send("g", {"type": "d"})  # no error; only `free` gets it
    assert (await layer.receive(free))["type"] == "d"
    assert [(await layer.receive(full))["type"] for _ in range(2)] == ["a", "b"]


async def test_group_discard_and_cancelled_receivers_leave_no_state():
    layer = LocalChannelLayer()
    channel = await layer.new_channel()
    await layer.group_add("g", channel)
    waiting = asyncio.create_task(layer.receive(channel))
    await asyncio.sleep(0.01)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    await layer.group_discard("g", channel)
    assert layer._channels == {}
    assert layer._groups == {}


async def test_expired_messages_drop_their_channel_from_groups():
    layer = LocalChannelLayer(expiry=0)
    channel = await layer.new_channel()
    await layer.group_add("g", channel)
    await layer.send(channel, {"type": "a"})
    await asyncio.sleep(0.01)
    await layer.group_send("g", {"type": "b"})  # cleans: the expired message goes, and so
    assert layer._groups == {}  # does the dead consumer's membership


async def test_flush_forgets_everything():
    layer = LocalChannelLayer()
    channel = await layer.new_channel()
    await layer.group_add("g", channel)
    await layer.send(channel, {"type": "a"})
    await layer.flush()
    assert layer._channels == {}
    assert layer._groups == {}
