"""Run policies (spec 9, with asm's fixes): parsing, stacking, and a PURE evaluator.

No Django, no store, no clock: every function takes its inputs (the policy, the evaluator
state, the event, the elapsed time, the cost figure) and returns new values. The executor
(`runs.executor`) keeps the state between events and acts on the decisions.

Policy document (JSON; every key optional, unknown keys are ``validation_error``)::

    {"name": "prod",
     "limits": {"max_total_tokens": 8000, "max_input_tokens": 6000, "max_output_tokens": 2000,
                "max_duration_ms": 120000, "max_tool_calls": 20, "max_cost_usd": 0.5},
     "tool_rules": {"allow": ["read_file"], "deny": ["bash"]},
     "on_violation": "cancel" | "warn",
     "metadata": {...}}

The seed's list forms are accepted too: ``"limits": [["max_total_tokens", 8000], ...]`` and
``"tool_rules": [["deny", ["bash"]], ["allow", [...]], ...]``.

Invariants:
- Parsing is strict: a limit is an int >= 0 (``max_cost_usd``: a number >= 0), tool names
  are non-empty strings (anything else is refused, never silently dropped: a dropped deny
  would allow a tool), ``on_violation`` is ``cancel`` or ``warn``. Bad input raises
  ``AsmError("validation_error")`` naming the field.
- Stacking (``policy_stack``): the layers are the settings default, the agent manifest's, the
  session's and the run's (``policy_sources``). The effective policy has, per limit, the
  smallest value of any layer; denials are the union of every layer's; a tool must pass the
  allow list of every layer that has one (intersection); ``on_violation`` is the strictest
  any layer states (``cancel`` beats ``warn``; ``cancel`` when no layer states one). No layer
  can loosen another.
- A limit is breached when the actual value is strictly greater than the limit. Each limit
  yields at most ONE violation per run, however many events follow the breach. A denied tool
  yields one violation per ``tool_call_started`` that names it (each call is its own breach);
  tool rules are checked on ``tool_call_started`` only.
- ``cancel`` is decided at most once per run (``PolicyState.cancel_requested``).
- ``max_cost_usd`` is evaluated only against a cost figure the caller passes in; without one
  the limit is reported unsupported (warning ``cost_unsupported``, ``cost_supported: false``),
  never evaluated against a made-up cost.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from asm_core.errors import AsmError, ErrorCode
from asm_core.event_types import EventType
from runs.providers.base import ToolGuard

__all__ = [
    "LIMIT_METRICS",
    "ON_VIOLATION",
    "POLICY_KEYS",
    "SOURCE_FIELDS",
    "EffectivePolicy",
    "Limit",
    "Policy",
    "PolicyDecision",
    "PolicySource",
    "PolicyState",
    "policy_error",
    "policy_observe",
    "policy_parse",
    "policy_sources",
    "policy_stack",
    "policy_summary",
    "policy_tick",
    "policy_tool_guard",
    "policy_tool_refusal",
    "policy_tool_rules",
]

#: Limit key -> the metric it bounds (the ``details.metric`` of a violation).
LIMIT_METRICS: Mapping[str, str] = {
    "max_total_tokens": "total_tokens",
    "max_input_tokens": "input_tokens",
    "max_output_tokens": "output_tokens",
    "max_duration_ms": "duration_ms",
    "max_tool_calls": "tool_calls",
    "max_cost_usd": "cost_usd",
}
POLICY_KEYS = frozenset({"name", "limits", "tool_rules", "on_violation", "metadata"})
ON_VIOLATION = ("cancel", "warn")
CANCEL, WARN = ON_VIOLATION
#: Layer label -> where that layer's document comes from (used in error ``field``s).
SOURCE_FIELDS: Mapping[str, str] = {
    "default": "ASM_DEFAULT_POLICY",
    "agent": "agent.default_policy",
    "session": "session.context.policy",
    "run": "options.policy",
}
_TOOL_STARTED = EventType.TOOL_CALL_STARTED.value
_USAGE_UPDATED = EventType.TOKEN_USAGE_UPDATED.value
_COST_UNSUPPORTED = "cost_unsupported"


def _invalid(field_name: str, message: str) -> AsmError:
    return AsmError(ErrorCode.VALIDATION_ERROR, f"{field_name} {message}", {"field": field_name})


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Policy:
    """One policy document, validated. ``on_violation`` is None when the document is silent
    (it then counts as ``cancel`` unless another layer says otherwise)."""

    name: str = "default"
    limits: Mapping[str, int | float] = field(default_factory=dict)
    allow: frozenset[str] | None = None  # None: no allow list
    deny: frozenset[str] = frozenset()
    on_violation: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def restricts(self) -> bool:
        """True when the document limits or forbids anything."""
        return bool(self.limits) or self.allow is not None or bool(self.deny)


def _limit_value(key: str, value: object, field_name: str) -> int | float:
    if key not in LIMIT_METRICS:
        raise _invalid(
            field_name, f"is not a known limit (known: {', '.join(sorted(LIMIT_METRICS))})"
        )
    if isinstance(value, bool):
        raise _invalid(field_name, "must be a number >= 0")
    if key == "max_cost_usd":
        if not isinstance(value, int | float) or value != value or value < 0:  # NaN != NaN
            raise _invalid(field_name, "must be a number >= 0")
        return float(value)
    if not isinstance(value, int) or value < 0:
        raise _invalid(field_name, "must be an integer >= 0")
    return value


def _parse_limits(value: object, root: str) -> dict[str, int | float]:
    if value is None:
        return {}
    pairs: list[tuple[object, object]]
    if isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, list):  # the seed's form: [[key, value], ...]
        pairs = []
        for i, item in enumerate(value):
            if not isinstance(item, list | tuple) or len(item) != 2:
                raise _invalid(f"{root}[{i}]", "is an invalid policy limit ([key, value])")
            pairs.append((item[0], item[1]))
    else:
        raise _invalid(root, "must be an object of limits")
    limits: dict[str, int | float] = {}
    for key, raw in pairs:
        if not isinstance(key, str):
            raise _invalid(root, "has an invalid policy limit key")
        value_ = _limit_value(key, raw, f"{root}.{key}")
        limits[key] = min(value_, limits[key]) if key in limits else value_
    return limits


def _tool_names(value: object, field_name: str) -> frozenset[str]:
    if not isinstance(value, list):
        raise _invalid(field_name, "must be a list of tool names")
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise _invalid(field_name, "must contain non-empty strings only")
    return frozenset(value)


def _parse_tool_rules(value: object, root: str) -> tuple[frozenset[str] | None, frozenset[str]]:
    if value is None:
        return None, frozenset()
    rules: list[tuple[str, object, str]] = []
    if isinstance(value, Mapping):
        for key, names in value.items():
            if key not in ("allow", "deny"):
                raise _invalid(f"{root}.{key}", "is not a tool rule (allowed: allow, deny)")
            rules.append((key, names, f"{root}.{key}"))
    elif isinstance(value, list):  # the seed's form: [["allow" | "deny", [names]], ...]
        for i, item in enumerate(value):
            if (
                not isinstance(item, list | tuple)
                or len(item) != 2
                or item[0] not in ("allow", "deny")
            ):
                raise _invalid(f"{root}[{i}]", "is an invalid tool rule ([allow|deny, [names]])")
            rules.append((item[0], item[1], f"{root}[{i}]"))
    else:
        raise _invalid(root, "must be an object {allow, deny}")
    allow: frozenset[str] | None = None
    deny: frozenset[str] = frozenset()
    for kind, names, field_name in rules:
        parsed = _tool_names(names, field_name)
        if kind == "deny":
            deny |= parsed
        else:  # several allow lists: a tool must be on each
            allow = parsed if allow is None else allow & parsed
    return allow, deny


def policy_parse(value: object, *, field: str = "options.policy") -> Policy:
    """Validate one policy document (see the module docstring); ``field`` names it in errors.

    A ``Policy`` is returned as is.
    """
    if isinstance(value, Policy):
        return value
    if not isinstance(value, Mapping):
        raise _invalid(field, "must be an object")
    unknown = sorted(str(k) for k in value if k not in POLICY_KEYS)
    if unknown:
        raise AsmError(
            ErrorCode.VALIDATION_ERROR,
            f"{field} has unknown key(s): {', '.join(unknown)}",
            {"field": field, "unsupported": unknown, "supported": sorted(POLICY_KEYS)},
        )
    name = value.get("name", "default")
    if not isinstance(name, str) or not name.strip():
        raise _invalid(f"{field}.name", "must be a non-empty string")
    on_violation = value.get("on_violation")
    if on_violation is not None and on_violation not in ON_VIOLATION:
        raise _invalid(f"{field}.on_violation", "must be 'cancel' or 'warn'")
    metadata = value.get("metadata", {})
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, Mapping):
        raise _invalid(f"{field}.metadata", "must be an object")
    allow, deny = _parse_tool_rules(value.get("tool_rules"), f"{field}.tool_rules")
    return Policy(
        name=name,
        limits=_parse_limits(value.get("limits"), f"{field}.limits"),
        allow=allow,
        deny=deny,
        on_violation=on_violation,
        metadata=dict(metadata),
    )


# --------------------------------------------------------------------------- stacking


@dataclass(frozen=True)
class PolicySource:
    """One layer of the stack: ``label`` is default | agent | session | run."""

    label: str
    document: object


def policy_sources(
    *,
    default: object = None,
    agent: object = None,
    session_context: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
) -> list[PolicySource]:
    """The policy layers of one run, least specific first; absent (None) and empty ({})
    layers are left out.

    ``default`` is the settings-wide ``ASM_DEFAULT_POLICY``; ``agent`` the agent manifest's
    ``default_policy`` (a plain dict, looked up by the caller); the session's is
    ``session_context["policy"]``; the run's is ``options["policy"]``.
    """
    documents = (
        ("default", default),
        ("agent", agent),
        ("session", (session_context or {}).get("policy")),
        ("run", (options or {}).get("policy")),
    )
    return [PolicySource(label, doc) for label, doc in documents if doc is not None and doc != {}]


@dataclass(frozen=True)
class Limit:
    """An effective limit and the layer it came from."""

    key: str
    value: int | float
    source: str
    policy: str

    @property
    def metric(self) -> str:
        return LIMIT_METRICS[self.key]


@dataclass(frozen=True)
class _ToolRule:
    kind: str  # allow | deny
    names: frozenset[str]
    source: str
    policy: str


@dataclass(frozen=True)
class EffectivePolicy:
    """The stacked policy a run is held to (see ``policy_stack``)."""

    name: str
    sources: tuple[str, ...]
    limits: Mapping[str, Limit]
    tool_rules: tuple[_ToolRule, ...]
    on_violation: str
    metadata: Mapping[str, Any]

    @property
    def allow(self) -> frozenset[str] | None:
        """The tools every allow list admits (None: no layer has an allow list)."""
        lists = [r.names for r in self.tool_rules if r.kind == "allow"]
        return frozenset.intersection(*lists) if lists else None

    @property
    def deny(self) -> frozenset[str]:
        return frozenset().union(*(r.names for r in self.tool_rules if r.kind == "deny"))


def policy_stack(sources: Sequence[PolicySource]) -> EffectivePolicy | None:
    """Parse each layer and stack them; None when no layer limits or forbids anything.

    An invalid layer is ``validation_error`` naming its field (``SOURCE_FIELDS``).
    """
    parsed = [
        (s.label, policy_parse(s.document, field=SOURCE_FIELDS.get(s.label, s.label)))
        for s in sources
    ]
    if not any(p.restricts for _, p in parsed):
        return None
    limits: dict[str, Limit] = {}
    rules: list[_ToolRule] = []
    stated: list[str] = []
    metadata: dict[str, Any] = {}
    name = "default"
    for label, p in parsed:
        for key, value in p.limits.items():
            if key not in limits or value < limits[key].value:
                limits[key] = Limit(key, value, label, p.name)
        if p.deny:
            rules.append(_ToolRule("deny", p.deny, label, p.name))
        if p.allow is not None:
            rules.append(_ToolRule("allow", p.allow, label, p.name))
        if p.on_violation is not None:
            stated.append(p.on_violation)
        metadata.update(p.metadata)
        if p.name != "default" or name == "default":
            name = p.name  # the most specific layer that names itself
    return EffectivePolicy(
        name=name,
        sources=tuple(label for label, _ in parsed),
        limits=dict(sorted(limits.items())),
        tool_rules=tuple(rules),
        on_violation=CANCEL if (CANCEL in stated or not stated) else WARN,
        metadata=metadata,
    )


# --------------------------------------------------------------------------- tool rules


def _violation(
    policy: EffectivePolicy, name: str, kind: str, details: dict[str, Any]
) -> dict[str, Any]:
    return {"policy": name, "kind": kind, "action": policy.on_violation, "details": details}


def _tool_violation(policy: EffectivePolicy, tool_name: str) -> dict[str, Any] | None:
    for rule in policy.tool_rules:
        if rule.kind == "deny" and tool_name in rule.names:
            return _violation(
                policy,
                rule.policy,
                "tool_denied",
                {
                    "tool_name": tool_name,
                    "rule": "deny",
                    "denied_tools": sorted(policy.deny),
                    "source": rule.source,
                },
            )
    for rule in policy.tool_rules:
        if rule.kind == "allow" and tool_name not in rule.names:
            return _violation(
                policy,
                rule.policy,
                "tool_denied",
                {
                    "tool_name": tool_name,
                    "rule": "allow",
                    "allowed_tools": sorted(policy.allow or ()),
                    "source": rule.source,
                },
            )
    return None


def policy_tool_refusal(policy: EffectivePolicy, tool_name: str) -> str | None:
    """Why ``tool_name`` may not run under ``policy`` (None: it may)."""
    violation = _tool_violation(policy, tool_name)
    if violation is None:
        return None
    details = violation["details"]
    how = "denied" if details["rule"] == "deny" else "not in the allowed tools"
    return f"tool {tool_name!r} is {how} by policy {violation['policy']!r} ({details['source']})"


def policy_tool_guard(policy: EffectivePolicy | None) -> ToolGuard | None:
    """A ``RunContext.tool_guard`` enforcing the tool rules (None when there are none)."""
    if policy is None or not policy.tool_rules:
        return None

    def guard(tool_name: str, tool_input: Mapping[str, Any]) -> str | None:
        return policy_tool_refusal(policy, tool_name)

    return guard


def policy_tool_rules(policy: EffectivePolicy | None) -> dict[str, list[str]] | None:
    """The tool rules as ``{"allow": [...], "deny": [...]}`` (what ``claude_code`` reads from
    ``options["tool_rules"]``); None when there are none. An empty ``allow`` means no allow
    list (Claude Code cannot express "no tool at all"; the event check still applies)."""
    if policy is None or not policy.tool_rules:
        return None
    return {"allow": sorted(policy.allow or ()), "deny": sorted(policy.deny)}


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class PolicyState:
    """What the evaluator knows about one run so far (spec 9.2). Immutable: each call
    returns a new state."""

    elapsed_ms: int = 0
    tool_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    reported_total_tokens: int = 0
    cost_usd: float | None = None
    breached: frozenset[str] = frozenset()  # limit keys already reported
    violations: tuple[dict[str, Any], ...] = ()
    cancel_requested: bool = False

    @property
    def total_tokens(self) -> int:
        """Reported ``total_tokens`` (summed), or input + output when that is larger."""
        return max(self.reported_total_tokens, self.input_tokens + self.output_tokens)

    def actual(self, metric: str) -> int | float | None:
        if metric == "duration_ms":
            return self.elapsed_ms
        if metric == "cost_usd":
            return self.cost_usd
        value: int = getattr(self, metric)
        return value


@dataclass(frozen=True)
class PolicyDecision:
    """The result of one evaluation: the new state, the violations it found (each to be
    written as one ``policy_violation`` event) and whether to cancel the run now."""

    state: PolicyState
    violations: tuple[dict[str, Any], ...] = ()
    cancel: bool = False


def _tokens(value: object) -> int:
    """Non-negative ints; floats truncated; anything else 0 (spec 9.2)."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int | float) and value == value and value >= 0:  # NaN != NaN
        return int(value)
    return 0


def _decide(
    policy: EffectivePolicy,
    state: PolicyState,
    found: list[dict[str, Any]],
    *,
    cost_usd: float | None,
) -> PolicyDecision:
    breached = set(state.breached)
    probe = state if cost_usd is None else dataclasses.replace(state, cost_usd=float(cost_usd))
    for key, limit in policy.limits.items():
        if key in breached:
            continue
        actual = probe.actual(limit.metric)
        if actual is not None and actual > limit.value:
            breached.add(key)
            found.append(
                _violation(
                    policy,
                    limit.policy,
                    "budget_exceeded",
                    {
                        "metric": limit.metric,
                        "actual": actual,
                        "limit": limit.value,
                        "source": limit.source,
                    },
                )
            )
    cancel = bool(found) and policy.on_violation == CANCEL and not state.cancel_requested
    return PolicyDecision(
        state=dataclasses.replace(
            probe,
            breached=frozenset(breached),
            violations=(*state.violations, *found),
            cancel_requested=state.cancel_requested or cancel,
        ),
        violations=tuple(found),
        cancel=cancel,
    )


def policy_observe(
    policy: EffectivePolicy,
    state: PolicyState,
    event_type: str,
    data: Mapping[str, Any],
    *,
    elapsed_ms: int,
    cost_usd: float | None = None,
) -> PolicyDecision:
    """Account one provider event and evaluate the policy against the updated state.

    ``tool_call_started`` counts a tool call and is checked against the tool rules;
    ``token_usage_updated`` adds its tokens (per-call values, summed like the run's usage).
    ``elapsed_ms`` is the run's age; ``cost_usd`` the run's cost so far (None: no new
    figure; the last one known stays).
    """
    found: list[dict[str, Any]] = []
    updates: dict[str, Any] = {"elapsed_ms": max(state.elapsed_ms, int(elapsed_ms))}
    if event_type == _TOOL_STARTED:
        updates["tool_calls"] = state.tool_calls + 1
        tool_name = data.get("tool_name", data.get("name"))
        if isinstance(tool_name, str):
            violation = _tool_violation(policy, tool_name)
            if violation is not None:
                found.append(violation)
    elif event_type == _USAGE_UPDATED:
        updates["input_tokens"] = state.input_tokens + _tokens(data.get("input_tokens"))
        updates["output_tokens"] = state.output_tokens + _tokens(data.get("output_tokens"))
        updates["reported_total_tokens"] = state.reported_total_tokens + _tokens(
            data.get("total_tokens")
        )
    return _decide(policy, dataclasses.replace(state, **updates), found, cost_usd=cost_usd)


def policy_tick(
    policy: EffectivePolicy, state: PolicyState, *, elapsed_ms: int, cost_usd: float | None = None
) -> PolicyDecision:
    """Evaluate the limits with no new event (the duration timer: a silent provider)."""
    if elapsed_ms <= state.elapsed_ms and cost_usd in (None, state.cost_usd):
        return PolicyDecision(state)  # nothing changed since the last evaluation
    state = dataclasses.replace(state, elapsed_ms=int(elapsed_ms))
    return _decide(policy, state, [], cost_usd=cost_usd)


# --------------------------------------------------------------------------- final result


def policy_summary(policy: EffectivePolicy, state: PolicyState) -> dict[str, Any]:
    """The run's policy record (run metadata ``policy``; spec 9.2 status + 9.4 result)."""
    # A cost limit without a cost figure could not be evaluated: say so.
    warnings = (
        [_COST_UNSUPPORTED] if "max_cost_usd" in policy.limits and state.cost_usd is None else []
    )
    return {
        "name": policy.name,
        "sources": list(policy.sources),
        "action": policy.on_violation,
        "violated": bool(state.violations),
        "violations": list(state.violations),
        "cancel_requested": state.cancel_requested,
        "limits": {key: limit.value for key, limit in policy.limits.items()},
        "usage": {
            "tool_calls": state.tool_calls,
            "input_tokens": state.input_tokens,
            "output_tokens": state.output_tokens,
            "total_tokens": state.total_tokens,
            "elapsed_ms": state.elapsed_ms,
            "cost_usd": state.cost_usd,
        },
        "metadata": {
            "warnings": warnings,
            "cost_supported": state.cost_usd is not None,
        },
        "policy_metadata": dict(policy.metadata),
    }


def policy_error(policy: EffectivePolicy, state: PolicyState) -> AsmError | None:
    """The run's error when the policy ends it (cancel mode and any violation; spec 9.4)."""
    if policy.on_violation != CANCEL or not state.violations:
        return None
    return AsmError(
        ErrorCode.POLICY_VIOLATION,
        "Run cancelled due to a policy violation",
        {"policy": policy.name, "violations": list(state.violations)},
    )
