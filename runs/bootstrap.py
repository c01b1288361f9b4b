"""Composition root: the provider registry and the executor, built from settings."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from django.conf import settings

from runs.coordination import coordinator
from runs.executor import ExecutorConfig, RunExecutor
from runs.health import HealthStore, health_store_build
from runs.providers.registry import ProviderRegistry, build_registry
from runs.providers.router import RouterProvider
from runs.routing import ROUTER_NAME
from runs.store import DjangoSessionStore
from sessions.agents import agent_manifest_for


@cache
def provider_registry() -> ProviderRegistry:
    """The configured providers plus the `router` (routing among all the others)."""
    registry = build_registry(settings.ASM_PROVIDERS, settings.ASM_PROVIDER_CONFIG)
    health = health_store_build(
        redis_url=settings.REDIS_URL,
        prefix=settings.ASM_REDIS_PREFIX,
        failure_threshold=settings.ASM_ROUTER_FAILURE_THRESHOLD,
        cooldown_ms=settings.ASM_ROUTER_COOLDOWN_MS,
    )
    registry.register(RouterProvider(registry, health, policy=settings.ASM_ROUTER_POLICY))
    return registry


def provider_health() -> HealthStore:
    """The fleet-wide provider health the router uses (Redis, or process-local)."""
    router = provider_registry().get(ROUTER_NAME)
    if not isinstance(router, RouterProvider):
        raise TypeError(f"provider {ROUTER_NAME!r} is not the RouterProvider")
    return router.health


def executor_config() -> ExecutorConfig:
    return ExecutorConfig(
        default_provider=settings.ASM_DEFAULT_PROVIDER,
        default_timeout_ms=settings.ASM_RUN_TIMEOUT_MS,
        lease_ms=settings.ASM_RUN_LEASE_MS,
        flush_interval_s=settings.ASM_STREAM_FLUSH_MS / 1000,
        cancel_grace_s=settings.ASM_CANCEL_GRACE_S,
        default_policy=settings.ASM_DEFAULT_POLICY,
        cost_rates=settings.ASM_COST_RATES,
        transcript_max_chars=settings.ASM_TRANSCRIPT_MAX_CHARS,
    )


def build_executor(owner: str) -> RunExecutor:
    return RunExecutor(
        DjangoSessionStore(),
        provider_registry(),
        owner=owner,
        config=executor_config(),
        cancel_requested=coordinator().cancel_requested,
        agent_policy=agent_policy,
    )


def agent_policy(agent_id: str) -> Mapping[str, Any] | None:
    """The agent manifest's ``default_policy``: the executor's agent policy layer."""
    manifest = agent_manifest_for(agent_id)
    return manifest.get("default_policy") if manifest else None
