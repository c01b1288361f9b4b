"""Agent manifests: create, update, delete, look up, and the defaults a run picks up.

A session names its agent by `agent_id` (a string, not a foreign key). At run submit
(`runs.services.run_submit`) the session's manifest, when there is one, supplies defaults
(`agent_run_defaults`); an unknown `agent_id` changes nothing (settings defaults apply).

Invariants:
- A manifest is valid when stored: `agent_id`, `name` and `version` are non-empty;
  capabilities are requirement lists (`parse_requirement`); `default_policy` is a policy
  document (`runs.policies.policy_parse`, field `default_policy`); `default_options` has
  no `policy` or `routing` (they have fields of their own); and the options a run of the
  agent would start from (`agent_run_defaults` applied to an empty request) pass
  `runs.services.validate_run_options` for the agent's provider. Bad input is
  `validation_error` naming the field and stores nothing.
- Defaults, for a run of a session whose agent has a manifest:
  provider: the run's, else the manifest's `provider`, else `router` when the manifest has
  `routing`, else settings. Options: `default_options` merged UNDER the run's options (an
  object value is merged one level deep, the run's keys winning; any other value: the run's
  wins); `options.routing` defaults to the manifest's `routing` when the run goes to the
  router and gives none; `required_capabilities` / `optional_capabilities` are the union of
  the manifest's and the run's (manifest's first, duplicates dropped). The manifest's
  `system_prompt` is recorded on the run (`metadata.agent.system_prompt`) only when the
  session's context has no `system_prompt`; the executor hands it to the provider as
  `session_context["system_prompt"]`. `metadata.agent` also records which manifest
  (`agent_id`, `version`) and the request as the caller sent it (`requested`), so an
  idempotent replay still matches after the manifest changed.
- `agent_manifest_for` (what the executor's policy layer and the defaults read) is cached
  per process for `ASM_AGENT_CACHE_S` seconds (unknown ids too); this process's own writes
  clear its cache at once, other processes see an edit within that time.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from asm_core.errors import AsmError, ErrorCode
from runs.policies import policy_parse
from runs.providers.base import parse_requirement
from sessions.models import Agent

__all__ = [
    "AGENT_FIELDS",
    "AgentDefaults",
    "agent_cache_clear",
    "agent_create",
    "agent_delete",
    "agent_get",
    "agent_list",
    "agent_manifest",
    "agent_manifest_for",
    "agent_request_matches",
    "agent_run_defaults",
    "agent_update",
    "agent_validate",
]

ROUTER = "router"  # runs.routing.ROUTER_NAME (not imported: keeps this module light)
#: The fields a caller may set (everything but timestamps).
AGENT_FIELDS = (
    "agent_id",
    "name",
    "version",
    "description",
    "provider",
    "routing",
    "required_capabilities",
    "optional_capabilities",
    "default_policy",
    "system_prompt",
    "default_options",
    "metadata",
)
_OWN_FIELD_OPTIONS = ("policy", "routing")
_CAPABILITY_KEYS = ("required_capabilities", "optional_capabilities")


def _invalid(field_name: str, message: str) -> AsmError:
    return AsmError(ErrorCode.VALIDATION_ERROR, f"{field_name} {message}", {"field": field_name})


# --------------------------------------------------------------------------- reads


def agent_manifest(agent: Agent) -> dict[str, Any]:
    """A manifest as a plain dict (the API's fields, the cache's values)."""
    return {
        "agent_id": agent.agent_id,
        "name": agent.name,
        "version": agent.version,
        "description": agent.description,
        "provider": agent.provider,
        "routing": agent.routing,
        "required_capabilities": list(agent.required_capabilities or []),
        "optional_capabilities": list(agent.optional_capabilities or []),
        "default_policy": agent.default_policy,
        "system_prompt": agent.system_prompt,
        "default_options": dict(agent.default_options or {}),
        "metadata": dict(agent.metadata or {}),
    }


def agent_list() -> QuerySet[Agent]:
    return Agent.objects.order_by("agent_id")


def agent_get(agent_id: str) -> Agent:
    """The manifest of ``agent_id``; ``not_found`` when there is none."""
    found = Agent.objects.filter(agent_id=agent_id).first()
    if found is None:
        raise _not_found(agent_id)
    return found


def _not_found(agent_id: str) -> AsmError:
    return AsmError(ErrorCode.NOT_FOUND, f"Agent not found: {agent_id}", {"agent_id": agent_id})


_cache: dict[str, tuple[float, dict[str, Any] | None]] = {}
_cache_lock = threading.Lock()
_CACHE_MAX = 10_000


def agent_cache_clear() -> None:
    with _cache_lock:
        _cache.clear()


def agent_manifest_for(agent_id: str) -> dict[str, Any] | None:
    """The manifest of ``agent_id`` as a dict (``agent_manifest``), or None (cached, see the
    module docstring). Callers get their own copy."""
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(agent_id)
    if hit is None or hit[0] <= now:
        agent = Agent.objects.filter(agent_id=agent_id).first()
        value = agent_manifest(agent) if agent is not None else None
        with _cache_lock:
            if len(_cache) >= _CACHE_MAX:
                _cache.clear()
            _cache[agent_id] = (now + settings.ASM_AGENT_CACHE_S, value)
        hit = (0.0, value)
    return copy.deepcopy(hit[1])


# --------------------------------------------------------------------------- run defaults


@dataclass(frozen=True)
class AgentDefaults:
    """What a run is submitted with after its agent's defaults were applied."""

    provider: str | None
    options: dict[str, Any]
    #: Recorded on the run as ``metadata["agent"]`` ({} when the agent has no manifest).
    metadata: dict[str, Any] = field(default_factory=dict)


def _merged_options(defaults: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = dict(defaults)
    for key, value in own.items():
        base = merged.get(key)
        if isinstance(base, Mapping) and isinstance(value, Mapping):
            merged[key] = {**base, **value}
        else:
            merged[key] = value
    return merged


def _union(first: object, second: object) -> list[Any]:
    out: list[Any] = []
    for source in (first, second):
        for entry in source if isinstance(source, list) else ():
            if entry not in out:
                out.append(entry)
    return out


def agent_run_defaults(
    manifest: Mapping[str, Any] | None,
    *,
    provider: str | None,
    options: object,
    session_context: Mapping[str, Any] | None = None,
) -> AgentDefaults:
    """The run's provider and options with ``manifest``'s defaults applied (PURE; see the
    module docstring). ``options`` that are not an object are passed through unchanged, for
    the caller's validation to refuse."""
    if manifest is None or (options is not None and not isinstance(options, Mapping)):
        return AgentDefaults(provider, options if isinstance(options, dict) else {}, {})
    own = dict(options or {})
    routing = manifest.get("routing")
    chosen = provider or manifest.get("provider") or (ROUTER if routing is not None else None)
    merged = _merged_options(manifest.get("default_options") or {}, own)
    if routing is not None and chosen == ROUTER and "routing" not in own:
        merged["routing"] = routing
    for key in _CAPABILITY_KEYS:
        union = _union(manifest.get(key), own.get(key))
        if union:
            merged[key] = union
    meta: dict[str, Any] = {
        "agent_id": manifest.get("agent_id"),
        "version": manifest.get("version"),
        "requested": {"provider": provider, "options": own},
    }
    prompt = manifest.get("system_prompt")
    if isinstance(prompt, str) and prompt and not (session_context or {}).get("system_prompt"):
        meta["system_prompt"] = prompt
    return AgentDefaults(chosen, merged, meta)


def agent_request_matches(
    run_metadata: Mapping[str, Any], *, provider: str | None, options: object
) -> bool:
    """True when a run's recorded request (``metadata.agent.requested``) is this one."""
    agent = run_metadata.get("agent")
    requested = agent.get("requested") if isinstance(agent, Mapping) else None
    if not isinstance(requested, Mapping):
        return False
    return requested.get("provider") == provider and requested.get("options") == dict(
        options or {}  # type: ignore[call-overload]
    )


# --------------------------------------------------------------------------- writes


def _text(data: Mapping[str, Any], key: str, *, required: bool, max_length: int) -> str:
    value = data.get(key, "")
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise _invalid(key, "must be a string")
    value = value.strip() if required else value
    if required and not value:
        raise _invalid(key, "must be a non-empty string")
    if max_length and len(value) > max_length:
        raise _invalid(key, f"must be at most {max_length} characters")
    return value


def _validated(data: Mapping[str, Any]) -> dict[str, Any]:
    """Every field of a manifest checked (see the module docstring); the values to store."""
    unknown = sorted(set(data) - set(AGENT_FIELDS))
    if unknown:
        raise _invalid(unknown[0], "is not an agent field")
    out: dict[str, Any] = {
        "agent_id": _text(data, "agent_id", required=True, max_length=200),
        "name": _text(data, "name", required=True, max_length=200),
        "version": _text(data, "version", required=True, max_length=50),
        "description": _text(data, "description", required=False, max_length=0),
        "provider": _text(data, "provider", required=False, max_length=100).strip(),
        "system_prompt": _text(data, "system_prompt", required=False, max_length=0),
    }
    routing = data.get("routing")
    if routing is not None and not isinstance(routing, Mapping):
        raise _invalid("routing", "must be an object or null")
    out["routing"] = dict(routing) if routing is not None else None
    if routing is not None and out["provider"] not in ("", ROUTER):
        raise _invalid("routing", f"applies only to the {ROUTER!r} provider (or no provider)")
    for key in _CAPABILITY_KEYS:
        value = data.get(key) or []
        if not isinstance(value, list):
            raise _invalid(key, "must be a list")
        for entry in value:
            parse_requirement(entry)
        out[key] = list(value)
    policy = data.get("default_policy")
    if policy is not None:
        policy_parse(policy, field="default_policy")
    out["default_policy"] = policy
    for key in ("default_options", "metadata"):
        value = data.get(key) or {}
        if not isinstance(value, Mapping):
            raise _invalid(key, "must be an object")
        out[key] = dict(value)
    for key in _OWN_FIELD_OPTIONS:
        if key in out["default_options"]:
            raise _invalid(
                f"default_options.{key}", f"is not allowed here: use the manifest's {key} field"
            )
    _check_run_options(out)
    return out


def _check_run_options(manifest: Mapping[str, Any]) -> None:
    """The options a run of this agent starts from must be valid for its provider."""
    from runs.services import validate_run_options  # runs.services imports this module

    start = agent_run_defaults(manifest, provider=None, options={})
    provider = start.provider or settings.ASM_DEFAULT_PROVIDER
    try:
        validate_run_options(start.options, provider)
    except AsmError as exc:
        where = exc.details.get("field") if isinstance(exc.details, Mapping) else None
        name = "provider" if "provider" in exc.details and where is None else where
        raise AsmError(
            exc.code,
            f"The agent's defaults are not valid run options: {exc.message}",
            {**exc.details, "field": _manifest_field(name)},
        ) from exc


def _manifest_field(option_field: object) -> str:
    """The manifest field an options error points at (``options.x`` -> ``default_options.x``)."""
    if not isinstance(option_field, str) or not option_field:
        return "default_options"
    if option_field == "provider":
        return "provider"
    name = option_field.removeprefix("options.")
    for key in ("routing", *_CAPABILITY_KEYS):
        if name == key or name.startswith(f"{key}.") or name.startswith(f"{key}["):
            return name
    return f"default_options.{name}"


def agent_create(**fields: Any) -> Agent:
    """Store a new manifest; ``already_exists`` when its ``agent_id`` is taken."""
    values = _validated(fields)
    try:
        with transaction.atomic():
            agent = Agent.objects.create(**values)
    except IntegrityError:
        raise AsmError(
            ErrorCode.ALREADY_EXISTS,
            f"An agent with agent_id {values['agent_id']!r} already exists",
            {"agent_id": values["agent_id"]},
        ) from None
    agent_cache_clear()
    return agent


def agent_update(agent_id: str, /, **changes: Any) -> Agent:
    """Change some fields of a manifest (the result is validated whole)."""
    with transaction.atomic():
        agent = Agent.objects.select_for_update().filter(agent_id=agent_id).first()
        if agent is None:
            raise _not_found(agent_id)
        values = _validated({**agent_manifest(agent), **changes})
        if (
            values["agent_id"] != agent.agent_id
            and Agent.objects.filter(agent_id=values["agent_id"]).exists()
        ):
            raise AsmError(
                ErrorCode.ALREADY_EXISTS,
                f"An agent with agent_id {values['agent_id']!r} already exists",
                {"agent_id": values["agent_id"]},
            )
        for key, value in values.items():
            setattr(agent, key, value)
        agent.updated_at = timezone.now()
        agent.save()
    agent_cache_clear()
    return agent


def agent_delete(agent_id: str) -> None:
    """Delete a manifest (sessions naming it go on with settings defaults)."""
    deleted, _ = Agent.objects.filter(agent_id=agent_id).delete()
    if not deleted:
        raise _not_found(agent_id)
    agent_cache_clear()


def agent_validate(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The admin's check: the values to store, or ``validation_error``."""
    return _validated(fields)
