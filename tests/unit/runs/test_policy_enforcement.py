"""Policies enforced by the real `RunExecutor` (spec 9.4 with asm's fixes).

Real collaborators: `InMemorySessionStore`, `ProviderRegistry`, `EchoProvider`, and the real
`ClaudeProvider` against `FakeAnthropic` (the Messages API wire format, served locally). Small
fakes: `FakeProvider` (runs a per-test script; records cancels and contexts).

Pinned here: the seed's policy tests through the executor (cancel mode -> `failed` with
`policy_violation`, the provider told to cancel, the violation stored right after its trigger;
warn mode -> `completed` with the summary in the run's metadata `policy`); exactly one
`policy_violation` per breached limit; a silent provider stopped at `max_duration_ms` (+ at
most 1 s); a denied tool in the `claude` tool loop never runs and the model is told; the
policy layers (settings default, agent, session, run) stack; exactly one terminal event.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from asm_core.errors import AsmError
from asm_core.event_types import TERMINAL_RUN_EVENT_TYPES
from asm_core.memory_store import InMemorySessionStore
from asm_core.records import EventRecord, RunRecord, SessionRecord
from events.selectors import latest_sequence
from runs.executor import AgentPolicyLookup, ExecutorConfig, RunExecutor
from runs.models import Run
from runs.providers.base import CancelToken, Emit, ProviderResult, RunContext
from runs.providers.claude import ClaudeProvider
from runs.providers.echo import ECHO_MODEL, EchoProvider
from runs.providers.registry import ProviderRegistry
from runs.scheduling import session_drain
from runs.services import run_submit
from sessions.agents import agent_create
from sessions.services import session_create
from tests.fakes.anthropic_server import FakeAnthropic, hang_turn, text_turn, tool_use_turn
from tests.fakes.scripted_provider import FakeProvider, ok

OWNER = "w1"
HERE = __name__
TERMINAL = frozenset(t.value for t in TERMINAL_RUN_EVENT_TYPES)
FAST = ExecutorConfig(
    lease_ms=15_000, flush_interval_s=0.05, tick_s=0.01, cancel_grace_s=1.0, db_cancel_check_s=0.05
)

# --------------------------------------------------------------------------- claude tools
CALLS: list[tuple[str, dict[str, Any]]] = []


def shout(text: str) -> str:
    CALLS.append(("shout", {"text": text}))
    return text.upper()


def delete_all(**kwargs: Any) -> str:
    CALLS.append(("delete_all", kwargs))
    return "deleted everything"


OBJECT = {"type": "object", "properties": {}}
TOOLS: list[Mapping[str, Any]] = [
    {"name": "shout", "input_schema": OBJECT, "callable": f"{HERE}.shout"},
    {"name": "delete_all", "input_schema": OBJECT, "callable": f"{HERE}.delete_all"},
]


@pytest.fixture(autouse=True)
def _clear_calls() -> None:
    CALLS.clear()


# --------------------------------------------------------------------------- fakes


def bash_call(emit: Emit) -> None:
    emit("tool_call_started", {"tool_call_id": "t1", "tool_name": "bash", "tool_input": {}})


# --------------------------------------------------------------------------- harness
class Harness:
    def __init__(self) -> None:
        self.store = InMemorySessionStore()

    def claimed_run(
        self,
        *,
        provider: str = "echo",
        options: Mapping[str, Any] | None = None,
        session_context: Mapping[str, Any] | None = None,
        agent_id: str = "agent-1",
    ) -> RunRecord:
        session = self.store.session_save(
            SessionRecord(agent_id=agent_id, context=dict(session_context or {}))
        )
        self.store.run_save(
            RunRecord(
                session_id=session.id,
                provider=provider,
                input={"prompt": "hello big world"},
                options=dict(options or {}),
            )
        )
        run = self.store.run_claim_next(session.id, owner=OWNER, lease_ms=15_000)
        assert run is not None
        return run

    def execute(
        self,
        run: RunRecord,
        *providers: Any,
        config: ExecutorConfig = FAST,
        agent_policy: AgentPolicyLookup | None = None,
    ) -> RunRecord:
        executor = RunExecutor(
            self.store,
            ProviderRegistry([EchoProvider(), *providers]),
            owner=OWNER,
            config=config,
            agent_policy=agent_policy,
        )
        finished = executor.execute(run)
        assert finished is not None
        self.the_terminal(run)
        return finished

    def events(self, run: RunRecord) -> list[EventRecord]:
        return self.store.event_list(run.session_id)

    def types(self, run: RunRecord) -> list[str]:
        return [e.type for e in self.events(run)]

    def violations(self, run: RunRecord) -> list[dict[str, Any]]:
        return [e.data for e in self.events(run) if e.type == "policy_violation"]

    def the_terminal(self, run: RunRecord) -> EventRecord:
        events = self.events(run)
        terminals = [e for e in events if e.type in TERMINAL]
        assert len(terminals) == 1, [e.type for e in events]
        assert events[-1] == terminals[0]
        seqs = [e.sequence_number for e in events]
        assert seqs == list(range(1, len(seqs) + 1))
        return terminals[0]


@pytest.fixture
def h() -> Harness:
    return Harness()


def policy(**document: Any) -> dict[str, Any]:
    return {"policy": document}


# --------------------------------------------------------------------------- the seed's tests
def test_cancel_mode_denied_tool_fails_the_run_even_when_the_provider_returns_ok(
    h: Harness,
) -> None:
    def script(_ctx: RunContext, emit: Emit, _token: CancelToken) -> ProviderResult:
        bash_call(emit)
        time.sleep(0.1)  # the supervisor takes the event and decides meanwhile
        return ok()

    fake = FakeProvider(script)
    run = h.claimed_run(
        provider="fake", options=policy(name="no-bash", tool_rules={"deny": ["bash"]})
    )
    finished = h.execute(run, fake)

    assert finished.status == "failed"
    assert finished.error is not None
    assert finished.error["code"] == "policy_violation"
    assert finished.error["details"]["policy"] == "no-bash"
    assert len(finished.error["details"]["violations"]) == 1
    assert fake.cancelled == [run.id]  # the provider was told, once
    types = h.types(run)
    assert types == [
        "message_sent",
        "run_started",
        "tool_call_started",
        "policy_violation",
        "run_failed",
    ]
    [violation] = h.violations(run)
    assert violation == {
        "policy": "no-bash",
        "kind": "tool_denied",
        "action": "cancel",
        "details": {"tool_name": "bash", "rule": "deny", "denied_tools": ["bash"], "source": "run"},
    }
    assert h.the_terminal(run).data["error_code"] == "policy_violation"
    assert finished.metadata["policy"]["violated"] is True


def test_warn_mode_denied_tool_completes_with_the_policy_summary(h: Harness) -> None:
    def script(_ctx: RunContext, emit: Emit, _token: CancelToken) -> ProviderResult:
        bash_call(emit)
        time.sleep(0.05)
        return ok()

    fake = FakeProvider(script)
    run = h.claimed_run(
        provider="fake", options=policy(tool_rules={"deny": ["bash"]}, on_violation="warn")
    )
    finished = h.execute(run, fake)

    assert finished.status == "completed"
    assert finished.output == {"content": "ok"}  # the provider's result, unchanged
    assert fake.cancelled == []
    summary = finished.metadata["policy"]
    assert summary["action"] == "warn"
    assert len(summary["violations"]) == 1
    assert summary["violations"][0]["action"] == "warn"
    assert h.types(run)[-3:] == ["tool_call_started", "policy_violation", "run_completed"]


def test_token_breach_fails_the_run(h: Harness) -> None:
    def script(_ctx: RunContext, emit: Emit, _token: CancelToken) -> ProviderResult:
        emit("token_usage_updated", {"total_tokens": 40})
        return ok()

    run = h.claimed_run(provider="fake", options=policy(limits={"max_total_tokens": 5}))
    finished = h.execute(run, FakeProvider(script))
    assert finished.status == "failed"
    assert finished.error is not None
    assert finished.error["code"] == "policy_violation"
    [violation] = h.violations(run)
    assert violation["details"] == {
        "metric": "total_tokens",
        "actual": 40,
        "limit": 5,
        "source": "run",
    }


def test_warn_mode_with_a_failing_provider_keeps_the_provider_error(h: Harness) -> None:
    run = h.claimed_run(
        options={
            **policy(limits={"max_tool_calls": 0}, on_violation="warn"),
            "adapter_opts": {
                "tool_calls": [{"name": "ls"}],
                "fail": {"code": "provider_error", "after_chunks": 1},
            },
        }
    )
    finished = h.execute(run)
    assert finished.status == "failed"
    assert finished.error is not None
    assert finished.error["code"] == "provider_error"
    assert len(finished.metadata["policy"]["violations"]) == 1


# --------------------------------------------------------------------------- one per limit
def test_exactly_one_violation_per_breached_limit(h: Harness) -> None:
    run = h.claimed_run(
        options={
            **policy(
                limits={"max_tool_calls": 1, "max_output_tokens": 2, "max_total_tokens": 1000},
                on_violation="warn",
            ),
            "adapter_opts": {
                "tool_calls": [{"name": "a"}, {"name": "b"}, {"name": "c"}, {"name": "d"}],
                "repeat": 20,
            },
        }
    )
    finished = h.execute(run)
    assert finished.status == "completed"
    violations = h.violations(run)
    assert sorted(v["details"]["metric"] for v in violations) == ["output_tokens", "tool_calls"]
    # ...each right after the event that breached it.
    events = h.events(run)
    for i, event in enumerate(events):
        if event.type == "policy_violation":
            trigger = events[i - 1].type
            metric = event.data["details"]["metric"]
            expected = {"tool_calls": "tool_call_started", "output_tokens": "token_usage_updated"}
            assert trigger == expected[metric]
    assert finished.metadata["policy"]["usage"]["tool_calls"] == 4


def test_usage_known_only_from_the_result_is_still_judged(h: Harness) -> None:
    usage = {"input_tokens": 50, "output_tokens": 50}
    fake = FakeProvider(lambda _c, _e, _t: ok(token_usage=usage))
    run = h.claimed_run(provider="fake", options=policy(limits={"max_total_tokens": 10}))
    finished = h.execute(run, fake)
    assert finished.status == "failed"
    assert finished.error is not None
    assert finished.error["code"] == "policy_violation"
    assert [v["details"]["actual"] for v in h.violations(run)] == [100]


# --------------------------------------------------------------------------- duration timer
@pytest.mark.parametrize("provider", ["echo", "silent"])
def test_a_silent_provider_is_stopped_at_max_duration(h: Harness, provider: str) -> None:
    def silent(_ctx: RunContext, _emit: Emit, token: CancelToken) -> ProviderResult:
        token.wait(30)  # emits nothing at all; stops only when told
        token.raise_if_cancelled()
        return ok()

    options: dict[str, Any] = policy(limits={"max_duration_ms": 300})
    if provider == "echo":
        options["adapter_opts"] = {"hang": True}  # replies, then goes quiet
    run = h.claimed_run(provider=provider if provider == "echo" else "fake", options=options)
    t0 = time.monotonic()
    finished = h.execute(run, FakeProvider(silent))
    took = time.monotonic() - t0

    assert 0.3 <= took <= 1.3
    assert finished.status == "failed"
    assert finished.error is not None
    assert finished.error["code"] == "policy_violation"
    [violation] = h.violations(run)
    assert violation["details"]["metric"] == "duration_ms"
    assert 300 < violation["details"]["actual"] <= 1300
    assert h.types(run)[-2:] == ["policy_violation", "run_failed"]


def test_warn_mode_duration_breach_is_recorded_once_and_the_run_goes_on(h: Harness) -> None:
    run = h.claimed_run(
        options={
            **policy(limits={"max_duration_ms": 100}, on_violation="warn"),
            "adapter_opts": {"delay_ms": 40, "repeat": 8},
        }
    )
    finished = h.execute(run)
    assert finished.status == "completed"
    [violation] = h.violations(run)
    assert violation["details"]["metric"] == "duration_ms"
    assert h.types(run).count("message_streamed") == 24  # nothing was cut short


# --------------------------------------------------------------------------- cost
USD_PER_TOKEN = {"input": 1_000_000, "output": 1_000_000}  # rates are USD per million tokens


@pytest.mark.parametrize(
    ("rates", "when"),
    [
        ({"echo": {"*": USD_PER_TOKEN}}, "in flight"),  # priced as usage arrives
        ({"echo": {ECHO_MODEL: USD_PER_TOKEN}}, "at the end"),  # the model is known at the end
    ],
)
def test_max_cost_usd_is_judged_on_the_cost_the_run_records(
    h: Harness, rates: dict[str, Any], when: str
) -> None:
    adapter_opts: dict[str, Any] = {"usage": {"input_tokens": 5, "output_tokens": 3}}
    if when == "in flight":
        adapter_opts["hang"] = True  # only a decision in flight can end this run
    run = h.claimed_run(
        options={**policy(limits={"max_cost_usd": 7.5}), "adapter_opts": adapter_opts}
    )
    finished = h.execute(run, config=dataclasses.replace(FAST, cost_rates=rates))
    assert finished.status == "failed"
    assert finished.error is not None
    assert finished.error["code"] == "policy_violation"
    [violation] = h.violations(run)
    assert violation["details"] == {
        "metric": "cost_usd",
        "actual": 8.0,
        "limit": 7.5,
        "source": "run",
    }
    assert h.types(run)[-3:] == ["token_usage_updated", "policy_violation", "run_failed"]
    assert finished.metadata["policy"]["metadata"] == {"warnings": [], "cost_supported": True}


def test_max_cost_usd_without_rates_is_reported_unsupported_not_guessed(h: Harness) -> None:
    run = h.claimed_run(options=policy(limits={"max_cost_usd": 0}))
    finished = h.execute(run, config=dataclasses.replace(FAST, cost_rates={}))
    assert finished.status == "completed"
    assert h.violations(run) == []
    assert finished.metadata["policy"]["metadata"] == {
        "warnings": ["cost_unsupported"],
        "cost_supported": False,
    }
    assert finished.metadata["policy"]["usage"]["cost_usd"] is None


# --------------------------------------------------------------------------- stacking
def test_the_layers_stack_default_agent_session_run(h: Harness) -> None:
    seen: list[RunContext] = []

    def script(ctx: RunContext, emit: Emit, _token: CancelToken) -> ProviderResult:
        seen.append(ctx)
        emit("tool_call_started", {"tool_call_id": "1", "tool_name": "curl", "tool_input": {}})
        emit("tool_call_started", {"tool_call_id": "2", "tool_name": "rm", "tool_input": {}})
        emit("token_usage_updated", {"input_tokens": 60})
        time.sleep(0.05)
        return ok()

    config = dataclasses.replace(
        FAST, default_policy={"name": "org", "limits": {"max_total_tokens": 50}}
    )
    run = h.claimed_run(
        provider="fake",
        session_context={"policy": {"name": "sess", "tool_rules": {"deny": ["rm"]}}},
        options=policy(
            name="mine",
            on_violation="warn",
            limits={"max_total_tokens": 5000},  # cannot loosen the org's 50
            tool_rules={"deny": ["curl"]},
        ),
        agent_id="coder",
    )
    agents = {"coder": {"name": "coder", "tool_rules": {"allow": ["curl", "rm", "ls"]}}}
    finished = h.execute(run, FakeProvider(script), config=config, agent_policy=agents.get)

    assert finished.status == "completed"  # warn: the run's own choice, nobody said cancel
    summary = finished.metadata["policy"]
    assert summary["sources"] == ["default", "agent", "session", "run"]
    assert summary["limits"] == {"max_total_tokens": 50}
    assert [
        (v["policy"], v["kind"], v["details"].get("tool_name")) for v in summary["violations"]
    ] == [
        ("mine", "tool_denied", "curl"),
        ("sess", "tool_denied", "rm"),
        ("org", "budget_exceeded", None),
    ]
    [ctx] = seen
    assert ctx.tool_guard is not None
    assert ctx.tool_guard("ls", {}) is None
    assert ctx.tool_guard("rm", {}) is not None
    assert ctx.options["tool_rules"] == {"allow": ["curl", "ls", "rm"], "deny": ["curl", "rm"]}


def test_no_policy_leaves_the_run_untouched(h: Harness) -> None:
    seen: list[RunContext] = []

    def script(ctx: RunContext, _emit: Emit, _token: CancelToken) -> ProviderResult:
        seen.append(ctx)
        return ok()

    run = h.claimed_run(provider="fake", session_context={"policy": {"name": "nothing"}})
    finished = h.execute(run, FakeProvider(script))
    assert finished.status == "completed"
    assert "policy" not in finished.metadata
    assert seen[0].tool_guard is None
    assert "tool_rules" not in seen[0].options


def test_an_invalid_session_policy_fails_the_run_before_the_provider(h: Harness) -> None:
    fake = FakeProvider(lambda _c, _e, _t: ok())
    run = h.claimed_run(provider="fake", session_context={"policy": {"limits": {"max_x": 1}}})
    finished = h.execute(run, fake)
    assert finished.status == "failed"
    assert finished.error is not None
    assert finished.error["code"] == "validation_error"
    assert finished.error["details"]["field"] == "session.context.policy.limits.max_x"
    assert fake.calls == []
    assert h.types(run) == ["run_failed"]


# --------------------------------------------------------------------------- claude tool loop
@pytest.fixture
def anthropic() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


def claude(fake: FakeAnthropic) -> ClaudeProvider:
    return ClaudeProvider(api_key="test", base_url=fake.url, max_retries=0, tools=TOOLS)


@pytest.mark.parametrize("on_violation", ["warn", "cancel"])
def test_a_denied_tool_in_the_claude_tool_loop_is_never_run(
    h: Harness, anthropic: FakeAnthropic, on_violation: str
) -> None:
    anthropic.script(
        tool_use_turn(
            [
                {"name": "delete_all", "input": {"path": "/"}, "id": "toolu_del"},
                {"name": "shout", "input": {"text": "hi"}, "id": "toolu_ok"},
            ]
        ),
        text_turn("I was not allowed to delete."),
    )
    run = h.claimed_run(
        provider="claude",
        options=policy(name="safe", tool_rules={"deny": ["delete_all"]}, on_violation=on_violation),
    )
    finished = h.execute(run, claude(anthropic))

    assert ("delete_all", {"path": "/"}) not in CALLS  # never executed
    [violation] = h.violations(run)
    assert violation["details"]["tool_name"] == "delete_all"
    if on_violation == "warn":
        assert finished.status == "completed"
        assert CALLS == [("shout", {"text": "hi"})]
        failed = [e.data for e in h.events(run) if e.type == "tool_call_failed"]
        assert [f["error"]["code"] for f in failed] == ["tool_permission_denied"]
        # The model was told, in the next request's tool_result.
        refused, allowed = anthropic.message_requests[1].body["messages"][2]["content"]
        assert refused["tool_use_id"] == "toolu_del"
        assert refused["is_error"] is True
        assert "refused" in refused["content"]
        assert "delete_all" in refused["content"]
        assert allowed["content"] == "HI"
        assert finished.metadata["policy"]["action"] == "warn"
    else:
        assert finished.status == "failed"
        assert finished.error is not None
        assert finished.error["code"] == "policy_violation"
        assert h.the_terminal(run).type == "run_failed"


# --------------------------------------------------------------------------- the service
@pytest.mark.django_db
@pytest.mark.parametrize(
    ("setup", "field"),
    [
        ({"options": {"policy": {"limits": {"max_total_tokens": -1}}}}, "options.policy.limits"),
        ({"options": {"policy": {"on_violation": "shrug"}}}, "options.policy.on_violation"),
        ({"options": {"policy": {"tool_rules": {"deny": [1]}}}}, "options.policy.tool_rules"),
        ({"options": {"policy": "no bash"}}, "options.policy"),
        ({"context": {"policy": {"limit": 1}}}, "session.context.policy"),
        ({"default": {"limits": {"max_tool_calls": "3"}}}, "ASM_DEFAULT_POLICY.limits"),
    ],
)
def test_submit_refuses_an_invalid_policy_layer_and_changes_nothing(
    settings: Any, setup: dict[str, Any], field: str
) -> None:

    if "default" in setup:
        settings.ASM_DEFAULT_POLICY = setup["default"]
    session = session_create(agent_id="p", context=setup.get("context"))
    before = latest_sequence(session_id=session.id)
    with pytest.raises(AsmError) as info:
        run_submit(session_id=session.id, input="hi", options=setup.get("options"))
    assert info.value.code == "validation_error"
    assert info.value.details["field"].startswith(field)
    assert not Run.objects.filter(session_id=session.id).exists()
    assert latest_sequence(session_id=session.id) == before


@pytest.mark.django_db
def test_the_service_enforces_the_settings_default_policy(settings: Any) -> None:
    """Through run_submit, the drain, the bootstrap-built executor and the ORM store."""

    settings.ASM_DEFAULT_POLICY = {"name": "org", "limits": {"max_tool_calls": 1}}
    session = session_create(agent_id="p")
    options = {
        "policy": {"name": "mine", "on_violation": "warn"},
        "adapter_opts": {"tool_calls": [{"name": "a"}, {"name": "b"}, {"name": "c"}]},
    }
    run = run_submit(session_id=session.id, input="hi there", options=options).run
    session_drain(session_id=session.id, worker_id="w")
    run = Run.objects.get(id=run.id)
    assert run.status == "completed"
    summary = run.metadata["policy"]
    assert summary["sources"] == ["default", "run"]
    assert [(v["policy"], v["details"]["metric"]) for v in summary["violations"]] == [
        ("org", "tool_calls")
    ]
    assert run.events.filter(type="policy_violation").count() == 1


@pytest.mark.django_db
def test_the_service_stacks_the_agent_manifest_policy(settings: Any) -> None:
    """The bootstrap-built executor reads the session's agent manifest `default_policy`."""
    settings.ASM_DEFAULT_POLICY = {}
    agent_create(
        agent_id="careful",
        name="Careful",
        version="1",
        default_policy={"name": "careful", "tool_rules": {"deny": ["rm"]}},
    )
    session = session_create(agent_id="careful", context={"policy": {"on_violation": "warn"}})
    options = {"adapter_opts": {"tool_calls": [{"name": "ls"}, {"name": "rm"}]}}
    run = run_submit(session_id=session.id, input="tidy up", options=options).run
    session_drain(session_id=session.id, worker_id="w")
    run = Run.objects.get(id=run.id)
    assert run.status == "completed"
    summary = run.metadata["policy"]
    assert summary["sources"] == ["agent", "session"]
    [violation] = summary["violations"]
    assert (violation["policy"], violation["details"]["tool_name"]) == ("careful", "rm")
    assert violation["details"]["source"] == "agent"


def test_claude_cost_limit_stops_a_tool_loop_in_flight(
    h: Harness, anthropic: FakeAnthropic
) -> None:
    """Priced at each turn's usage with the adapter's configured model; the second API call
    hangs, so only an in-flight decision can end the run."""
    anthropic.script(
        tool_use_turn(
            [{"name": "shout", "input": {"text": "a"}}],
            usage={"input_tokens": 6, "output_tokens": 6},
        ),
        hang_turn(),
    )
    rates = {"claude": {"claude-test": USD_PER_TOKEN}}
    run = h.claimed_run(provider="claude", options=policy(limits={"max_cost_usd": 10}))
    provider = ClaudeProvider(
        api_key="test", base_url=anthropic.url, max_retries=0, tools=TOOLS, model="claude-test"
    )
    t0 = time.monotonic()
    finished = h.execute(run, provider, config=dataclasses.replace(FAST, cost_rates=rates))
    assert time.monotonic() - t0 < 5
    assert finished.status == "failed"
    assert finished.error is not None
    assert finished.error["code"] == "policy_violation"
    [violation] = h.violations(run)
    assert violation["details"]["metric"] == "cost_usd"
    assert violation["details"]["actual"] == 12.0
