"""Locks, slots and cancel signals: the same contract for the local and Redis coordinators.

The Redis case needs a real Redis (integration tier); the local one runs everywhere.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from django.conf import settings

from runs.coordination import Coordinator, Heartbeat, LocalCoordinator, RedisCoordinator


@pytest.fixture(
    params=[
        "local",
        pytest.param("redis", marks=[pytest.mark.integration, pytest.mark.contract]),
    ]
)
def coord(request: pytest.FixtureRequest) -> Iterator[Coordinator]:
    if request.param == "local":
        yield LocalCoordinator()
        return
    if not settings.REDIS_URL:
        pytest.skip("needs REDIS_URL")
    prefix = f"asm-test-{uuid.uuid4().hex}:"
    redis_coord = RedisCoordinator(settings.REDIS_URL, prefix)
    yield redis_coord
    for key in redis_coord.client.scan_iter(f"{prefix}*"):
        redis_coord.client.delete(key)


def test_a_lock_has_one_owner(coord):
    first, second = coord.lock("s1", 5_000), coord.lock("s1", 5_000)
    assert first.acquire()
    assert not second.acquire()
    assert not second.renew()
    second.release()  # not the owner: nothing happens
    assert not coord.lock("s1", 5_000).acquire()
    assert first.renew()
    first.release()
    assert second.acquire()
    assert coord.lock("s2", 5_000).acquire()  # other keys are independent


def test_a_lock_expires_and_the_old_owner_cannot_touch_the_new_one(coord):
    old = coord.lock("s", 100)
    assert old.acquire()
    time.sleep(0.25)
    new = coord.lock("s", 5_000)
    assert new.acquire()
    assert not old.renew()
    old.release()
    assert not coord.lock("s", 5_000).acquire()  # still the new owner's


def test_only_one_of_many_concurrent_acquirers_wins(coord):
    wins: list[bool] = []
    barrier = threading.Barrier(16)

    def grab() -> None:
        barrier.wait()
        wins.append(coord.lock("contended", 5_000).acquire())

    threads = [threading.Thread(target=grab) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wins.count(True) == 1


def test_slots_admit_up_to_the_limit_and_expire(coord):
    pool = coord.slots("runs", 2)
    assert pool.acquire("a", 5_000)
    assert pool.acquire("a", 5_000)  # re-acquire is a refresh, not a second slot
    assert pool.acquire("b", 200)
    assert not pool.acquire("c", 5_000)
    assert pool.active() == 2
    assert pool.renew("a", 5_000)
    assert not pool.renew("zzz", 5_000)
    time.sleep(0.35)  # b's slot lapses: a dead holder's slot comes back
    assert pool.acquire("c", 5_000)
    pool.release("a")
    assert pool.acquire("d", 5_000)
    assert pool.active() == 2


def test_unlimited_slots(coord):
    pool = coord.slots("free", None)
    assert all(pool.acquire(str(i), 5_000) for i in range(50))


def test_cancel_signal(coord):
    run_id = uuid.uuid4()
    assert not coord.cancel_requested(run_id)
    coord.cancel_send(run_id)
    assert coord.cancel_requested(run_id)
    assert not coord.cancel_requested(uuid.uuid4())


def test_heartbeat_beats_until_the_block_ends():
    beats: list[float] = []
    with Heartbeat(0.02, lambda: beats.append(time.monotonic())):
        time.sleep(0.15)
    count = len(beats)
    assert count >= 3
    time.sleep(0.06)
    assert len(beats) == count


def test_heartbeats_share_one_thread_and_keep_their_own_intervals():
    fast: list[float] = []
    slow: list[float] = []
    with (
        Heartbeat(0.02, lambda: fast.append(time.monotonic())),
        Heartbeat(0.08, lambda: slow.append(time.monotonic())),
    ):
        time.sleep(0.3)
    assert len(fast) >= 8
    assert 2 <= len(slow) <= 4
    names = [t.name for t in threading.enumerate() if t.name == "asm-heartbeat"]
    assert names == ["asm-heartbeat"]


def test_leaving_waits_for_a_beat_in_progress():
    started, finished = threading.Event(), threading.Event()

    def slow_beat() -> None:
        started.set()
        time.sleep(0.1)
        finished.set()

    with Heartbeat(0.01, slow_beat):
        assert started.wait(2)
    assert finished.is_set()  # the block was left only after the beat had finished
