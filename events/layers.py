"""`LocalChannelLayer`: the in-process channel layer of the embedded mode (no REDIS_URL).

Why not Channels' `InMemoryChannelLayer`: in the embedded mode events are appended by worker
THREADS, and the publisher thread (`events.publish`) rings the doorbell with
`async_to_sync(layer.group_send)`, i.e. on an event loop of its own, while the subscribers
wait in `receive()` on the ASGI server's loop. `InMemoryChannelLayer` keeps an
`asyncio.Queue` per channel; `asyncio` objects are not thread-safe, so a put from the
publisher's loop completes a future of the server's loop without waking that loop up: the
doorbell rings unheard until something else wakes the server (the subscribers' database poll
would still deliver the event, a second late).

Invariants:
- All state (channels, their pending messages and waiting receivers, groups) is guarded by
  one `threading.Lock`; no lock is held across an `await`.
- A receiver waits on a future of ITS OWN loop. `send()` wakes every receiver waiting on the
  channel: directly when it runs on the receiver's loop, otherwise through
  `loop.call_soon_threadsafe` (which also wakes a sleeping loop). A woken receiver takes a
  message under the lock or waits again, so no message is taken twice or lost.
- Same contract as the in-memory layer otherwise: process-local, `groups` and `flush`
  extensions, per-channel capacity (`ChannelFull`; `group_send` skips full channels), message
  expiry (a channel with an expired message leaves its groups: its consumer is gone) and group
  membership expiry.
"""

from __future__ import annotations

import asyncio
import random
import string
import threading
import time
from collections import deque
from contextlib import suppress
from copy import deepcopy
from dataclasses import dataclass, field
from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer

_Waiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]


@dataclass
class _Channel:
    messages: deque[tuple[float, dict[str, Any]]] = field(default_factory=deque)
    waiters: list[_Waiter] = field(default_factory=list)


def _require_dict(message: object) -> None:
    if not isinstance(message, dict):
        raise TypeError("a channel-layer message must be a dict")


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _wake(waiter: _Waiter) -> None:
    loop, future = waiter
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        _resolve(future)
        return
    with suppress(RuntimeError):  # a closed loop: nobody waits there any more
        loop.call_soon_threadsafe(_resolve, future)


class LocalChannelLayer(BaseChannelLayer):  # type: ignore[misc]
    """A thread-safe in-process channel layer (see the module docstring)."""

    extensions = ["groups", "flush"]

    def __init__(
        self,
        expiry: int = 60,
        group_expiry: int = 86400,
        capacity: int = 100,
        channel_capacity: dict[str, int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            expiry=expiry, capacity=capacity, channel_capacity=channel_capacity, **kwargs
        )
        self.group_expiry = group_expiry
        self._lock = threading.Lock()
        self._channels: dict[str, _Channel] = {}
        self._groups: dict[str, dict[str, float]] = {}

    # ------------------------------------------------------------------ channels
    async def send(self, channel: str, message: dict[str, Any]) -> None:
        """Queue `message` on `channel` and wake its receivers, whatever loop they wait on."""
        _require_dict(message)
        self.require_valid_channel_name(channel)
        item = (time.time() + self.expiry, deepcopy(message))
        with self._lock:
            self._clean_expired()
            state = self._channels.setdefault(channel, _Channel())
            if len(state.messages) >= self.get_capacity(channel):
                raise ChannelFull(channel)
            state.messages.append(item)
            waiters, state.waiters = state.waiters, []
        for waiter in waiters:
            _wake(waiter)

    async def receive(self, channel: str) -> dict[str, Any]:
        """The first message on `channel`, waiting (on the caller's loop) until there is one."""
        self.require_valid_channel_name(channel)
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                self._clean_expired()
                state = self._channels.setdefault(channel, _Channel())
                if state.messages:
                    _, message = state.messages.popleft()
                    self._forget_if_idle(channel, state)
                    return message
                waiter: _Waiter = (loop, loop.create_future())
                state.waiters.append(waiter)
            try:
                await waiter[1]
            finally:
                with self._lock:
                    if waiter in state.waiters:
                        state.waiters.remove(waiter)
                    self._forget_if_idle(channel, state)

    async def new_channel(self, prefix: str = "specific.") -> str:
        suffix = "".join(random.choice(string.ascii_letters) for _ in range(12))  # noqa: S311
        return f"{prefix}.local!{suffix}"

    def _forget_if_idle(self, channel: str, state: _Channel) -> None:
        if not state.messages and not state.waiters and self._channels.get(channel) is state:
            del self._channels[channel]

    def _clean_expired(self) -> None:
        """Drop expired messages (their channel leaves every group) and old memberships."""
        now = time.time()
        for channel, state in list(self._channels.items()):
            expired = False
            while state.messages and state.messages[0][0] < now:
                state.messages.popleft()
                expired = True
            if expired:
                for members in self._groups.values():
                    members.pop(channel, None)
                self._forget_if_idle(channel, state)
        oldest = now - self.group_expiry
        for group, members in list(self._groups.items()):
            for channel, joined in list(members.items()):
                if joined < oldest:
                    del members[channel]
            if not members:
                del self._groups[group]

    # ------------------------------------------------------------------ groups
    async def group_add(self, group: str, channel: str) -> None:
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        with self._lock:
            self._groups.setdefault(group, {})[channel] = time.time()

    async def group_discard(self, group: str, channel: str) -> None:
        self.require_valid_channel_name(channel)
        self.require_valid_group_name(group)
        with self._lock:
            members = self._groups.get(group)
            if members is not None:
                members.pop(channel, None)
                if not members:
                    del self._groups[group]

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        """Send to every member of `group`; a full channel misses this message (no error)."""
        _require_dict(message)
        self.require_valid_group_name(group)
        with self._lock:
            self._clean_expired()
            members = list(self._groups.get(group, ()))
        for channel in members:
            with suppress(ChannelFull):
                await self.send(channel, message)

    # ------------------------------------------------------------------ flush extension
    async def flush(self) -> None:
        with self._lock:
            waiting = [w for state in self._channels.values() for w in state.waiters]
            self._channels = {}
            self._groups = {}
        for waiter in waiting:  # they wait again, on fresh channel state
            _wake(waiter)

    async def close(self) -> None:
        pass
