"""Every route: authentication, ownership, methods, throttling and the error envelope; the
OpenAPI schema and docs page; `manage.py asm_token`."""

from __future__ import annotations

import io
from dataclasses import dataclass

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from runs.models import Run
from runs.services import run_submit
from sessions.models import Session
from tests.unit.api.conftest import bearer_client, error_of

pytestmark = pytest.mark.django_db


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # `{session}` / `{run}` are filled in with Alice's objects
    body: object = None
    wrong_method: str = "delete"

    def __str__(self) -> str:
        return f"{self.method.upper()} {self.path}"

    def url(self, session: Session, run: Run) -> str:
        return "/api/v1/" + self.path.format(session=session.id, run=run.id)

    def call(self, client: APIClient, session: Session, run: Run, method: str | None = None):
        return getattr(client, method or self.method)(
            self.url(session, run), self.body, format="json"
        )


SESSION_ROUTES = [
    Route("get", "sessions/{session}"),
    Route("post", "sessions/{session}/activate"),
    Route("post", "sessions/{session}/pause"),
    Route("post", "sessions/{session}/resume"),
    Route("post", "sessions/{session}/complete"),
    Route("post", "sessions/{session}/fail", {"error_code": "provider_error"}),
    Route("post", "sessions/{session}/cancel"),
    Route("get", "sessions/{session}/runs"),
    Route("post", "sessions/{session}/runs", {"input": {"prompt": "hi"}}),
    Route("get", "sessions/{session}/events"),
]
RUN_ROUTES = [
    Route("get", "runs/{run}"),
    Route("post", "runs/{run}/cancel"),
    Route("get", "runs/{run}/wait?timeout=0"),
]
OBJECT_ROUTES = SESSION_ROUTES + RUN_ROUTES
COLLECTION_ROUTES = [
    Route("get", "sessions"),
    Route("post", "sessions", {"agent_id": "x"}),
    Route("post", "run", {"input": 42}),  # invalid: a one-shot must not block these tests
    Route("get", "providers"),
]
ALL_ROUTES = OBJECT_ROUTES + COLLECTION_ROUTES


@pytest.fixture
def run(session) -> Run:
    return run_submit(session_id=session.id, input="queued").run


# --------------------------------------------------------------------------- authentication


@pytest.mark.parametrize("route", ALL_ROUTES, ids=str)
def test_every_route_needs_a_token(anon, session, run, route):
    response = route.call(anon, session, run)
    assert response.status_code == 401
    error = error_of(response)
    assert error["code"] == "authentication_required"
    assert error["category"] == "access"
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("route", ALL_ROUTES, ids=str)
def test_every_route_refuses_a_bad_token(session, run, route):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer not-a-real-token")
    response = route.call(client, session, run)
    assert response.status_code == 401
    assert error_of(response)["code"] == "authentication_required"


def test_the_token_scheme_is_bearer(alice, session):
    token, _ = Token.objects.get_or_create(user=alice)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert client.get("/api/v1/sessions").status_code == 401
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token.key}")
    assert client.get("/api/v1/sessions").status_code == 200


# --------------------------------------------------------------------------- ownership


@pytest.mark.parametrize("route", OBJECT_ROUTES, ids=str)
def test_every_object_route_hides_another_owners_objects(bob_api, session, run, route):
    before = (session.status, Run.objects.get(id=run.id).status, Run.objects.count())
    response = route.call(bob_api, session, run)
    assert response.status_code == 404
    assert error_of(response)["code"] in {"session_not_found", "run_not_found"}
    after = (
        Session.objects.get(id=session.id).status,
        Run.objects.get(id=run.id).status,
        Run.objects.count(),
    )
    assert after == before


@pytest.mark.parametrize(
    "route",
    [r for r in OBJECT_ROUTES if r.method == "get"],
    ids=str,
)
def test_staff_reach_every_owners_objects(session, run, route):
    staff = bearer_client(User.objects.create_user("root", is_staff=True))
    assert route.call(staff, session, run).status_code == 200


# --------------------------------------------------------------------------- methods, JSON, URLs


@pytest.mark.parametrize("route", ALL_ROUTES, ids=str)
def test_a_wrong_method_is_405_in_the_envelope(api, session, run, route):
    response = route.call(api, session, run, method=route.wrong_method)
    assert response.status_code == 405
    error = error_of(response)
    assert error["code"] == "method_not_allowed"
    assert route.method.upper() in response["Allow"]


def test_wait_allows_only_get(api, run):
    response = api.post(f"/api/v1/runs/{run.id}/wait")
    assert response.status_code == 405
    assert error_of(response)["code"] == "method_not_allowed"
    assert response["Allow"] == "GET"


@pytest.mark.parametrize(
    "path",
    ["sessions", "sessions/{session}/runs", "sessions/{session}/fail", "run"],
)
def test_malformed_json_is_400_in_the_envelope(api, session, path):
    url = "/api/v1/" + path.format(session=session.id)
    response = api.post(url, data='{"agent_id": ', content_type="application/json")
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "invalid_format"
    assert error["category"] == "validation"


def test_a_body_that_is_not_json_is_refused(api):
    response = api.post("/api/v1/sessions", data="agent_id=x", content_type="text/plain")
    assert response.status_code == 415
    assert error_of(response)["code"] == "invalid_format"


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/nope",
        "/api/v1/sessions/",
        "/api/v1/sessions/{session}/bogus",
        "/api/v1/runs/not-a-uuid",
        "/api/v1/runs/{session}/wait/extra",
    ],
)
def test_unknown_urls_under_the_api_are_404_in_the_envelope(api, session, path):
    response = api.get(path.format(session=session.id))
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


# --------------------------------------------------------------------------- throttling


@pytest.fixture
def low_rate(settings, monkeypatch):
    """Two requests a minute per user (and per anonymous address)."""
    rates = {"user": "2/min", "anon": "2/min"}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    # DRF's throttles copy the rates when rest_framework.throttling is first imported, so
    # the class attribute has to follow the overridden setting.
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", rates)


@pytest.mark.parametrize("route", ALL_ROUTES, ids=str)
def test_every_route_is_throttled_per_user(low_rate, api, bob_api, session, run, route):
    for _ in range(2):
        assert route.call(api, session, run).status_code != 429
    response = route.call(api, session, run)
    assert response.status_code == 429
    error = error_of(response)
    assert error["code"] == "throttled"
    assert error["retryable"] is True
    assert int(response["Retry-After"]) > 0
    assert error["details"]["retry_after_s"] == int(response["Retry-After"])
    # Per user: another user is not affected.
    assert bob_api.get("/api/v1/sessions").status_code == 200


def test_the_public_schema_is_throttled_per_address(low_rate, anon):
    for _ in range(2):
        assert anon.get("/api/v1/schema/").status_code == 200
    response = anon.get("/api/v1/schema/?format=json")  # the default format is YAML
    assert response.status_code == 429
    assert error_of(response)["code"] == "throttled"
    assert "Retry-After" in response


# --------------------------------------------------------------------------- schema and docs


def test_the_schema_is_public_openapi_3_and_lists_every_endpoint(anon):
    response = anon.get("/api/v1/schema/?format=json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    operations = {
        (method.upper(), path) for path, item in schema["paths"].items() for method in item
    }
    p = "/api/v1"
    assert {
        ("POST", f"{p}/sessions"),
        ("GET", f"{p}/sessions"),
        ("GET", f"{p}/sessions/{{session_id}}"),
        ("POST", f"{p}/sessions/{{session_id}}/activate"),
        ("POST", f"{p}/sessions/{{session_id}}/pause"),
        ("POST", f"{p}/sessions/{{session_id}}/resume"),
        ("POST", f"{p}/sessions/{{session_id}}/complete"),
        ("POST", f"{p}/sessions/{{session_id}}/fail"),
        ("POST", f"{p}/sessions/{{session_id}}/cancel"),
        ("POST", f"{p}/sessions/{{session_id}}/runs"),
        ("GET", f"{p}/sessions/{{session_id}}/runs"),
        ("GET", f"{p}/sessions/{{session_id}}/events"),
        ("GET", f"{p}/runs/{{run_id}}"),
        ("POST", f"{p}/runs/{{run_id}}/cancel"),
        ("GET", f"{p}/runs/{{run_id}}/wait"),
        ("POST", f"{p}/run"),
        ("GET", f"{p}/providers"),
    } <= operations
    assert "ErrorEnvelope" in schema["components"]["schemas"]
    assert schema["components"]["securitySchemes"]["tokenAuth"]["scheme"] == "bearer"
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if path.startswith(f"{p}/sessions") or path.startswith(f"{p}/run"):
                for status in ("401", "429"):
                    ref = operation["responses"][status]["content"]["application/json"]
                    assert ref["schema"]["$ref"].endswith("/ErrorEnvelope"), (method, path)


def test_the_docs_page_is_served(anon):
    response = anon.get("/api/v1/docs/")
    assert response.status_code == 200
    assert b"/api/v1/schema/" in response.content


# --------------------------------------------------------------------------- asm_token


def _token_command(*args: str) -> str:
    out = io.StringIO()
    call_command("asm_token", *args, stdout=out)
    return out.getvalue().strip()


def test_asm_token_creates_then_prints_the_same_token(alice):
    key = _token_command("alice")
    assert key == Token.objects.get(user=alice).key
    assert _token_command("alice") == key
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert client.get("/api/v1/sessions").status_code == 200


def test_asm_token_refuses_an_unknown_user_unless_asked_to_create_it():
    with pytest.raises(CommandError, match="--create-user"):
        _token_command("carol")
    assert not User.objects.filter(username="carol").exists()
    key = _token_command("carol", "--create-user")
    carol = User.objects.get(username="carol")
    assert not carol.has_usable_password()
    assert Token.objects.get(user=carol).key == key
    assert _token_command("carol", "--create-user") == key
