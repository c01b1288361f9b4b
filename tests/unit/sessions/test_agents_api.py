"""Agent manifests: `/api/v1/agents` (staff write, everyone authenticated reads), their
validation, the admin form, and the defaults a session's runs pick up at submit."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from asm_core.errors import AsmError
from events.models import Event
from runs.models import Run
from runs.scheduling import session_drain
from runs.services import run_once, run_submit
from sessions.admin import AgentAdminForm
from sessions.agents import (
    agent_cache_clear,
    agent_create,
    agent_manifest_for,
    agent_run_defaults,
    agent_update,
)
from sessions.models import Agent
from sessions.services import session_create
from tests.unit.api.conftest import bearer_client, error_of

MANIFEST: dict[str, Any] = {
    "agent_id": "reviewer",
    "name": "Code reviewer",
    "version": "2.1",
    "description": "Reviews diffs",
    "provider": "echo",
    "required_capabilities": ["streaming"],
    "optional_capabilities": [{"type": "tool", "name": "echo_tool"}],
    "default_policy": {"name": "careful", "limits": {"max_total_tokens": 5000}},
    "system_prompt": "You review code.",
    "default_options": {"timeout_ms": 30_000, "adapter_opts": {"chunk_words": 2, "repeat": 1}},
    "metadata": {"team": "platform"},
}


@pytest.fixture(autouse=True)
def _fresh_agent_cache() -> Iterator[None]:
    agent_cache_clear()  # the database is rolled back between tests; the cache is not
    yield
    agent_cache_clear()


@pytest.fixture
def staff(db: Any) -> APIClient:
    return bearer_client(User.objects.create_user("boss", is_staff=True))


@pytest.fixture
def user(db: Any) -> User:
    return User.objects.create_user("alice")


@pytest.fixture
def api(user: User) -> APIClient:
    return bearer_client(user)


# --------------------------------------------------------------------------- the API


def test_staff_create_read_update_delete(staff: APIClient, api: APIClient) -> None:
    created = staff.post("/api/v1/agents", MANIFEST, format="json")
    assert created.status_code == 201, created.json()
    body = created.json()
    assert {k: body[k] for k in MANIFEST} == MANIFEST
    assert body["routing"] is None
    assert set(body) == {*MANIFEST, "routing", "created_at", "updated_at"}

    listed = api.get("/api/v1/agents").json()["results"]
    assert [a["agent_id"] for a in listed] == ["reviewer"]
    assert api.get("/api/v1/agents/reviewer").json() == body

    patched = staff.patch("/api/v1/agents/reviewer", {"version": "3"}, format="json")
    assert patched.status_code == 200
    assert (patched.json()["version"], patched.json()["name"]) == ("3", "Code reviewer")

    replaced = staff.put(
        "/api/v1/agents/reviewer", {"agent_id": "reviewer", "name": "Bare"}, format="json"
    )
    assert replaced.status_code == 200
    bare = replaced.json()
    assert (bare["name"], bare["version"], bare["provider"], bare["default_options"]) == (
        "Bare",
        "1",
        "",
        {},
    )

    assert staff.delete("/api/v1/agents/reviewer").status_code == 204
    missing = api.get("/api/v1/agents/reviewer")
    assert missing.status_code == 404
    assert error_of(missing)["code"] == "not_found"
    assert error_of(staff.delete("/api/v1/agents/reviewer"))["code"] == "not_found"


def test_only_staff_write_and_anonymous_nothing(api: APIClient, staff: APIClient) -> None:
    denied = api.post("/api/v1/agents", MANIFEST, format="json")
    assert denied.status_code == 403
    assert error_of(denied)["code"] == "permission_denied"
    assert not Agent.objects.exists()
    staff.post("/api/v1/agents", MANIFEST, format="json")
    for method in ("patch", "put", "delete"):
        response = getattr(api, method)("/api/v1/agents/reviewer", {"name": "x"}, format="json")
        assert response.status_code == 403, method
    assert Agent.objects.get().name == "Code reviewer"
    anon = APIClient()
    assert anon.get("/api/v1/agents").status_code == 401
    assert anon.get("/api/v1/agents/reviewer").status_code == 401


def test_duplicate_agent_id_is_a_conflict(staff: APIClient) -> None:
    assert staff.post("/api/v1/agents", MANIFEST, format="json").status_code == 201
    again = staff.post("/api/v1/agents", MANIFEST, format="json")
    assert again.status_code == 409
    assert error_of(again)["code"] == "already_exists"


@pytest.mark.parametrize(
    ("change", "field", "code"),
    [
        ({"name": "  "}, "name", "validation_error"),
        ({"version": ""}, "version", "validation_error"),
        ({"provider": "nope"}, "provider", "validation_error"),
        ({"required_capabilities": ["telepathy"]}, None, "invalid_capability_type"),
        ({"optional_capabilities": "tool"}, "optional_capabilities", "validation_error"),
        ({"default_policy": {"limits": {"max_total_tokens": -1}}}, None, "validation_error"),
        ({"default_policy": {"bogus": 1}}, None, "validation_error"),
        ({"default_options": {"policy": {}}}, "default_options.policy", "validation_error"),
        ({"default_options": {"routing": {}}}, "default_options.routing", "validation_error"),
        ({"default_options": {"bogus": 1}}, "default_options", "validation_error"),
        ({"default_options": {"timeout_ms": 0}}, "default_options.timeout_ms", "validation_error"),
        (
            {"default_options": {"adapter_opts": {"repeat": "x"}}},
            "default_options.adapter_opts.repeat",
            "validation_error",
        ),
        ({"routing": {"prefer": ["echo"]}}, "routing", "validation_error"),  # echo, not router
        ({"routing": []}, "routing", "validation_error"),
    ],
)
def test_bad_manifests_are_refused_and_store_nothing(
    staff: APIClient, change: dict[str, Any], field: str | None, code: str
) -> None:
    response = staff.post("/api/v1/agents", {**MANIFEST, **change}, format="json")
    assert response.status_code == 400, response.json()
    error = error_of(response)
    assert error["code"] == code
    if field is not None:
        got = error["details"].get("field") or next(iter(error["details"].get("fields", {})), None)
        assert str(got).startswith(field), error
    assert not Agent.objects.exists()


def test_policy_field_errors_name_default_policy(db: Any) -> None:
    with pytest.raises(AsmError) as info:
        agent_create(**{**MANIFEST, "default_policy": {"limits": {"max_tool_calls": "x"}}})
    assert info.value.details["field"].startswith("default_policy")


def test_a_routing_manifest_defaults_its_runs_to_the_router(staff: APIClient) -> None:
    body = {**MANIFEST, "provider": "", "routing": {"prefer": ["echo"], "max_attempts": 2}}
    body["default_options"] = {}
    response = staff.post("/api/v1/agents", body, format="json")
    assert response.status_code == 201, response.json()
    applied = agent_run_defaults(agent_manifest_for("reviewer"), provider=None, options={})
    assert applied.provider == "router"
    assert applied.options["routing"] == {"prefer": ["echo"], "max_attempts": 2}


def test_the_schema_documents_the_agent_and_usage_endpoints(api: APIClient) -> None:
    schema = api.get("/api/v1/schema/?format=json").json()
    ops = {
        op["operationId"]
        for path in ("/api/v1/agents", "/api/v1/agents/{agent_id}", "/api/v1/usage")
        for op in schema["paths"][path].values()
    }
    assert ops == {
        "agents_list",
        "agents_create",
        "agents_retrieve",
        "agents_partial_update",
        "agents_update",
        "agents_destroy",
        "usage_retrieve",
    }
    assert "usage" in schema["components"]["schemas"]["Session"]["properties"]


# --------------------------------------------------------------------------- the admin


def test_admin_form_validates_like_the_api(db: Any) -> None:
    def form(**change: Any) -> AgentAdminForm:
        data = {
            **MANIFEST,
            **change,
        }
        for key in ("routing", "required_capabilities", "optional_capabilities"):
            data[key] = _json(data.get(key))
        for key in ("default_policy", "default_options", "metadata"):
            data[key] = _json(data.get(key))
        return AgentAdminForm(data=data)

    good = form()
    assert good.is_valid(), good.errors
    bad = form(default_options={"timeout_ms": -1})
    assert not bad.is_valid()
    assert "default_options" in bad.errors
    assert "provider" in form(provider="nope").errors


def _json(value: Any) -> str:
    import json

    return "null" if value is None else json.dumps(value)


# --------------------------------------------------------------------------- run defaults


def test_defaults_merge_under_the_runs_options_pure() -> None:
    manifest = {
        "agent_id": "a",
        "version": "1",
        "provider": "claude",
        "routing": None,
        "required_capabilities": ["streaming", {"type": "tool"}],
        "optional_capabilities": [],
        "default_options": {"timeout_ms": 10, "adapter_opts": {"model": "m", "max_tokens": 5}},
        "system_prompt": "be brief",
    }
    own = {"adapter_opts": {"max_tokens": 9}, "required_capabilities": ["tool", "streaming"]}
    applied = agent_run_defaults(manifest, provider=None, options=own)
    assert applied.provider == "claude"
    assert applied.options == {
        "timeout_ms": 10,
        "adapter_opts": {"model": "m", "max_tokens": 9},
        "required_capabilities": ["streaming", {"type": "tool"}, "tool"],
    }
    assert applied.metadata == {
        "agent_id": "a",
        "version": "1",
        "requested": {"provider": None, "options": own},
        "system_prompt": "be brief",
    }
    # the run's provider wins; a session with its own system prompt keeps it
    applied = agent_run_defaults(
        manifest, provider="echo", options=None, session_context={"system_prompt": "mine"}
    )
    assert applied.provider == "echo"
    assert "system_prompt" not in applied.metadata
    # no manifest: nothing changes
    assert agent_run_defaults(None, provider=None, options={"x": 1}).options == {"x": 1}


@pytest.mark.django_db
def test_a_sessions_runs_pick_up_the_manifest_at_submit(user: User) -> None:
    agent_create(**MANIFEST)
    session = session_create(agent_id="reviewer", owner=user)
    run = run_submit(
        session_id=session.id,
        input="one two three four",
        options={"adapter_opts": {"repeat": 2}},
    ).run
    assert run.provider == "echo"
    assert run.options == {
        "timeout_ms": 30_000,
        "adapter_opts": {"chunk_words": 2, "repeat": 2},
        "required_capabilities": ["streaming"],
        "optional_capabilities": [{"type": "tool", "name": "echo_tool"}],
    }
    assert run.metadata["agent"]["agent_id"] == "reviewer"
    assert run.metadata["agent"]["version"] == "2.1"
    assert run.metadata["agent"]["system_prompt"] == "You review code."
    session_drain(session_id=session.id, worker_id="w")
    run = Run.objects.get(id=run.id)
    assert run.status == "completed", run.error
    assert run.output["content"] == "one two three four one two three four"
    started = Event.objects.get(run=run, type="run_started")
    assert "capabilities" not in started.data  # everything it asked for is there: full
    assert run.metadata["capabilities"]["status"] == "full"
    assert run.metadata["policy"]["sources"] == ["agent"]  # the manifest's policy layer


@pytest.mark.django_db
def test_degraded_negotiation_is_recorded_on_the_run_and_in_run_started(user: User) -> None:
    agent_create(**{**MANIFEST, "optional_capabilities": ["code_execution"]})
    session = session_create(agent_id="reviewer", owner=user)
    run = run_submit(session_id=session.id, input="hi").run
    session_drain(session_id=session.id, worker_id="w")
    run = Run.objects.get(id=run.id)
    assert run.status == "completed"
    recorded = run.metadata["capabilities"]
    assert recorded["status"] == "degraded"
    assert recorded["unsupported"] == ["code_execution"]
    assert len(recorded["warnings"]) == 1
    started = Event.objects.get(run=run, type="run_started")
    assert started.data["capabilities"] == {"status": "degraded", "warnings": recorded["warnings"]}


@pytest.mark.django_db
def test_a_missing_required_capability_fails_before_the_provider(user: User) -> None:
    agent_create(**{**MANIFEST, "required_capabilities": ["code_execution"]})
    session = session_create(agent_id="reviewer", owner=user)
    run = run_submit(session_id=session.id, input="hi").run
    session_drain(session_id=session.id, worker_id="w")
    run = Run.objects.get(id=run.id)
    assert run.status == "failed"
    assert run.error["code"] == "missing_required_capability"
    assert not Event.objects.filter(run=run, type="message_streamed").exists()


class _Recorder:
    """The echo provider, remembering the context of each call."""

    name = "echo"

    def __init__(self) -> None:
        from runs.providers.echo import EchoProvider

        self.inner = EchoProvider()
        self.contexts: list[Any] = []

    def __getattr__(self, item: str) -> Any:
        return getattr(self.inner, item)

    def execute(self, context: Any, emit: Any, token: Any) -> Any:
        self.contexts.append(context)
        return self.inner.execute(context, emit, token)


@pytest.mark.django_db
def test_the_system_prompt_reaches_the_provider_unless_the_session_has_one(user: User) -> None:
    from asm_core.records import RunRecord
    from runs.executor import RunExecutor
    from runs.providers.registry import ProviderRegistry
    from runs.store import DjangoSessionStore

    agent_create(**MANIFEST)
    recorder = _Recorder()
    registry = ProviderRegistry()
    registry.register(recorder)
    store = DjangoSessionStore()
    for context, expected in (({}, "You review code."), ({"system_prompt": "mine"}, "mine")):
        session = session_create(agent_id="reviewer", owner=user, context=context)
        run_submit(session_id=session.id, input="hi")
        claimed: RunRecord | None = store.run_claim_next(session.id, owner="w", lease_ms=10_000)
        assert claimed is not None
        RunExecutor(store, registry, owner="w").execute(claimed, claimed=True)
        assert recorder.contexts[-1].session_context["system_prompt"] == expected


@pytest.mark.django_db
def test_unknown_agent_ids_keep_the_settings_defaults(user: User, settings: Any) -> None:
    session = session_create(agent_id="nobody-knows-me", owner=user)
    run = run_submit(session_id=session.id, input="hi").run
    assert (run.provider, run.options, run.metadata) == (settings.ASM_DEFAULT_PROVIDER, {}, {})
    session_drain(session_id=session.id, worker_id="w")
    assert Run.objects.get(id=run.id).status == "completed"


@pytest.mark.django_db
def test_an_idempotent_replay_still_matches_after_the_manifest_changed(user: User) -> None:
    agent_create(**MANIFEST)
    session = session_create(agent_id="reviewer", owner=user)
    first = run_submit(session_id=session.id, input="hi", idempotency_key="k").run
    agent_update("reviewer", default_options={"timeout_ms": 99_000})
    again = run_submit(session_id=session.id, input="hi", idempotency_key="k")
    assert (again.run.id, again.created) == (first.id, False)
    with pytest.raises(AsmError) as info:
        run_submit(session_id=session.id, input="other", idempotency_key="k")
    assert info.value.code == "already_exists"


@pytest.mark.django_db
def test_run_once_uses_the_agent_manifest(user: User) -> None:
    agent_create(**{**MANIFEST, "default_options": {"adapter_opts": {"repeat": 3}}})
    result = run_once(input="ab", agent_id="reviewer", owner=user, timeout_s=0)
    run = Run.objects.get(id=result["run_id"])
    assert run.options["adapter_opts"] == {"repeat": 3}
    assert run.metadata["agent"]["agent_id"] == "reviewer"


@pytest.mark.django_db
def test_manifest_lookups_are_cached_and_writes_clear_the_cache(settings: Any) -> None:
    settings.ASM_AGENT_CACHE_S = 60
    assert agent_manifest_for("reviewer") is None  # cached: unknown
    Agent.objects.create(agent_id="reviewer", name="direct", version="1")  # bypasses services
    assert agent_manifest_for("reviewer") is None  # still cached
    agent_update("reviewer", name="via service")
    found = agent_manifest_for("reviewer")
    assert found is not None
    assert found["name"] == "via service"
    found["name"] = "mutated"  # callers get copies
    assert agent_manifest_for("reviewer")["name"] == "via service"


@pytest.mark.django_db
def test_the_admin_adds_and_lists_agents(client: Any) -> None:
    admin_user = User.objects.create_superuser("root", password="pw")
    client.force_login(admin_user)
    data = {k: (_json(v) if not isinstance(v, str) else v) for k, v in MANIFEST.items()}
    data["routing"] = "null"
    response = client.post("/admin/agent_sessions/agent/add/", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Agent.objects.get().default_options == MANIFEST["default_options"]
    assert agent_manifest_for("reviewer") is not None
    bad = client.post(
        "/admin/agent_sessions/agent/add/",
        {**data, "agent_id": "other", "default_policy": _json({"limits": {"nope": 1}})},
    )
    assert bad.status_code == 200  # the form again, with the error
    assert Agent.objects.count() == 1
    assert client.get("/admin/agent_sessions/agent/").status_code == 200
