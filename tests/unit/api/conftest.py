"""API test fixtures: real users with real DRF tokens, sent as `Authorization: Bearer`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from sessions.models import Session
from sessions.services import session_activate, session_create


def bearer_client(user: User) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token.key}")
    return client


@pytest.fixture(autouse=True)
def _fresh_throttle_counts() -> Iterator[None]:
    # Throttle history lives in the cache (LocMem in the unit tier): start every test empty.
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def alice(db) -> User:
    return User.objects.create_user("alice")


@pytest.fixture
def bob(db) -> User:
    return User.objects.create_user("bob")


@pytest.fixture
def api(alice: User) -> APIClient:
    """Alice's client: the owner in most tests."""
    return bearer_client(alice)


@pytest.fixture
def bob_api(bob: User) -> APIClient:
    """Bob's client: another owner, who must see none of Alice's objects."""
    return bearer_client(bob)


@pytest.fixture
def anon() -> APIClient:
    return APIClient()


@pytest.fixture
def session(alice: User) -> Session:
    """An active session of Alice's."""
    created = session_create(agent_id="api-test", owner=alice)
    return session_activate(session_id=created.id)


def error_of(response: Any) -> dict[str, Any]:
    """The envelope's body, after checking the envelope's shape."""
    body: dict[str, Any] = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "category", "message", "retryable", "details"}
    error: dict[str, Any] = body["error"]
    return error
