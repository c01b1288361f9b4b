"""Provider health where operators see it: the process-local store, `GET /api/v1/providers`
and the admin's "Provider health" page with its reset button.

The service's registry here is the real composition root (`runs.bootstrap`) with the echo
provider, the `flaky` fake and the router; embedded mode, so the health store is the
process-local one (the Redis store and two-process sharing: tests/integration/
test_router_health.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from asm_core.errors import AsmError
from runs.bootstrap import provider_health, provider_registry
from runs.health import LocalHealthStore, health_store_build, provider_health_reset
from tests.unit.api.conftest import bearer_client

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def registry(settings) -> Iterator[None]:
    settings.ASM_PROVIDERS = [
        "runs.providers.echo.EchoProvider",
        "tests.fakes.routing_providers.FlakyEchoProvider",
    ]
    settings.ASM_ROUTER_COOLDOWN_MS = 60_000
    settings.REDIS_URL = ""
    provider_registry.cache_clear()
    yield
    provider_registry.cache_clear()


# --------------------------------------------------------------------------- the stores
def test_local_store_counts_failures_cools_at_the_threshold_and_resets():
    now = [1_000]
    store = LocalHealthStore(failure_threshold=2, cooldown_ms=500, clock_ms=lambda: now[0])
    assert store.record_failure("p", "provider_timeout").cooldown_until_ms is None
    now[0] = 1_100
    state = store.record_failure("p", "provider_unavailable")
    assert (state.consecutive_failures, state.cooldown_until_ms) == (2, 1_600)
    snap = store.snapshot(["p", "q"])
    assert snap.state("p").cooling(snap.now_ms)
    assert snap.state("q").consecutive_failures == 0
    now[0] = 1_600
    snap = store.snapshot(["p"])
    assert not snap.state("p").cooling(snap.now_ms)
    assert snap.state("p").consecutive_failures == 2  # kept until a success
    store.record_success("p")
    assert store.snapshot(["p"]).states == {}


def test_round_robin_counter_advances_only_when_asked():
    store = LocalHealthStore()
    assert store.snapshot([], rotate=True).rr_counter == 1
    assert store.snapshot([]).rr_counter == 1
    assert store.snapshot([], rotate=True).rr_counter == 2


@pytest.mark.parametrize(("threshold", "cooldown"), [(0, 1000), (True, 1000), (1, -1), (1, 1.5)])
def test_bad_settings_are_refused(threshold, cooldown):
    with pytest.raises(AsmError) as info:
        health_store_build(
            redis_url="", prefix="x:", failure_threshold=threshold, cooldown_ms=cooldown
        )
    assert info.value.code == "validation_error"


def test_embedded_mode_uses_the_process_local_store_from_settings():
    health = provider_health()
    assert isinstance(health, LocalHealthStore)
    assert (health.failure_threshold, health.cooldown_ms) == (1, 60_000)


# --------------------------------------------------------------------------- the API
def test_providers_api_shows_health_as_recorded(db):
    provider_health().record_failure("flaky", "provider_unavailable")
    api = bearer_client(User.objects.create_user("alice"))
    results = {p["name"]: p for p in api.get("/api/v1/providers").json()["results"]}
    assert set(results) == {"echo", "flaky", "router"}
    flaky = results["flaky"]
    assert flaky["consecutive_failures"] == 1
    assert flaky["cooldown_until"] is not None
    assert flaky["last_failure_at"] is not None
    assert flaky["last_error_code"] == "provider_unavailable"
    echo = results["echo"]
    assert (echo["consecutive_failures"], echo["cooldown_until"]) == (0, None)
    assert results["router"]["available"] is True
    assert any(c["type"] == "streaming" for c in results["router"]["capabilities"])


def test_reset_of_an_unknown_provider_is_validation_error():
    with pytest.raises(AsmError) as info:
        provider_health_reset(provider_registry(), provider_health(), "nope")
    assert info.value.code == "validation_error"


# --------------------------------------------------------------------------- the admin
@pytest.fixture
def staff() -> Client:
    user = User.objects.create_user("op", password="pw", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(user)
    return client


def test_admin_lists_provider_health_and_resets_one(staff):
    provider_health().record_failure("flaky", "provider_timeout")
    url = reverse("admin:runs_run_providers")
    page = staff.get(url).content.decode()
    assert 'data-provider="flaky"' in page
    assert "provider_timeout" in page
    assert page.count("Reset health</button>") == 2  # echo and flaky; not the router

    response = staff.post(url, {"provider": "flaky"}, follow=True)
    assert response.status_code == 200
    assert "Health of &#x27;flaky&#x27; reset." in response.content.decode()
    assert provider_health().snapshot(["flaky"]).states == {}


def test_the_runs_list_links_to_provider_health(staff):
    page = staff.get(reverse("admin:runs_run_changelist")).content.decode()
    assert reverse("admin:runs_run_providers") in page


def test_admin_reset_of_an_unknown_provider_says_so(staff):
    response = staff.post(reverse("admin:runs_run_providers"), {"provider": "nope"}, follow=True)
    assert "Unknown provider" in response.content.decode()


def test_staff_without_change_permission_sees_health_but_cannot_reset():
    user = User.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_run"))
    client = Client()
    client.force_login(user)
    provider_health().record_failure("flaky", "provider_timeout")
    url = reverse("admin:runs_run_providers")
    page = client.get(url)
    assert page.status_code == 200
    assert "Reset health</button>" not in page.content.decode()
    assert client.post(url, {"provider": "flaky"}).status_code == 403
    assert provider_health().snapshot(["flaky"]).states["flaky"].consecutive_failures == 1


def test_anonymous_users_are_sent_to_the_login_page():
    response = Client().get(reverse("admin:runs_run_providers"))
    assert response.status_code == 302
    assert "/login/" in response["Location"]
